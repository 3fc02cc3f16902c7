//go:build !amd64 || purego

package sgemm

// asmKernel is false: this build has no assembly microkernel.
var asmKernel = false

// kernel multiplies one packed A micro-panel by one packed B micro-panel into C (adding to
// it, or overwriting it when !add).
func kernel(kc int, a, b, c []float32, ldc int, add bool) { kernelGo(kc, a, b, c, ldc, add) }

func axpy8(a float32, x, y *float32, blocks int) { panic("sgemm: no assembly axpy") }

func dot8(x, y *float32, blocks int) float32 { panic("sgemm: no assembly dot") }

func gather16(dst, src *float32, offs *int, n int) { panic("sgemm: no assembly gather") }

func gatherIdx16(dst, src *float32, idx *int32, corners *int, n int) {
	panic("sgemm: no assembly gather")
}

func gatherT8x16(dst, src *float32, idx *int32, corner int, n int) {
	panic("sgemm: no assembly gather")
}

func gather16s2(dst, src *float32, offs *int, n int) { panic("sgemm: no assembly gather") }

func sumSq4(v *float32, blocks int, a, q *[4]float64) { panic("sgemm: no assembly sums") }

func maskedSums4(dy, xh *float32, blocks int, a, q *[4]float64, p *[2]float32) {
	panic("sgemm: no assembly sums")
}

func normReLU8(row, out *float32, blocks, rows, rowSkip, outSkip int, p *[4]float32) {
	panic("sgemm: no assembly norm")
}

func normGrad8(dy, xh *float32, blocks int, p *[4]float32) { panic("sgemm: no assembly norm") }

func kernelRows(h, kc int, a []float32, lda int, b, c []float32, ldc int, add bool) {
	panic("sgemm: no assembly kernel")
}

func addStride2x8(x, y *float32, blocks int) { panic("sgemm: no assembly add") }

func gatherT8x16s2(dst, src *float32, idx *int32, corner int, n int) {
	panic("sgemm: no assembly gather")
}
