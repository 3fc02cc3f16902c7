package sgemm

import "math"

// Batch norm's elementwise passes over one channel's values, for the backbone's training.
// They live here beside the other vector loops so that all assembly sits in one package. The
// assembly paths give the same bits as the Go loops: the float64 sums keep the Go loops' four
// accumulators, one per lane (a product of two float32 values is exact in float64, so a fused
// multiply-add rounds as the separate product and sum do), and the float32 arithmetic uses no
// fused operations.

// SumSquares returns sum(v) and sum(v^2) in float64 with four accumulators: value i goes to
// accumulator i mod 4 (the last len(v) mod 4 values to the first), and the sums are
// (s0 + s1) + (s2 + s3).
func SumSquares(v []float32) (s, s2 float64) {
	var a, q [4]float64
	n := len(v) &^ 3
	if asmKernel && n > 0 {
		sumSq4(&v[0], n/4, &a, &q)
	} else {
		for i := 0; i < n; i += 4 {
			x0, x1, x2, x3 := float64(v[i]), float64(v[i+1]), float64(v[i+2]), float64(v[i+3])
			a[0], a[1], a[2], a[3] = a[0]+x0, a[1]+x1, a[2]+x2, a[3]+x3
			q[0], q[1], q[2], q[3] = q[0]+x0*x0, q[1]+x1*x1, q[2]+x2*x2, q[3]+x3*x3
		}
	}
	for _, x := range v[n:] {
		a[0] += float64(x)
		q[0] += float64(x) * float64(x)
	}
	return (a[0] + a[1]) + (a[2] + a[3]), (q[0] + q[1]) + (q[2] + q[3])
}

// MaskedSums zeroes dy[i] where the ReLU of gamma * xh[i] + beta is +0 (the ReLU's gradient,
// NormReLU's output recomputed to the bit) and returns sum(dy) and sum(dy * xh) over the
// masked values in float64, value i going to accumulator i mod 4. xh must be at least as long
// as dy.
func MaskedSums(dy, xh []float32, gamma, beta float32) (sdy, sdyx float64) {
	var a, q [4]float64
	xh = xh[:len(dy)]
	n := len(dy) &^ 3
	if asmKernel && n > 0 {
		p := [2]float32{gamma, beta}
		maskedSums4(&dy[0], &xh[0], n/4, &a, &q, &p)
	} else {
		n = 0
	}
	for i := n; i < len(dy); i++ {
		if math.Float32bits(reluOf(gamma*xh[i]+beta)) == 0 {
			dy[i] = 0
		}
		d := dy[i]
		a[i&3] += float64(d)
		q[i&3] += float64(d) * float64(xh[i])
	}
	return (a[0] + a[1]) + (a[2] + a[3]), (q[0] + q[1]) + (q[2] + q[3])
}

// NormReLU normalises row in place, row[j] = (row[j] - mean) * inv, and writes max(gamma *
// row[j] + beta, 0) (+0 for a negative or -0 sum) to out, row's consecutive runs of w values
// going to runs outStride apart in out (w == outStride: out is laid out as row; w <
// outStride: into the interior of a zero-padded image). len(row) must be a multiple of w.
func NormReLU(row, out []float32, w, outStride int, mean, inv, gamma, beta float32) {
	if len(row) == 0 {
		return
	}
	rows := len(row) / w
	if rows*w != len(row) || outStride < w {
		panic("sgemm: NormReLU: len(row) not a multiple of w, or outStride < w")
	}
	out = out[:(rows-1)*outStride+w]
	n := 0
	if asmKernel && w >= 8 {
		n = w &^ 7
		p := [4]float32{mean, inv, gamma, beta}
		normReLU8(&row[0], &out[0], n/8, rows, 4*(w-n), 4*(outStride-n), &p)
	}
	for r := 0; r < rows; r++ {
		src, dst := row[r*w:(r+1)*w], out[r*outStride:r*outStride+w]
		for j := n; j < w; j++ {
			xh := (src[j] - mean) * inv
			src[j] = xh
			dst[j] = reluOf(gamma*xh + beta)
		}
	}
}

// NormGrad sets dy[j] = k * ((dy[j] - a) - xh[j] * b), batch norm's input gradient from the
// gradient dy of its output; xh must be at least as long as dy.
func NormGrad(dy, xh []float32, k, a, b float32) {
	xh = xh[:len(dy)]
	n := 0
	if asmKernel && len(dy) >= 8 {
		n = len(dy) &^ 7
		p := [4]float32{k, a, b}
		normGrad8(&dy[0], &xh[0], n/8, &p)
	}
	for j := n; j < len(dy); j++ {
		dy[j] = k * (dy[j] - a - xh[j]*b)
	}
}

// reluOf is max(v, 0) by its bits: the sign bit spread over the word clears negative values
// and turns -0 into +0.
func reluOf(v float32) float32 {
	bits := math.Float32bits(v)
	return math.Float32frombits(bits &^ uint32(int32(bits)>>31))
}
