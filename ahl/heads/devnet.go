package heads

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	G "gorgonia.org/gorgonia"

	"github.com/pipe-ahl/pipe/ahl/sgemm"
)

// DevNet is the devnet head (docs/algorithm.md, "Scoring heads"). Per scale, for F (N, C, H, W):
//
//	z = conv1x1(F)                        (N, H*W)  C -> 1, with bias
//	s = mean of the top-k |z| per image   (N)       k = max(floor(0.1 H*W), 1)
//
// One set of weights serves every scale (as in the AHL reference code, where one head module
// scores the maps of both image sizes) and the image's score is the mean of its per-scale
// scores. It trains with the deviation loss, pseudo anomalies counted as anomalies.
//
// The file holds the whole head: its registration, layout, forward and backward passes, and
// its gorgonia reference graph.
type DevNet struct {
	c     int
	specs []Spec
	w, b  int // offsets of conv.weight (C) and conv.bias (1)
}

func init() {
	Register(Kind{Name: "devnet", Build: func(cfg Config) (Head, error) { return NewDevNet(cfg.Channels) }})
}

var (
	_ Head          = (*DevNet)(nil)
	_ Checker       = (*DevNet)(nil)
	_ RefFreeScorer = (*DevNet)(nil)
)

// NewDevNet returns a devnet head for maps with c channels (the same at every scale: both
// scales come from one backbone).
func NewDevNet(c int) (*DevNet, error) {
	if c <= 0 {
		return nil, fmt.Errorf("heads devnet: channels = %d, want > 0", c)
	}
	var l layout
	h := &DevNet{c: c}
	h.w = l.add("conv.weight", 1, c, 1, 1)
	h.b = l.add("conv.bias", 1)
	h.specs = l.specs
	return h, nil
}

// Name is "devnet".
func (h *DevNet) Name() string { return "devnet" }

// Layout lists conv.weight (1 x C x 1 x 1) and conv.bias (1).
func (h *DevNet) Layout() []Spec { return slices.Clone(h.specs) }

// Init returns Kaiming-normal weights (fan-in C) and a zero bias.
func (h *DevNet) Init(rng *rand.Rand) []float32 { return initLayout(h.specs, rng) }

// CheckMaps reports a scale of b whose channel count is not the head's.
func (h *DevNet) CheckMaps(b Batch) error { return checkChannels(h.Name(), h.c, b) }

// devnetScale is one scale's forward pass, kept for the backward pass.
type devnetScale struct {
	b     Batch // the batch's images are b.Map(s, i)
	s     int
	n     int // images
	hw, k int
	z     []float32 // N x HW conv outputs
	sel   []int     // N x k top-k positions
	score []float32 // N
	// xsel, when not nil, holds x[c, p] at the top-k positions p of every map (N x C x k, in
	// sel's order), so that the backward pass need not read the maps again.
	xsel []float32
}

// xselPool recycles LossGrad's buffers of top-k map values (devnetScale.xsel, 2.3 MB for a
// batch of 48 maps of 512 x 14 x 14 + 512 x 7 x 7) between calls, so that training allocates
// little per step.
var xselPool sync.Pool

// projectScale is scale s's forward pass: z = w . x + bias at every position of every map x
// (C, H, W) of b at that scale, w (C), into z (N, H*W), and the top-k scores (N). When keep
// is not nil, it also copies each map's values at its top-k positions into keep (N x C x k,
// as xsel) while the map is in cache, for the backward pass.
func projectScale(w []float32, bias float32, b Batch, s int, keep []float32) devnetScale {
	x, n := b.X[s], b.Len()
	hw := x.H * x.W
	k := topK(hw)
	f := devnetScale{b: b, s: s, n: n, hw: hw, k: k, z: make([]float32, n*hw), sel: make([]int, n*k), score: make([]float32, n)}
	if keep != nil {
		f.xsel = keep[:n*len(w)*k]
	}
	for i := 0; i < n; i++ {
		z := f.z[i*hw : (i+1)*hw]
		xi := b.Map(s, i)
		project(w, bias, xi, z)
		sel := f.sel[i*k : (i+1)*k]
		f.score[i] = topKMeanAbs(z, sel)
		if keep != nil {
			xs := f.xsel[i*len(w)*k : (i+1)*len(w)*k]
			for c := range w {
				row, d := xi[c*hw:(c+1)*hw], xs[c*k:(c+1)*k]
				for j, p := range sel {
					d[j] = row[p]
				}
			}
		}
	}
	return f
}

// backward adds to dw (C) and returns the bias gradient of sum_i ds_i * score_i, ds (N).
// Only the top-k positions of each map carry gradient: d score / d z_p = sign(z_p) / k
// there, and d z_p / d w_c = x[c, p].
func (f devnetScale) backward(ds []float32, dw []float32) float32 {
	var db float32
	dz := make([]float32, f.k)
	for i := 0; i < f.n; i++ {
		if ds[i] == 0 {
			continue
		}
		g := ds[i] / float32(f.k)
		z := f.z[i*f.hw : (i+1)*f.hw]
		sel := f.sel[i*f.k : (i+1)*f.k]
		for j, p := range sel {
			dz[j] = g * sign32(z[p])
			db += dz[j]
		}
		if f.xsel != nil {
			xs := f.xsel[i*len(dw)*f.k : (i+1)*len(dw)*f.k]
			for c := range dw {
				var acc float32
				for j, v := range xs[c*f.k : (c+1)*f.k] {
					acc += dz[j] * v
				}
				dw[c] += acc
			}
			continue
		}
		xi := f.b.Map(f.s, i)
		for c := range dw {
			row := xi[c*f.hw : (c+1)*f.hw]
			var acc float32
			for j, p := range sel {
				acc += dz[j] * row[p]
			}
			dw[c] += acc
		}
	}
	return db
}

// Scores returns the mean over scales of each image's top-k score.
func (h *DevNet) Scores(theta []float32, b Batch) []float32 {
	mustCheck(h, b, false)
	h.checkTheta(theta)
	out := make([]float32, b.Len())
	for s := range b.X {
		f := projectScale(theta[h.w:h.w+h.c], theta[h.b], b, s, nil)
		for i, s := range f.score {
			out[i] += s
		}
	}
	inv := 1 / float32(len(b.X))
	for i := range out {
		out[i] = out[i]*inv + b.OffsetAt(i)
	}
	return out
}

// TakesOffsets marks devnet as a heads.OffsetTaker: its score is the top-k mean plus the
// image's offset, whose gradient with respect to theta is zero.
func (h *DevNet) TakesOffsets() {}

// LossGrad returns the deviation loss of the scale-averaged scores, with targets
// y = [label != 0] (pseudo anomalies count as anomalies), and its gradient.
func (h *DevNet) LossGrad(theta []float32, b Batch, prior Prior, grad []float32) float32 {
	return h.LossGradScores(theta, b, prior, grad, nil)
}

// LossGradScores is LossGrad that also writes each image's score into scores (len b.Len())
// when scores is not nil; devnet's scores do not depend on b.Ref.
func (h *DevNet) LossGradScores(theta []float32, b Batch, prior Prior, grad, scores []float32) float32 {
	mustCheck(h, b, true)
	h.checkTheta(theta)
	if len(grad) != len(theta) {
		panic(fmt.Sprintf("heads devnet: grad has %d values, theta %d", len(grad), len(theta)))
	}
	n := b.Len()
	if scores != nil && len(scores) != n {
		panic(fmt.Sprintf("heads devnet: scores has %d values for %d images", len(scores), n))
	}
	fs := make([]devnetScale, len(b.X))
	score := make([]float32, n)
	inv := 1 / float32(len(b.X))
	size := 0
	for _, x := range b.X {
		size += n * h.c * topK(x.H*x.W)
	}
	xsel := getBuf(&xselPool, size)
	defer putBuf(&xselPool, xsel)
	for s, x := range b.X {
		fs[s] = projectScale(theta[h.w:h.w+h.c], theta[h.b], b, s, xsel)
		xsel = xsel[n*h.c*topK(x.H*x.W):]
		for i, v := range fs[s].score {
			score[i] += v
		}
	}
	y := make([]float32, n)
	for i := range score {
		score[i] = score[i]*inv + b.OffsetAt(i)
		if b.Labels[i] != Normal {
			y[i] = 1
		}
	}
	copy(scores, score)
	ds := make([]float32, n)
	loss := DeviationLoss(score, y, prior, ds)
	for i := range ds {
		ds[i] *= inv
	}
	clear(grad)
	for _, f := range fs {
		grad[h.b] += f.backward(ds, grad[h.w:h.w+h.c])
	}
	return loss
}

func (h *DevNet) checkTheta(theta []float32) {
	if len(theta) != h.b+1 {
		panic(fmt.Sprintf("heads devnet: theta has %d values, the layout %d", len(theta), h.b+1))
	}
}

// project computes z_p = bias + sum_c w_c x[c, p] for the map x (C, H*W) into z (H*W): a 1x1
// convolution.
func project(w []float32, bias float32, x []float32, z []float32) {
	hw := len(z)
	for p := range z {
		z[p] = bias
	}
	for c, wc := range w {
		axpy(wc, x[c*hw:(c+1)*hw], z)
	}
}

// axpy computes y += a * x.
func axpy(a float32, x, y []float32) { sgemm.Axpy(a, x, y) }

// gorgoniaLoss is the devnet loss as a gorgonia graph (see GorgoniaLossGrad): the deviation
// loss of the scale-averaged top-k scores, targets y = [label != 0].
func (h *DevNet) gorgoniaLoss(gb *gorgoniaBuilder, b Batch, p Prior) *G.Node {
	w := gb.param("conv.weight", 1, h.c, 1, 1)
	bias := gb.param("conv.bias")
	var per []*G.Node
	for _, x := range b.X {
		per = append(per, gb.conv1x1TopK(x, w, bias))
	}
	n := b.X[0].N
	y, all := make([]float32, n), make([]bool, n)
	for i, l := range b.Labels {
		all[i] = true
		if l != Normal {
			y[i] = 1
		}
	}
	return gb.deviation(gb.meanOverScales(per), y, all, p)
}
