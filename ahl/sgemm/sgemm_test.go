package sgemm

import (
	"math"
	"math/rand/v2"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

func randSlice(rng *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(rng.NormFloat64())
	}
	return s
}

// naive is the float64 reference C = alpha*op(A)*op(B) + beta*C; mag holds, per element,
// |alpha| * sum |a||b| + |beta c|, the scale of its rounding error.
func naive(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) (out, mag []float64) {
	out = make([]float64, m*n)
	mag = make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, g float64
			for p := 0; p < k; p++ {
				av := a[i*lda+p]
				if transA {
					av = a[p*lda+i]
				}
				bv := b[p*ldb+j]
				if transB {
					bv = b[j*ldb+p]
				}
				s += float64(av) * float64(bv)
				g += math.Abs(float64(av) * float64(bv))
			}
			out[i*n+j] = float64(alpha)*s + float64(beta)*float64(c[i*ldc+j])
			mag[i*n+j] = math.Abs(float64(alpha))*g + math.Abs(float64(beta)*float64(c[i*ldc+j]))
		}
	}
	return out, mag
}

// TestSgemm compares every transpose combination, on shapes that cut every block edge, with
// a float64 reference, for both microkernels. Tolerance: a float32 sum of k products is off
// by at most about k * 2^-24 times the sum of |products| (worst case; typically sqrt(k) times
// that), so 1e-6 * (1 + sum |a||b|) covers the blocked sums (at most KC = 256 terms per block
// plus one add per block) with margin.
func TestSgemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	shapes := [][3]int{{1, 1, 1}, {6, 16, 7}, {7, 17, 300}, {97, 33, 257}, {13, 2050, 5}, {0, 3, 4}, {3, 4, 0}, {MCWhole + 7, 35, 300}}
	for _, useAsm := range []bool{false, true} {
		if useAsm && !asmKernel {
			t.Log("no assembly microkernel on this machine; checked the Go kernel only")
			continue
		}
		saved := asmKernel
		asmKernel = useAsm
		for _, sh := range shapes {
			m, n, k := sh[0], sh[1], sh[2]
			for _, tA := range []bool{false, true} {
				for _, tB := range []bool{false, true} {
					lda, ldb, ldc := k+3, n+1, n+2
					if tA {
						lda = m + 3
					}
					if tB {
						ldb = k + 1
					}
					a := randSlice(rng, max(m, k)*lda+1)
					b := randSlice(rng, max(n, k)*ldb+1)
					c := randSlice(rng, max(m, 1)*ldc)
					for _, beta := range []float32{0, 1, -0.5} {
						cc := append([]float32(nil), c...)
						if beta == 0 {
							for i := range cc {
								cc[i] = float32(math.NaN())
							}
						}
						cref := c
						if beta == 0 {
							cref = make([]float32, len(c))
						}
						want, mag := naive(tA, tB, m, n, k, 1.5, a, lda, b, ldb, beta, cref, ldc)
						Sgemm(tA, tB, m, n, k, 1.5, a, lda, b, ldb, beta, cc, ldc)
						for i := 0; i < m; i++ {
							for j := 0; j < n; j++ {
								got := float64(cc[i*ldc+j])
								if d := math.Abs(got - want[i*n+j]); !(d <= 1e-6*(1+mag[i*n+j])) {
									t.Fatalf("asm=%v m=%d n=%d k=%d tA=%v tB=%v beta=%v: C[%d,%d] = %v, want %v", useAsm, m, n, k, tA, tB, beta, i, j, got, want[i*n+j])
								}
							}
							// Padding columns beyond n must be untouched.
							for j := n; j < ldc && i*ldc+j < len(c); j++ {
								if beta != 0 && cc[i*ldc+j] != c[i*ldc+j] {
									t.Fatalf("asm=%v: C[%d,%d] beyond n was written", useAsm, i, j)
								}
							}
						}
					}
				}
			}
		}
		asmKernel = saved
	}
}

// TestSgemmDeterministic checks that two calls give bit-identical results.
func TestSgemmDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m, n, k := 50, 70, 600
	a, b := randSlice(rng, m*k), randSlice(rng, k*n)
	c1, c2 := make([]float32, m*n), make([]float32, m*n)
	Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c1, n)
	Sgemm(false, true, m, n, k, 1, a, k, b, k, 0, c2, n)
	for i := range c1 {
		if math.Float32bits(c1[i]) != math.Float32bits(c2[i]) {
			t.Fatalf("C[%d] differs between calls: %v vs %v", i, c1[i], c2[i])
		}
	}
}

// rowsPanels is op(B) = the k x n row-major matrix b, packed by hand.
type rowsPanels struct {
	b    []float32
	n    int
	hits *int
}

func (r rowsPanels) Pack(dst []float32, pc, kc, j0 int) {
	*r.hits++
	for q := 0; q < kc; q++ {
		for j := 0; j < NR; j++ {
			dst[q*NR+j] = 0
			if j0+j < r.n {
				dst[q*NR+j] = r.b[(pc+q)*r.n+j0+j]
			}
		}
	}
}

// TestSgemmPanels checks that SgemmPanels gives Sgemm's bits for the same op(B), on both
// loop orders (m up to MCWhole and beyond), and that it asks for every micro-panel.
func TestSgemmPanels(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for _, sh := range [][3]int{{16, 100, 27}, {64, 37, 600}, {MCWhole + 1, 40, 300}} {
		m, n, k := sh[0], sh[1], sh[2]
		a, b := randSlice(rng, m*k), randSlice(rng, k*n)
		want, got := randSlice(rng, m*n), make([]float32, m*n)
		copy(got, want)
		Sgemm(false, false, m, n, k, 1, a, k, b, n, 0.5, want, n)
		hits := 0
		SgemmPanels(false, m, n, k, 1, a, k, rowsPanels{b: b, n: n, hits: &hits}, 0.5, got, n)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%dx%dx%d: C[%d] = %v from panels, %v from Sgemm", m, n, k, i, got[i], want[i])
			}
		}
		blocks := ((n + NR - 1) / NR) * ((k + KC - 1) / KC)
		if hits != blocks {
			t.Errorf("%dx%dx%d: %d micro-panels packed, want %d (each once)", m, n, k, hits, blocks)
		}
	}
}

// TestGather16 checks Gather16 against copies, on both paths, and its range checks.
func TestGather16(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	src := randSlice(rng, 100)
	offs := []int{0, 84, 3, 50, 17}
	for _, useAsm := range []bool{false, asmKernel} {
		saved := asmKernel
		asmKernel = useAsm
		dst := make([]float32, 16*len(offs)+1)
		dst[len(dst)-1] = 7
		Gather16(dst, src, offs)
		asmKernel = saved
		for q, o := range offs {
			for i := 0; i < 16; i++ {
				if dst[16*q+i] != src[o+i] {
					t.Fatalf("asm=%v: dst[%d] = %v, want src[%d] = %v", useAsm, 16*q+i, dst[16*q+i], o+i, src[o+i])
				}
			}
		}
		if dst[len(dst)-1] != 7 {
			t.Fatalf("asm=%v: wrote past 16*len(offs)", useAsm)
		}
	}
	for _, bad := range [][]int{{85}, {-1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic for offsets %v into 100 values", bad)
				}
			}()
			Gather16(make([]float32, 16), src, bad)
		}()
	}
}

// TestGatherIdx16 checks GatherIdx16 against plain indexing, on both paths, and its range
// checks.
func TestGatherIdx16(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	src := randSlice(rng, 300)
	idx := [16]int32{0, 1, 2, 40, 41, 42, 80, 81, 82, 150, 151, 152, 190, 191, 192, 7}
	corners := []int{0, 107, 5, 33, 60}
	for _, useAsm := range []bool{false, asmKernel} {
		saved := asmKernel
		asmKernel = useAsm
		dst := make([]float32, 16*len(corners)+1)
		dst[len(dst)-1] = 7
		GatherIdx16(dst, src, &idx, corners)
		asmKernel = saved
		for q, c := range corners {
			for j, v := range idx {
				if dst[16*q+j] != src[c+int(v)] {
					t.Fatalf("asm=%v: dst[%d] = %v, want src[%d] = %v", useAsm, 16*q+j, dst[16*q+j], c+int(v), src[c+int(v)])
				}
			}
		}
		if dst[len(dst)-1] != 7 {
			t.Fatalf("asm=%v: wrote past 16*len(corners)", useAsm)
		}
	}
	for _, bad := range [][]int{{108}, {-1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic for corners %v into 300 values", bad)
				}
			}()
			GatherIdx16(make([]float32, 16), src, &idx, bad)
		}()
	}
}

// TestGatherRun16 checks GatherRun16 against plain indexing, on both paths, for runs with
// and without a remainder past the 8-pixel blocks, and its range checks.
func TestGatherRun16(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	src := randSlice(rng, 400)
	idx := [16]int32{0, 1, 2, 40, 41, 42, 80, 81, 82, 150, 151, 152, 190, 191, 192, 7}
	for _, rows := range []int{1, 7, 8, 9, 16, 21} {
		for _, useAsm := range []bool{false, asmKernel} {
			saved := asmKernel
			asmKernel = useAsm
			dst := make([]float32, 16*rows+1)
			dst[len(dst)-1] = 7
			GatherRun16(dst, src, &idx, 11, rows)
			asmKernel = saved
			for p := 0; p < rows; p++ {
				for c, v := range idx {
					if want := src[11+p+int(v)]; dst[16*p+c] != want {
						t.Fatalf("asm=%v rows=%d: dst[%d] = %v, want %v", useAsm, rows, 16*p+c, dst[16*p+c], want)
					}
				}
			}
			if dst[len(dst)-1] != 7 {
				t.Fatalf("asm=%v rows=%d: wrote past 16*rows", useAsm, rows)
			}
		}
	}
	for _, bad := range [][2]int{{-1, 1}, {200, 16}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic for corner %d, %d rows into 400 values", bad[0], bad[1])
				}
			}()
			GatherRun16(make([]float32, 16*bad[1]), src, &idx, bad[0], bad[1])
		}()
	}
}

// TestGather16Stride2 checks Gather16Stride2 against strided indexing, on both paths
// (including an offset whose 32-value read would pass the end, which takes the Go path), and
// its range checks.
func TestGather16Stride2(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	src := randSlice(rng, 100)
	for _, offs := range [][]int{{0, 68, 3, 50, 17}, {0, 69}} {
		for _, useAsm := range []bool{false, asmKernel} {
			saved := asmKernel
			asmKernel = useAsm
			dst := make([]float32, 16*len(offs)+1)
			dst[len(dst)-1] = 7
			Gather16Stride2(dst, src, offs)
			asmKernel = saved
			for q, o := range offs {
				for i := 0; i < 16; i++ {
					if dst[16*q+i] != src[o+2*i] {
						t.Fatalf("asm=%v offs=%v: dst[%d] = %v, want src[%d] = %v", useAsm, offs, 16*q+i, dst[16*q+i], o+2*i, src[o+2*i])
					}
				}
			}
			if dst[len(dst)-1] != 7 {
				t.Fatalf("asm=%v: wrote past 16*len(offs)", useAsm)
			}
		}
	}
	for _, bad := range [][]int{{70}, {-1}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic for offsets %v into 100 values", bad)
				}
			}()
			Gather16Stride2(make([]float32, 16), src, bad)
		}()
	}
}

func TestSgemmPanicsOnShortSlice(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic for a too-short A")
		}
	}()
	Sgemm(false, false, 4, 4, 4, 1, make([]float32, 15), 4, make([]float32, 16), 4, 0, make([]float32, 16), 4)
}

// benchShapes are the heads' and backbone's hot products: dra's composite convolution
// forward (48 images x 20 patch positions, C*9 = 4608, C' = 512) and its weight gradient.
var benchShapes = []struct {
	name    string
	tA, tB  bool
	m, n, k int
}{
	{"composite_fwd_960x512x4608", false, true, 960, 512, 4608},
	{"composite_wgrad_512x4608x96", true, false, 512, 4608, 96},
	{"square_512", false, false, 512, 512, 512},
}

// BenchmarkSgemm reports this package's GFLOP/s (2mnk flops per call).
func BenchmarkSgemm(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(s.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(5, 6))
			a := randSlice(rng, s.m*s.k)
			bb := randSlice(rng, s.k*s.n)
			c := make([]float32, s.m*s.n)
			lda, ldb := s.k, s.n
			if s.tA {
				lda = s.m
			}
			if s.tB {
				ldb = s.k
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu0 := cpuSeconds()
			for range b.N {
				Sgemm(s.tA, s.tB, s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c, s.n)
			}
			flop := 2 * float64(s.m) * float64(s.n) * float64(s.k) * float64(b.N)
			b.ReportMetric(flop/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			// Sgemm runs on one goroutine: its CPU time is its own running time, whatever
			// else shares the machine.
			if cpu := cpuSeconds() - cpu0; cpu > 0 {
				b.ReportMetric(flop/cpu/1e9, "GFLOP/cpu-s")
			}
		})
	}
}

// BenchmarkGonumSgemm is the same products through gonum's pure-Go blas32 (which gorgonia's
// float32 matmul also uses), for comparison.
func BenchmarkGonumSgemm(b *testing.B) {
	for _, s := range benchShapes {
		b.Run(s.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(5, 6))
			ar, ac := s.m, s.k
			if s.tA {
				ar, ac = s.k, s.m
			}
			br, bc := s.k, s.n
			if s.tB {
				br, bc = s.n, s.k
			}
			A := blas32.General{Rows: ar, Cols: ac, Stride: ac, Data: randSlice(rng, ar*ac)}
			B := blas32.General{Rows: br, Cols: bc, Stride: bc, Data: randSlice(rng, br*bc)}
			C := blas32.General{Rows: s.m, Cols: s.n, Stride: s.n, Data: make([]float32, s.m*s.n)}
			ta, tb := blas.NoTrans, blas.NoTrans
			if s.tA {
				ta = blas.Trans
			}
			if s.tB {
				tb = blas.Trans
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				blas32.Gemm(ta, tb, 1, A, B, 0, C)
			}
			b.ReportMetric(2*float64(s.m)*float64(s.n)*float64(s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// TestAxpyDot checks Axpy and Dot against plain loops for lengths around the 8-lane blocks.
func TestAxpyDot(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for n := 0; n < 41; n++ {
		x, y := randSlice(rng, n), randSlice(rng, n+2)
		want := append([]float32(nil), y...)
		var dot, mag float64
		for i := range x {
			want[i] += 0.75 * x[i]
			dot += float64(x[i]) * float64(y[i])
			mag += math.Abs(float64(x[i]) * float64(y[i]))
		}
		if got := Dot(x, y); math.Abs(float64(got)-dot) > 1e-6*(1+mag) {
			t.Errorf("n=%d: Dot = %v, want %v", n, got, dot)
		}
		Axpy(0.75, x, y)
		for i := range y {
			// One rounding (FMA) or two; both are within 2 ulp of the float32 loop.
			if d := math.Abs(float64(y[i] - want[i])); d > 2e-7*(1+math.Abs(float64(want[i]))) {
				t.Fatalf("n=%d: y[%d] = %v, want %v", n, i, y[i], want[i])
			}
		}
	}
}

// TestSgemmInPlaceA checks that reading A in place (no transpose, alpha 1, up to MCWhole
// rows) gives the bits of the packed path, which a transposed copy of A takes, for every row
// count that tiles of 6 and 4 rows cover differently, and B with and without partial panels.
func TestSgemmInPlaceA(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	var shapes [][3]int
	for m := 1; m <= 20; m++ {
		shapes = append(shapes, [3]int{m, 16, 5}, [3]int{m, 27, 300})
	}
	shapes = append(shapes, [3]int{32, 144, 513}, [3]int{64, 40, 1}, [3]int{66, 17, 9})
	for _, sh := range shapes {
		m, n, k := sh[0], sh[1], sh[2]
		a, b := randSlice(rng, m*k), randSlice(rng, k*n)
		at := make([]float32, k*m)
		for i := 0; i < m; i++ {
			for q := 0; q < k; q++ {
				at[q*m+i] = a[i*k+q]
			}
		}
		for _, beta := range []float32{0, 1} {
			want, got := randSlice(rng, m*n), make([]float32, m*n)
			copy(got, want)
			Sgemm(true, false, m, n, k, 1, at, m, b, n, beta, want, n)
			Sgemm(false, false, m, n, k, 1, a, k, b, n, beta, got, n)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("%dx%dx%d beta %v: C[%d] = %v with A in place, %v packed", m, n, k, beta, i, got[i], want[i])
				}
			}
		}
	}
}

// TestGatherRun16Stride2 checks GatherRun16Stride2 against the loop on both paths, up to the
// end of src (where the assembly must leave the last block to the loop), and its range
// checks.
func TestGatherRun16Stride2(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	src := randSlice(rng, 400)
	idx := [16]int32{0, 1, 2, 40, 41, 42, 80, 81, 82, 150, 151, 152, 190, 191, 192, 7}
	for _, rows := range []int{1, 7, 8, 9, 16, 21, 50, 98} {
		for _, corner := range []int{11, 400 - 193 - 2*(rows-1)} {
			if corner < 0 {
				continue
			}
			for _, useAsm := range []bool{false, asmKernel} {
				saved := asmKernel
				asmKernel = useAsm
				dst := make([]float32, 16*rows+1)
				dst[len(dst)-1] = 7
				GatherRun16Stride2(dst, src, &idx, corner, rows)
				asmKernel = saved
				for p := 0; p < rows; p++ {
					for c, v := range idx {
						if want := src[corner+2*p+int(v)]; dst[16*p+c] != want {
							t.Fatalf("asm=%v rows=%d corner=%d: dst[%d] = %v, want %v", useAsm, rows, corner, 16*p+c, dst[16*p+c], want)
						}
					}
				}
				if dst[len(dst)-1] != 7 {
					t.Fatalf("asm=%v rows=%d: wrote past 16*rows", useAsm, rows)
				}
			}
		}
	}
	for _, bad := range [][2]int{{-1, 1}, {200, 8}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("no panic for corner %d, %d rows into 400 values", bad[0], bad[1])
				}
			}()
			GatherRun16Stride2(make([]float32, 16*bad[1]), src, &idx, bad[0], bad[1])
		}()
	}
}
