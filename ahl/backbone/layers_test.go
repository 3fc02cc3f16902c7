package backbone

import (
	"math"
	"math/rand/v2"
	"testing"

	blocked "github.com/pipe-ahl/pipe/ahl/sgemm"
)

const tol = 1e-5

func near(a, b, eps float32) bool { return math.Abs(float64(a-b)) <= float64(eps) }

func checkValues(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if !near(got[i], want[i], tol) {
			t.Fatalf("%s[%d] = %g, want %g (all: %v)", what, i, got[i], want[i], got)
		}
	}
}

// TestConvByHand checks two convolutions against values worked out by hand.
func TestConvByHand(t *testing.T) {
	// x (1 channel, 3x3):  1 2 3 / 4 5 6 / 7 8 9.
	x := act{C: 1, B: 1, H: 3, W: 3, Data: []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}}

	// Kernel 2x2 [[1, 2], [0, -1]], stride 1, no padding:
	// out[0,0] = 1*1 + 2*2 + 0*4 - 5 = 0;  out[0,1] = 2 + 2*3 - 6 = 2
	// out[1,0] = 4 + 2*5 - 8 = 6;          out[1,1] = 5 + 2*6 - 9 = 8.
	c := conv{Cin: 1, Cout: 1, K: 2, Stride: 1, Pad: 0, W: []float32{1, 2, 0, -1}}
	y := c.forward(x, false)
	if y.C != 1 || y.H != 2 || y.W != 2 {
		t.Fatalf("shape %dx%dx%d, want 1x2x2", y.C, y.H, y.W)
	}
	checkValues(t, "2x2 conv", y.Data, []float32{0, 2, 6, 8})

	// Two output channels, kernel 3x3, stride 2, padding 1, on the same x:
	// channel 0, all-ones kernel, bias 1: each output sums the 2x2 window the padding leaves,
	//   out[0,0] = 1+2+4+5 + 1 = 13, out[0,1] = 2+3+5+6 + 1 = 17,
	//   out[1,0] = 4+5+7+8 + 1 = 25, out[1,1] = 5+6+8+9 + 1 = 29;
	// channel 1, only the centre tap = -1, bias 0: out = -x at (0,0), (0,2), (2,0), (2,2)
	//   = -1, -3, -7, -9; with ReLU those become 0.
	w := make([]float32, 2*9)
	for i := 0; i < 9; i++ {
		w[i] = 1
	}
	w[9+4] = -1
	c2 := conv{Cin: 1, Cout: 2, K: 3, Stride: 2, Pad: 1, W: w, B: []float32{1, 0}}
	y = c2.forward(x, false)
	checkValues(t, "3x3/2 conv", y.Data, []float32{13, 17, 25, 29, -1, -3, -7, -9})
	y = c2.forward(x, true)
	checkValues(t, "3x3/2 conv+relu", y.Data, []float32{13, 17, 25, 29, 0, 0, 0, 0})

	// Two input channels, batch of 2, 1x1 kernel [1, 10] (the direct path): out = x0 + 10 x1.
	xb := act{C: 2, B: 2, H: 1, W: 2, Data: []float32{
		1, 2, // channel 0, image 0
		3, 4, // channel 0, image 1
		5, 6, // channel 1, image 0
		7, 8, // channel 1, image 1
	}}
	c3 := conv{Cin: 2, Cout: 1, K: 1, Stride: 1, W: []float32{1, 10}}
	y = c3.forward(xb, false)
	checkValues(t, "1x1 conv", y.Data, []float32{51, 62, 73, 84})
}

// TestFoldBN checks BN folding by hand: w = 2, gamma = 3, beta = 1, mean = 0.5,
// var = 4 - eps, so sqrt(var + eps) = 2 and g = 1.5: folded w = 3, bias = 1 - 0.5*1.5 = 0.25.
// For x = 2: BN(conv) = 3 * (4 - 0.5) / 2 + 1 = 6.25 = 3*2 + 0.25.
func TestFoldBN(t *testing.T) {
	fw, fb := foldBN([]float32{2}, 1, []float32{3}, []float32{1}, []float32{0.5}, []float32{4 - bnEps})
	checkValues(t, "folded weight", fw, []float32{3})
	checkValues(t, "folded bias", fb, []float32{0.25})
	c := conv{Cin: 1, Cout: 1, K: 1, Stride: 1, W: fw, B: fb}
	y := c.forward(act{C: 1, B: 1, H: 1, W: 1, Data: []float32{2}}, false)
	checkValues(t, "conv+bn", y.Data, []float32{6.25})
}

// TestMaxPoolByHand checks MaxPool2d(3, 2, 1) on a 4x4 ramp; padding never wins, even when
// every value is negative.
func TestMaxPoolByHand(t *testing.T) {
	// x = 1..16 row by row. Windows (rows x cols, clipped to the image):
	// (0..1, 0..1) -> 6, (0..1, 1..3) -> 8, (1..3, 0..1) -> 14, (1..3, 1..3) -> 16.
	x := newAct(1, 1, 4, 4)
	for i := range x.Data {
		x.Data[i] = float32(i + 1)
	}
	y := maxPool(x, 3, 2, 1)
	checkValues(t, "maxpool", y.Data, []float32{6, 8, 14, 16})
	// Negated: the maxima are the windows' smallest magnitudes: -1, -2, -5, -6.
	for i := range x.Data {
		x.Data[i] = -x.Data[i]
	}
	y = maxPool(x, 3, 2, 1)
	checkValues(t, "maxpool negative", y.Data, []float32{-1, -2, -5, -6})
}

func TestReluOf(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	for _, c := range [][2]float32{{-1, 0}, {negZero, 0}, {0, 0}, {2.5, 2.5}, {-1e-30, 0}, {1e-30, 1e-30}, {float32(math.Inf(-1)), 0}} {
		got := reluOf(c[0])
		if got != c[1] || math.Signbit(float64(got)) {
			t.Errorf("reluOf(%g) = %g, want +%g", c[0], got, c[1])
		}
	}
}

// TestAddReLU checks the residual join.
func TestAddReLU(t *testing.T) {
	a := act{C: 1, B: 1, H: 1, W: 3, Data: []float32{1, -2, 0.5}}
	b := act{C: 1, B: 1, H: 1, W: 3, Data: []float32{1, 1, -1}}
	addReLU(a, b)
	checkValues(t, "addReLU", a.Data, []float32{2, 0, 0})
}

// im2colCases are convolution geometries (channels, batch, height, width, kernel, stride,
// padding) that cut every edge case: padding wider than the image, strides over 1, output
// rows shorter than a 16-column register tile, 1x1 kernels.
var im2colCases = []struct{ c, b, h, w, k, s, p int }{
	{2, 3, 5, 6, 3, 1, 1}, {3, 2, 7, 7, 3, 2, 1}, {1, 1, 8, 5, 7, 2, 3}, {2, 2, 4, 4, 1, 2, 0},
	{1, 2, 3, 2, 5, 1, 2}, {2, 1, 9, 9, 3, 3, 0}, {1, 1, 2, 9, 7, 2, 3}, {1, 3, 6, 7, 4, 2, 1},
	{3, 2, 20, 37, 3, 1, 1}, {2, 3, 18, 17, 3, 2, 1}, {4, 2, 9, 23, 1, 1, 0}, {2, 2, 40, 36, 3, 2, 1},
	{20, 1, 9, 40, 1, 2, 0},
}

// naiveIm2col is the im2col matrix by its definition: (Cin*K*K) x (B*Ho*Wo), row
// (ci*K + ky)*K + kx, column (b*Ho + oy)*Wo + ox holding x[ci, b, oy*s - p + ky, ox*s - p + kx],
// zero outside the image.
func naiveIm2col(x act, k, s, p, ho, wo int) []float32 {
	n := x.B * ho * wo
	cols := make([]float32, x.C*k*k*n)
	for ci := 0; ci < x.C; ci++ {
		for ky := 0; ky < k; ky++ {
			for kx := 0; kx < k; kx++ {
				r := (ci*k+ky)*k + kx
				for b := 0; b < x.B; b++ {
					for oy := 0; oy < ho; oy++ {
						for ox := 0; ox < wo; ox++ {
							iy, ix := oy*s-p+ky, ox*s-p+kx
							if iy >= 0 && iy < x.H && ix >= 0 && ix < x.W {
								cols[r*n+(b*ho+oy)*wo+ox] = x.plane(ci, b)[iy*x.W+ix]
							}
						}
					}
				}
			}
		}
	}
	return cols
}

// TestPatchesPack checks the micro-panels packed straight from the image against the im2col
// matrix, both ways round, at every panel position and for column ranges that start mid-row
// (the parallel split's), with junk in the destination beforehand.
func TestPatchesPack(t *testing.T) {
	const nr = blocked.NR
	rng := rand.New(rand.NewPCG(5, 6))
	for _, tc := range im2colCases {
		x := newAct(tc.c, tc.b, tc.h, tc.w)
		for i := range x.Data {
			x.Data[i] = float32(rng.NormFloat64())
		}
		ho := (tc.h+2*tc.p-tc.k)/tc.s + 1
		wo := (tc.w+2*tc.p-tc.k)/tc.s + 1
		cols := naiveIm2col(x, tc.k, tc.s, tc.p, ho, wo)
		rows, n := tc.c*tc.k*tc.k, tc.b*ho*wo
		for _, transposed := range []bool{false, true} {
			// op(B) is rows x n, or n x rows transposed.
			kdim, ndim := rows, n
			at := func(q, j int) float32 { return cols[q*n+j] }
			if transposed {
				kdim, ndim = n, rows
				at = func(q, j int) float32 { return cols[j*n+q] }
			}
			full := newPatches(x, tc.k, tc.s, tc.p, ho, wo, transposed)
			for _, off := range []int{0, 3, ndim / 2} {
				if off >= ndim {
					continue
				}
				var pan blocked.Panels = full
				if off > 0 {
					pan = full.from(off, ndim-off)
				}
				for pc := 0; pc < kdim; pc += 5 {
					kc := min(7, kdim-pc)
					for j0 := 0; j0 < ndim-off; j0 += nr {
						dst := make([]float32, kc*nr)
						for i := range dst {
							dst[i] = float32(math.NaN())
						}
						pan.Pack(dst, pc, kc, j0)
						for q := 0; q < kc; q++ {
							for j := 0; j < nr; j++ {
								var want float32
								if off+j0+j < ndim {
									want = at(pc+q, off+j0+j)
								}
								if got := dst[q*nr+j]; got != want {
									t.Fatalf("%+v transposed=%v off=%d: panel (pc=%d, j0=%d) [%d][%d] = %v, want %v", tc, transposed, off, pc, j0, q, j, got, want)
								}
							}
						}
					}
				}
			}
			full.release()
		}
	}
}

// TestBackwardInputConv checks the stride-1 input gradient computed as a convolution of
// dout against the col2im path, which TestCol2imAdjoint ties to the forward convolution.
func TestBackwardInputConv(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ cin, cout, b, h, w, k, p int }{
		{3, 4, 2, 9, 11, 3, 1}, {2, 5, 1, 20, 37, 3, 1}, {4, 2, 3, 6, 5, 3, 0}, {1, 3, 2, 7, 8, 5, 2}, {2, 2, 1, 4, 4, 2, 1},
	} {
		c := conv{Cin: tc.cin, Cout: tc.cout, K: tc.k, Stride: 1, Pad: tc.p, W: make([]float32, tc.cout*tc.cin*tc.k*tc.k)}
		for i := range c.W {
			c.W[i] = float32(rng.NormFloat64())
		}
		ho, wo := c.outSize(tc.h), c.outSize(tc.w)
		dout := newAct(tc.cout, tc.b, ho, wo)
		for i := range dout.Data {
			dout.Data[i] = float32(rng.NormFloat64())
		}
		got, want := newAct(tc.cin, tc.b, tc.h, tc.w), newAct(tc.cin, tc.b, tc.h, tc.w)
		for i := range got.Data {
			got.Data[i] = float32(math.NaN()) // every entry must be written
		}
		c.backwardInputConv(dout, got)
		c.backwardInputCol2im(dout, want)
		for i := range want.Data {
			if d := math.Abs(float64(got.Data[i] - want.Data[i])); !(d <= 1e-5*(1+math.Abs(float64(want.Data[i])))) {
				t.Fatalf("%+v: dx[%d] = %v by convolution, %v by col2im", tc, i, got.Data[i], want.Data[i])
			}
		}
	}
}

// TestCol2imAdjoint checks <im2col(x), c> = <x, col2im(c)>, which is what makes col2im the
// right input gradient of a convolution.
func TestCol2imAdjoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range im2colCases {
		x := newAct(tc.c, tc.b, tc.h, tc.w)
		for i := range x.Data {
			x.Data[i] = float32(rng.NormFloat64())
		}
		ho := (tc.h+2*tc.p-tc.k)/tc.s + 1
		wo := (tc.w+2*tc.p-tc.k)/tc.s + 1
		cols := naiveIm2col(x, tc.k, tc.s, tc.p, ho, wo)
		r := make([]float32, len(cols))
		for i := range r {
			r[i] = float32(rng.NormFloat64())
		}
		dx := newAct(tc.c, tc.b, tc.h, tc.w)
		col2im(r, dx, tc.k, tc.s, tc.p, ho, wo)
		var lhs, rhs float64
		for i := range cols {
			lhs += float64(cols[i]) * float64(r[i])
		}
		for i := range x.Data {
			rhs += float64(x.Data[i]) * float64(dx.Data[i])
		}
		if math.Abs(lhs-rhs) > 1e-4*math.Max(1, math.Abs(lhs)) {
			t.Errorf("%+v: <im2col x, r> = %g, <x, col2im r> = %g", tc, lhs, rhs)
		}
	}
}

// TestSgemmSplit checks the parallel split against a plain triple loop for every
// transposition, with shapes that split by rows and by columns, over both kernels.
func TestSgemmSplit(t *testing.T) {
	defer func(k func(bool, bool, int, int, int, float32, []float32, int, []float32, int, float32, []float32, int)) {
		kernel = k
	}(kernel)
	kernel = gonumSgemm
	testSgemmSplit(t)
	kernel = blocked.Sgemm
	testSgemmSplit(t)
}

func testSgemmSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, sh := range [][3]int{{10, 2000, 128}, {2000, 10, 128}, {64, 64, 64}} { // the first two are split
		m, n, k := sh[0], sh[1], sh[2]
		for _, ta := range []bool{false, true} {
			for _, tb := range []bool{false, true} {
				a := make([]float32, m*k)
				b := make([]float32, k*n)
				c := make([]float32, m*n)
				for i := range a {
					a[i] = float32(rng.NormFloat64())
				}
				for i := range b {
					b[i] = float32(rng.NormFloat64())
				}
				for i := range c {
					c[i] = float32(rng.NormFloat64())
				}
				want := make([]float64, m*n)
				for i := 0; i < m; i++ {
					for j := 0; j < n; j++ {
						s := 0.5 * float64(c[i*n+j])
						for p := 0; p < k; p++ {
							av, bv := a[i*k+p], b[p*n+j]
							if ta {
								av = a[p*m+i]
							}
							if tb {
								bv = b[j*k+p]
							}
							s += 2 * float64(av) * float64(bv)
						}
						want[i*n+j] = s
					}
				}
				lda, ldb := k, n
				if ta {
					lda = m
				}
				if tb {
					ldb = k
				}
				sgemm(ta, tb, m, n, k, 2, a, lda, b, ldb, 0.5, c, n)
				for i := range c {
					if math.Abs(float64(c[i])-want[i]) > 1e-3*math.Max(1, math.Abs(want[i])) {
						t.Fatalf("m=%d n=%d k=%d ta=%v tb=%v: c[%d] = %g, want %g", m, n, k, ta, tb, i, c[i], want[i])
					}
				}
			}
		}
	}
}
