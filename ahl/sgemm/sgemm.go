// Package sgemm is a float32 matrix multiply for the hot paths of AHL's heads and of the
// backbone's convolutions: C = alpha * op(A) * op(B) + beta * C on row-major matrices.
//
// It follows the BLIS/GotoBLAS layout: B is packed in KC x NC panels, A in MC x KC blocks, and
// a register-blocked MR x NR microkernel multiplies one A micro-panel by one B micro-panel
// (with at most MCWhole rows, all of A's block is packed once and each B micro-panel just
// before use; there the assembly kernels read an untransposed, unscaled A of at least 4 rows
// in place, in tiles of 6 and 4 rows, with no packing at all). SgemmPanels takes B from a
// Panels, which packs it from the caller's own layout (the backbone's convolutions pack
// straight from their input images). On amd64 with AVX2 and FMA the microkernels are Go
// assembly (sgemm_amd64.s); elsewhere, and when the CPU lacks those, a pure-Go microkernel
// runs instead (same blocking, same results up to rounding: the assembly fuses multiply and
// add). The package also holds the backbone's other vector loops (gathers, batch norm's
// passes, Axpy). A call is single-threaded and deterministic:
// the order of every sum depends only on the shapes, never on timing.
package sgemm

import (
	"fmt"
	"sync"
)

// Block sizes. MR x NR is the register tile (6 x 16 float32 = 12 YMM accumulators); KC x NR
// floats of B (16 KiB) stay in L1 while an MC x KC block of A (96 KiB) stays in L2 and a
// KC x NC panel of B streams from L2/L3. A product with at most MCWhole rows packs all of A's
// KC columns at once (up to 528 KiB, still in L2), or reads them in place, and each B
// micro-panel just before its MR x NR tiles use it, so B is packed once and never leaves L1.
const (
	MR      = 6
	NR      = 16
	KC      = 256
	MC      = 96
	NC      = 2048
	MCWhole = 528
)

// workspace holds one call's packing buffers; pooled so that repeated calls do not allocate.
type workspace struct {
	a []float32 // MCWhole x KC, packed in MR-row micro-panels
	b []float32 // KC x NC, packed in NR-column micro-panels
}

var pool = sync.Pool{New: func() any {
	return &workspace{a: make([]float32, MCWhole*KC), b: make([]float32, KC*NC)}
}}

// Panels supplies op(B), a k x n matrix, one packed micro-panel at a time, so that a caller
// can pack B straight from its own layout (a convolution from its input image, with no
// im2col matrix in between).
type Panels interface {
	// Pack writes op(B)[pc:pc+kc, j0:j0+NR] into dst[:kc*NR] k-major (the NR values of row
	// pc+q at dst[q*NR:]), with zeros in the columns at or past n.
	Pack(dst []float32, pc, kc, j0 int)
}

// Sgemm computes C = alpha * op(A) * op(B) + beta * C for row-major matrices: op(A) is m x k
// (A is stored m x k with row stride lda, or k x m when transA), op(B) is k x n (stored k x n
// with row stride ldb, or n x k when transB), and C is m x n with row stride ldc. With beta
// == 0, C is overwritten (its old values, even NaN, are ignored). It panics when a dimension
// is negative or a slice is too short for its shape, as gonum's BLAS does.
func Sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	checkArgs(transA, transB, m, n, k, a, lda, true, b, ldb, c, ldc)
	gemm(transA, m, n, k, alpha, a, lda, dense{trans: transB, b: b, ldb: ldb, n: n}, beta, c, ldc)
}

// SgemmPanels is Sgemm with op(B) supplied by b, k x n, one packed micro-panel at a time. The
// sums run in the same order as Sgemm's, so the two give the same bits for the same op(B).
func SgemmPanels(transA bool, m, n, k int, alpha float32, a []float32, lda int, b Panels, beta float32, c []float32, ldc int) {
	checkArgs(transA, false, m, n, k, a, lda, false, nil, n, c, ldc)
	gemm(transA, m, n, k, alpha, a, lda, b, beta, c, ldc)
}

// gemm is Sgemm's body for any source of B panels. Each element of C is the sum, over the
// KC-blocks of k in order, of that block's products summed in the microkernel; only the loop
// order around the blocks differs between the two paths, never the sums.
func gemm[P Panels](transA bool, m, n, k int, alpha float32, a []float32, lda int, b P, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	// With beta == 0 the first KC-block stores its sums instead of adding them to a cleared C.
	store := beta == 0 && k > 0 && alpha != 0
	if beta != 1 && !store {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			if beta == 0 {
				clear(row)
			} else {
				for j := range row {
					row[j] *= beta
				}
			}
		}
	}
	if k == 0 || alpha == 0 {
		return
	}
	ws := pool.Get().(*workspace)
	defer pool.Put(ws)
	if m <= MCWhole {
		// The assembly kernels read A in place when it needs no transposing or scaling and
		// has at least 4 rows (tilesInPlace); otherwise A is packed.
		inPlace := asmKernel && !transA && alpha == 1 && m >= 4
		for pc := 0; pc < k; pc += KC {
			kc := min(KC, k-pc)
			add := !store || pc > 0
			if !inPlace {
				packA(ws.a, transA, a, lda, 0, pc, m, kc, alpha)
			}
			bp := ws.b[:kc*NR]
			for jr := 0; jr < n; jr += NR {
				b.Pack(bp, pc, kc, jr)
				if inPlace {
					tilesInPlace(a[pc:], lda, bp, kc, m, min(NR, n-jr), c[jr:], ldc, add)
				} else {
					tiles(ws.a, bp, kc, m, min(NR, n-jr), c[jr:], ldc, add)
				}
			}
		}
		return
	}
	for jc := 0; jc < n; jc += NC {
		nc := min(NC, n-jc)
		for pc := 0; pc < k; pc += KC {
			kc := min(KC, k-pc)
			add := !store || pc > 0
			for jr := 0; jr < nc; jr += NR {
				b.Pack(ws.b[jr*kc:jr*kc+kc*NR], pc, kc, jc+jr)
			}
			for ic := 0; ic < m; ic += MC {
				mc := min(MC, m-ic)
				packA(ws.a, transA, a, lda, ic, pc, mc, kc, alpha)
				for jr := 0; jr < nc; jr += NR {
					tiles(ws.a, ws.b[jr*kc:jr*kc+kc*NR], kc, mc, min(NR, nc-jr), c[ic*ldc+jc+jr:], ldc, add)
				}
			}
		}
	}
}

// tiles multiplies the packed mc x kc block of A by one packed kc x NR micro-panel of B into
// the mc x nr block of C at c (row stride ldc), adding to C or, when !add, overwriting it.
func tiles(ap, bp []float32, kc, mc, nr int, c []float32, ldc int, add bool) {
	var tile [MR * NR]float32
	for ir := 0; ir < mc; ir += MR {
		mr := min(MR, mc-ir)
		a := ap[ir*kc : ir*kc+kc*MR]
		ci := ir * ldc
		if mr == MR && nr == NR {
			kernel(kc, a, bp, c[ci:], ldc, add)
			continue
		}
		kernel(kc, a, bp, tile[:], NR, false)
		addTile(&tile, 0, mr, nr, c[ci:], ldc, add)
	}
}

// tilesInPlace is tiles for mc >= 4 rows of A read in place from a (row stride lda, the
// block's first column at a[0]) by the assembly kernels, in tiles of MR or 4 rows that cover
// the rows exactly where they can (16 = 6+6+4, 32 = 6+6+6+6+4+4). Odd remainders take a last
// tile that overlaps the one before, computed aside and only its new rows kept. Every element
// of C is the same sum whichever tile computes it.
func tilesInPlace(a []float32, lda int, bp []float32, kc, mc, nr int, c []float32, ldc int, add bool) {
	var tile [MR * NR]float32
	for ir := 0; ir < mc; {
		left := mc - ir
		h, keep := MR, 0 // keep > 0: an overlapping tile whose last keep rows are new
		switch {
		case left == 4 || left == 8:
			h = 4
		case left >= MR:
		case left == 5 && mc >= MR:
			keep = 5
		case left == 5:
			h = 4
		default: // 1, 2 or 3 rows left, mc >= 4
			h, keep = 4, left
		}
		start := ir
		if keep > 0 {
			start = mc - h
		}
		ai := a[start*lda:]
		ci := start * ldc
		if keep == 0 && nr == NR {
			kernelRows(h, kc, ai, lda, bp, c[ci:], ldc, add)
			ir += h
			continue
		}
		kernelRows(h, kc, ai, lda, bp, tile[:], NR, false)
		if keep == 0 {
			addTile(&tile, 0, h, nr, c[ci:], ldc, add)
			ir += h
			continue
		}
		addTile(&tile, h-keep, h, nr, c[ci:], ldc, add)
		ir = mc
	}
}

// addTile adds rows [r0, r1) x columns [0, nr) of a tile to the same rows of C at c (row
// stride ldc), or copies them when !add.
func addTile(tile *[MR * NR]float32, r0, r1, nr int, c []float32, ldc int, add bool) {
	for i := r0; i < r1; i++ {
		row := c[i*ldc : i*ldc+nr]
		t := tile[i*NR : i*NR+nr]
		if add {
			for j := range row {
				row[j] += t[j]
			}
		} else {
			copy(row, t)
		}
	}
}

// packA copies alpha * op(A)[ic:ic+mc, pc:pc+kc] into MR-row micro-panels, each stored
// k-major (MR values per k), zero-padding the last panel's missing rows.
func packA(dst []float32, trans bool, a []float32, lda, ic, pc, mc, kc int, alpha float32) {
	for ir := 0; ir < mc; ir += MR {
		mr := min(MR, mc-ir)
		p := dst[ir*kc : ir*kc+kc*MR]
		if !trans && mr == MR && alpha == 1 {
			// The common case: interleave six contiguous rows, writing p in order.
			r := (ic + ir) * lda
			a0 := a[r+pc : r+pc+kc]
			a1 := a[r+lda+pc : r+lda+pc+kc]
			a2 := a[r+2*lda+pc : r+2*lda+pc+kc]
			a3 := a[r+3*lda+pc : r+3*lda+pc+kc]
			a4 := a[r+4*lda+pc : r+4*lda+pc+kc]
			a5 := a[r+5*lda+pc : r+5*lda+pc+kc]
			for q := range a0 {
				d := p[q*MR : q*MR+MR : q*MR+MR]
				d[0], d[1], d[2], d[3], d[4], d[5] = a0[q], a1[q], a2[q], a3[q], a4[q], a5[q]
			}
			continue
		}
		if !trans {
			// A last, partial micro-panel: its rows interleaved, zeros after them.
			var rows [MR][]float32
			for i := 0; i < mr; i++ {
				r := (ic + ir + i) * lda
				rows[i] = a[r+pc : r+pc+kc]
			}
			for q := 0; q < kc; q++ {
				d := p[q*MR : q*MR+MR : q*MR+MR]
				for i := range d {
					d[i] = 0
					if i < mr {
						d[i] = alpha * rows[i][q]
					}
				}
			}
			continue
		}
		for i := 0; i < MR; i++ {
			if i >= mr {
				for q := 0; q < kc; q++ {
					p[q*MR+i] = 0
				}
				continue
			}
			r := ic + ir + i
			if !trans {
				src := a[r*lda+pc : r*lda+pc+kc]
				for q, v := range src {
					p[q*MR+i] = alpha * v
				}
			} else {
				for q := 0; q < kc; q++ {
					p[q*MR+i] = alpha * a[(pc+q)*lda+r]
				}
			}
		}
	}
}

// dense is op(B) of a row-major matrix: k x n with row stride ldb, or stored n x k when
// trans.
type dense struct {
	trans bool
	b     []float32
	ldb   int
	n     int
}

// Pack implements Panels.
func (d dense) Pack(p []float32, pc, kc, j0 int) {
	b, ldb := d.b, d.ldb
	nr := min(NR, d.n-j0)
	if !d.trans {
		for q := 0; q < kc; q++ {
			src := b[(pc+q)*ldb+j0 : (pc+q)*ldb+j0+nr]
			row := p[q*NR : q*NR+NR]
			copy(row, src)
			clear(row[nr:])
		}
		return
	}
	if nr == NR {
		// The common case: interleave sixteen contiguous rows of B (columns of op(B)),
		// writing p in order, four rows per pass to keep the read streams few.
		for c0 := 0; c0 < NR; c0 += 4 {
			r := (j0 + c0) * ldb
			b0 := b[r+pc : r+pc+kc]
			b1 := b[r+ldb+pc : r+ldb+pc+kc]
			b2 := b[r+2*ldb+pc : r+2*ldb+pc+kc]
			b3 := b[r+3*ldb+pc : r+3*ldb+pc+kc]
			for q := range b0 {
				d := p[q*NR+c0 : q*NR+c0+4 : q*NR+c0+4]
				d[0], d[1], d[2], d[3] = b0[q], b1[q], b2[q], b3[q]
			}
		}
		return
	}
	for j := 0; j < NR; j++ {
		if j >= nr {
			for q := 0; q < kc; q++ {
				p[q*NR+j] = 0
			}
			continue
		}
		src := b[(j0+j)*ldb+pc : (j0+j)*ldb+pc+kc]
		for q, v := range src {
			p[q*NR+j] = v
		}
	}
}

// kernelGo is the portable microkernel: c[i*ldc+j] += sum_q a[q*MR+i] * b[q*NR+j] for the
// full MR x NR tile (or = when !add). It walks the tile eight columns of one row at a time, so
// that the eight sums stay in registers.
func kernelGo(kc int, a, b, c []float32, ldc int, add bool) {
	a = a[:kc*MR]
	b = b[:kc*NR]
	if !add {
		for i := 0; i < MR; i++ {
			clear(c[i*ldc : i*ldc+NR])
		}
	}
	for i := 0; i < MR; i++ {
		for j0 := 0; j0 < NR; j0 += 8 {
			var c0, c1, c2, c3, c4, c5, c6, c7 float32
			for q := 0; q < kc; q++ {
				ai := a[q*MR+i]
				bq := b[q*NR+j0 : q*NR+j0+8 : q*NR+j0+8]
				c0 += ai * bq[0]
				c1 += ai * bq[1]
				c2 += ai * bq[2]
				c3 += ai * bq[3]
				c4 += ai * bq[4]
				c5 += ai * bq[5]
				c6 += ai * bq[6]
				c7 += ai * bq[7]
			}
			row := c[i*ldc+j0 : i*ldc+j0+8 : i*ldc+j0+8]
			row[0] += c0
			row[1] += c1
			row[2] += c2
			row[3] += c3
			row[4] += c4
			row[5] += c5
			row[6] += c6
			row[7] += c7
		}
	}
}

func checkArgs(transA, transB bool, m, n, k int, a []float32, lda int, hasB bool, b []float32, ldb int, c []float32, ldc int) {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("sgemm: negative dimension m=%d n=%d k=%d", m, n, k))
	}
	need := func(name string, rows, cols, ld, have int) {
		if rows == 0 || cols == 0 {
			return
		}
		if ld < cols {
			panic(fmt.Sprintf("sgemm: %s row stride %d < %d columns", name, ld, cols))
		}
		if want := (rows-1)*ld + cols; have < want {
			panic(fmt.Sprintf("sgemm: %s has %d values, %dx%d with stride %d needs %d", name, have, rows, cols, ld, want))
		}
	}
	if transA {
		need("A", k, m, lda, len(a))
	} else {
		need("A", m, k, lda, len(a))
	}
	switch {
	case !hasB: // SgemmPanels: B comes from a Panels
	case transB:
		need("B", n, k, ldb, len(b))
	default:
		need("B", k, n, ldb, len(b))
	}
	need("C", m, n, ldc, len(c))
}
