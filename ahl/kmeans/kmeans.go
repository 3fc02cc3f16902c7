package kmeans

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Defaults of Config.
const (
	// DefaultRestarts is scikit-learn's classic n_init: ten k-means++ starts make a poor local
	// optimum unlikely at the cost of ten short runs (k = 3 on a few hundred normals).
	DefaultRestarts = 10
	// DefaultMaxIter is scikit-learn's max_iter; Lloyd usually converges in well under 50.
	DefaultMaxIter = 300
	// DefaultMinSize is the smallest cluster HADG keeps (docs/algorithm.md, "k-means clusters"): a
	// cluster of one or two normals makes a task with hardly any normals on one side.
	DefaultMinSize = 3
)

// Config sets a k-means run. Zero fields take the defaults above (K has none).
type Config struct {
	K        int // number of clusters, 1 <= K <= N
	Restarts int // k-means++ starts; the run with the lowest inertia wins
	MaxIter  int // Lloyd iterations per start at most
	MinSize  int // clusters with fewer members are dropped from the result
}

// Dropped is a cluster of the winning run with fewer than MinSize members.
type Dropped struct {
	Size    int
	Members []int // row indices, ascending
}

// Result is the best of the restarts.
//
// Cluster ids are canonical: the kept clusters are numbered 0..K'-1 in the order of their
// lowest member row, so the same partition always gets the same labels whatever the internal
// numbering of the run that found it. Rows of dropped clusters get label -1 (HADG uses them in
// its holistic task only).
type Result struct {
	Labels     []int  // per row: kept cluster id, or -1 when its cluster was dropped
	Centroids  Matrix // one row per kept cluster (the mean of its members)
	Sizes      []int  // members per kept cluster
	Dropped    []Dropped
	Inertia    float64 // sum of squared distances of every row to its centroid (dropped ones included)
	Iterations int     // Lloyd iterations of the winning start
	Restart    int     // index of the winning start
	Converged  bool    // whether the winning start stopped because no row changed cluster
}

// Fit runs k-means with k clusters and the given number of restarts (0: DefaultRestarts), the
// default iteration limit and minimum cluster size. See FitConfig.
func Fit(x Matrix, k, restarts int, rng *rand.Rand) (Result, error) {
	return FitConfig(x, Config{K: k, Restarts: restarts}, rng)
}

// FitConfig clusters the rows of x. Every start seeds its centroids with k-means++ (the first
// uniformly, each next one with probability proportional to its squared distance to the
// nearest chosen centroid) and runs Lloyd's iterations (assign each row to its nearest
// centroid, ties to the lower id; move each centroid to its members' mean; a centroid left
// without members takes the row farthest from its own centroid) until no row changes cluster
// or MaxIter is reached. Starts run one after another on rng, so a seeded rng gives the same
// result every time. The start with the lowest inertia wins (the first on ties). Errors: empty
// input, a NaN or infinite value, K < 1 or K > N, negative settings, a nil rng.
func FitConfig(x Matrix, cfg Config, rng *rand.Rand) (Result, error) {
	if err := validate(x, &cfg, rng); err != nil {
		return Result{}, err
	}
	var best run
	for r := 0; r < cfg.Restarts; r++ {
		cur := lloyd(x, seedPlusPlus(x, cfg.K, rng), cfg.MaxIter)
		if r == 0 || cur.inertia < best.inertia {
			best, best.restart = cur, r
		}
	}
	return finish(x, best, cfg.MinSize), nil
}

func validate(x Matrix, cfg *Config, rng *rand.Rand) error {
	if x.N <= 0 || x.D <= 0 {
		return fmt.Errorf("kmeans: empty input (%d rows of %d values)", x.N, x.D)
	}
	if len(x.Data) != x.N*x.D {
		return fmt.Errorf("kmeans: %d values do not make %d rows of %d", len(x.Data), x.N, x.D)
	}
	for i, v := range x.Data {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("kmeans: row %d, column %d is %v", i/x.D, i%x.D, v)
		}
	}
	if cfg.K < 1 || cfg.K > x.N {
		return fmt.Errorf("kmeans: k = %d clusters for %d rows, want 1 <= k <= %d", cfg.K, x.N, x.N)
	}
	if cfg.Restarts < 0 || cfg.MaxIter < 0 || cfg.MinSize < 0 {
		return fmt.Errorf("kmeans: negative setting in %+v", *cfg)
	}
	if cfg.Restarts == 0 {
		cfg.Restarts = DefaultRestarts
	}
	if cfg.MaxIter == 0 {
		cfg.MaxIter = DefaultMaxIter
	}
	if cfg.MinSize == 0 {
		cfg.MinSize = DefaultMinSize
	}
	if rng == nil {
		return fmt.Errorf("kmeans: nil random source")
	}
	return nil
}

// dist2 is the squared Euclidean distance between a row and a centroid, summed in float64.
func dist2(row []float32, c []float64) float64 {
	var s float64
	for j, v := range row {
		d := float64(v) - c[j]
		s += d * d
	}
	return s
}

// seedPlusPlus picks k initial centroids by k-means++ (Arthur and Vassilvitskii, 2007).
func seedPlusPlus(x Matrix, k int, rng *rand.Rand) [][]float64 {
	centroids := make([][]float64, 0, k)
	add := func(i int) {
		c := make([]float64, x.D)
		for j, v := range x.Row(i) {
			c[j] = float64(v)
		}
		centroids = append(centroids, c)
	}
	chosen := map[int]bool{}
	first := rng.IntN(x.N)
	add(first)
	chosen[first] = true
	d2 := make([]float64, x.N)
	for i := range d2 {
		d2[i] = dist2(x.Row(i), centroids[0])
	}
	for len(centroids) < k {
		var total float64
		for _, d := range d2 {
			total += d
		}
		next := -1
		if total > 0 {
			u := rng.Float64() * total
			for i, d := range d2 {
				if d == 0 {
					continue
				}
				next = i
				if u < d {
					break
				}
				u -= d
			}
		} else {
			// Fewer distinct rows than k: every row sits on a centroid. Take an unchosen row
			// uniformly; its cluster will be empty and Lloyd's empty-cluster rule applies.
			free := make([]int, 0, x.N)
			for i := 0; i < x.N; i++ {
				if !chosen[i] {
					free = append(free, i)
				}
			}
			next = free[rng.IntN(len(free))]
		}
		add(next)
		chosen[next] = true
		c := centroids[len(centroids)-1]
		for i := range d2 {
			if d := dist2(x.Row(i), c); d < d2[i] {
				d2[i] = d
			}
		}
	}
	return centroids
}

// run is one start's outcome.
type run struct {
	labels     []int
	centroids  [][]float64
	inertia    float64
	iterations int
	converged  bool
	restart    int
}

// lloyd iterates from the given centroids.
func lloyd(x Matrix, centroids [][]float64, maxIter int) run {
	k := len(centroids)
	labels := make([]int, x.N)
	for i := range labels {
		labels[i] = -1
	}
	d2 := make([]float64, x.N)
	counts := make([]int, k)
	r := run{centroids: centroids}
	for r.iterations < maxIter {
		r.iterations++
		changed := false
		for i := 0; i < x.N; i++ {
			row := x.Row(i)
			bestC, bestD := 0, math.Inf(1)
			for c, cen := range centroids {
				if d := dist2(row, cen); d < bestD {
					bestC, bestD = c, d
				}
			}
			if labels[i] != bestC {
				labels[i], changed = bestC, true
			}
			d2[i] = bestD
		}
		// A centroid without members takes the row farthest from its centroid (from a
		// cluster with at least two members, so no cluster empties in turn).
		for c := range counts {
			counts[c] = 0
		}
		for _, l := range labels {
			counts[l]++
		}
		for c := range counts {
			if counts[c] > 0 {
				continue
			}
			far := -1
			for i, d := range d2 {
				if counts[labels[i]] > 1 && (far < 0 || d > d2[far]) {
					far = i
				}
			}
			counts[labels[far]]--
			labels[far], d2[far], counts[c], changed = c, 0, 1, true
		}
		if !changed {
			r.converged = true
			break
		}
		updateCentroids(x, labels, centroids, counts)
	}
	r.labels = labels
	for i := 0; i < x.N; i++ {
		r.inertia += dist2(x.Row(i), centroids[labels[i]])
	}
	return r
}

// updateCentroids moves each centroid to the mean of its members.
func updateCentroids(x Matrix, labels []int, centroids [][]float64, counts []int) {
	for _, c := range centroids {
		clear(c)
	}
	for i, l := range labels {
		c := centroids[l]
		for j, v := range x.Row(i) {
			c[j] += float64(v)
		}
	}
	for l, c := range centroids {
		inv := 1 / float64(counts[l])
		for j := range c {
			c[j] *= inv
		}
	}
}

// finish drops small clusters and numbers the kept ones canonically.
func finish(x Matrix, r run, minSize int) Result {
	k := len(r.centroids)
	members := make([][]int, k)
	for i, l := range r.labels {
		members[l] = append(members[l], i)
	}
	// Order the clusters by their lowest member row (Lloyd leaves no cluster empty).
	order := make([]int, 0, k)
	for i := range r.labels {
		l := r.labels[i]
		if members[l] != nil && members[l][0] == i {
			order = append(order, l)
		}
	}
	res := Result{
		Labels:     make([]int, x.N),
		Centroids:  Matrix{D: x.D},
		Inertia:    r.inertia,
		Iterations: r.iterations,
		Restart:    r.restart,
		Converged:  r.converged,
	}
	for _, old := range order {
		m := members[old]
		if len(m) < minSize {
			res.Dropped = append(res.Dropped, Dropped{Size: len(m), Members: m})
			for _, i := range m {
				res.Labels[i] = -1
			}
			continue
		}
		id := len(res.Sizes)
		for _, i := range m {
			res.Labels[i] = id
		}
		res.Sizes = append(res.Sizes, len(m))
		for _, v := range r.centroids[old] {
			res.Centroids.Data = append(res.Centroids.Data, float32(v))
		}
		res.Centroids.N++
	}
	return res
}
