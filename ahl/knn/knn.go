// Package knn is the unsupervised baseline of docs/algorithm.md ("Baselines"): an image's anomaly
// score is its mean Euclidean distance to the k nearest training normals in pooled feature
// space. It ignores the labelled anomalies and the pseudo anomalies.
package knn

import (
	"fmt"
	"math"
	"sort"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// DefaultK is 5, the usual default of k-nearest-neighbour outlier detectors (PyOD's KNN uses
// n_neighbors = 5): small enough that a tight region of normals gives low scores, large enough
// that one stray normal near an anomaly does not hide it.
const DefaultK = 5

// Model is the fitted baseline: the pooled features of the training normals. All its fields
// are exported so a stage can store and reload it.
type Model struct {
	K     int       // neighbours averaged
	N, D  int       // training normals and features per image
	Train []float32 // N x D, row-major
}

// Pool returns each image's pooled feature vector, the global average pool of every scale
// (C values each, fmap.Maps.Pooled) concatenated in scale order: N rows of D values, row-major.
func Pool(scales []fmap.Maps) (n, d int, x []float32, err error) {
	if len(scales) == 0 {
		return 0, 0, nil, fmt.Errorf("knn: no feature scales")
	}
	n = scales[0].N
	pooled := make([][]float32, len(scales))
	for k, s := range scales {
		if err := s.Check(); err != nil {
			return 0, 0, nil, fmt.Errorf("knn: scale %d: %w", k, err)
		}
		if s.N != n {
			return 0, 0, nil, fmt.Errorf("knn: scale %d has %d maps, scale 0 has %d", k, s.N, n)
		}
		pooled[k] = s.Pooled()
		d += s.C
	}
	x = make([]float32, 0, n*d)
	for i := 0; i < n; i++ {
		for k, p := range pooled {
			c := scales[k].C
			x = append(x, p[i*c:(i+1)*c]...)
		}
	}
	for i, v := range x {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return 0, 0, nil, fmt.Errorf("knn: image %d, pooled feature %d is %v", i/d, i%d, v)
		}
	}
	return n, d, x, nil
}

// Fit pools the training normals' maps (one fmap.Maps per scale). k = 0 means DefaultK; it is
// an error when k is negative or exceeds the number of normals.
func Fit(normals []fmap.Maps, k int) (Model, error) {
	if k == 0 {
		k = DefaultK
	}
	n, d, x, err := Pool(normals)
	if err != nil {
		return Model{}, err
	}
	if k < 0 || k > n {
		return Model{}, fmt.Errorf("knn: k = %d neighbours with %d training normals, want 1 <= k <= %d", k, n, n)
	}
	return Model{K: k, N: n, D: d, Train: x}, nil
}

// Scores returns one anomaly score per image of the given maps (one fmap.Maps per scale, the
// same channels as the training maps): the mean distance to its K nearest training normals.
// The result depends only on the model and the input (no randomness, ties need no order).
func (m Model) Scores(scales []fmap.Maps) ([]float64, error) {
	return m.ScoresExcluding(scales, nil)
}

// ScoresExcluding is Scores with one training normal left out per image: image i's
// neighbours are drawn from every training normal but row exclude[i] of Train (none when
// exclude[i] is -1 or exclude is nil). Scoring a training normal without itself, or a pseudo
// anomaly without the normal it was made from, gives the score an unseen image would get
// (leave-one-out). With any exclusion the model needs K < N.
func (m Model) ScoresExcluding(scales []fmap.Maps, exclude []int) ([]float64, error) {
	if m.K < 1 || m.K > m.N || len(m.Train) != m.N*m.D {
		return nil, fmt.Errorf("knn: invalid model (k %d, %d normals of %d features, %d values)", m.K, m.N, m.D, len(m.Train))
	}
	n, d, x, err := Pool(scales)
	if err != nil {
		return nil, err
	}
	if d != m.D {
		return nil, fmt.Errorf("knn: images have %d pooled features, the model %d", d, m.D)
	}
	if exclude != nil && len(exclude) != n {
		return nil, fmt.Errorf("knn: %d rows to exclude for %d images", len(exclude), n)
	}
	for i, e := range exclude {
		if e < -1 || e >= m.N {
			return nil, fmt.Errorf("knn: image %d excludes training normal %d, outside 0..%d", i, e, m.N-1)
		}
		if e >= 0 && m.K >= m.N {
			return nil, fmt.Errorf("knn: k = %d neighbours from %d training normals less the one left out", m.K, m.N)
		}
	}
	out := make([]float64, n)
	dist := make([]float64, m.N)
	for i := 0; i < n; i++ {
		q := x[i*d : (i+1)*d]
		for j := range dist {
			var s float64
			for f, v := range m.Train[j*d : (j+1)*d] {
				e := float64(q[f]) - float64(v)
				s += e * e
			}
			dist[j] = math.Sqrt(s)
		}
		if exclude != nil && exclude[i] >= 0 {
			dist[exclude[i]] = math.Inf(1)
		}
		sort.Float64s(dist)
		var sum float64
		for _, v := range dist[:m.K] {
			sum += v
		}
		out[i] = sum / float64(m.K)
	}
	return out, nil
}
