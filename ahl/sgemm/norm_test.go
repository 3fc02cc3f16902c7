package sgemm

import (
	"math"
	"math/rand/v2"
	"testing"
)

// normInputs returns n values drawn from N(0, 1) with a quarter of them set to +0 and a few
// to -0, so that ReLU masks and signed zeros are exercised.
func normInputs(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		switch rng.IntN(8) {
		case 0, 1:
			v[i] = 0
		case 2:
			v[i] = float32(math.Copysign(0, -1))
		default:
			v[i] = float32(rng.NormFloat64())
		}
	}
	return v
}

// TestNormPasses checks that the assembly passes give the bits of the Go loops, and that
// those are the formulas written out one value at a time, for rows written out contiguously
// and into a padded layout.
func TestNormPasses(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 0))
	const mean, inv, gamma, beta = 0.1, 1.3, 0.9, -0.05
	for _, sh := range [][2]int{{0, 1}, {1, 1}, {3, 1}, {4, 1}, {7, 1}, {8, 1}, {9, 1}, {16, 1}, {31, 1}, {37, 1}, {1000, 1}, {8, 3}, {13, 5}, {16, 4}} {
		w, rows := sh[0], sh[1]
		n := w * rows
		x, xh, dy0 := normInputs(rng, n), normInputs(rng, n), normInputs(rng, n)
		for _, stride := range []int{w, w + 2} {
			type result struct {
				s, s2, sdy, sdyx float64
				row, relu, dy    []float32
			}
			run := func(useAsm bool) result {
				saved := asmKernel
				asmKernel = useAsm
				defer func() { asmKernel = saved }()
				var r result
				r.s, r.s2 = SumSquares(x)
				r.dy = append([]float32(nil), dy0...)
				r.sdy, r.sdyx = MaskedSums(r.dy, xh, gamma, beta)
				NormGrad(r.dy, xh, 0.7, 0.01, -0.3)
				r.row, r.relu = append([]float32(nil), x...), make([]float32, rows*stride)
				for i := range r.relu {
					r.relu[i] = 42 // the padding must be left alone
				}
				if w > 0 {
					NormReLU(r.row, r.relu, w, stride, mean, inv, gamma, beta)
				}
				return r
			}
			want := run(false)
			// The Go loops against the formulas.
			var a, q [4]float64
			for i, v := range x {
				l := i & 3
				if i >= n&^3 {
					l = 0
				}
				a[l] += float64(v)
				q[l] += float64(v) * float64(v)
			}
			if s := (a[0] + a[1]) + (a[2] + a[3]); want.s != s {
				t.Errorf("n=%d: SumSquares sum %v, want %v", n, want.s, s)
			}
			for i := range x {
				xhat := (x[i] - mean) * inv
				relu := want.relu[i/w*stride+i%w]
				if want.row[i] != xhat || relu != max(gamma*xhat+beta, 0) || math.Signbit(float64(relu)) {
					t.Fatalf("w=%d rows=%d: NormReLU value %d: row %v relu %v, want %v and max(%v, +0)", w, rows, i, want.row[i], relu, xhat, gamma*xhat+beta)
				}
				d := dy0[i]
				if gamma*xh[i]+beta <= 0 {
					d = 0
				}
				if g := 0.7 * (d - 0.01 - xh[i]*-0.3); want.dy[i] != g {
					t.Fatalf("n=%d: NormGrad value %d = %v, want %v", n, i, want.dy[i], g)
				}
			}
			for i, v := range want.relu {
				if i%stride >= w && v != 42 {
					t.Fatalf("w=%d stride=%d: padding value %d overwritten with %v", w, stride, i, v)
				}
			}
			if !asmKernel {
				continue
			}
			got := run(true)
			if got.s != want.s || got.s2 != want.s2 || got.sdy != want.sdy || got.sdyx != want.sdyx {
				t.Errorf("n=%d: assembly sums %v %v %v %v, Go %v %v %v %v", n, got.s, got.s2, got.sdy, got.sdyx, want.s, want.s2, want.sdy, want.sdyx)
			}
			same := func(a, b []float32) int {
				for i := range a {
					if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
						return i
					}
				}
				return -1
			}
			if i := same(got.row, want.row); i >= 0 {
				t.Fatalf("w=%d rows=%d: normalised value %d: assembly %v, Go %v", w, rows, i, got.row[i], want.row[i])
			}
			if i := same(got.relu, want.relu); i >= 0 {
				t.Fatalf("w=%d rows=%d stride=%d: ReLU value %d: assembly %v, Go %v", w, rows, stride, i, got.relu[i], want.relu[i])
			}
			if i := same(got.dy, want.dy); i >= 0 {
				t.Fatalf("n=%d: gradient value %d: assembly %v, Go %v", n, i, got.dy[i], want.dy[i])
			}
		}
	}
}

// TestAddStride2 checks AddStride2 on both paths against the loop, bit for bit, including
// the signs of zeros in the values it must leave alone.
func TestAddStride2(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 0))
	for _, n := range []int{0, 1, 7, 8, 9, 16, 17, 33} {
		for _, extra := range []int{0, 1, 5} {
			x := normInputs(rng, n)
			y0 := normInputs(rng, max(0, 2*n-1)+extra)
			want := append([]float32(nil), y0...)
			for i, v := range x {
				want[2*i] += v
			}
			for _, useAsm := range []bool{false, asmKernel} {
				saved := asmKernel
				asmKernel = useAsm
				got := append([]float32(nil), y0...)
				AddStride2(x, got)
				asmKernel = saved
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("n=%d extra=%d asm=%v: y[%d] = %v, want %v", n, extra, useAsm, i, got[i], want[i])
					}
				}
			}
		}
	}
}
