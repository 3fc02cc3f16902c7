//go:build !amd64 || purego

package psi

// asmKernel is false: this build has no assembly kernel.
var asmKernel = false

func kern4x8(k int, a *float64, lda int, b *float64, ldb int, c *float64, ldc int) {
	panic("psi: no assembly kernel")
}

func kern1x8(k int, a *float64, lda int, b *float64, ldb int, c *float64, ldc int) {
	panic("psi: no assembly kernel")
}
