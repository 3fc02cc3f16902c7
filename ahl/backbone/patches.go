package backbone

import (
	"math"

	blocked "github.com/pipe-ahl/pipe/ahl/sgemm"
)

// patches is a convolution's im2col matrix without the matrix: the sgemm micro-panels are
// packed straight from the input activation, so every input value is copied once per use
// instead of twice (im2col, then packing), and no (Cin*K*K) x (B*Ho*Wo) buffer exists.
// Row r = (ci*K + ky)*K + kx, column j = (b*Ho + oy)*Wo + ox holds
// x[ci, b, oy*stride - pad + ky, ox*stride - pad + kx], zero outside the image. A padded
// convolution reads from a copy of x with the zero border written out, so that packing never
// tests whether a tap falls outside the image.
type patches struct {
	x          act // the input, zero-padded: tap (ky, kx) of output (oy, ox) is at (oy*stride + ky, ox*stride + kx)
	padded     bool
	k, stride  int
	ho, wo     int
	transposed bool // op(B) is the matrix's transpose (for the weight gradient)
	off, end   int  // op(B)'s columns [off, end) are the ones packed, renumbered from 0
	// taps[r] is the offset in x of row r's tap (ci, ky, kx) from a window's corner;
	// corners[j] (transposed only) is where column j's window starts in x.
	taps, corners []int
}

// newPatches describes the im2col matrix of x for a k x k convolution; release hands its
// padded copy of x back.
func newPatches(x act, k, stride, pad, ho, wo int, transposed bool) *patches {
	p := &patches{x: x, k: k, stride: stride, ho: ho, wo: wo, transposed: transposed}
	if pad > 0 {
		p.x, p.padded = padAct(x, pad), true
	}
	p.end = x.B * ho * wo
	if transposed {
		p.end = x.C * k * k
	}
	xp := p.x
	p.taps = getInts(x.C * k * k)
	for r := range p.taps {
		ci, ky, kx := r/(k*k), r/k%k, r%k
		p.taps[r] = ci*xp.B*xp.H*xp.W + ky*xp.W + kx
	}
	if transposed {
		p.corners = getInts(x.B * ho * wo)
		j := 0
		for b := 0; b < x.B; b++ {
			for oy := 0; oy < ho; oy++ {
				row := p.corners[j : j+wo]
				c := (b*xp.H + oy*stride) * xp.W
				for ox := range row {
					row[ox] = c + ox*stride
				}
				j += wo
			}
		}
	}
	return p
}

// release returns the padded copy of the input and the offset tables to the scratch pools;
// p must not be used after.
func (p *patches) release() {
	if p.padded {
		putScratch(p.x.Data)
	}
	putInts(p.taps)
	putInts(p.corners)
}

// padAct returns x with a border of pad zeros around every plane, in a scratch buffer.
func padAct(x act, pad int) act {
	hp, wp := x.H+2*pad, x.W+2*pad
	out := act{C: x.C, B: x.B, H: hp, W: wp, Data: getScratch(x.C * x.B * hp * wp)}
	parallel(x.C*x.B, hp*wp, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			src := x.Data[i*x.H*x.W : (i+1)*x.H*x.W]
			dst := out.Data[i*hp*wp : (i+1)*hp*wp]
			clear(dst[:pad*wp])
			for y := 0; y < x.H; y++ {
				row := dst[(y+pad)*wp : (y+pad+1)*wp]
				clear(row[:pad])
				copy(row[pad:pad+x.W], src[y*x.W:(y+1)*x.W])
				clear(row[pad+x.W:])
			}
			clear(dst[(pad+x.H)*wp:])
		}
	})
	return out
}

// from returns the panels of op(B)'s columns [j0, j0+n), renumbered from 0.
func (p *patches) from(j0, n int) blocked.Panels {
	q := *p
	q.off, q.end = p.off+j0, p.off+j0+n
	return &q
}

// Pack implements blocked.Panels.
func (p *patches) Pack(dst []float32, pc, kc, j0 int) {
	if p.transposed {
		p.packT(dst, pc, kc, j0)
		return
	}
	p.pack(dst, pc, kc, j0)
}

// pack writes rows [pc, pc+kc) x columns [j0, j0+NR) of the matrix, k-major. The columns
// fall into runs that share an output row; each row of the panel is one contiguous (stride
// 1) or strided copy per run, at the offsets of the taps (ci, ky, kx) from its corner.
func (p *patches) pack(dst []float32, pc, kc, j0 int) {
	const nr = blocked.NR
	x, s, wo := p.x, p.stride, p.wo
	j0 += p.off
	n := min(nr, p.end-j0)
	// Each run: first position c in the panel, length l, and where the window of its first
	// column starts in x.
	var cs, ls, at [nr]int
	nrun := 0
	for c := 0; c < n; {
		j := j0 + c
		b, rem := j/(p.ho*wo), j%(p.ho*wo)
		oy, ox := rem/wo, rem%wo
		l := min(n-c, wo-ox)
		cs[nrun], ls[nrun], at[nrun] = c, l, (b*x.H+oy*s)*x.W+ox*s
		nrun++
		c += l
	}
	data := x.Data
	taps := p.taps[pc : pc+kc]
	if nrun == 1 && n == nr && s <= 2 {
		// The usual case: one run of NR values per row of the panel, contiguous (stride 1)
		// or every other one (stride 2), at the taps' offsets from the run's corner.
		if s == 1 {
			blocked.Gather16(dst, data[at[0]:], taps)
		} else {
			blocked.Gather16Stride2(dst, data[at[0]:], taps)
		}
		return
	}
	for q, tap := range taps {
		row := dst[q*nr : q*nr+nr : q*nr+nr]
		for i := range nrun {
			o, d := at[i]+tap, row[cs[i]:cs[i]+ls[i]]
			if s == 1 {
				copy(d, data[o:o+len(d)])
				continue
			}
			src := data[o : o+(len(d)-1)*s+1]
			for t := range d {
				d[t] = src[t*s]
			}
		}
		clear(row[n:])
	}
}

// packT writes rows [pc, pc+kc) x columns [j0, j0+NR) of the matrix's transpose: its rows
// are pixels and its columns the matrix's rows (ci, ky, kx), so each row of the panel
// gathers NR values at fixed offsets from the pixel's window.
func (p *patches) packT(dst []float32, pc, kc, j0 int) {
	const nr = blocked.NR
	x, s, wo := p.x, p.stride, p.wo
	j0 += p.off
	n := min(nr, p.end-j0)
	var offs [nr]int
	copy(offs[:n], p.taps[j0:j0+n])
	data := x.Data
	dst = dst[:kc*nr]
	b, rem := pc/(p.ho*wo), pc%(p.ho*wo)
	oy, ox := rem/wo, rem%wo
	if (s == 1 || s == 2 && wo >= 16) && n == nr && offs[nr-1] <= math.MaxInt32 {
		// Stride 1 (2): the pixels of one output row read consecutive values (every other
		// value) of every tap, which GatherRun16 (GatherRun16Stride2) moves eight pixels at
		// a time; short rows of a stride-2 layer go to GatherIdx16 below.
		var idx [nr]int32
		for c, o := range offs {
			idx[c] = int32(o)
		}
		for q := 0; q < kc; {
			l := min(kc-q, wo-ox)
			corner := (b*x.H+oy*s)*x.W + ox*s
			if s == 1 {
				blocked.GatherRun16(dst[q*nr:], data, &idx, corner, l)
			} else {
				blocked.GatherRun16Stride2(dst[q*nr:], data, &idx, corner, l)
			}
			q += l
			if ox += l; ox == wo {
				ox = 0
				if oy++; oy == p.ho {
					oy = 0
					b++
				}
			}
		}
		return
	}
	corners := p.corners[pc : pc+kc]
	if n == nr && offs[nr-1] <= math.MaxInt32 {
		var idx [nr]int32
		for c, o := range offs {
			idx[c] = int32(o)
		}
		blocked.GatherIdx16(dst, data, &idx, corners)
		return
	}
	for q, corner := range corners {
		row := dst[q*nr : q*nr+nr : q*nr+nr]
		for c := range row {
			row[c] = 0
			if c < n {
				row[c] = data[corner+offs[c]]
			}
		}
	}
}
