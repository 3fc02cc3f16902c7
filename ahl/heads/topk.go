package heads

// TopKFraction is the share of the H x W positions whose |z| the top-k score averages.
const TopKFraction = 0.1

// topK returns k = max(floor(0.1 * n), 1) for n positions (docs/algorithm.md, "Scoring heads").
func topK(n int) int {
	return max(int(float64(n)*TopKFraction), 1)
}

// topKMeanAbs returns the mean of the k largest |z_p| and writes their positions, in
// decreasing order of |z| (ties: lower position first), into idx (len k). The sum runs in
// that order, so the result depends only on z.
//
// It keeps the k largest so far sorted by insertion. For k up to 32 (maps up to 18 x 18) it
// keeps their |z| beside idx, so that the insertion loop reads no z through idx; larger k
// take the same steps reading z[idx[j]].
func topKMeanAbs(z []float32, idx []int) float32 {
	k := len(idx)
	if k > 32 {
		return topKMeanAbsIdx(z, idx)
	}
	var buf [32]float32
	av := buf[:k]
	n := 0 // positions held in idx so far
	var least float32
	for p, v := range z {
		a := abs32(v)
		if n == k && a <= least {
			continue
		}
		j := min(n, k-1)
		for j > 0 && a > av[j-1] {
			idx[j], av[j] = idx[j-1], av[j-1]
			j--
		}
		idx[j], av[j] = p, a
		n = min(n+1, k)
		least = av[k-1]
	}
	var s float32
	for _, a := range av {
		s += a
	}
	return s / float32(k)
}

// topKMeanAbsIdx is topKMeanAbs reading the selected values through idx.
func topKMeanAbsIdx(z []float32, idx []int) float32 {
	k := len(idx)
	n := 0 // positions held in idx so far, sorted by decreasing |z|
	for p, v := range z {
		a := abs32(v)
		if n == k && a <= abs32(z[idx[k-1]]) {
			continue
		}
		j := min(n, k-1)
		for j > 0 && a > abs32(z[idx[j-1]]) {
			idx[j] = idx[j-1]
			j--
		}
		idx[j] = p
		n = min(n+1, k)
	}
	var s float32
	for _, p := range idx {
		s += abs32(z[p])
	}
	return s / float32(k)
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

func sign32(v float32) float32 {
	switch {
	case v > 0:
		return 1
	case v < 0:
		return -1
	}
	return 0
}
