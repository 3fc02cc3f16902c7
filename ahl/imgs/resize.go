package imgs

import "math"

// Resize returns img resized to h x w with bilinear interpolation. Pixel centres are aligned
// (align_corners = false) and, when shrinking, the triangle filter is widened by the scale
// factor so every source pixel contributes (antialiasing), as PIL's BILINEAR filter does, which
// is what torchvision's Resize uses on the images the paper's backbones were trained on. An
// image already h x w is returned as is, without resampling (the same backing array).
func Resize(img Image, h, w int) Image {
	if img.H == h && img.W == w {
		return img
	}
	if h <= 0 || w <= 0 {
		panic("imgs: Resize to a non-positive size")
	}
	return resample(img.H, img.W, h, w, func(y int) (r, g, b []float32) {
		return img.Plane(0)[y*img.W : (y+1)*img.W], img.Plane(1)[y*img.W : (y+1)*img.W], img.Plane(2)[y*img.W : (y+1)*img.W]
	})
}

// resample resizes an srcH x srcW image to h x w (Resize's filter), reading it one row at a
// time: rows(y) returns row y of the R, G and B planes, which need only stay valid until the
// next call. Each row is filtered horizontally as it comes, then the columns vertically.
func resample(srcH, srcW, h, w int, rows func(y int) (r, g, b []float32)) Image {
	xw := filterWeights(srcW, w)
	yw := filterWeights(srcH, h)
	out := NewImage(h, w)
	tmp := make([]float32, 3*srcH*w) // horizontally resized planes
	for y := 0; y < srcH; y++ {
		r, g, b := rows(y)
		for c, row := range [3][]float32{r, g, b} {
			t := tmp[(c*srcH+y)*w : (c*srcH+y+1)*w]
			for x, f := range xw {
				var acc float32
				for k, wt := range f.w {
					acc += wt * row[f.lo+k]
				}
				t[x] = acc
			}
		}
	}
	for c := 0; c < 3; c++ {
		dst, plane := out.Plane(c), tmp[c*srcH*w:(c+1)*srcH*w]
		for y, f := range yw {
			d := dst[y*w : (y+1)*w]
			for k, wt := range f.w {
				s := plane[(f.lo+k)*w : (f.lo+k+1)*w]
				for x := range d {
					d[x] += wt * s[x]
				}
			}
		}
	}
	return out
}

// taps are the normalised weights of source samples lo, lo+1, ... for one output sample.
type taps struct {
	lo int
	w  []float32
}

// filterWeights computes, for each of the out output samples along one axis of length in,
// the triangle-filter weights (support 1 output pixel, scaled by in/out when shrinking).
func filterWeights(in, out int) []taps {
	scale := float64(in) / float64(out)
	fs := math.Max(scale, 1)
	support := fs // the triangle filter has radius 1, scaled by fs
	res := make([]taps, out)
	for i := range res {
		centre := (float64(i) + 0.5) * scale
		lo := int(math.Max(math.Floor(centre-support+0.5), 0))
		hi := int(math.Min(math.Floor(centre+support+0.5), float64(in)))
		ws := make([]float64, 0, hi-lo)
		var sum float64
		for j := lo; j < hi; j++ {
			t := math.Abs((float64(j) + 0.5 - centre) / fs)
			v := math.Max(1-t, 0)
			ws = append(ws, v)
			sum += v
		}
		f := taps{lo: lo, w: make([]float32, len(ws))}
		for k, v := range ws {
			f.w[k] = float32(v / sum)
		}
		res[i] = f
	}
	return res
}
