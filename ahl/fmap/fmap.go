// Package fmap holds frozen backbone feature maps: float32, row-major N x C x H x W, at two
// scales (docs/algorithm.md, "Feature maps at two scales").
package fmap

import "fmt"

// Maps is a batch of N feature maps of one scale, row-major N x C x H x W.
type Maps struct {
	N, C, H, W int
	Data       []float32
}

// New allocates zeroed maps.
func New(n, c, h, w int) Maps {
	return Maps{N: n, C: c, H: h, W: w, Data: make([]float32, n*c*h*w)}
}

// Size is the number of values of one map, C*H*W.
func (m Maps) Size() int { return m.C * m.H * m.W }

// At returns a view of map i (C x H x W).
func (m Maps) At(i int) []float32 {
	s := m.Size()
	return m.Data[i*s : (i+1)*s : (i+1)*s]
}

// Check reports an error when Data's length disagrees with the shape.
func (m Maps) Check() error {
	if m.N < 0 || m.C <= 0 || m.H <= 0 || m.W <= 0 || len(m.Data) != m.N*m.Size() {
		return fmt.Errorf("fmap: shape %dx%dx%dx%d does not match %d values", m.N, m.C, m.H, m.W, len(m.Data))
	}
	return nil
}

// Gather copies the maps at rows idx into a new batch.
func (m Maps) Gather(idx []int) Maps {
	out := New(len(idx), m.C, m.H, m.W)
	for j, i := range idx {
		copy(out.At(j), m.At(i))
	}
	return out
}

// Mean returns the mean map of the rows idx (all rows when idx is nil) as a batch of one.
func (m Maps) Mean(idx []int) Maps {
	out := New(1, m.C, m.H, m.W)
	if idx == nil {
		idx = make([]int, m.N)
		for i := range idx {
			idx[i] = i
		}
	}
	acc := make([]float64, m.Size())
	for _, i := range idx {
		for k, v := range m.At(i) {
			acc[k] += float64(v)
		}
	}
	for k := range acc {
		out.Data[k] = float32(acc[k] / float64(len(idx)))
	}
	return out
}

// Pooled returns the global average pool of every map, N x C, row-major.
func (m Maps) Pooled() []float32 {
	out := make([]float32, m.N*m.C)
	hw := m.H * m.W
	for i := 0; i < m.N; i++ {
		x := m.At(i)
		for c := 0; c < m.C; c++ {
			var s float32
			for _, v := range x[c*hw : (c+1)*hw] {
				s += v
			}
			out[i*m.C+c] = s / float32(hw)
		}
	}
	return out
}

// Set is the feature maps of the same N images at every scale: Scales[0] from the image at
// S x S, Scales[1] at S/2 x S/2. IDs name the images, in row order.
type Set struct {
	IDs    []string
	Scales []Maps
}

// Len is the number of images.
func (s Set) Len() int { return len(s.IDs) }

// Gather returns the rows idx of every scale.
func (s Set) Gather(idx []int) Set {
	out := Set{IDs: make([]string, len(idx)), Scales: make([]Maps, len(s.Scales))}
	for j, i := range idx {
		out.IDs[j] = s.IDs[i]
	}
	for k, m := range s.Scales {
		out.Scales[k] = m.Gather(idx)
	}
	return out
}

// Append concatenates sets with equal scale shapes.
func Append(sets ...Set) (Set, error) {
	var out Set
	for _, s := range sets {
		if len(s.IDs) == 0 {
			continue
		}
		if out.Scales == nil {
			out.Scales = make([]Maps, len(s.Scales))
			for k, m := range s.Scales {
				out.Scales[k] = Maps{C: m.C, H: m.H, W: m.W}
			}
		}
		if len(s.Scales) != len(out.Scales) {
			return Set{}, fmt.Errorf("fmap: appending sets with %d and %d scales", len(out.Scales), len(s.Scales))
		}
		for k, m := range s.Scales {
			o := &out.Scales[k]
			if m.C != o.C || m.H != o.H || m.W != o.W {
				return Set{}, fmt.Errorf("fmap: scale %d shapes differ: %dx%dx%d vs %dx%dx%d", k, o.C, o.H, o.W, m.C, m.H, m.W)
			}
			o.N += m.N
			o.Data = append(o.Data, m.Data...)
		}
		out.IDs = append(out.IDs, s.IDs...)
	}
	return out, nil
}
