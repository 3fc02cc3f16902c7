package heads

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/sgemm"
)

// HolisticWidth is the hidden width of dra's holistic sub-head, FC(C -> 256).
const HolisticWidth = 256

// compositeKernel is the composite sub-head's convolution size (3 x 3, no padding).
const compositeKernel = 3

// scoreChunk bounds how many images Scores runs at once, so that scoring a whole split keeps
// the composite sub-head's patch matrix small (about 0.37 MB per image at 512 x 14 x 14).
const scoreChunk = 64

// DRA is the dra head (docs/algorithm.md, "Scoring heads"): four sub-heads and
// score = -h0 + h1 + h2 + h3.
// Per scale, for F (N, C, H, W) and the reference map Ref (1, C, H, W):
//
//	h0 holistic:  g = GAP(F) (N, C) -> FC(C -> 256) -> ReLU (N, 256) -> FC(256 -> 1) (N) -> |.|,
//	              a normality score;
//	h1 seen, h2 pseudo: each like the devnet head, with its own weights: (N, H*W) -> (N);
//	h3 composite: D = mean(Ref) - F (N, C, H, W) -> conv3x3 (C -> C', stride s, no padding,
//	              no bias: the affine shift beta plays that role) (N, C', Ho, Wo) ->
//	              gamma * . + beta per channel -> ReLU -> conv1x1 (C' -> 1, with bias)
//	              (N, Ho*Wo) -> top-k mean of |.| (N).
//
// As for DevNet, one set of weights serves every scale and each sub-head's score is the mean
// of its per-scale scores; the loss is the sum of the four deviation losses on those means.
//
// The file holds the whole head: its registration (options composite_width and
// composite_stride), layout, forward and backward passes, and its gorgonia reference graph.
type DRA struct {
	c, cp, stride int
	specs         []Spec
	// offsets into theta
	fc1w, fc1b, fc2w, fc2b, seenW, seenB, pseudoW, pseudoB, convW, gamma, beta, outW, outB int
}

// DRA's options (Config.Options): the composite sub-head's width C' and stride.
const (
	OptCompositeWidth  = "composite_width"
	OptCompositeStride = "composite_stride"
)

func init() {
	Register(Kind{
		Name: "dra",
		Options: []Option{
			{Name: OptCompositeWidth, Default: 512, Min: 1},
			{Name: OptCompositeStride, Default: 3, Min: 1},
		},
		Build: func(cfg Config) (Head, error) {
			return NewDRA(cfg.Channels, cfg.Options[OptCompositeWidth], cfg.Options[OptCompositeStride])
		},
	})
}

var (
	_ Head    = (*DRA)(nil)
	_ Checker = (*DRA)(nil)
)

// NewDRA returns a dra head for maps with c channels whose composite sub-head has
// compositeWidth (C') channels and convolution stride compositeStride (3 in the AHL
// reference code, 1 in DRA's own code, which this head runs without padding either way).
func NewDRA(c, compositeWidth, compositeStride int) (*DRA, error) {
	if c <= 0 {
		return nil, fmt.Errorf("heads dra: channels = %d, want > 0", c)
	}
	if compositeWidth <= 0 {
		return nil, fmt.Errorf("heads dra: composite_width = %d, want > 0", compositeWidth)
	}
	if compositeStride <= 0 {
		return nil, fmt.Errorf("heads dra: composite_stride = %d, want > 0", compositeStride)
	}
	h := &DRA{c: c, cp: compositeWidth, stride: compositeStride}
	var l layout
	h.fc1w = l.add("holistic.fc1.weight", HolisticWidth, c)
	h.fc1b = l.add("holistic.fc1.bias", HolisticWidth)
	h.fc2w = l.add("holistic.fc2.weight", 1, HolisticWidth)
	h.fc2b = l.add("holistic.fc2.bias", 1)
	h.seenW = l.add("seen.weight", 1, c, 1, 1)
	h.seenB = l.add("seen.bias", 1)
	h.pseudoW = l.add("pseudo.weight", 1, c, 1, 1)
	h.pseudoB = l.add("pseudo.bias", 1)
	h.convW = l.add("composite.conv.weight", compositeWidth, c, compositeKernel, compositeKernel)
	h.gamma = l.add("composite.gamma", compositeWidth)
	h.beta = l.add("composite.beta", compositeWidth)
	h.outW = l.add("composite.out.weight", 1, compositeWidth, 1, 1)
	h.outB = l.add("composite.out.bias", 1)
	h.specs = l.specs
	return h, nil
}

// Name is "dra".
func (h *DRA) Name() string { return "dra" }

// Layout lists the holistic, seen, pseudo and composite sub-heads' tensors, in that order.
func (h *DRA) Layout() []Spec { return slices.Clone(h.specs) }

// Init returns Kaiming-normal weights, zero biases and betas, and gammas of 1.
func (h *DRA) Init(rng *rand.Rand) []float32 { return initLayout(h.specs, rng) }

func (h *DRA) size() int { return h.outB + 1 }

func (h *DRA) checkTheta(theta []float32) {
	if len(theta) != h.size() {
		panic(fmt.Sprintf("heads dra: theta has %d values, the layout %d", len(theta), h.size()))
	}
}

// CheckMaps reports a scale of b whose channel count is not the head's, a missing or
// misshapen reference map, or a scale smaller than the composite kernel.
func (h *DRA) CheckMaps(b Batch) error {
	if err := checkChannels(h.Name(), h.c, b); err != nil {
		return err
	}
	if len(b.Ref) != len(b.X) {
		return fmt.Errorf("heads dra: batch has %d reference maps for %d scales", len(b.Ref), len(b.X))
	}
	for s, r := range b.Ref {
		if err := r.Check(); err != nil {
			return fmt.Errorf("heads dra: batch Ref[%d]: %w", s, err)
		}
		x := b.X[s]
		if r.N != 1 || r.C != x.C || r.H != x.H || r.W != x.W {
			return fmt.Errorf("heads dra: batch Ref[%d] is %dx%dx%dx%d, want 1x%dx%dx%d", s, r.N, r.C, r.H, r.W, x.C, x.H, x.W)
		}
		if x.H < compositeKernel || x.W < compositeKernel {
			return fmt.Errorf("heads dra: batch X[%d] is %dx%d, smaller than the composite 3x3 kernel", s, x.H, x.W)
		}
	}
	return nil
}

// Sub-head indices.
const (
	subHolistic = iota
	subSeen
	subPseudo
	subComposite
	nSub
)

// draScale is one scale's forward state, kept for the backward pass.
type draScale struct {
	b      Batch // the batch's images are b.Map(s, i)
	s      int
	ref    fmap.Maps
	hw, k  int
	gap    []float32 // N x C global average pool
	pre0   []float32 // N x 256 holistic hidden pre-activations (bias added)
	o      []float32 // N holistic outputs before |.|
	z1, z2 []float32 // N x HW seen and pseudo 1x1 conv outputs
	sel1   []int     // N x k top-k positions of |z1|
	sel2   []int     // N x k top-k positions of |z2|
	ho, wo int       // composite output size
	kc     int       // composite top-k
	row0   int       // first patch row of this scale in the batch's patch matrix
	v      []float32 // N x ho*wo composite outputs before |.|
	sel3   []int     // N x kc top-k positions of |v|
	h      [nSub][]float32
}

// draPass is a batch's forward state.
type draPass struct {
	scales  []draScale
	patches []float32 // R x 9C, rows: scale, image, output position
	out     []float32 // R x C' composite convolution outputs
	rows    int
	score   [nSub][]float32 // per sub-head, mean over scales
	// slab holds the scales' gap, z1, z2 and pre0 and the backward pass's dpre, handed out
	// in turn by take; it comes from slabPool and goes back with release.
	slab, free []float32
}

// take returns the next n values of p's slab (not cleared).
func (p *draPass) take(n int) []float32 {
	v := p.free[:n:n]
	p.free = p.free[n:]
	return v
}

// Pools recycle the large buffers between calls, one pool per use so that a buffer comes
// back at the size it is needed at.
var patchPool, outPool, selPool, dOutPool, slabPool sync.Pool

func getBuf(p *sync.Pool, n int) []float32 {
	if b, ok := p.Get().(*[]float32); ok && cap(*b) >= n {
		return (*b)[:n]
	}
	return make([]float32, n)
}

func putBuf(p *sync.Pool, b []float32) { p.Put(&b) }

// forward runs the four sub-heads on every scale of b. The composite convolution of every
// scale runs as one product over the batch's patch matrix: patches (R, 9C), rows (scale,
// image, output position), times W^T (9C, C') into out (R, C').
func (h *DRA) forward(theta []float32, b Batch) *draPass {
	n := b.Len()
	p := &draPass{scales: make([]draScale, len(b.X))}
	rows := 0
	for s, x := range b.X {
		f := &p.scales[s]
		f.b, f.s, f.ref = b, s, b.Ref[s]
		f.hw = x.H * x.W
		f.k = topK(f.hw)
		f.ho = (x.H-compositeKernel)/h.stride + 1
		f.wo = (x.W-compositeKernel)/h.stride + 1
		f.kc = topK(f.ho * f.wo)
		f.row0 = rows
		rows += n * f.ho * f.wo
	}
	p.rows = rows
	slab := n * HolisticWidth // dpre
	for s := range p.scales {
		slab += n * (h.c + 2*p.scales[s].hw + HolisticWidth)
	}
	p.slab = getBuf(&slabPool, slab)
	p.free = p.slab
	kdim := h.c * compositeKernel * compositeKernel
	p.patches = getBuf(&patchPool, rows*kdim)
	p.out = getBuf(&outPool, rows*h.cp)
	for s := range p.scales {
		h.forwardScale(theta, p, &p.scales[s])
	}
	// The composite sub-head's 3x3 convolution of every window of every scale in one
	// product: out = patches * W^T, W = C' x 9C.
	sgemm.Sgemm(false, true, rows, h.cp, kdim, 1, p.patches, kdim, theta[h.convW:h.convW+h.cp*kdim], kdim, 0, p.out, h.cp)
	gamma, beta := theta[h.gamma:h.gamma+h.cp], theta[h.beta:h.beta+h.cp]
	w4, b4 := theta[h.outW:h.outW+h.cp], theta[h.outB]
	inv := 1 / float32(len(b.X))
	for k := range p.score {
		p.score[k] = make([]float32, n)
	}
	for s := range p.scales {
		f := &p.scales[s]
		np := f.ho * f.wo
		f.v = make([]float32, n*np)
		f.sel3 = make([]int, n*f.kc)
		f.h[subComposite] = make([]float32, n)
		for i := 0; i < n; i++ {
			for q := 0; q < np; q++ {
				r := f.row0 + i*np + q
				o := p.out[r*h.cp : (r+1)*h.cp]
				v := b4
				for j, oj := range o {
					if a := gamma[j]*oj + beta[j]; a > 0 {
						v += w4[j] * a
					}
				}
				f.v[i*np+q] = v
			}
			f.h[subComposite][i] = topKMeanAbs(f.v[i*np:(i+1)*np], f.sel3[i*f.kc:(i+1)*f.kc])
		}
		for k := range p.score {
			for i, v := range f.h[k] {
				p.score[k][i] += v * inv
			}
		}
	}
	return p
}

// forwardScale runs the holistic, seen and pseudo sub-heads on one scale, x (N, C, H, W):
// gap (N, C), pre0 (N, 256), o (N), z1 and z2 (N, H*W), h0..h2 (N); and writes its composite
// patches, D = mean(Ref) - F cut into 3x3 windows at the stride, into its rows of patches
// (N*Ho*Wo, 9C).
func (h *DRA) forwardScale(theta []float32, p *draPass, f *draScale) {
	x, patches := f.b.X[f.s], p.patches
	n, hw := f.b.Len(), f.hw
	f.gap = p.take(n * h.c) // every value is written below
	f.z1 = p.take(n * hw)   // set to the bias below
	f.z2 = p.take(n * hw)   // likewise
	f.sel1 = make([]int, n*f.k)
	f.sel2 = make([]int, n*f.k)
	for k := subHolistic; k < subComposite; k++ {
		f.h[k] = make([]float32, n)
	}
	w1, b1 := theta[h.seenW:h.seenW+h.c], theta[h.seenB]
	w2, b2 := theta[h.pseudoW:h.pseudoW+h.c], theta[h.pseudoB]
	invHW := 1 / float32(hw)
	ones := make([]float32, hw)
	for q := range ones {
		ones[q] = 1
	}
	kdim := h.c * compositeKernel * compositeKernel
	ref := f.ref.Data
	np := f.ho * f.wo
	st, w := h.stride, x.W
	// One pass over each map, channel by channel while the channel is in cache: its pool,
	// its share of the two 1x1 convolutions, and its columns of the composite patches
	// (D = mean(Ref) - F cut into 3x3 windows at the stride; row (i, oy, ox), column
	// c*9 + ky*3 + kx, the weight's C x 3 x 3 order).
	for i := 0; i < n; i++ {
		xi := f.b.Map(f.s, i)
		z1, z2 := f.z1[i*hw:(i+1)*hw], f.z2[i*hw:(i+1)*hw]
		for q := range z1 {
			z1[q], z2[q] = b1, b2
		}
		rows := patches[(f.row0+i*np)*kdim : (f.row0+(i+1)*np)*kdim]
		for c := 0; c < h.c; c++ {
			row := xi[c*hw : (c+1)*hw]
			f.gap[i*h.c+c] = sgemm.Dot(row, ones) * invHW
			axpy(w1[c], row, z1)
			axpy(w2[c], row, z2)
			rc := ref[c*hw : (c+1)*hw]
			for oy := 0; oy < f.ho; oy++ {
				for ox := 0; ox < f.wo; ox++ {
					at := (oy*f.wo+ox)*kdim + c*9
					d := rows[at : at+9 : at+9]
					o := oy*st*w + ox*st
					a, r := row[o:o+2*w+3], rc[o:o+2*w+3]
					d[0], d[1], d[2] = r[0]-a[0], r[1]-a[1], r[2]-a[2]
					d[3], d[4], d[5] = r[w]-a[w], r[w+1]-a[w+1], r[w+2]-a[w+2]
					d[6], d[7], d[8] = r[2*w]-a[2*w], r[2*w+1]-a[2*w+1], r[2*w+2]-a[2*w+2]
				}
			}
		}
		f.h[subSeen][i] = topKMeanAbs(z1, f.sel1[i*f.k:(i+1)*f.k])
		f.h[subPseudo][i] = topKMeanAbs(z2, f.sel2[i*f.k:(i+1)*f.k])
	}
	// Holistic: pre0 = GAP * W1^T + b1, o = ReLU(pre0) . w2 + b2, h0 = |o|.
	f.pre0 = p.take(n * HolisticWidth) // Sgemm with beta 0 overwrites it
	sgemm.Sgemm(false, true, n, HolisticWidth, h.c, 1, f.gap, h.c, theta[h.fc1w:h.fc1w+HolisticWidth*h.c], h.c, 0, f.pre0, HolisticWidth)
	f.o = make([]float32, n)
	fb1 := theta[h.fc1b : h.fc1b+HolisticWidth]
	fw2 := theta[h.fc2w : h.fc2w+HolisticWidth]
	for i := 0; i < n; i++ {
		pre := f.pre0[i*HolisticWidth : (i+1)*HolisticWidth]
		o := theta[h.fc2b]
		for j := range pre {
			pre[j] += fb1[j]
			if pre[j] > 0 {
				o += fw2[j] * pre[j]
			}
		}
		f.o[i] = o
		f.h[subHolistic][i] = abs32(o)
	}
}

func (p *draPass) release() {
	putBuf(&patchPool, p.patches)
	putBuf(&outPool, p.out)
	putBuf(&slabPool, p.slab)
	p.patches, p.out, p.slab, p.free = nil, nil, nil, nil
}

// Scores returns -h0 + h1 + h2 + h3 per image, each sub-head averaged over scales.
func (h *DRA) Scores(theta []float32, b Batch) []float32 {
	sub := h.SubScores(theta, b)
	out := make([]float32, len(sub[0]))
	for i := range out {
		out[i] = -sub[subHolistic][i] + sub[subSeen][i] + sub[subPseudo][i] + sub[subComposite][i]
	}
	return out
}

// SubScores returns the four sub-heads' scale-averaged scores (h0, h1, h2, h3) per image,
// running at most scoreChunk images at a time.
func (h *DRA) SubScores(theta []float32, b Batch) [4][]float32 {
	mustCheck(h, b, false)
	h.checkTheta(theta)
	n := b.Len()
	var out [4][]float32
	for i0 := 0; i0 < n; i0 += scoreChunk {
		p := h.forward(theta, b.Slice(i0, min(i0+scoreChunk, n)))
		p.release()
		for k := range out {
			out[k] = append(out[k], p.score[k]...)
		}
	}
	return out
}

// LossGrad returns the sum of the four sub-heads' deviation losses (docs/algorithm.md, "Scoring
// head"): h0 over all rows with target [label == 0]; h1 over rows labelled normal or seen,
// h2 over rows labelled normal or pseudo, and h3 over all rows, each with target
// [label != 0]. A sub-head with no rows adds 0.
func (h *DRA) LossGrad(theta []float32, b Batch, prior Prior, grad []float32) float32 {
	mustCheck(h, b, true)
	h.checkTheta(theta)
	if len(grad) != len(theta) {
		panic(fmt.Sprintf("heads dra: grad has %d values, theta %d", len(grad), len(theta)))
	}
	p := h.forward(theta, b)
	defer p.release()
	n := b.Len()
	var loss float32
	var ds [nSub][]float32
	for k := range ds {
		ds[k] = make([]float32, n)
		var rows []int
		for i, l := range b.Labels {
			if (k == subSeen && l == Pseudo) || (k == subPseudo && l == Seen) {
				continue
			}
			rows = append(rows, i)
		}
		s := make([]float32, len(rows))
		y := make([]float32, len(rows))
		for j, i := range rows {
			s[j] = p.score[k][i]
			if (k == subHolistic) == (b.Labels[i] == Normal) {
				y[j] = 1
			}
		}
		d := make([]float32, len(rows))
		loss += DeviationLoss(s, y, prior, d)
		inv := 1 / float32(len(b.X)) // d score / d per-scale score
		for j, i := range rows {
			ds[k][i] = d[j] * inv
		}
	}
	clear(grad)
	h.backward(theta, p, ds, grad)
	return loss
}

// backward adds the gradient of sum_k sum_i ds[k][i] * h_k,s(i) over scales s into grad,
// ds (4, N). Per sub-head, in reverse of forward:
//
//	h0: do = ds0 sign(o); dW2 += do ReLU(pre0); dpre = do W2 [pre0 > 0]; db1 += dpre;
//	    dW1 += dpre^T GAP (256, C)
//	h1, h2: devnetScale.backward
//	h3: dv = ds3 sign(v) / k at the top-k positions; dW4 += dv a; dgamma += dv W4 out [a > 0];
//	    dbeta += dv W4 [a > 0]; dW += dOut^T patches (C', 9C), over the selected rows only.
func (h *DRA) backward(theta []float32, p *draPass, ds [nSub][]float32, grad []float32) {
	n := len(ds[0])
	kdim := h.c * compositeKernel * compositeKernel
	fw2 := theta[h.fc2w : h.fc2w+HolisticWidth]
	gfc1w := grad[h.fc1w : h.fc1w+HolisticWidth*h.c]
	gfc1b := grad[h.fc1b : h.fc1b+HolisticWidth]
	gfc2w := grad[h.fc2w : h.fc2w+HolisticWidth]
	gamma, w4 := theta[h.gamma:h.gamma+h.cp], theta[h.outW:h.outW+h.cp]
	gGamma, gBeta, gW4 := grad[h.gamma:h.gamma+h.cp], grad[h.beta:h.beta+h.cp], grad[h.outW:h.outW+h.cp]
	// Selected composite rows: their patch rows and d out, for one weight-gradient product;
	// at most kc rows per image and scale.
	bound := 0
	for s := range p.scales {
		bound += n * p.scales[s].kc
	}
	selRows := make([]int, 0, bound)
	dOut := getBuf(&dOutPool, bound*h.cp)[:0]
	defer func() { putBuf(&dOutPool, dOut) }()
	dpre := p.take(n * HolisticWidth) // cleared per scale below
	for s := range p.scales {
		f := &p.scales[s]
		// Holistic: h0 = |o|.
		clear(dpre)
		for i := 0; i < n; i++ {
			do := ds[subHolistic][i] * sign32(f.o[i])
			if do == 0 {
				continue
			}
			grad[h.fc2b] += do
			pre := f.pre0[i*HolisticWidth : (i+1)*HolisticWidth]
			d := dpre[i*HolisticWidth : (i+1)*HolisticWidth]
			for j, v := range pre {
				if v > 0 {
					gfc2w[j] += do * v
					d[j] = do * fw2[j]
					gfc1b[j] += d[j]
				}
			}
		}
		// d W1 += dpre^T * GAP.
		sgemm.Sgemm(true, false, HolisticWidth, h.c, n, 1, dpre, HolisticWidth, f.gap, h.c, 1, gfc1w, h.c)
		// Seen and pseudo: like the devnet head.
		seen := devnetScale{b: f.b, s: f.s, n: n, hw: f.hw, k: f.k, z: f.z1, sel: f.sel1}
		grad[h.seenB] += seen.backward(ds[subSeen], grad[h.seenW:h.seenW+h.c])
		pseudo := devnetScale{b: f.b, s: f.s, n: n, hw: f.hw, k: f.k, z: f.z2, sel: f.sel2}
		grad[h.pseudoB] += pseudo.backward(ds[subPseudo], grad[h.pseudoW:h.pseudoW+h.c])
		// Composite: only the top-k output positions carry gradient.
		np := f.ho * f.wo
		for i := 0; i < n; i++ {
			g := ds[subComposite][i] / float32(f.kc)
			if g == 0 {
				continue
			}
			for _, q := range f.sel3[i*f.kc : (i+1)*f.kc] {
				dv := g * sign32(f.v[i*np+q])
				if dv == 0 {
					continue
				}
				grad[h.outB] += dv
				r := f.row0 + i*np + q
				o := p.out[r*h.cp : (r+1)*h.cp]
				dOut = dOut[:len(dOut)+h.cp]
				d := dOut[len(dOut)-h.cp:]
				clear(d)
				for j, oj := range o {
					if a := gamma[j]*oj + theta[h.beta+j]; a > 0 {
						gW4[j] += dv * a
						dp := dv * w4[j]
						gGamma[j] += dp * oj
						gBeta[j] += dp
						d[j] = dp * gamma[j]
					}
				}
				selRows = append(selRows, r)
			}
		}
	}
	if len(selRows) == 0 {
		return
	}
	// d W = dOut^T * patches[selRows].
	sel := getBuf(&selPool, len(selRows)*kdim)
	defer putBuf(&selPool, sel)
	for j, r := range selRows {
		copy(sel[j*kdim:(j+1)*kdim], p.patches[r*kdim:(r+1)*kdim])
	}
	sgemm.Sgemm(true, false, h.cp, kdim, len(selRows), 1, dOut, h.cp, sel, kdim, 1, grad[h.convW:h.convW+h.cp*kdim], kdim)
}

// gorgoniaLoss is the dra loss as a gorgonia graph (see GorgoniaLossGrad): the four
// sub-heads of every scale, each averaged over scales, into the sum of their deviation losses
// on the rows and targets of LossGrad.
func (h *DRA) gorgoniaLoss(gb *gorgoniaBuilder, b Batch, p Prior) *G.Node {
	c, cp, n := h.c, h.cp, b.X[0].N
	fc1w := gb.param("holistic.fc1.weight", HolisticWidth, c)
	fc1b := gb.param("holistic.fc1.bias", 1, HolisticWidth)
	fc2w := gb.param("holistic.fc2.weight", 1, HolisticWidth)
	fc2b := gb.param("holistic.fc2.bias")
	seenW, seenB := gb.param("seen.weight", 1, c, 1, 1), gb.param("seen.bias")
	pseudoW, pseudoB := gb.param("pseudo.weight", 1, c, 1, 1), gb.param("pseudo.bias")
	convW := gb.param("composite.conv.weight", cp, c, 3, 3)
	gamma := gb.param("composite.gamma", 1, cp, 1, 1)
	beta := gb.param("composite.beta", 1, cp, 1, 1)
	outW := gb.param("composite.out.weight", 1, cp, 1, 1)
	outB := gb.param("composite.out.bias")
	var per [nSub][]*G.Node
	for s, x := range b.X {
		// h0: |FC(256 -> 1)(ReLU(FC(C -> 256)(GAP F)))|, GAP (N, C) -> (N, 256) -> (N).
		gap := fmap.Maps{N: x.N, C: x.C, H: x.H, W: x.W, Data: x.Data}.Pooled()
		hid := G.Must(G.Mul(gb.constant(gap, n, c), G.Must(G.Transpose(fc1w))))
		hid = G.Must(G.Rectify(G.Must(G.BroadcastAdd(hid, fc1b, nil, []byte{0}))))
		o := G.Must(G.Add(G.Must(G.Reshape(G.Must(G.Mul(hid, G.Must(G.Transpose(fc2w)))), tensor.Shape{n})), fc2b))
		per[subHolistic] = append(per[subHolistic], G.Must(G.Abs(o)))
		per[subSeen] = append(per[subSeen], gb.conv1x1TopK(x, seenW, seenB))
		per[subPseudo] = append(per[subPseudo], gb.conv1x1TopK(x, pseudoW, pseudoB))
		// h3: D = Ref - F (N, C, H, W) -> conv3x3 (N, C', Ho, Wo) -> gamma * . + beta -> ReLU
		// -> conv1x1 (N, 1, Ho, Wo) -> top-k |.| (N).
		d := make([]float32, len(x.Data))
		ref := b.Ref[s].Data
		for i := range d {
			d[i] = ref[i%len(ref)] - x.Data[i]
		}
		u := G.Must(G.Conv2d(gb.constant(d, n, c, x.H, x.W), convW, tensor.Shape{3, 3}, []int{0, 0}, []int{h.stride, h.stride}, []int{1, 1}))
		u = G.Must(G.BroadcastHadamardProd(u, gamma, nil, []byte{0, 2, 3}))
		u = G.Must(G.Rectify(G.Must(G.BroadcastAdd(u, beta, nil, []byte{0, 2, 3}))))
		v := G.Must(G.Conv2d(u, outW, tensor.Shape{1, 1}, []int{0, 0}, []int{1, 1}, []int{1, 1}))
		np := v.Shape()[2] * v.Shape()[3]
		v = G.Must(G.Add(G.Must(G.Reshape(v, tensor.Shape{n, np})), outB))
		per[subComposite] = append(per[subComposite], gb.topKAbs(v, n, np))
	}
	var loss *G.Node
	for k := range per {
		y, in := make([]float32, n), make([]bool, n)
		for i, l := range b.Labels {
			// The seen sub-head skips pseudo anomalies and the pseudo sub-head skips seen ones.
			skip := k == subSeen && l == Pseudo || k == subPseudo && l == Seen
			in[i] = !skip
			if (k == subHolistic) == (l == Normal) {
				y[i] = 1
			}
		}
		lk := gb.deviation(gb.meanOverScales(per[k]), y, in, p)
		if loss == nil {
			loss = lk
		} else {
			loss = G.Must(G.Add(loss, lk))
		}
	}
	return loss
}
