package cdl

import (
	"math"

	"github.com/pipe-ahl/pipe/ahl/heads"
)

// Importance returns the base models' importance weights w = softmax(-r) and their errors r
// from psi's predicted scores pred (N x T, row-major; row j is sample ts.Rows[j]), following
// docs/algorithm.md, "psi and the importance weights", use:
//
//	r_i = (1 / |D'_i|) * sum_{j in D'_i} c_j * (min(s^_ji / m, 1) - y_j)^2
//
// over D'_i = all training samples except task i's support normals, with y_j = 1 for real and
// pseudo anomalies and 0 for normals, and c_j = 1 for an anomaly outside task i's support set
// and 0.5 otherwise. Dividing by the margin m puts the scores on the labels' 0..1 scale.
func Importance(pred []float64, ts Tasks, margin float64) (w, r []float64) {
	t := ts.T
	r = make([]float64, t)
	for i := 0; i < t; i++ {
		var sum float64
		n := 0
		for j, l := range ts.Labels {
			if l == heads.Normal && ts.InSupport[i][j] {
				continue
			}
			y, c := 0.0, 0.5
			if l != heads.Normal {
				y = 1
				if !ts.InSupport[i][j] {
					c = 1
				}
			}
			d := math.Min(pred[j*t+i]/margin, 1) - y
			sum += c * d * d
			n++
		}
		if n > 0 {
			r[i] = sum / float64(n)
		}
	}
	return Softmax(r, -1), r
}

// Softmax returns softmax(scale * x), computed stably.
func Softmax(x []float64, scale float64) []float64 {
	out := make([]float64, len(x))
	top := math.Inf(-1)
	for _, v := range x {
		top = math.Max(top, scale*v)
	}
	var z float64
	for i, v := range x {
		out[i] = math.Exp(scale*v - top)
		z += out[i]
	}
	for i := range out {
		out[i] /= z
	}
	return out
}

// Uniform returns T weights of 1/T.
func Uniform(t int) []float64 {
	w := make([]float64, t)
	for i := range w {
		w[i] = 1 / float64(t)
	}
	return w
}
