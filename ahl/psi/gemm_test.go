package psi

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestGemmKernels checks that gemm's assembly kernels give exactly the bits of its Go loop
// (each product added to the running sum in order, unfused) for tile-aligned and ragged
// shapes and strides wider than the tile, on values of very different magnitudes so that a
// different summation order or a fused multiply-add would show.
func TestGemmKernels(t *testing.T) {
	if !asmKernel {
		t.Skip("no assembly kernel in this build or on this CPU")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	val := func() float64 { return rng.NormFloat64() * math.Pow(10, float64(rng.IntN(17)-8)) }
	for _, sh := range [][3]int{{4, 8, 1}, {28, 64, 5}, {7, 64, 28}, {14, 13, 28}, {28, 24, 320}, {3, 9, 7}, {5, 17, 2}} {
		m, n, k := sh[0], sh[1], sh[2]
		lda, ldb, ldc := m+3, n+5, n+2
		a, b := make([]float64, k*lda), make([]float64, k*ldb)
		c := make([]float64, m*ldc)
		for _, s := range [][]float64{a, b, c} {
			for i := range s {
				s[i] = val()
			}
		}
		want := append([]float64(nil), c...)
		gemmGo(m, n, 0, k, a, lda, b, ldb, want, ldc)
		got := append([]float64(nil), c...)
		gemm(m, n, k, a, lda, b, ldb, got, ldc)
		for i := range got {
			if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
				t.Fatalf("%dx%dx%d: element %d is %v, Go loop %v", m, n, k, i, got[i], want[i])
			}
		}
	}
}
