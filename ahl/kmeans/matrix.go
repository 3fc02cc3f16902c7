// Package kmeans clusters the training normals' features for HADG (docs/algorithm.md, "k-means
// clusters"): k-means++ seeding, Lloyd iterations to convergence, several seeded restarts
// keeping the lowest inertia, and clusters too small to form a task dropped and reported.
package kmeans

import (
	"fmt"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// Matrix is N points of D dimensions, row-major: point i is Data[i*D : (i+1)*D].
type Matrix struct {
	N, D int
	Data []float32
}

// Row returns a view of point i.
func (m Matrix) Row(i int) []float32 { return m.Data[i*m.D : (i+1)*m.D : (i+1)*m.D] }

// FromRows copies equally long rows into a Matrix.
func FromRows(rows [][]float32) (Matrix, error) {
	if len(rows) == 0 {
		return Matrix{}, fmt.Errorf("kmeans: no rows")
	}
	d := len(rows[0])
	m := Matrix{N: len(rows), D: d, Data: make([]float32, 0, len(rows)*d)}
	for i, r := range rows {
		if len(r) != d {
			return Matrix{}, fmt.Errorf("kmeans: row %d has %d values, row 0 has %d", i, len(r), d)
		}
		m.Data = append(m.Data, r...)
	}
	return m, nil
}

// Mode says how an image's feature maps become one point.
type Mode string

// Modes of Features.
const (
	// Pooled: the global average pool of each scale (C values per scale). Cheap, and the
	// clusters follow the images' overall appearance.
	Pooled Mode = "pooled"
	// Flattened: each scale's whole C x H x W map. Position-sensitive, and D is large
	// (512*14*14 + 512*7*7 = 125,440 at the paper's sizes), so k-means is ~100x slower.
	Flattened Mode = "flattened"
)

// Features builds the points of N images from their feature maps at every scale (all with the
// same N): for each image, per scale in order, its pooled (fmap.Maps.Pooled) or flattened map,
// concatenated into one row.
func Features(scales []fmap.Maps, mode Mode) (Matrix, error) {
	if len(scales) == 0 {
		return Matrix{}, fmt.Errorf("kmeans: no feature scales")
	}
	if mode != Pooled && mode != Flattened {
		return Matrix{}, fmt.Errorf("kmeans: feature mode %q, want %q or %q", mode, Pooled, Flattened)
	}
	n := scales[0].N
	parts := make([][]float32, len(scales))
	widths := make([]int, len(scales))
	d := 0
	for k, s := range scales {
		if err := s.Check(); err != nil {
			return Matrix{}, fmt.Errorf("kmeans: scale %d: %w", k, err)
		}
		if s.N != n {
			return Matrix{}, fmt.Errorf("kmeans: scale %d has %d maps, scale 0 has %d", k, s.N, n)
		}
		if mode == Pooled {
			parts[k], widths[k] = s.Pooled(), s.C
		} else {
			parts[k], widths[k] = s.Data, s.Size()
		}
		d += widths[k]
	}
	m := Matrix{N: n, D: d, Data: make([]float32, 0, n*d)}
	for i := 0; i < n; i++ {
		for k, p := range parts {
			m.Data = append(m.Data, p[i*widths[k]:(i+1)*widths[k]]...)
		}
	}
	return m, nil
}
