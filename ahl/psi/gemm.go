package psi

// gemm adds into c (m x n, row stride ldc) the product of a (k x m, row stride lda: a's
// transpose is the left factor) and b (k x n, row stride ldb):
//
//	c[i*ldc+j] += a[0*lda+i]*b[0*ldb+j] + a[1*lda+i]*b[1*ldb+j] + ... (p = 0..k-1)
//
// adding each product to the running sum in order of p, with a separate multiply and add (no
// fused multiply-add), so every element gets exactly the bits of that scalar loop whichever
// kernel computes it.
func gemm(m, n, k int, a []float64, lda int, b []float64, ldb int, c []float64, ldc int) {
	if m == 0 || n == 0 || k == 0 {
		return
	}
	_ = a[(k-1)*lda+m-1]
	_ = b[(k-1)*ldb+n-1]
	_ = c[(m-1)*ldc+n-1]
	j := 0
	if asmKernel {
		for ; j+8 <= n; j += 8 {
			i := 0
			for ; i+4 <= m; i += 4 {
				kern4x8(k, &a[i], lda, &b[j], ldb, &c[i*ldc+j], ldc)
			}
			for ; i < m; i++ {
				kern1x8(k, &a[i], lda, &b[j], ldb, &c[i*ldc+j], ldc)
			}
		}
	}
	gemmGo(m, n, j, k, a, lda, b, ldb, c, ldc)
}

// gemmGo is gemm for columns j0..n-1, in Go.
func gemmGo(m, n, j0, k int, a []float64, lda int, b []float64, ldb int, c []float64, ldc int) {
	for i := 0; i < m; i++ {
		for j := j0; j < n; j++ {
			s := c[i*ldc+j]
			for p := 0; p < k; p++ {
				s += a[p*lda+i] * b[p*ldb+j]
			}
			c[i*ldc+j] = s
		}
	}
}
