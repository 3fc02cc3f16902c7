//go:build amd64 && !purego

package psi

import "golang.org/x/sys/cpu"

// asmKernel says whether gemm's AVX2 kernels run; tests switch it off to check the Go path.
// Built with GOAMD64=v3 or higher, the compiler fuses gemmGo's (and every scalar loop's)
// multiply and add into one FMA, which the kernels do not, so there they stay off and every
// value keeps the bits of the scalar code.
var asmKernel = cpu.X86.HasAVX2 && !goFusesFMA

// kern4x8 is gemm for one 4 x 8 tile of c (rows a[0..3] of each a row, columns b[0..7]), in
// AVX2 with separate multiplies and adds (VMULPD, VADDPD), never a fused multiply-add.
//
//go:noescape
func kern4x8(k int, a *float64, lda int, b *float64, ldb int, c *float64, ldc int)

// kern1x8 is kern4x8 for a 1 x 8 tile.
//
//go:noescape
func kern1x8(k int, a *float64, lda int, b *float64, ldb int, c *float64, ldc int)
