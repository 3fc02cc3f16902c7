package backbone

import (
	"runtime"
	"sync"

	blocked "github.com/pipe-ahl/pipe/ahl/sgemm"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// kernel is the single-threaded (or self-parallel) float32 matrix product every convolution
// and its gradient goes through: C = alpha * op(A) * op(B) + beta * C, row-major. Switching
// the kernel is a one-line change here: ahl/sgemm (blocked, AVX2/FMA microkernel, pure-Go
// fallback) or gonumSgemm (gonum's pure-Go BLAS, about 5x slower here).
var kernel = blocked.Sgemm

func gonumSgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	gonum.Implementation{}.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// parallelFlops is the work (2 m n k) below which a product runs on one goroutine.
const parallelFlops = 1 << 22

// sgemm computes C = alpha * op(A) * op(B) + beta * C for row-major float32 matrices, where
// op(A) is m x k and op(B) is k x n, splitting the larger of C's dimensions across
// GOMAXPROCS goroutines. Every part sums over k in the same order whatever the split, so
// results do not depend on the number of goroutines.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return // an empty batch: nothing to compute (gonum rejects zero leading dimensions)
	}
	p := runtime.GOMAXPROCS(0)
	if p == 1 || 2*m*n*k < parallelFlops {
		kernel(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	var wg sync.WaitGroup
	if n >= m {
		step := (n + p - 1) / p
		step = (step + 15) &^ 15 // whole 16-column register tiles
		for j0 := 0; j0 < n; j0 += step {
			nj := min(step, n-j0)
			bj := b[j0:]
			if transB { // B stored n x k: columns of op(B) are rows
				bj = b[j0*ldb:]
			}
			wg.Go(func() { kernel(transA, transB, m, nj, k, alpha, a, lda, bj, ldb, beta, c[j0:], ldc) })
		}
	} else {
		step := (m + p - 1) / p
		step = (step + 5) / 6 * 6 // whole 6-row register tiles
		for i0 := 0; i0 < m; i0 += step {
			mi := min(step, m-i0)
			ai := a[i0:] // A stored k x m: rows of op(A) are columns
			if !transA {
				ai = a[i0*lda:]
			}
			wg.Go(func() { kernel(transA, transB, mi, n, k, alpha, ai, lda, b, ldb, beta, c[i0*ldc:], ldc) })
		}
	}
	wg.Wait()
}

// sgemmPatches computes C = A * op(B) + beta * C, A m x k (row stride lda), op(B) k x n the
// im2col matrix p describes (or its transpose), C m x n (row stride ldc), split across
// GOMAXPROCS goroutines as sgemm splits: every part sums over k in the same order, and gives
// the bits of the same product with the im2col matrix written out.
func sgemmPatches(m, n, k int, a []float32, lda int, p *patches, c []float32, ldc int, beta float32) {
	if m == 0 || n == 0 {
		return
	}
	procs := runtime.GOMAXPROCS(0)
	if procs == 1 || 2*m*n*k < parallelFlops {
		blocked.SgemmPanels(false, m, n, k, 1, a, lda, p, beta, c, ldc)
		return
	}
	var wg sync.WaitGroup
	if n >= m {
		step := (n + procs - 1) / procs
		step = (step + 15) &^ 15 // whole 16-column register tiles
		for j0 := 0; j0 < n; j0 += step {
			nj := min(step, n-j0)
			wg.Go(func() { blocked.SgemmPanels(false, m, nj, k, 1, a, lda, p.from(j0, nj), beta, c[j0:], ldc) })
		}
	} else {
		step := (m + procs - 1) / procs
		step = (step + 5) / 6 * 6 // whole 6-row register tiles
		for i0 := 0; i0 < m; i0 += step {
			mi := min(step, m-i0)
			wg.Go(func() { blocked.SgemmPanels(false, mi, n, k, 1, a[i0*lda:], lda, p.from(0, n), beta, c[i0*ldc:], ldc) })
		}
	}
	wg.Wait()
}
