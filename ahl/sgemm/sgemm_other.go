//go:build !amd64 || purego

package sgemm

// asmKernel is false: this build has no assembly microkernel.
var asmKernel = false

// kernel multiplies one packed A micro-panel by one packed B micro-panel into C.
func kernel(kc int, a, b, c []float32, ldc int) { kernelGo(kc, a, b, c, ldc) }

func axpy8(a float32, x, y *float32, blocks int) { panic("sgemm: no assembly axpy") }

func dot8(x, y *float32, blocks int) float32 { panic("sgemm: no assembly dot") }
