//go:build amd64 && !purego

package sgemm

import "golang.org/x/sys/cpu"

// asmKernel says whether the AVX2/FMA microkernel runs; tests switch it off to check the
// pure-Go kernel.
var asmKernel = cpu.X86.HasAVX2 && cpu.X86.HasFMA

// kernel6x16 is kernelGo in assembly: c[i*ldc+j] += sum_q a[q*6+i] * b[q*16+j] for the full
// 6 x 16 tile (= when add is 0), with the products fused into the sums (FMA).
//
//go:noescape
func kernel6x16(kc int, a, b, c *float32, ldc int, add int)

// kernel multiplies one packed A micro-panel by one packed B micro-panel into C, adding to
// it, or overwriting it when !add.
func kernel(kc int, a, b, c []float32, ldc int, add bool) {
	if !asmKernel {
		kernelGo(kc, a, b, c, ldc, add)
		return
	}
	_ = a[kc*MR-1]
	_ = b[kc*NR-1]
	_ = c[(MR-1)*ldc+NR-1]
	f := 0
	if add {
		f = 1
	}
	kernel6x16(kc, &a[0], &b[0], &c[0], ldc, f)
}

// kernel6x16Rows is kernel6x16 with A unpacked: row i of the tile's A is a[i*lda:], read
// in place.
//
//go:noescape
func kernel6x16Rows(kc int, a *float32, lda int, b, c *float32, ldc int, add int)

// kernel4x16Rows is kernel6x16Rows for a 4 x 16 tile.
//
//go:noescape
func kernel4x16Rows(kc int, a *float32, lda int, b, c *float32, ldc int, add int)

// kernelRows multiplies h = MR or 4 rows of A read in place (row i at a[i*lda:], kc values
// each) by one packed B micro-panel into C, adding to it, or overwriting it when !add:
// kernel's sums in kernel's order, without packing A. Only called when asmKernel is set.
func kernelRows(h, kc int, a []float32, lda int, b, c []float32, ldc int, add bool) {
	_ = a[(h-1)*lda+kc-1]
	_ = b[kc*NR-1]
	_ = c[(h-1)*ldc+NR-1]
	f := 0
	if add {
		f = 1
	}
	if h == 4 {
		kernel4x16Rows(kc, &a[0], lda, &b[0], &c[0], ldc, f)
		return
	}
	kernel6x16Rows(kc, &a[0], lda, &b[0], &c[0], ldc, f)
}

// axpy8 computes y += a * x over blocks*8 values.
//
//go:noescape
func axpy8(a float32, x, y *float32, blocks int)

// dot8 returns sum x*y over blocks*8 values.
//
//go:noescape
func dot8(x, y *float32, blocks int) float32

// gather16 copies src[offs[q] : offs[q]+16] to dst[16q : 16q+16] for q < n.
//
//go:noescape
func gather16(dst, src *float32, offs *int, n int)

// gatherIdx16 sets dst[16q+c] = src[corners[q]+idx[c]] for q < n and c < 16.
//
//go:noescape
func gatherIdx16(dst, src *float32, idx *int32, corners *int, n int)

// gatherT8x16 sets dst[16p+c] = src[corner+p+idx[c]] for p < 8n and c < 16.
//
//go:noescape
func gatherT8x16(dst, src *float32, idx *int32, corner int, n int)

// gatherT8x16s2 sets dst[16p+c] = src[corner+2p+idx[c]] for p < 8n and c < 16, reading
// src[corner+16b+idx[c] : corner+16b+idx[c]+16] for each block b < n.
//
//go:noescape
func gatherT8x16s2(dst, src *float32, idx *int32, corner int, n int)

// gather16s2 copies src[offs[q] + 2t] to dst[16q + t] for t < 16 and q < n, reading
// src[offs[q] : offs[q]+32].
//
//go:noescape
func gather16s2(dst, src *float32, offs *int, n int)

// sumSq4 adds v[4i+l] to a[l] and its square to q[l] for i < blocks and lanes l < 4.
//
//go:noescape
func sumSq4(v *float32, blocks int, a, q *[4]float64)

// maskedSums4 is MaskedSums over blocks*4 values with p = gamma, beta, adding into a and q
// by lane.
//
//go:noescape
func maskedSums4(dy, xh *float32, blocks int, a, q *[4]float64, p *[2]float32)

// normReLU8 is NormReLU over blocks*8 values of each of rows rows with p = mean, inv, gamma,
// beta; after each row, row skips rowSkip bytes and out outSkip bytes.
//
//go:noescape
func normReLU8(row, out *float32, blocks, rows, rowSkip, outSkip int, p *[4]float32)

// normGrad8 is NormGrad over blocks*8 values with p = k, a, b.
//
//go:noescape
func normGrad8(dy, xh *float32, blocks int, p *[4]float32)

// addStride2x8 sets y[2i] += x[i] for i < 8*blocks, reading and writing y[:16*blocks].
//
//go:noescape
func addStride2x8(x, y *float32, blocks int)
