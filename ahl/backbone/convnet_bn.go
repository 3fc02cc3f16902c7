package backbone

import (
	"fmt"
	"math"
	"math/rand/v2"

	blocked "github.com/pipe-ahl/pipe/ahl/sgemm"
)

// trainNet is the convnet in training mode: each 3x3 convolution (no bias) is followed by
// batch norm with batch statistics, gamma * xhat + beta, and ReLU; then the devnet head. All
// trainable weights live in theta, per layer W, gamma, beta, then the head's W and bias.
type trainNet struct {
	size        int
	theta       []float32
	convs       []conv // W views; no bias (batch norm's beta replaces it)
	gamma, beta [][]float32
	head        conv
	// Running statistics for inference (PyTorch BatchNorm2d: momentum 0.1, unbiased
	// variance), updated by every lossGrad.
	runMean, runVar [][]float64
}

// bnMomentum is PyTorch BatchNorm2d's default momentum for the running statistics.
const bnMomentum = 0.1

func newTrainNet(size int, channels []int) (*trainNet, error) {
	shape, err := newConvNet(size, channels) // validates and gives the layer shapes
	if err != nil {
		return nil, err
	}
	n := &trainNet{size: size}
	total := 0
	for _, c := range shape.convs {
		total += len(c.W) + 2*c.Cout
	}
	total += len(shape.head.W) + 1
	n.theta = make([]float32, total)
	view := views(n.theta)
	for _, c := range shape.convs {
		n.convs = append(n.convs, conv{Cin: c.Cin, Cout: c.Cout, K: c.K, Stride: c.Stride, Pad: c.Pad, W: view(len(c.W))})
		n.gamma = append(n.gamma, view(c.Cout))
		n.beta = append(n.beta, view(c.Cout))
		m, v := make([]float64, c.Cout), make([]float64, c.Cout)
		for i := range v {
			v[i] = 1
		}
		n.runMean, n.runVar = append(n.runMean, m), append(n.runVar, v)
	}
	h := shape.head
	n.head = conv{Cin: h.Cin, Cout: 1, K: 1, Stride: 1, W: view(len(h.W)), B: view(1)}
	return n, nil
}

// initKaiming draws convolution and head weights from N(0, 2 / fan_in), sets gamma to 1 and
// beta and the head's bias to 0.
func (n *trainNet) initKaiming(rng *rand.Rand) {
	for _, c := range append(append([]conv(nil), n.convs...), n.head) {
		std := math.Sqrt(2 / float64(c.Cin*c.K*c.K))
		for i := range c.W {
			c.W[i] = float32(rng.NormFloat64() * std)
		}
	}
	for l := range n.convs {
		for i := range n.gamma[l] {
			n.gamma[l][i], n.beta[l][i] = 1, 0
		}
	}
	n.head.B[0] = 0
}

// views returns the parts of v (laid out like theta) holding each layer's W, gamma and beta,
// and the head's W and bias.
func (n *trainNet) views(v []float32) (w, gamma, beta [][]float32, hw, hb []float32) {
	off := 0
	take := func(k int) []float32 {
		s := v[off : off+k : off+k]
		off += k
		return s
	}
	for _, c := range n.convs {
		w = append(w, take(len(c.W)))
		gamma = append(gamma, take(c.Cout))
		beta = append(beta, take(c.Cout))
	}
	hw = take(len(n.head.W))
	hb = take(1)
	return w, gamma, beta, hw, hb
}

// freeze returns the inference network: batch norm with the running statistics folded into
// each convolution (foldBN), and the head.
func (n *trainNet) freeze() *ConvNet {
	channels := make([]int, 0, len(n.convs)/2)
	for i := 0; i < len(n.convs); i += 2 {
		channels = append(channels, n.convs[i].Cout)
	}
	out, err := newConvNet(n.size, channels)
	if err != nil {
		panic(fmt.Sprintf("backbone: freezing a valid net: %v", err)) // shapes were valid at newTrainNet
	}
	for l, c := range n.convs {
		mean, variance := make([]float32, c.Cout), make([]float32, c.Cout)
		for o := range mean {
			mean[o], variance[o] = float32(n.runMean[l][o]), float32(n.runVar[l][o])
		}
		fw, fb := foldBN(c.W, c.Cout, n.gamma[l], n.beta[l], mean, variance)
		copy(out.convs[l].W, fw)
		copy(out.convs[l].B, fb)
	}
	copy(out.head.W, n.head.W)
	copy(out.head.B, n.head.B)
	return out
}

// bnCache is what one batch norm layer keeps for its backward pass.
type bnCache struct {
	xhat   act       // normalised pre-activations
	invStd []float32 // 1 / sqrt(var + eps) per channel
	// out is the layer's output after gamma, beta and ReLU, with a border of pad zeros
	// around every plane: the next convolution's input as its patches read it.
	out act
	pad int
}

// bnReLUForward normalises z (Cout x n) per channel with its batch mean and biased variance,
// applies gamma and beta and ReLU into an output with a border of pad zeros, and updates the
// running statistics.
func (n *trainNet) bnReLUForward(l int, z act, pad int) bnCache {
	hp, wp := z.H+2*pad, z.W+2*pad
	c := bnCache{xhat: z, invStd: make([]float32, z.C), out: newScratchAct(z.C, z.B, hp, wp), pad: pad} // out: written in full
	m := z.B * z.H * z.W
	g, b := n.gamma[l], n.beta[l]
	parallel(z.C, 3*m, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			row := z.Data[o*m : (o+1)*m]
			s, s2 := blocked.SumSquares(row)
			mean := s / float64(m)
			variance := max(s2/float64(m)-mean*mean, 0)
			inv := float32(1 / math.Sqrt(variance+bnEps))
			c.invStd[o] = inv
			for i := 0; i < z.B; i++ {
				dst := c.out.plane(o, i)
				if pad > 0 {
					clearBorder(dst, hp, wp, pad)
				}
				blocked.NormReLU(z.plane(o, i), dst[pad*wp+pad:], z.W, wp, float32(mean), inv, g[o], b[o])
			}
			unbiased := variance
			if m > 1 {
				unbiased *= float64(m) / float64(m-1)
			}
			n.runMean[l][o] = (1-bnMomentum)*n.runMean[l][o] + bnMomentum*mean
			n.runVar[l][o] = (1-bnMomentum)*n.runVar[l][o] + bnMomentum*unbiased
		}
	})
	return c
}

// clearBorder zeroes the border of pad values around an hp x wp plane.
func clearBorder(plane []float32, hp, wp, pad int) {
	clear(plane[:pad*wp+pad])
	for y := pad; y < hp-pad-1; y++ {
		clear(plane[y*wp+wp-pad : (y+1)*wp+pad])
	}
	clear(plane[(hp-pad-1)*wp+wp-pad:])
}

// bnReLUBackward turns d, the gradient with respect to the layer's output, into the
// gradient with respect to its pre-activations z (in place), accumulating dgamma and dbeta:
// with dy = d * [out > 0] (out recomputed from xhat, gamma and beta) and dxhat = gamma * dy,
// dz = invStd / m * (m * dxhat - sum(dxhat) - xhat * sum(dxhat * xhat)).
func (n *trainNet) bnReLUBackward(l int, c bnCache, d act, dgamma, dbeta []float32) {
	m := d.B * d.H * d.W
	g, b := n.gamma[l], n.beta[l]
	parallel(d.C, 4*m, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			dy := d.Data[o*m : (o+1)*m]
			xh := c.xhat.Data[o*m : (o+1)*m]
			sdy, sdyx := blocked.MaskedSums(dy, xh, g[o], b[o])
			dgamma[o] += float32(sdyx)
			dbeta[o] += float32(sdy)
			// sum(dxhat) = gamma * sdy, sum(dxhat * xhat) = gamma * sdyx.
			k := g[o] * c.invStd[o]
			a, bb := float32(sdy/float64(m)), float32(sdyx/float64(m))
			blocked.NormGrad(dy, xh, k, a, bb)
		}
	})
}

// scores runs the training-mode network (batch statistics) and the head on x.
func (n *trainNet) scores(x act) []float32 {
	h := x
	for l := range n.convs {
		h = n.bnReLUForward(l, n.convs[l].forward(h, false), 0).out
	}
	z := n.head.forward(h, false)
	out := make([]float32, z.B)
	for i := range out {
		out[i], _ = topKMean(z.plane(0, i))
	}
	return out
}

// lossGrad adds scale times the gradient of the summed deviation loss of the batch x with
// targets y (true: anomaly, real or pseudo) to grad, and returns scale times the summed loss.
// With dev = (s - mean(r)) / std(r), each image's loss is |dev| for a normal and
// max(0, m - dev) for an anomaly (DevNet's deviation loss; docs/algorithm.md, "Deviation loss").
func (n *trainNet) lossGrad(x act, y []bool, pr prior, scale float32, grad []float32) float64 {
	L := len(n.convs)
	// Each layer's input with its convolution's zero border written out, read by the
	// forward and again by the weight gradient's patches: the batch padded once, then each
	// batch norm's output written straight into the next layer's padded layout.
	ins := make([]act, L)
	caches := make([]bnCache, L)
	ins[0] = x
	if p := n.convs[0].Pad; p > 0 {
		ins[0] = padAct(x, p)
	}
	for l := range n.convs {
		pad := 0 // the head reads the last layer's output as it is
		if l+1 < L {
			pad = n.convs[l+1].Pad
		}
		caches[l] = n.bnReLUForward(l, n.convs[l].forwardPadded(ins[l]), pad)
		if l+1 < L {
			ins[l+1] = caches[l].out
		}
	}
	h := caches[L-1].out
	z := n.head.forward(h, false)

	// Loss and its gradient with respect to z.
	dz := newAct(1, z.B, z.H, z.W)
	var loss float64
	for i := 0; i < z.B; i++ {
		zi := z.plane(0, i)
		s, top := topKMean(zi)
		dev := (s - pr.Mean) / pr.Std
		var ds float32 // d loss_i / d s
		if y[i] {
			if pr.Margin-dev > 0 {
				loss += float64(pr.Margin - dev)
				ds = -1 / pr.Std
			}
		} else {
			loss += math.Abs(float64(dev))
			switch {
			case dev > 0:
				ds = 1 / pr.Std
			case dev < 0:
				ds = -1 / pr.Std
			}
		}
		ds *= scale
		dzi := dz.plane(0, i)
		k := float32(len(top))
		for _, j := range top {
			switch {
			case zi[j] > 0:
				dzi[j] = ds / k
			case zi[j] < 0:
				dzi[j] = -ds / k
			}
		}
	}

	// Backward: the head, then each layer's ReLU and batch norm, then its convolution.
	gw, gg, gb, ghw, ghb := n.views(grad)
	d := n.head.backward(h, dz, ghw, ghb, true)
	for l := L - 1; l >= 0; l-- {
		n.bnReLUBackward(l, caches[l], d, gg[l], gb[l])
		dx := n.convs[l].backwardPadded(ins[l], d, gw[l], l > 0)
		putScratch(d.Data)
		d = dx
	}
	// The activations are dead: hand them back for the next chunk.
	putScratch(z.Data)
	if n.convs[0].Pad > 0 {
		putScratch(ins[0].Data)
	}
	for _, c := range caches {
		putScratch(c.xhat.Data)
		putScratch(c.out.Data)
	}
	return float64(scale) * loss
}
