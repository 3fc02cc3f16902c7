//go:build amd64 && !purego

#include "textflag.h"

// STEP multiplies one k-slice: 6 broadcast values of A (at ao(SI)) times 16 values of B (two
// YMM at bo(DI)), accumulated into Y0..Y11 (row i in Y(2i), Y(2i+1)).
#define STEP(ao, bo) \
	VMOVUPS bo(DI), Y12; \
	VMOVUPS bo+32(DI), Y13; \
	VBROADCASTSS ao(SI), Y14; \
	VFMADD231PS Y12, Y14, Y0; \
	VFMADD231PS Y13, Y14, Y1; \
	VBROADCASTSS ao+4(SI), Y15; \
	VFMADD231PS Y12, Y15, Y2; \
	VFMADD231PS Y13, Y15, Y3; \
	VBROADCASTSS ao+8(SI), Y14; \
	VFMADD231PS Y12, Y14, Y4; \
	VFMADD231PS Y13, Y14, Y5; \
	VBROADCASTSS ao+12(SI), Y15; \
	VFMADD231PS Y12, Y15, Y6; \
	VFMADD231PS Y13, Y15, Y7; \
	VBROADCASTSS ao+16(SI), Y14; \
	VFMADD231PS Y12, Y14, Y8; \
	VFMADD231PS Y13, Y14, Y9; \
	VBROADCASTSS ao+20(SI), Y15; \
	VFMADD231PS Y12, Y15, Y10; \
	VFMADD231PS Y13, Y15, Y11

// STORE adds the two accumulators of one row into C at (DX) and moves DX to the next row.
#define STORE(lo, hi) \
	VADDPS (DX), lo, lo; \
	VMOVUPS lo, (DX); \
	VADDPS 32(DX), hi, hi; \
	VMOVUPS hi, 32(DX); \
	ADDQ R8, DX

// PUT stores the two accumulators of one row into C at (DX), overwriting it, and moves DX to
// the next row.
#define PUT(lo, hi) \
	VMOVUPS lo, (DX); \
	VMOVUPS hi, 32(DX); \
	ADDQ R8, DX

// func kernel6x16(kc int, a, b, c *float32, ldc int, add int)
TEXT ·kernel6x16(SB), NOSPLIT, $0-48
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DI
	MOVQ c+24(FP), DX
	MOVQ ldc+32(FP), R8
	SHLQ $2, R8
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

loop4:
	CMPQ CX, $4
	JL   tail
	STEP(0, 0)
	STEP(24, 64)
	STEP(48, 128)
	STEP(72, 192)
	ADDQ $96, SI
	ADDQ $256, DI
	SUBQ $4, CX
	JMP  loop4

tail:
	TESTQ CX, CX
	JE    done
	STEP(0, 0)
	ADDQ $24, SI
	ADDQ $64, DI
	DECQ CX
	JMP  tail

done:
	MOVQ  add+40(FP), AX
	TESTQ AX, AX
	JE    put
	STORE(Y0, Y1)
	STORE(Y2, Y3)
	STORE(Y4, Y5)
	STORE(Y6, Y7)
	STORE(Y8, Y9)
	STORE(Y10, Y11)
	VZEROUPPER
	RET

put:
	PUT(Y0, Y1)
	PUT(Y2, Y3)
	PUT(Y4, Y5)
	PUT(Y6, Y7)
	PUT(Y8, Y9)
	PUT(Y10, Y11)
	VZEROUPPER
	RET

// STEPR is STEP with A read from six rows in place: rows 0-2 at SI, SI+R9, SI+2*R9 and rows
// 3-5 at AX, AX+R9, AX+2*R9 (R9 = lda*4), value k at byte offset ao.
#define STEPR(ao, bo) \
	VMOVUPS bo(DI), Y12; \
	VMOVUPS bo+32(DI), Y13; \
	VBROADCASTSS ao(SI), Y14; \
	VFMADD231PS Y12, Y14, Y0; \
	VFMADD231PS Y13, Y14, Y1; \
	VBROADCASTSS ao(SI)(R9*1), Y15; \
	VFMADD231PS Y12, Y15, Y2; \
	VFMADD231PS Y13, Y15, Y3; \
	VBROADCASTSS ao(SI)(R9*2), Y14; \
	VFMADD231PS Y12, Y14, Y4; \
	VFMADD231PS Y13, Y14, Y5; \
	VBROADCASTSS ao(AX), Y15; \
	VFMADD231PS Y12, Y15, Y6; \
	VFMADD231PS Y13, Y15, Y7; \
	VBROADCASTSS ao(AX)(R9*1), Y14; \
	VFMADD231PS Y12, Y14, Y8; \
	VFMADD231PS Y13, Y14, Y9; \
	VBROADCASTSS ao(AX)(R9*2), Y15; \
	VFMADD231PS Y12, Y15, Y10; \
	VFMADD231PS Y13, Y15, Y11

// func kernel6x16Rows(kc int, a *float32, lda int, b, c *float32, ldc int, add int)
TEXT ·kernel6x16Rows(SB), NOSPLIT, $0-56
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R9
	SHLQ $2, R9
	MOVQ b+24(FP), DI
	MOVQ c+32(FP), DX
	MOVQ ldc+40(FP), R8
	SHLQ $2, R8
	LEAQ (SI)(R9*2), AX
	ADDQ R9, AX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7
	VXORPS Y8, Y8, Y8
	VXORPS Y9, Y9, Y9
	VXORPS Y10, Y10, Y10
	VXORPS Y11, Y11, Y11

rloop4:
	CMPQ CX, $4
	JL   rtail
	STEPR(0, 0)
	STEPR(4, 64)
	STEPR(8, 128)
	STEPR(12, 192)
	ADDQ $16, SI
	ADDQ $16, AX
	ADDQ $256, DI
	SUBQ $4, CX
	JMP  rloop4

rtail:
	TESTQ CX, CX
	JE    rdone
	STEPR(0, 0)
	ADDQ  $4, SI
	ADDQ  $4, AX
	ADDQ  $64, DI
	DECQ  CX
	JMP   rtail

rdone:
	MOVQ  add+48(FP), R10
	TESTQ R10, R10
	JE    rput
	STORE(Y0, Y1)
	STORE(Y2, Y3)
	STORE(Y4, Y5)
	STORE(Y6, Y7)
	STORE(Y8, Y9)
	STORE(Y10, Y11)
	VZEROUPPER
	RET

rput:
	PUT(Y0, Y1)
	PUT(Y2, Y3)
	PUT(Y4, Y5)
	PUT(Y6, Y7)
	PUT(Y8, Y9)
	PUT(Y10, Y11)
	VZEROUPPER
	RET

// STEPR4 is STEPR for four rows: SI, SI+R9, SI+2*R9 and AX.
#define STEPR4(ao, bo) \
	VMOVUPS bo(DI), Y12; \
	VMOVUPS bo+32(DI), Y13; \
	VBROADCASTSS ao(SI), Y14; \
	VFMADD231PS Y12, Y14, Y0; \
	VFMADD231PS Y13, Y14, Y1; \
	VBROADCASTSS ao(SI)(R9*1), Y15; \
	VFMADD231PS Y12, Y15, Y2; \
	VFMADD231PS Y13, Y15, Y3; \
	VBROADCASTSS ao(SI)(R9*2), Y14; \
	VFMADD231PS Y12, Y14, Y4; \
	VFMADD231PS Y13, Y14, Y5; \
	VBROADCASTSS ao(AX), Y15; \
	VFMADD231PS Y12, Y15, Y6; \
	VFMADD231PS Y13, Y15, Y7

// func kernel4x16Rows(kc int, a *float32, lda int, b, c *float32, ldc int, add int)
TEXT ·kernel4x16Rows(SB), NOSPLIT, $0-56
	MOVQ kc+0(FP), CX
	MOVQ a+8(FP), SI
	MOVQ lda+16(FP), R9
	SHLQ $2, R9
	MOVQ b+24(FP), DI
	MOVQ c+32(FP), DX
	MOVQ ldc+40(FP), R8
	SHLQ $2, R8
	LEAQ (SI)(R9*2), AX
	ADDQ R9, AX
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	VXORPS Y4, Y4, Y4
	VXORPS Y5, Y5, Y5
	VXORPS Y6, Y6, Y6
	VXORPS Y7, Y7, Y7

r4loop4:
	CMPQ CX, $4
	JL   r4tail
	STEPR4(0, 0)
	STEPR4(4, 64)
	STEPR4(8, 128)
	STEPR4(12, 192)
	ADDQ $16, SI
	ADDQ $16, AX
	ADDQ $256, DI
	SUBQ $4, CX
	JMP  r4loop4

r4tail:
	TESTQ CX, CX
	JE    r4done
	STEPR4(0, 0)
	ADDQ  $4, SI
	ADDQ  $4, AX
	ADDQ  $64, DI
	DECQ  CX
	JMP   r4tail

r4done:
	MOVQ  add+48(FP), R10
	TESTQ R10, R10
	JE    r4put
	STORE(Y0, Y1)
	STORE(Y2, Y3)
	STORE(Y4, Y5)
	STORE(Y6, Y7)
	VZEROUPPER
	RET

r4put:
	PUT(Y0, Y1)
	PUT(Y2, Y3)
	PUT(Y4, Y5)
	PUT(Y6, Y7)
	VZEROUPPER
	RET

// func axpy8(a float32, x, y *float32, blocks int)
TEXT ·axpy8(SB), NOSPLIT, $0-32
	VBROADCASTSS a+0(FP), Y0
	MOVQ x+8(FP), SI
	MOVQ y+16(FP), DI
	MOVQ blocks+24(FP), CX

axpyloop:
	VMOVUPS     (SI), Y1
	VFMADD213PS (DI), Y0, Y1
	VMOVUPS     Y1, (DI)
	ADDQ        $32, SI
	ADDQ        $32, DI
	DECQ        CX
	JNZ         axpyloop
	VZEROUPPER
	RET

// func dot8(x, y *float32, blocks int) float32
TEXT ·dot8(SB), NOSPLIT, $0-28
	MOVQ   x+0(FP), SI
	MOVQ   y+8(FP), DI
	MOVQ   blocks+16(FP), CX
	VXORPS Y0, Y0, Y0

dotloop:
	VMOVUPS     (SI), Y1
	VFMADD231PS (DI), Y1, Y0
	ADDQ        $32, SI
	ADDQ        $32, DI
	DECQ        CX
	JNZ         dotloop
	// Horizontal sum of Y0's eight lanes, in a fixed order.
	VEXTRACTF128 $1, Y0, X1
	VADDPS       X1, X0, X0
	VMOVHLPS     X0, X1, X1
	VADDPS       X1, X0, X0
	VMOVSHDUP    X0, X1
	VADDSS       X1, X0, X0
	VZEROUPPER
	MOVSS        X0, ret+24(FP)
	RET

// func gather16(dst, src *float32, offs *int, n int)
TEXT ·gather16(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ offs+16(FP), BX
	MOVQ n+24(FP), CX

gatherloop:
	MOVQ    (BX), AX
	VMOVUPS (SI)(AX*4), Y0
	VMOVUPS 32(SI)(AX*4), Y1
	VMOVUPS Y0, (DI)
	VMOVUPS Y1, 32(DI)
	ADDQ    $8, BX
	ADDQ    $64, DI
	DECQ    CX
	JNZ     gatherloop
	VZEROUPPER
	RET

// func gatherIdx16(dst, src *float32, idx *int32, corners *int, n int)
TEXT ·gatherIdx16(SB), NOSPLIT, $0-40
	MOVQ     dst+0(FP), DI
	MOVQ     src+8(FP), SI
	MOVQ     idx+16(FP), BX
	MOVQ     corners+24(FP), DX
	MOVQ     n+32(FP), CX
	VMOVDQU  (BX), Y4
	VMOVDQU  32(BX), Y5
	VPCMPEQD Y6, Y6, Y6

idxloop:
	MOVQ       (DX), AX
	LEAQ       (SI)(AX*4), R8
	VMOVDQU    Y6, Y2
	VGATHERDPS Y2, (R8)(Y4*4), Y0
	VMOVDQU    Y6, Y3
	VGATHERDPS Y3, (R8)(Y5*4), Y1
	VMOVUPS    Y0, (DI)
	VMOVUPS    Y1, 32(DI)
	ADDQ       $8, DX
	ADDQ       $64, DI
	DECQ       CX
	JNZ        idxloop
	VZEROUPPER
	RET

// TROW loads source row c of an 8 x 8 block: 8 floats at R8 + 4*idx[c].
#define TROW(ioff, reg) \
	MOVLQSX ioff(BX), R9; \
	VMOVUPS (R8)(R9*4), reg

// THALF gathers taps ioff/4 .. ioff/4+7 for 8 consecutive pixels, transposes the 8 x 8 block
// (rows: taps, columns: pixels) and stores pixel t's 8 taps at doff + 64t(DI).
#define THALF(ioff, doff) \
	TROW(ioff, Y0); \
	TROW(ioff+4, Y1); \
	TROW(ioff+8, Y2); \
	TROW(ioff+12, Y3); \
	TROW(ioff+16, Y4); \
	TROW(ioff+20, Y5); \
	TROW(ioff+24, Y6); \
	TROW(ioff+28, Y7); \
	VUNPCKLPS  Y1, Y0, Y8; \
	VUNPCKHPS  Y1, Y0, Y9; \
	VUNPCKLPS  Y3, Y2, Y10; \
	VUNPCKHPS  Y3, Y2, Y11; \
	VUNPCKLPS  Y5, Y4, Y12; \
	VUNPCKHPS  Y5, Y4, Y13; \
	VUNPCKLPS  Y7, Y6, Y14; \
	VUNPCKHPS  Y7, Y6, Y15; \
	VSHUFPS    $0x44, Y10, Y8, Y0; \
	VSHUFPS    $0xEE, Y10, Y8, Y1; \
	VSHUFPS    $0x44, Y11, Y9, Y2; \
	VSHUFPS    $0xEE, Y11, Y9, Y3; \
	VSHUFPS    $0x44, Y14, Y12, Y4; \
	VSHUFPS    $0xEE, Y14, Y12, Y5; \
	VSHUFPS    $0x44, Y15, Y13, Y6; \
	VSHUFPS    $0xEE, Y15, Y13, Y7; \
	VPERM2F128 $0x20, Y4, Y0, Y8; \
	VPERM2F128 $0x20, Y5, Y1, Y9; \
	VPERM2F128 $0x20, Y6, Y2, Y10; \
	VPERM2F128 $0x20, Y7, Y3, Y11; \
	VPERM2F128 $0x31, Y4, Y0, Y12; \
	VPERM2F128 $0x31, Y5, Y1, Y13; \
	VPERM2F128 $0x31, Y6, Y2, Y14; \
	VPERM2F128 $0x31, Y7, Y3, Y15; \
	VMOVUPS    Y8, doff(DI); \
	VMOVUPS    Y9, doff+64(DI); \
	VMOVUPS    Y10, doff+128(DI); \
	VMOVUPS    Y11, doff+192(DI); \
	VMOVUPS    Y12, doff+256(DI); \
	VMOVUPS    Y13, doff+320(DI); \
	VMOVUPS    Y14, doff+384(DI); \
	VMOVUPS    Y15, doff+448(DI)

// TROW2 loads source row c of an 8 x 8 block for pixels two values apart: the even values
// of the 16 floats at R8 + 4*idx[c] (as gather16s2 takes them), using Y8.
#define TROW2(ioff, reg) \
	MOVLQSX ioff(BX), R9; \
	VMOVUPS (R8)(R9*4), reg; \
	VMOVUPS 32(R8)(R9*4), Y8; \
	VSHUFPS $0x88, Y8, reg, reg; \
	VPERMPD $0xD8, reg, reg

// THALF2 is THALF for pixels two values apart (TROW2).
#define THALF2(ioff, doff) \
	TROW2(ioff, Y0); \
	TROW2(ioff+4, Y1); \
	TROW2(ioff+8, Y2); \
	TROW2(ioff+12, Y3); \
	TROW2(ioff+16, Y4); \
	TROW2(ioff+20, Y5); \
	TROW2(ioff+24, Y6); \
	TROW2(ioff+28, Y7); \
	VUNPCKLPS  Y1, Y0, Y8; \
	VUNPCKHPS  Y1, Y0, Y9; \
	VUNPCKLPS  Y3, Y2, Y10; \
	VUNPCKHPS  Y3, Y2, Y11; \
	VUNPCKLPS  Y5, Y4, Y12; \
	VUNPCKHPS  Y5, Y4, Y13; \
	VUNPCKLPS  Y7, Y6, Y14; \
	VUNPCKHPS  Y7, Y6, Y15; \
	VSHUFPS    $0x44, Y10, Y8, Y0; \
	VSHUFPS    $0xEE, Y10, Y8, Y1; \
	VSHUFPS    $0x44, Y11, Y9, Y2; \
	VSHUFPS    $0xEE, Y11, Y9, Y3; \
	VSHUFPS    $0x44, Y14, Y12, Y4; \
	VSHUFPS    $0xEE, Y14, Y12, Y5; \
	VSHUFPS    $0x44, Y15, Y13, Y6; \
	VSHUFPS    $0xEE, Y15, Y13, Y7; \
	VPERM2F128 $0x20, Y4, Y0, Y8; \
	VPERM2F128 $0x20, Y5, Y1, Y9; \
	VPERM2F128 $0x20, Y6, Y2, Y10; \
	VPERM2F128 $0x20, Y7, Y3, Y11; \
	VPERM2F128 $0x31, Y4, Y0, Y12; \
	VPERM2F128 $0x31, Y5, Y1, Y13; \
	VPERM2F128 $0x31, Y6, Y2, Y14; \
	VPERM2F128 $0x31, Y7, Y3, Y15; \
	VMOVUPS    Y8, doff(DI); \
	VMOVUPS    Y9, doff+64(DI); \
	VMOVUPS    Y10, doff+128(DI); \
	VMOVUPS    Y11, doff+192(DI); \
	VMOVUPS    Y12, doff+256(DI); \
	VMOVUPS    Y13, doff+320(DI); \
	VMOVUPS    Y14, doff+384(DI); \
	VMOVUPS    Y15, doff+448(DI)

// func gatherT8x16s2(dst, src *float32, idx *int32, corner int, n int)
TEXT ·gatherT8x16s2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ idx+16(FP), BX
	MOVQ corner+24(FP), AX
	MOVQ n+32(FP), CX
	LEAQ (SI)(AX*4), R8

t2loop:
	THALF2(0, 0)
	THALF2(32, 32)
	ADDQ $64, R8
	ADDQ $512, DI
	DECQ CX
	JNZ  t2loop
	VZEROUPPER
	RET

// func gatherT8x16(dst, src *float32, idx *int32, corner int, n int)
TEXT ·gatherT8x16(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ idx+16(FP), BX
	MOVQ corner+24(FP), AX
	MOVQ n+32(FP), CX
	LEAQ (SI)(AX*4), R8

tloop:
	THALF(0, 0)
	THALF(32, 32)
	ADDQ $32, R8
	ADDQ $512, DI
	DECQ CX
	JNZ  tloop
	VZEROUPPER
	RET

// func gather16s2(dst, src *float32, offs *int, n int)
TEXT ·gather16s2(SB), NOSPLIT, $0-32
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ offs+16(FP), BX
	MOVQ n+24(FP), CX

s2loop:
	MOVQ    (BX), AX
	LEAQ    (SI)(AX*4), R8
	VMOVUPS (R8), Y0
	VMOVUPS 32(R8), Y1
	VMOVUPS 64(R8), Y2
	VMOVUPS 96(R8), Y3
	// Even elements of Y0:Y1, lane by lane: [0 2 8 10 | 4 6 12 14], then the middle
	// quadwords swapped: [0 2 4 6 8 10 12 14].
	VSHUFPS $0x88, Y1, Y0, Y4
	VPERMPD $0xD8, Y4, Y4
	VSHUFPS $0x88, Y3, Y2, Y5
	VPERMPD $0xD8, Y5, Y5
	VMOVUPS Y4, (DI)
	VMOVUPS Y5, 32(DI)
	ADDQ    $8, BX
	ADDQ    $64, DI
	DECQ    CX
	JNZ     s2loop
	VZEROUPPER
	RET

// func sumSq4(v *float32, blocks int, a, q *[4]float64)
TEXT ·sumSq4(SB), NOSPLIT, $0-32
	MOVQ   v+0(FP), SI
	MOVQ   blocks+8(FP), CX
	MOVQ   a+16(FP), DI
	MOVQ   q+24(FP), DX
	VMOVUPD (DI), Y0
	VMOVUPD (DX), Y1

sumsqloop:
	VCVTPS2PD   (SI), Y2
	VADDPD      Y2, Y0, Y0
	VFMADD231PD Y2, Y2, Y1 // x*x is exact in float64: rounds as a separate add would
	ADDQ        $16, SI
	DECQ        CX
	JNZ         sumsqloop
	VMOVUPD     Y0, (DI)
	VMOVUPD     Y1, (DX)
	VZEROUPPER
	RET

// func maskedSums4(dy, xh *float32, blocks int, a, q *[4]float64, p *[2]float32)
TEXT ·maskedSums4(SB), NOSPLIT, $0-48
	MOVQ         dy+0(FP), SI
	MOVQ         xh+8(FP), DX
	MOVQ         blocks+16(FP), CX
	MOVQ         a+24(FP), DI
	MOVQ         q+32(FP), R8
	MOVQ         p+40(FP), BX
	VMOVUPD      (DI), Y0
	VMOVUPD      (R8), Y1
	VBROADCASTSS (BX), X5
	VBROADCASTSS 4(BX), X6
	VPXOR        X7, X7, X7

maskloop:
	VMULPS      (DX), X5, X2 // gamma * xh
	VADDPS      X6, X2, X2   // + beta
	VPSRAD      $31, X2, X3
	VPANDN      X2, X3, X2   // ReLU by the sign bit, as normReLU8
	VPCMPEQD    X7, X2, X2   // all ones where the ReLU's bits are 0
	VANDNPS     (SI), X2, X2 // dy with those lanes cleared
	VMOVUPS     X2, (SI)
	VCVTPS2PD   X2, Y3
	VADDPD      Y3, Y0, Y0
	VCVTPS2PD   (DX), Y4
	VFMADD231PD Y3, Y4, Y1   // exact product, as in sumSq4
	ADDQ        $16, SI
	ADDQ        $16, DX
	DECQ        CX
	JNZ         maskloop
	VMOVUPD     Y0, (DI)
	VMOVUPD     Y1, (R8)
	VZEROUPPER
	RET

// func normReLU8(row, out *float32, blocks, rows, rowSkip, outSkip int, p *[4]float32)
TEXT ·normReLU8(SB), NOSPLIT, $0-56
	MOVQ         row+0(FP), SI
	MOVQ         out+8(FP), DI
	MOVQ         rows+24(FP), BX
	MOVQ         rowSkip+32(FP), R9
	MOVQ         outSkip+40(FP), R10
	MOVQ         p+48(FP), R8
	VBROADCASTSS (R8), Y4
	VBROADCASTSS 4(R8), Y5
	VBROADCASTSS 8(R8), Y6
	VBROADCASTSS 12(R8), Y7

normrow:
	MOVQ blocks+16(FP), CX

normloop:
	VMOVUPS (SI), Y0
	VSUBPS  Y4, Y0, Y0 // row - mean
	VMULPS  Y5, Y0, Y0 // * inv
	VMOVUPS Y0, (SI)
	VMULPS  Y6, Y0, Y1 // gamma * xhat
	VADDPS  Y7, Y1, Y1 // + beta
	VPSRAD  $31, Y1, Y2
	VPANDN  Y1, Y2, Y1 // ReLU by the sign bit
	VMOVUPS Y1, (DI)
	ADDQ    $32, SI
	ADDQ    $32, DI
	DECQ    CX
	JNZ     normloop
	ADDQ    R9, SI
	ADDQ    R10, DI
	DECQ    BX
	JNZ     normrow
	VZEROUPPER
	RET

// func normGrad8(dy, xh *float32, blocks int, p *[4]float32)
TEXT ·normGrad8(SB), NOSPLIT, $0-32
	MOVQ         dy+0(FP), SI
	MOVQ         xh+8(FP), DX
	MOVQ         blocks+16(FP), CX
	MOVQ         p+24(FP), R8
	VBROADCASTSS (R8), Y4
	VBROADCASTSS 4(R8), Y5
	VBROADCASTSS 8(R8), Y6

gradloop:
	VMOVUPS (SI), Y0
	VSUBPS  Y5, Y0, Y0   // dy - a
	VMULPS  (DX), Y6, Y1 // xh * b
	VSUBPS  Y1, Y0, Y0
	VMULPS  Y4, Y0, Y0   // * k
	VMOVUPS Y0, (SI)
	ADDQ    $32, SI
	ADDQ    $32, DX
	DECQ    CX
	JNZ     gradloop
	VZEROUPPER
	RET

DATA negzero<>+0(SB)/4, $0x80000000
GLOBL negzero<>(SB), RODATA|NOPTR, $4

// func addStride2x8(x, y *float32, blocks int)
TEXT ·addStride2x8(SB), NOSPLIT, $0-24
	MOVQ         x+0(FP), SI
	MOVQ         y+8(FP), DI
	MOVQ         blocks+16(FP), CX
	VBROADCASTSS negzero<>(SB), Y7 // -0: adding it changes nothing

stride2loop:
	VMOVUPS    (SI), Y0
	VUNPCKLPS  Y7, Y0, Y1       // x0 -0 x1 -0 | x4 -0 x5 -0
	VUNPCKHPS  Y7, Y0, Y2       // x2 -0 x3 -0 | x6 -0 x7 -0
	VPERM2F128 $0x20, Y2, Y1, Y3 // x0 .. x3 interleaved
	VPERM2F128 $0x31, Y2, Y1, Y4 // x4 .. x7 interleaved
	VADDPS     (DI), Y3, Y3
	VADDPS     32(DI), Y4, Y4
	VMOVUPS    Y3, (DI)
	VMOVUPS    Y4, 32(DI)
	ADDQ       $32, SI
	ADDQ       $64, DI
	DECQ       CX
	JNZ        stride2loop
	VZEROUPPER
	RET
