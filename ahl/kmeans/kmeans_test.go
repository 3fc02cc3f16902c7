package kmeans

import (
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// blobs returns Gaussian blobs (standard deviation sigma) around the given centres, sizes[b]
// points each, in a shuffled row order, and each row's planted blob.
func blobs(rng *rand.Rand, centres [][]float32, sizes []int, sigma float64) (Matrix, []int) {
	var planted []int
	for b, n := range sizes {
		for i := 0; i < n; i++ {
			planted = append(planted, b)
		}
	}
	rng.Shuffle(len(planted), func(i, j int) { planted[i], planted[j] = planted[j], planted[i] })
	d := len(centres[0])
	m := Matrix{N: len(planted), D: d}
	for _, b := range planted {
		for j := 0; j < d; j++ {
			m.Data = append(m.Data, centres[b][j]+float32(sigma*rng.NormFloat64()))
		}
	}
	return m, planted
}

// samePartition reports whether two labelings group the rows identically (up to renaming).
func samePartition(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	ab, ba := map[int]int{}, map[int]int{}
	for i := range a {
		if x, ok := ab[a[i]]; ok && x != b[i] {
			return false
		}
		if y, ok := ba[b[i]]; ok && y != a[i] {
			return false
		}
		ab[a[i]], ba[b[i]] = b[i], a[i]
	}
	return true
}

var centres = [][]float32{{0, 0, 0, 0}, {10, 0, 0, 0}, {0, 10, 0, 5}}

func TestPlantedClusters(t *testing.T) {
	x, planted := blobs(rand.New(rand.NewPCG(7, 1)), centres, []int{30, 25, 20}, 0.7)
	res, err := Fit(x, 3, 5, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if !samePartition(res.Labels, planted) {
		t.Fatalf("labels %v do not match the planted blobs %v", res.Labels, planted)
	}
	if len(res.Dropped) != 0 || res.Centroids.N != 3 || !res.Converged {
		t.Fatalf("result %+v: want 3 kept clusters, none dropped, converged", res)
	}
	// Each centroid is its members' mean, near its planted centre, and the inertia is the sum
	// of squared distances to them.
	var inertia float64
	for c := 0; c < 3; c++ {
		mean := make([]float64, x.D)
		n := 0
		var blob int
		for i, l := range res.Labels {
			if l != c {
				continue
			}
			n, blob = n+1, planted[i]
			for j, v := range x.Row(i) {
				mean[j] += float64(v)
			}
		}
		if n != res.Sizes[c] {
			t.Errorf("cluster %d: %d members, Sizes says %d", c, n, res.Sizes[c])
		}
		for j := range mean {
			mean[j] /= float64(n)
			if got := float64(res.Centroids.Row(c)[j]); math.Abs(got-mean[j]) > 1e-4 {
				t.Errorf("cluster %d centroid[%d] = %v, members' mean %v", c, j, got, mean[j])
			}
			if math.Abs(mean[j]-float64(centres[blob][j])) > 0.5 {
				t.Errorf("cluster %d centroid[%d] = %v, planted centre %v", c, j, mean[j], centres[blob][j])
			}
		}
		for i, l := range res.Labels {
			if l == c {
				inertia += dist2(x.Row(i), mean)
			}
		}
	}
	if math.Abs(inertia-res.Inertia) > 1e-6*inertia {
		t.Errorf("inertia %v, recomputed %v", res.Inertia, inertia)
	}
	// Canonical numbering: cluster ids follow the lowest member row.
	seen := map[int]bool{}
	next := 0
	for _, l := range res.Labels {
		if !seen[l] {
			if l != next {
				t.Fatalf("cluster %d appears before cluster %d: ids are not canonical", l, next)
			}
			seen[l] = true
			next++
		}
	}
}

func TestHandCase(t *testing.T) {
	// 1-D points 0, 1, 10, 11 with k = 2: clusters {0, 1} and {10, 11}, centroids 0.5 and
	// 10.5, inertia 4 * 0.25 = 1.
	x := Matrix{N: 4, D: 1, Data: []float32{10, 0, 11, 1}}
	res, err := FitConfig(x, Config{K: 2, MinSize: 1}, rand.New(rand.NewPCG(3, 3)))
	if err != nil {
		t.Fatal(err)
	}
	want := Result{Labels: []int{0, 1, 0, 1}, Centroids: Matrix{N: 2, D: 1, Data: []float32{10.5, 0.5}},
		Sizes: []int{2, 2}, Inertia: 1, Converged: true}
	res.Iterations, res.Restart = 0, 0
	if !reflect.DeepEqual(res, want) {
		t.Errorf("got %+v, want %+v", res, want)
	}
}

func TestDeterministic(t *testing.T) {
	x, _ := blobs(rand.New(rand.NewPCG(9, 9)), centres, []int{15, 15, 15}, 3) // overlapping
	a, err := Fit(x, 4, 3, rand.New(rand.NewPCG(42, 0)))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Fit(x, 4, 3, rand.New(rand.NewPCG(42, 0)))
	if !reflect.DeepEqual(a, b) {
		t.Errorf("same seed, different results:\n%+v\n%+v", a, b)
	}
	// On clear clusters, another seed finds the same partition with the same canonical ids.
	y, _ := blobs(rand.New(rand.NewPCG(5, 5)), centres, []int{12, 9, 10}, 0.5)
	c, _ := Fit(y, 3, 2, rand.New(rand.NewPCG(1, 0)))
	d, _ := Fit(y, 3, 2, rand.New(rand.NewPCG(2, 0)))
	if !reflect.DeepEqual(c.Labels, d.Labels) {
		t.Errorf("clear clusters, labels differ across seeds:\n%v\n%v", c.Labels, d.Labels)
	}
}

func TestRestartsKeepLowestInertia(t *testing.T) {
	// Overlapping blobs with k = 5 have several local optima. The best of 8 starts must be
	// at least as good as each of 8 single starts drawn from the same stream.
	x, _ := blobs(rand.New(rand.NewPCG(11, 0)), centres, []int{20, 20, 20}, 4)
	best, err := FitConfig(x, Config{K: 5, Restarts: 8, MinSize: 1}, rand.New(rand.NewPCG(8, 8)))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(8, 8))
	lowest := math.Inf(1)
	distinct := map[float64]bool{}
	for r := 0; r < 8; r++ {
		one, _ := FitConfig(x, Config{K: 5, Restarts: 1, MinSize: 1}, rng)
		lowest = math.Min(lowest, one.Inertia)
		distinct[one.Inertia] = true
	}
	if len(distinct) < 2 {
		t.Fatalf("all 8 starts reached the same inertia: the case cannot tell the best start from any other")
	}
	if best.Inertia != lowest {
		t.Errorf("best of 8 restarts has inertia %v, the 8 single starts' lowest is %v", best.Inertia, lowest)
	}
}

func TestDropsTinyClusters(t *testing.T) {
	// Two blobs of 20 and two far-away points: k = 3 puts the pair in its own cluster, which
	// has fewer than 3 members and is dropped.
	x, planted := blobs(rand.New(rand.NewPCG(4, 4)), [][]float32{{0, 0}, {10, 0}, {0, 100}}, []int{20, 20, 2}, 0.5)
	res, err := Fit(x, 3, 4, rand.New(rand.NewPCG(6, 6)))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Dropped) != 1 || res.Dropped[0].Size != 2 {
		t.Fatalf("dropped %+v, want one cluster of 2", res.Dropped)
	}
	for _, i := range res.Dropped[0].Members {
		if planted[i] != 2 || res.Labels[i] != -1 {
			t.Errorf("dropped row %d: planted %d, label %d; want planted 2, label -1", i, planted[i], res.Labels[i])
		}
	}
	if !reflect.DeepEqual(res.Sizes, []int{20, 20}) || res.Centroids.N != 2 {
		t.Errorf("kept sizes %v, centroids %d; want [20 20] and 2", res.Sizes, res.Centroids.N)
	}
	for i, l := range res.Labels {
		if (planted[i] == 2) != (l == -1) {
			t.Errorf("row %d planted %d has label %d", i, planted[i], l)
		}
	}
}

func TestDuplicateRows(t *testing.T) {
	// Fewer distinct rows than k: k-means++ runs out of distinct points, Lloyd must still
	// return k non-empty clusters without panicking.
	x := Matrix{N: 5, D: 2, Data: []float32{1, 1, 1, 1, 1, 1, 1, 1, 2, 2}}
	res, err := FitConfig(x, Config{K: 3, MinSize: 1}, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Sizes) != 3 || res.Sizes[0]+res.Sizes[1]+res.Sizes[2] != 5 {
		t.Errorf("sizes %v, want 3 clusters covering 5 rows", res.Sizes)
	}
}

func TestErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	x := Matrix{N: 3, D: 1, Data: []float32{0, 1, 2}}
	cases := []struct {
		x    Matrix
		k    int
		rng  *rand.Rand
		want string
	}{
		{x, 0, rng, "k = 0"},
		{x, 4, rng, "k = 4 clusters for 3 rows"},
		{Matrix{}, 1, rng, "empty input"},
		{Matrix{N: 2, D: 2, Data: []float32{0, 1, 2}}, 1, rng, "do not make"},
		{Matrix{N: 2, D: 2, Data: []float32{0, 1, float32(math.NaN()), 3}}, 1, rng, "row 1, column 0 is NaN"},
		{Matrix{N: 2, D: 1, Data: []float32{0, float32(math.Inf(1))}}, 1, rng, "row 1, column 0 is +Inf"},
		{x, 2, nil, "nil random source"},
	}
	for i, c := range cases {
		_, err := Fit(c.x, c.k, 1, c.rng)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: error %v, want one containing %q", i+1, err, c.want)
		}
	}
	if _, err := FromRows([][]float32{{1, 2}, {3}}); err == nil || !strings.Contains(err.Error(), "row 1 has 1") {
		t.Errorf("ragged rows: %v", err)
	}
	if _, err := FromRows(nil); err == nil {
		t.Error("no rows: no error")
	}
}

func TestFeatures(t *testing.T) {
	// Two images; scale 0 is 2 channels of 2x1, scale 1 is 1 channel of 1x1.
	s0 := fmap.Maps{N: 2, C: 2, H: 2, W: 1, Data: []float32{1, 3, 5, 7, 2, 4, 6, 8}}
	s1 := fmap.Maps{N: 2, C: 1, H: 1, W: 1, Data: []float32{9, 10}}
	p, err := Features([]fmap.Maps{s0, s1}, Pooled)
	if err != nil {
		t.Fatal(err)
	}
	want := Matrix{N: 2, D: 3, Data: []float32{2, 6, 9, 3, 7, 10}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("pooled %+v, want %+v", p, want)
	}
	f, err := Features([]fmap.Maps{s0, s1}, Flattened)
	if err != nil {
		t.Fatal(err)
	}
	want = Matrix{N: 2, D: 5, Data: []float32{1, 3, 5, 7, 9, 2, 4, 6, 8, 10}}
	if !reflect.DeepEqual(f, want) {
		t.Errorf("flattened %+v, want %+v", f, want)
	}
	if _, err := Features([]fmap.Maps{s0, {N: 1, C: 1, H: 1, W: 1, Data: []float32{1}}}, Pooled); err == nil {
		t.Error("scales with different N: no error")
	}
	if _, err := Features([]fmap.Maps{s0}, "max"); err == nil {
		t.Error("unknown mode: no error")
	}
	if _, err := Features(nil, Pooled); err == nil {
		t.Error("no scales: no error")
	}
}
