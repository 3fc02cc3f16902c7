package heads

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// This file is an independent float64 reference of both heads and the deviation loss,
// written from docs/algorithm.md ("Scoring heads", "Deviation loss") with gonum: direct
// loops and sorts where the package uses im2col, Sgemm and insertion top-k. Besides the loss
// it records every discrete choice (top-k sets, signs under |.|, active ReLUs and hinges) so
// that gradient checks can tell when a finite-difference step crossed a kink.

// refTheta finds a tensor of the layout in theta (as float64).
func refTheta(specs []Spec, theta []float64, name string) []float64 {
	for _, s := range specs {
		if s.Name == name {
			return theta[s.Offset : s.Offset+specSize(s)]
		}
	}
	panic("no tensor " + name)
}

type refState struct{ sig strings.Builder }

func (r *refState) note(format string, a ...any) { fmt.Fprintf(&r.sig, format, a...) }

// topKAbs returns the mean of the k largest |z| (k = max(floor(0.1 n), 1)) by sorting.
func (r *refState) topKAbs(z []float64) float64 {
	k := max(int(math.Floor(0.1*float64(len(z)))), 1)
	type pv struct {
		p int
		a float64
	}
	v := make([]pv, len(z))
	for p, x := range z {
		v[p] = pv{p, math.Abs(x)}
	}
	sort.SliceStable(v, func(i, j int) bool { return v[i].a > v[j].a })
	var s float64
	for _, e := range v[:k] {
		s += e.a
		r.note("%d%t,", e.p, z[e.p] > 0)
	}
	return s / float64(k)
}

// conv1x1TopK is the devnet score of one C x H x W map.
func (r *refState) conv1x1TopK(w []float64, b float64, x []float32, c, hw int) float64 {
	X := mat.NewDense(c, hw, f64(x))
	z := mat.NewVecDense(hw, nil)
	z.MulVec(X.T(), mat.NewVecDense(c, append([]float64(nil), w...)))
	zs := z.RawVector().Data
	for i := range zs {
		zs[i] += b
	}
	return r.topKAbs(zs)
}

func f64(x []float32) []float64 {
	o := make([]float64, len(x))
	for i, v := range x {
		o[i] = float64(v)
	}
	return o
}

// devLoss is the deviation loss, written from the formula.
func (r *refState) devLoss(s, y []float64, p Prior) float64 {
	if len(s) == 0 {
		return 0
	}
	var l float64
	for i := range s {
		dev := (s[i] - float64(p.Mean)) / float64(p.Std)
		l += (1-y[i])*math.Abs(dev) + y[i]*math.Max(0, float64(p.Margin)-dev)
		r.note("d%t%t", dev > 0, float64(p.Margin)-dev > 0)
	}
	return l / float64(len(s))
}

// refDevNetScores is the devnet head's scale-averaged scores.
func refDevNetScores(specs []Spec, theta []float64, b Batch, r *refState) []float64 {
	w := refTheta(specs, theta, "conv.weight")
	bias := refTheta(specs, theta, "conv.bias")[0]
	out := make([]float64, b.X[0].N)
	for _, x := range b.X {
		for i := range out {
			out[i] += r.conv1x1TopK(w, bias, x.At(i), x.C, x.H*x.W) / float64(len(b.X))
		}
	}
	return out
}

func refDevNetLoss(specs []Spec, theta []float64, b Batch, p Prior, r *refState) float64 {
	s := refDevNetScores(specs, theta, b, r)
	y := make([]float64, len(s))
	for i, l := range b.Labels {
		if l != Normal {
			y[i] = 1
		}
	}
	return r.devLoss(s, y, p)
}

// refDRASubScores returns h0..h3, each averaged over scales.
func refDRASubScores(specs []Spec, theta []float64, b Batch, cp, stride int, r *refState) [4][]float64 {
	n := b.X[0].N
	var h [4][]float64
	for k := range h {
		h[k] = make([]float64, n)
	}
	fc1w := refTheta(specs, theta, "holistic.fc1.weight")
	fc1b := refTheta(specs, theta, "holistic.fc1.bias")
	fc2w := refTheta(specs, theta, "holistic.fc2.weight")
	fc2b := refTheta(specs, theta, "holistic.fc2.bias")[0]
	conv := refTheta(specs, theta, "composite.conv.weight")
	gamma := refTheta(specs, theta, "composite.gamma")
	beta := refTheta(specs, theta, "composite.beta")
	w4 := refTheta(specs, theta, "composite.out.weight")
	b4 := refTheta(specs, theta, "composite.out.bias")[0]
	S := float64(len(b.X))
	for s, x := range b.X {
		c, hw := x.C, x.H*x.W
		ref := b.Ref[s].Data
		// Holistic, with gonum matrices: hidden = ReLU(W1 * GAP + b1).
		W1 := mat.NewDense(HolisticWidth, c, append([]float64(nil), fc1w...))
		for i := 0; i < n; i++ {
			xi := f64(x.At(i))
			g := make([]float64, c)
			for ch := range g {
				g[ch] = floats.Sum(xi[ch*hw:(ch+1)*hw]) / float64(hw)
			}
			var hid mat.VecDense
			hid.MulVec(W1, mat.NewVecDense(c, g))
			o := fc2b
			for j := 0; j < HolisticWidth; j++ {
				a := hid.AtVec(j) + fc1b[j]
				r.note("%t", a > 0)
				o += fc2w[j] * math.Max(a, 0)
			}
			r.note("%t", o > 0)
			h[0][i] += math.Abs(o) / S
			h[1][i] += r.conv1x1TopK(refTheta(specs, theta, "seen.weight"), refTheta(specs, theta, "seen.bias")[0], x.At(i), c, hw) / S
			h[2][i] += r.conv1x1TopK(refTheta(specs, theta, "pseudo.weight"), refTheta(specs, theta, "pseudo.bias")[0], x.At(i), c, hw) / S
			// Composite: direct 3x3 convolution of D = Ref - F.
			ho, wo := (x.H-3)/stride+1, (x.W-3)/stride+1
			v := make([]float64, ho*wo)
			for oy := 0; oy < ho; oy++ {
				for ox := 0; ox < wo; ox++ {
					acc := b4
					for j := 0; j < cp; j++ {
						var u float64
						for ch := 0; ch < c; ch++ {
							for ky := 0; ky < 3; ky++ {
								for kx := 0; kx < 3; kx++ {
									at := ch*hw + (oy*stride+ky)*x.W + ox*stride + kx
									u += conv[((j*c+ch)*3+ky)*3+kx] * (float64(ref[at]) - xi[at])
								}
							}
						}
						a := gamma[j]*u + beta[j]
						r.note("%t", a > 0)
						acc += w4[j] * math.Max(a, 0)
					}
					v[oy*wo+ox] = acc
				}
			}
			h[3][i] += r.topKAbs(v) / S
		}
	}
	return h
}

func refDRALoss(specs []Spec, theta []float64, b Batch, cp, stride int, p Prior, r *refState) float64 {
	h := refDRASubScores(specs, theta, b, cp, stride, r)
	var loss float64
	for k := 0; k < 4; k++ {
		var s, y []float64
		for i, l := range b.Labels {
			if (k == 1 && l == Pseudo) || (k == 2 && l == Seen) {
				continue
			}
			s = append(s, h[k][i])
			t := 0.0
			if (k == 0 && l == Normal) || (k != 0 && l != Normal) {
				t = 1
			}
			y = append(y, t)
		}
		loss += r.devLoss(s, y, p)
	}
	return loss
}

// testBatch builds n images at two scales (c x h0 x h0 and c x h1 x h1) with ReLU-like
// non-negative values, its labels, and the mean reference maps of nRef extra normals.
func testBatch(seed uint64, n, c, h0, h1 int, labels []int) Batch {
	rng := newRand(seed)
	b := Batch{Labels: labels}
	for _, hh := range []int{h0, h1} {
		x := fmap.New(n, c, hh, hh)
		for i := range x.Data {
			x.Data[i] = float32(math.Max(0, rng.NormFloat64()+0.3))
		}
		// Anomalies get a brighter blob so that scores differ by label.
		for i, l := range labels {
			if l != Normal {
				xi := x.At(i)
				for ch := 0; ch < c; ch++ {
					xi[ch*hh*hh+hh+1] += 2
				}
			}
		}
		ref := fmap.New(3, c, hh, hh)
		for i := range ref.Data {
			ref.Data[i] = float32(math.Max(0, rng.NormFloat64()+0.3))
		}
		b.X = append(b.X, x)
		b.Ref = append(b.Ref, ref.Mean(nil))
	}
	return b
}
