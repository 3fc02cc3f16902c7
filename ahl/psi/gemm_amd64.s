//go:build amd64 && !purego

#include "textflag.h"

// The kernels multiply and add separately (VMULPD then VADDPD), never fused, so that each
// element of c gets the bits of gemmGo's scalar loop: c += a*b, in order of p.

// ROW multiplies the broadcast a value at off(SI) by the two B vectors Y8, Y9 and adds the
// products into lo, hi.
#define ROW(off, lo, hi) \
	VBROADCASTSD off(SI), Y10; \
	VMULPD Y8, Y10, Y11; \
	VMULPD Y9, Y10, Y12; \
	VADDPD Y11, lo, lo; \
	VADDPD Y12, hi, hi

// func kern4x8(k int, a *float64, lda int, b *float64, ldb int, c *float64, ldc int)
TEXT ·kern4x8(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	SHLQ $3, R8
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R9
	SHLQ $3, R9
	MOVQ c+40(FP), DX
	MOVQ ldc+48(FP), R10
	SHLQ $3, R10
	MOVQ DX, R11
	VMOVUPD (R11), Y0
	VMOVUPD 32(R11), Y1
	ADDQ R10, R11
	VMOVUPD (R11), Y2
	VMOVUPD 32(R11), Y3
	ADDQ R10, R11
	VMOVUPD (R11), Y4
	VMOVUPD 32(R11), Y5
	ADDQ R10, R11
	VMOVUPD (R11), Y6
	VMOVUPD 32(R11), Y7
loop4:
	VMOVUPD (DI), Y8
	VMOVUPD 32(DI), Y9
	ROW(0, Y0, Y1)
	ROW(8, Y2, Y3)
	ROW(16, Y4, Y5)
	ROW(24, Y6, Y7)
	ADDQ R8, SI
	ADDQ R9, DI
	DECQ CX
	JNZ loop4
	MOVQ DX, R11
	VMOVUPD Y0, (R11)
	VMOVUPD Y1, 32(R11)
	ADDQ R10, R11
	VMOVUPD Y2, (R11)
	VMOVUPD Y3, 32(R11)
	ADDQ R10, R11
	VMOVUPD Y4, (R11)
	VMOVUPD Y5, 32(R11)
	ADDQ R10, R11
	VMOVUPD Y6, (R11)
	VMOVUPD Y7, 32(R11)
	VZEROUPPER
	RET

// func kern1x8(k int, a *float64, lda int, b *float64, ldb int, c *float64, ldc int)
TEXT ·kern1x8(SB), NOSPLIT, $0-56
	MOVQ k+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R8
	SHLQ $3, R8
	MOVQ b+24(FP), DI
	MOVQ ldb+32(FP), R9
	SHLQ $3, R9
	MOVQ c+40(FP), DX
	VMOVUPD (DX), Y0
	VMOVUPD 32(DX), Y1
loop1:
	VMOVUPD (DI), Y8
	VMOVUPD 32(DI), Y9
	ROW(0, Y0, Y1)
	ADDQ R8, SI
	ADDQ R9, DI
	DECQ CX
	JNZ loop1
	VMOVUPD Y0, (DX)
	VMOVUPD Y1, 32(DX)
	VZEROUPPER
	RET
