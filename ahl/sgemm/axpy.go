package sgemm

// Axpy computes y[i] += a * x[i] for i < len(x); y must be at least as long as x. On amd64
// with AVX2 and FMA the body runs eight lanes at a time with fused multiply-adds.
func Axpy(a float32, x, y []float32) {
	y = y[:len(x)]
	n := 0
	if asmKernel && len(x) >= 8 {
		n = len(x) &^ 7
		axpy8(a, &x[0], &y[0], n/8)
	}
	for i := n; i < len(x); i++ {
		y[i] += a * x[i]
	}
}

// Dot returns sum_i x[i] * y[i] over len(x) values; y must be at least as long as x. The
// assembly path keeps eight partial sums and adds them at the end.
func Dot(x, y []float32) float32 {
	y = y[:len(x)]
	n := 0
	var s float32
	if asmKernel && len(x) >= 8 {
		n = len(x) &^ 7
		s = dot8(&x[0], &y[0], n/8)
	}
	for i := n; i < len(x); i++ {
		s += x[i] * y[i]
	}
	return s
}
