package sgemm

import "fmt"

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

// Gather16 copies the 16 values src[offs[q] : offs[q]+16] to dst[16q : 16q+16] for each q <
// len(offs): a B micro-panel gathered from rows of a matrix or image (see Panels). It panics
// when an offset is out of range or dst is shorter than 16*len(offs).
func Gather16(dst, src []float32, offs []int) {
	if len(dst) < 16*len(offs) {
		panic(fmt.Sprintf("sgemm: Gather16: %d values in dst for %d rows of 16", len(dst), len(offs)))
	}
	for q, o := range offs {
		if o < 0 || o > len(src)-16 {
			panic(fmt.Sprintf("sgemm: Gather16: offset %d (row %d) out of range for %d values", o, q, len(src)))
		}
	}
	if asmKernel && len(offs) > 0 {
		gather16(&dst[0], &src[0], &offs[0], len(offs))
		return
	}
	for q, o := range offs {
		copy(dst[16*q:16*q+16], src[o:o+16])
	}
}

// GatherIdx16 sets dst[16q+c] = src[corners[q]+idx[c]] for each q < len(corners) and c < 16:
// a B micro-panel whose rows gather 16 values at fixed offsets idx around a moving corner
// (a convolution's taps around each pixel). It panics when an index is out of range or dst
// is shorter than 16*len(corners).
func GatherIdx16(dst, src []float32, idx *[16]int32, corners []int) {
	if len(dst) < 16*len(corners) {
		panic(fmt.Sprintf("sgemm: GatherIdx16: %d values in dst for %d rows of 16", len(dst), len(corners)))
	}
	lo, hi := int(idx[0]), int(idx[0])
	for _, v := range idx {
		lo, hi = min(lo, int(v)), max(hi, int(v))
	}
	for q, c := range corners {
		if c+lo < 0 || c+hi >= len(src) {
			panic(fmt.Sprintf("sgemm: GatherIdx16: corner %d (row %d) with offsets %d..%d out of range for %d values", c, q, lo, hi, len(src)))
		}
	}
	if asmKernel && len(corners) > 0 {
		gatherIdx16(&dst[0], &src[0], &idx[0], &corners[0], len(corners))
		return
	}
	for q, c := range corners {
		row := dst[16*q : 16*q+16]
		for j, v := range idx {
			row[j] = src[c+int(v)]
		}
	}
}

// GatherRun16 sets dst[16p+c] = src[corner+p+idx[c]] for each p < rows and c < 16: the rows of
// a B micro-panel for rows consecutive pixels, each gathering 16 values at fixed offsets idx
// (a convolution's taps) from the pixel. On amd64 with AVX2 it moves 8 pixels at a time, as
// 8 x 8 transposes of contiguous loads. It panics when an index is out of range or dst is
// shorter than 16*rows.
func GatherRun16(dst, src []float32, idx *[16]int32, corner, rows int) {
	if rows <= 0 {
		return
	}
	if len(dst) < 16*rows {
		panic(fmt.Sprintf("sgemm: GatherRun16: %d values in dst for %d rows of 16", len(dst), rows))
	}
	lo, hi := int(idx[0]), int(idx[0])
	for _, v := range idx {
		lo, hi = min(lo, int(v)), max(hi, int(v))
	}
	if corner+lo < 0 || corner+hi+rows-1 >= len(src) {
		panic(fmt.Sprintf("sgemm: GatherRun16: corner %d, %d rows and offsets %d..%d out of range for %d values", corner, rows, lo, hi, len(src)))
	}
	p := 0
	if asmKernel && rows >= 8 {
		p = rows &^ 7
		gatherT8x16(&dst[0], &src[0], &idx[0], corner, p/8)
	}
	for ; p < rows; p++ {
		row := dst[16*p : 16*p+16]
		for c, v := range idx {
			row[c] = src[corner+p+int(v)]
		}
	}
}

// GatherRun16Stride2 is GatherRun16 for pixels two values apart (a stride-2 convolution):
// dst[16p+c] = src[corner+2p+idx[c]] for each p < rows and c < 16. The assembly moves 8
// pixels at a time, from the even values of 16 contiguous ones, and runs on every block whose
// reads (one value past its last pixel's) stay inside src. It panics when an index is out of
// range or dst is shorter than 16*rows.
func GatherRun16Stride2(dst, src []float32, idx *[16]int32, corner, rows int) {
	if rows <= 0 {
		return
	}
	if len(dst) < 16*rows {
		panic(fmt.Sprintf("sgemm: GatherRun16Stride2: %d values in dst for %d rows of 16", len(dst), rows))
	}
	lo, hi := int(idx[0]), int(idx[0])
	for _, v := range idx {
		lo, hi = min(lo, int(v)), max(hi, int(v))
	}
	if corner+lo < 0 || corner+hi+2*(rows-1) >= len(src) {
		panic(fmt.Sprintf("sgemm: GatherRun16Stride2: corner %d, %d rows and offsets %d..%d out of range for %d values", corner, rows, lo, hi, len(src)))
	}
	p := 0
	if asmKernel {
		p = rows &^ 7
		if p > 0 && corner+hi+2*p-1 >= len(src) {
			p -= 8 // the last block's reads would pass the end of src
		}
		if p > 0 {
			gatherT8x16s2(&dst[0], &src[0], &idx[0], corner, p/8)
		}
	}
	for ; p < rows; p++ {
		row := dst[16*p : 16*p+16]
		for c, v := range idx {
			row[c] = src[corner+2*p+int(v)]
		}
	}
}

// Gather16Stride2 copies the 16 values src[offs[q]], src[offs[q]+2], ..., src[offs[q]+30] to
// dst[16q : 16q+16] for each q < len(offs): Gather16 for a stride-2 convolution. It panics
// when an offset is out of range or dst is shorter than 16*len(offs).
func Gather16Stride2(dst, src []float32, offs []int) {
	if len(dst) < 16*len(offs) {
		panic(fmt.Sprintf("sgemm: Gather16Stride2: %d values in dst for %d rows of 16", len(dst), len(offs)))
	}
	wide := true // the assembly reads 32 values from each offset
	for q, o := range offs {
		if o < 0 || o > len(src)-31 {
			panic(fmt.Sprintf("sgemm: Gather16Stride2: offset %d (row %d) out of range for %d values", o, q, len(src)))
		}
		wide = wide && o <= len(src)-32
	}
	if asmKernel && wide && len(offs) > 0 {
		gather16s2(&dst[0], &src[0], &offs[0], len(offs))
		return
	}
	for q, o := range offs {
		row, s := dst[16*q:16*q+16], src[o:o+31]
		for t := range row {
			row[t] = s[2*t]
		}
	}
}

// AddStride2 adds x into every other value of y: y[2i] += x[i] for i < len(x); y must hold at
// least 2*len(x)-1 values. The odd values of y are left as they are (the assembly adds -0 to
// them, which changes no float, not even a zero's sign).
func AddStride2(x, y []float32) {
	if len(x) == 0 {
		return
	}
	y = y[:2*len(x)-1]
	n := 0
	if asmKernel {
		n = min(len(x)/8, len(y)/16) * 8
		if n > 0 {
			addStride2x8(&x[0], &y[0], n/8)
		}
	}
	for i := n; i < len(x); i++ {
		y[2*i] += x[i]
	}
}
