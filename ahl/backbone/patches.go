package backbone

import blocked "github.com/pipe-ahl/pipe/ahl/sgemm"

// patches is a convolution's im2col matrix without the matrix: the sgemm micro-panels are
// packed straight from the input activation, so every input value is copied once per use
// instead of twice (im2col, then packing), and no (Cin*K*K) x (B*Ho*Wo) buffer exists.
// Row r = (ci*K + ky)*K + kx, column j = (b*Ho + oy)*Wo + ox holds
// x[ci, b, oy*stride - pad + ky, ox*stride - pad + kx], zero outside the image.
type patches struct {
	x              act
	k, stride, pad int
	ho, wo         int
	vlo, vhi       [8]int // validColumns for each kx < k (k <= 8)
	transposed     bool   // op(B) is the matrix's transpose (for the weight gradient)
	off, end       int    // op(B)'s columns [off, end) are the ones packed, renumbered from 0
}

// newPatches describes the im2col matrix of x for a k x k convolution (k <= 8).
func newPatches(x act, k, stride, pad, ho, wo int, transposed bool) *patches {
	p := &patches{x: x, k: k, stride: stride, pad: pad, ho: ho, wo: wo, transposed: transposed}
	for kx := 0; kx < k; kx++ {
		p.vlo[kx], p.vhi[kx] = validColumns(x.W, wo, kx, stride, pad)
	}
	p.end = x.B * ho * wo
	if transposed {
		p.end = x.C * k * k
	}
	return p
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

// run is a stretch of consecutive columns of the matrix that lie in one output row.
type run struct {
	c, l     int // first position in the panel, length
	base, oy int // offset of image b's plane within a channel (b*H*W), output row
	ox       int // first output column
}

// pack writes rows [pc, pc+kc) x columns [j0, j0+NR) of the matrix, k-major.
func (p *patches) pack(dst []float32, pc, kc, j0 int) {
	const nr = blocked.NR
	x, k, s, pad, wo := p.x, p.k, p.stride, p.pad, p.wo
	hw := x.H * x.W
	j0 += p.off
	n := min(nr, p.end-j0)
	var runs [nr]run
	nrun := 0
	for c := 0; c < n; {
		j := j0 + c
		b, rem := j/(p.ho*wo), j%(p.ho*wo)
		oy, ox := rem/wo, rem%wo
		l := min(n-c, wo-ox)
		runs[nrun] = run{c: c, l: l, base: b * hw, oy: oy, ox: ox}
		nrun++
		c += l
	}
	ci, ky, kx := pc/(k*k), pc/k%k, pc%k
	whole := nrun == 1 && n == nr // one run of a full panel row: the fast paths below
	r0 := runs[0]
	for q := 0; q < kc; q++ {
		row := dst[q*nr : q*nr+nr : q*nr+nr]
		plane := x.Data[ci*x.B*hw : (ci+1)*x.B*hw]
		vlo, vhi := p.vlo[kx], p.vhi[kx]
		if whole {
			iy := r0.oy*s - pad + ky
			if iy < 0 || iy >= x.H {
				*(*[nr]float32)(row) = [nr]float32{}
				goto next
			}
			// Read all NR columns from the input row's neighbourhood when that stays inside
			// the plane, then zero the few that fall outside the image row.
			lo, hi := max(vlo, r0.ox)-r0.ox, min(vhi, r0.ox+nr)-r0.ox
			at := r0.base + iy*x.W + r0.ox*s - pad + kx
			if at >= 0 && at+(nr-1)*s < len(plane) && lo < hi {
				if s == 1 {
					*(*[nr]float32)(row) = [nr]float32(plane[at : at+nr])
				} else {
					src := plane[at : at+(nr-1)*s+1]
					for t := range row {
						row[t] = src[t*s]
					}
				}
				for t := 0; t < lo; t++ {
					row[t] = 0
				}
				for t := hi; t < nr; t++ {
					row[t] = 0
				}
				goto next
			}
		}
		for _, r := range runs[:nrun] {
			d := row[r.c : r.c+r.l]
			iy := r.oy*s - pad + ky
			lo, hi := max(vlo, r.ox), min(vhi, r.ox+r.l)
			if iy < 0 || iy >= x.H || lo >= hi {
				clear(d)
				continue
			}
			src := plane[r.base+iy*x.W : r.base+(iy+1)*x.W]
			clear(d[:lo-r.ox])
			ix := lo*s - pad + kx
			for t := lo - r.ox; t < hi-r.ox; t++ {
				d[t] = src[ix]
				ix += s
			}
			clear(d[hi-r.ox:])
		}
		clear(row[n:])
	next:
		if kx++; kx == k {
			kx = 0
			if ky++; ky == k {
				ky = 0
				ci++
			}
		}
	}
}

// packT writes rows [pc, pc+kc) x columns [j0, j0+NR) of the matrix's transpose: its rows
// are pixels and its columns the matrix's rows (ci, ky, kx), so each row of the panel
// gathers NR values around one pixel, at fixed offsets from it when the pixel's whole
// window lies inside the image.
func (p *patches) packT(dst []float32, pc, kc, j0 int) {
	const nr = blocked.NR
	x, k, s, pad, wo := p.x, p.k, p.stride, p.pad, p.wo
	hw, howo := x.H*x.W, p.ho*wo
	j0 += p.off
	n := min(nr, p.end-j0)
	var offs, kys, kxs [nr]int
	minY, maxY, minX, maxX := k, -1, k, -1
	for c := 0; c < n; c++ {
		r := j0 + c
		ci, ky, kx := r/(k*k), r/k%k, r%k
		offs[c], kys[c], kxs[c] = ci*x.B*hw+ky*x.W+kx, ky, kx
		minY, maxY, minX, maxX = min(minY, ky), max(maxY, ky), min(minX, kx), max(maxX, kx)
	}
	data := x.Data
	dst = dst[:kc*nr]
	b, rem := pc/howo, pc%howo
	oy, ox := rem/wo, rem%wo
	for q := 0; q < kc; q++ {
		row := dst[q*nr : q*nr+nr : q*nr+nr]
		iy0, ix0 := oy*s-pad, ox*s-pad
		base := b*hw + iy0*x.W + ix0
		if n == nr && iy0+minY >= 0 && iy0+maxY < x.H && ix0+minX >= 0 && ix0+maxX < x.W {
			for c := range row {
				row[c] = data[base+offs[c]]
			}
		} else {
			for c := range row {
				row[c] = 0
				if c < n {
					if iy, ix := iy0+kys[c], ix0+kxs[c]; iy >= 0 && iy < x.H && ix >= 0 && ix < x.W {
						row[c] = data[base+offs[c]]
					}
				}
			}
		}
		if ox++; ox == wo {
			ox = 0
			if oy++; oy == p.ho {
				oy = 0
				b++
			}
		}
	}
}
