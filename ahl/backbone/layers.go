package backbone

import (
	"math"

	blocked "github.com/pipe-ahl/pipe/ahl/sgemm"
)

// act is a batch of activations laid out [C][B][H][W]: channel-major with the batch inside,
// so that a convolution of the whole batch is one matrix product W (Cout x Cin*K*K) times
// the im2col matrix (Cin*K*K x B*H*W), whose result is again [Cout][B][H][W].
type act struct {
	C, B, H, W int
	Data       []float32
}

func newAct(c, b, h, w int) act {
	return act{C: c, B: b, H: h, W: w, Data: make([]float32, c*b*h*w)}
}

// plane returns channel c of image i.
func (a act) plane(c, i int) []float32 {
	hw := a.H * a.W
	o := (c*a.B + i) * hw
	return a.Data[o : o+hw]
}

// conv is a 2-D convolution with square kernel k, cross-correlation as in PyTorch.
// W is Cout x (Cin*K*K) row-major (PyTorch's [Cout, Cin, K, K] flattened); B has Cout
// values (zero when nil).
type conv struct {
	Cin, Cout, K, Stride, Pad int
	W, B                      []float32
}

// outSize is the output side for an input side n: floor((n + 2 pad - k) / stride) + 1.
func (c *conv) outSize(n int) int { return (n+2*c.Pad-c.K)/c.Stride + 1 }

// direct reports whether the input itself is the im2col matrix (1x1, stride 1, no padding).
func (c *conv) direct() bool { return c.K == 1 && c.Stride == 1 && c.Pad == 0 }

// forward returns conv(x) + bias, followed by ReLU when relu is set. The matrix product packs
// its panels straight from x (see patches); a direct 1x1 convolution multiplies x itself.
func (c *conv) forward(x act, relu bool) act {
	ho, wo := c.outSize(x.H), c.outSize(x.W)
	n := x.B * ho * wo
	out := newScratchAct(c.Cout, x.B, ho, wo) // the product (beta = 0) writes all of it
	kk := c.Cin * c.K * c.K
	if c.direct() {
		sgemm(false, false, c.Cout, n, kk, 1, c.W, kk, x.Data, n, 0, out.Data, n)
	} else {
		p := newPatches(x, c.K, c.Stride, c.Pad, ho, wo, false)
		sgemmPatches(c.Cout, n, kk, c.W, kk, p, out.Data, n, 0)
		p.release()
	}
	c.biasReLU(out, relu)
	return out
}

// biasReLU adds the bias to out (Cout x n) and then applies ReLU when relu is set.
func (c *conv) biasReLU(out act, relu bool) {
	n := out.B * out.H * out.W
	parallel(c.Cout, n, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			row := out.Data[o*n : (o+1)*n]
			var b float32
			if c.B != nil {
				b = c.B[o]
			}
			if relu {
				for j, v := range row {
					row[j] = reluOf(v + b)
				}
			} else if b != 0 {
				for j := range row {
					row[j] += b
				}
			}
		}
	})
}

// col2im is im2col's adjoint: it adds every entry of cols back onto the input position it was
// copied from, into dx (which it overwrites).
func col2im(cols []float32, dx act, k, stride, pad, ho, wo int) {
	clear(dx.Data)
	n := dx.B * ho * wo
	parallel(dx.C, k*k*n, func(clo, chi int) { col2imChannels(cols, dx, k, stride, pad, ho, wo, clo, chi) })
}

// col2imChannels is col2im for input channels [clo, chi).
func col2imChannels(cols []float32, dx act, k, stride, pad, ho, wo, clo, chi int) {
	n := dx.B * ho * wo
	for ci := clo; ci < chi; ci++ {
		for ky := 0; ky < k; ky++ {
			for kx := 0; kx < k; kx++ {
				row := cols[((ci*k+ky)*k+kx)*n:]
				oxLo, oxHi := validColumns(dx.W, wo, kx, stride, pad)
				if oxLo >= oxHi {
					continue
				}
				for b := 0; b < dx.B; b++ {
					dst := dx.plane(ci, b)
					src := row[b*ho*wo : (b+1)*ho*wo]
					for oy := 0; oy < ho; oy++ {
						iy := oy*stride - pad + ky
						if iy < 0 || iy >= dx.H {
							continue
						}
						drow := dst[iy*dx.W : (iy+1)*dx.W]
						s := src[oy*wo+oxLo : oy*wo+oxHi]
						ix := oxLo*stride - pad + kx
						if stride == 1 {
							// d += s, eight lanes at a time: a fused 1*v + d rounds as
							// the plain addition does.
							blocked.Axpy(1, s, drow[ix:ix+len(s)])
							continue
						}
						if stride == 2 {
							blocked.AddStride2(s, drow[ix:])
							continue
						}
						for _, v := range s {
							drow[ix] += v
							ix += stride
						}
					}
				}
			}
		}
	}
}

// validColumns returns the range [lo, hi) of output columns ox whose input column
// ox*stride - pad + kx lies inside an input of width w (hi <= lo when none does).
func validColumns(w, wo, kx, stride, pad int) (lo, hi int) {
	lo = max(0, (pad-kx+stride-1)/stride)
	if w-1+pad-kx < 0 {
		return lo, 0
	}
	return lo, min(wo, (w-1+pad-kx)/stride+1)
}

// maxPool is PyTorch's MaxPool2d(k, stride, pad): padding never wins the maximum. The
// window is separable: a horizontal pass takes each input row's maximum over the k columns
// of every output column, a vertical pass the maximum of k of those rows.
func maxPool(x act, k, stride, pad int) act {
	ho := (x.H+2*pad-k)/stride + 1
	wo := (x.W+2*pad-k)/stride + 1
	out := newAct(x.C, x.B, ho, wo)
	parallel(x.C*x.B, x.H*wo*k+ho*wo*k, func(lo, hi int) {
		rows := make([]float32, x.H*wo) // horizontal maxima of one plane
		for p := lo; p < hi; p++ {
			src, dst := x.plane(p/x.B, p%x.B), out.plane(p/x.B, p%x.B)
			for y := 0; y < x.H; y++ {
				s, r := src[y*x.W:(y+1)*x.W], rows[y*wo:(y+1)*wo]
				for ox := range r {
					a, b := max(0, ox*stride-pad), min(x.W, ox*stride-pad+k)
					m := s[a]
					for _, v := range s[a+1 : b] {
						m = max(m, v)
					}
					r[ox] = m
				}
			}
			for oy := 0; oy < ho; oy++ {
				a, b := max(0, oy*stride-pad), min(x.H, oy*stride-pad+k)
				d := dst[oy*wo : (oy+1)*wo]
				copy(d, rows[a*wo:(a+1)*wo])
				for y := a + 1; y < b; y++ {
					for ox, v := range rows[y*wo : (y+1)*wo] {
						d[ox] = max(d[ox], v)
					}
				}
			}
		}
	})
	return out
}

// addReLU sets a = max(a + b, 0) elementwise (a residual connection followed by ReLU).
func addReLU(a, b act) {
	parallel(len(a.Data), 1, func(lo, hi int) {
		ad := a.Data[lo:hi]
		for i, v := range b.Data[lo:hi] {
			ad[i] = reluOf(ad[i] + v)
		}
	})
}

// bnEps is PyTorch BatchNorm2d's default epsilon, which torchvision's ResNet uses.
const bnEps = 1e-5

// foldBN returns the weights and bias of conv followed by inference-mode batch norm:
// y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta, so per output channel o the weights
// scale by g_o = gamma_o / sqrt(var_o + eps) and the bias is beta_o - mean_o * g_o.
func foldBN(w []float32, cout int, gamma, beta, mean, variance []float32) (fw, fb []float32) {
	per := len(w) / cout
	fw = make([]float32, len(w))
	fb = make([]float32, cout)
	for o := 0; o < cout; o++ {
		g := float64(gamma[o]) / math.Sqrt(float64(variance[o])+bnEps)
		for j := 0; j < per; j++ {
			fw[o*per+j] = float32(float64(w[o*per+j]) * g)
		}
		fb[o] = float32(float64(beta[o]) - float64(mean[o])*g)
	}
	return fw, fb
}

// backward propagates dout (the gradient with respect to this convolution's output, after
// any ReLU has been undone by the caller) to the weights and, when needDX, to the input x.
// dW and dB accumulate (+=); the returned input gradient is a new buffer (from the scratch
// pool; zero act when !needDX).
func (c *conv) backward(x act, dout act, dW, dB []float32, needDX bool) act {
	n := dout.B * dout.H * dout.W
	kk := c.Cin * c.K * c.K
	// dW += dout (Cout x n) * cols^T (n x kk), cols being x's im2col matrix.
	if c.direct() {
		sgemm(false, true, c.Cout, kk, n, 1, dout.Data, n, x.Data, n, 1, dW, kk)
	} else {
		p := newPatches(x, c.K, c.Stride, c.Pad, dout.H, dout.W, true)
		sgemmPatches(c.Cout, kk, n, dout.Data, n, p, dW, kk, 1)
		p.release()
	}
	for o := 0; o < len(dB); o++ { // dB is nil for a convolution without bias
		var s float32
		for _, v := range dout.Data[o*n : (o+1)*n] {
			s += v
		}
		dB[o] += s
	}
	if !needDX {
		return act{}
	}
	return c.inputGrad(x.C, x.B, x.H, x.W, dout)
}

// forwardPadded is forward without bias or ReLU on xp, the input with its border of c.Pad
// zeros already written out: the same products, with no padded copy made.
func (c *conv) forwardPadded(xp act) act {
	u := *c
	u.Pad, u.B = 0, nil
	return u.forward(xp, false)
}

// backwardPadded is backward for a convolution without bias whose input xp has its border
// of c.Pad zeros written out; the input gradient (when needDX) has the unpadded shape.
func (c *conv) backwardPadded(xp act, dout act, dW []float32, needDX bool) act {
	u := *c
	u.Pad = 0
	u.backward(xp, dout, dW, nil, false)
	if !needDX {
		return act{}
	}
	return c.inputGrad(xp.C, xp.B, xp.H-2*c.Pad, xp.W-2*c.Pad, dout)
}

// inputGrad returns the gradient with respect to the convolution's C x B x H x W input of
// the loss whose gradient with respect to its output is dout, in a scratch buffer.
func (c *conv) inputGrad(cin, b, h, w int, dout act) act {
	n := dout.B * dout.H * dout.W
	kk := c.Cin * c.K * c.K
	dx := newScratchAct(cin, b, h, w) // every path below writes all of it
	if c.direct() {
		// dx = W^T (Cin x Cout) * dout (Cout x n).
		sgemm(true, false, kk, n, c.Cout, 1, c.W, kk, dout.Data, n, 0, dx.Data, n)
		return dx
	}
	if c.Stride == 1 && c.Pad < c.K {
		c.backwardInputConv(dout, dx)
		return dx
	}
	c.backwardInputCol2im(dout, dx)
	return dx
}

// backwardInputConv sets dx, the input gradient of a stride-1 convolution, as the
// convolution of dout with the flipped, transposed kernel (Cin x Cout x K x K) and padding
// K-1-Pad, whose panels are packed straight from dout: no kk x n matrix is written and
// scattered back as col2im does.
func (c *conv) backwardInputConv(dout, dx act) {
	kk2 := c.K * c.K
	kt := c.Cout * kk2 // the transposed kernel's reduction length
	wt := getScratch(c.Cin * kt)
	for co := 0; co < c.Cout; co++ {
		for ci := 0; ci < c.Cin; ci++ {
			src := c.W[(co*c.Cin+ci)*kk2 : (co*c.Cin+ci+1)*kk2]
			dst := wt[ci*kt+co*kk2 : ci*kt+(co+1)*kk2]
			for t, v := range src {
				dst[kk2-1-t] = v // (ky, kx) -> (K-1-ky, K-1-kx)
			}
		}
	}
	n := dx.B * dx.H * dx.W
	p := newPatches(dout, c.K, 1, c.K-1-c.Pad, dx.H, dx.W, false)
	sgemmPatches(c.Cin, n, kt, wt, kt, p, dx.Data, n, 0)
	p.release()
	putScratch(wt)
}

// backwardInputCol2im sets dx, the input gradient of any convolution: dcols = W^T
// (kk x Cout) * dout (Cout x n), scattered back onto the input by col2im.
func (c *conv) backwardInputCol2im(dout, dx act) {
	n := dout.B * dout.H * dout.W
	kk := c.Cin * c.K * c.K
	dcols := getScratch(kk * n)
	sgemm(true, false, kk, n, c.Cout, 1, c.W, kk, dout.Data, n, 0, dcols, n)
	col2im(dcols, dx, c.K, c.Stride, c.Pad, dout.H, dout.W)
	putScratch(dcols)
}

// reluOf is max(v, 0) without a branch (a ReLU's sign is a coin flip, so a branch would be
// mispredicted half the time): the sign bit, spread over the word, clears negative values
// and turns -0 into +0.
func reluOf(v float32) float32 {
	bits := math.Float32bits(v)
	return math.Float32frombits(bits &^ uint32(int32(bits)>>31))
}
