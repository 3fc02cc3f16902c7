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
	xw := filterWeights(img.W, w)
	yw := filterWeights(img.H, h)
	out := NewImage(h, w)
	tmp := make([]float32, img.H*w) // horizontally resized plane
	for c := 0; c < 3; c++ {
		src, dst := img.Plane(c), out.Plane(c)
		for y := 0; y < img.H; y++ {
			row := src[y*img.W : (y+1)*img.W]
			for x, f := range xw {
				var acc float32
				for k, wt := range f.w {
					acc += wt * row[f.lo+k]
				}
				tmp[y*w+x] = acc
			}
		}
		for y, f := range yw {
			d := dst[y*w : (y+1)*w]
			for k, wt := range f.w {
				s := tmp[(f.lo+k)*w : (f.lo+k+1)*w]
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
