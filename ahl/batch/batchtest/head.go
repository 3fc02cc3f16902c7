// Package batchtest holds what the training packages' tests share: a small linear scoring
// head and a synthetic open-set data set with HADG-style tasks.
package batchtest

import (
	"math"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/heads"
)

// Linear is a small heads.Head for tests: per scale s, z_s = w_s . GAP(F_s) + b_s, and the
// score is the mean over scales of |z_s|, trained with the deviation loss (pseudo anomalies
// count as anomalies). Its weights are S x C then S biases.
type Linear struct {
	C, S int
}

// Name is "linear".
func (h Linear) Name() string { return "linear" }

// Layout lists w (S x C) and b (S).
func (h Linear) Layout() []heads.Spec {
	return []heads.Spec{{Name: "w", Shape: []int{h.S, h.C}}, {Name: "b", Shape: []int{h.S}, Offset: h.S * h.C}}
}

// Init draws w ~ N(0, 2/C) (Kaiming, fan-in C) and zero biases.
func (h Linear) Init(rng *rand.Rand) []float32 {
	th := make([]float32, h.S*h.C+h.S)
	sd := math.Sqrt(2 / float64(h.C))
	for k := 0; k < h.S*h.C; k++ {
		th[k] = float32(rng.NormFloat64() * sd)
	}
	return th
}

func (h Linear) z(theta []float32, b heads.Batch, s, i int) (float32, []float32) {
	m := b.X[s]
	x := b.Map(s, i)
	hw := m.H * m.W
	z := theta[h.S*h.C+s]
	w := theta[s*h.C : (s+1)*h.C]
	for c := 0; c < h.C; c++ {
		var g float32
		for _, v := range x[c*hw : (c+1)*hw] {
			g += v
		}
		z += w[c] * g / float32(hw)
	}
	return z, x
}

// Scores returns the mean over scales of |z_s|.
func (h Linear) Scores(theta []float32, b heads.Batch) []float32 {
	n := b.Len()
	out := make([]float32, n)
	for i := 0; i < n; i++ {
		for s := 0; s < h.S; s++ {
			z, _ := h.z(theta, b, s, i)
			out[i] += float32(math.Abs(float64(z))) / float32(h.S)
		}
	}
	return out
}

// LossGrad returns the deviation loss of the batch and its gradient.
func (h Linear) LossGrad(theta []float32, b heads.Batch, prior heads.Prior, grad []float32) float32 {
	n := b.Len()
	s := h.Scores(theta, b)
	y := make([]float32, n)
	for i, l := range b.Labels {
		if l != heads.Normal {
			y[i] = 1
		}
	}
	ds := make([]float32, n)
	loss := heads.DeviationLoss(s, y, prior, ds)
	clear(grad)
	for i := 0; i < n; i++ {
		for sc := 0; sc < h.S; sc++ {
			z, x := h.z(theta, b, sc, i)
			g := ds[i] / float32(h.S)
			if z < 0 {
				g = -g
			} else if z == 0 {
				g = 0
			}
			m := b.X[sc]
			hw := m.H * m.W
			grad[h.S*h.C+sc] += g
			for c := 0; c < h.C; c++ {
				var p float32
				for _, v := range x[c*hw : (c+1)*hw] {
					p += v
				}
				grad[sc*h.C+c] += g * p / float32(hw)
			}
		}
	}
	return loss
}
