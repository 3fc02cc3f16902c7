package augment

import (
	"math"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// Cutpaste parameters (docs/algorithm.md, "Pseudo anomalies"; after CutPaste, Li et al. 2021).
const (
	areaMin, areaMax = 0.02, 0.15 // patch area as a fraction of the image area
	aspectMin        = 0.3        // aspect ratio log-uniform in [0.3, 1/0.3]
	jitter           = 0.1        // colour jitter strength for brightness, contrast, saturation, hue
)

// Box is a rectangle of rows [Y, Y+H) and columns [X, X+W).
type Box struct{ Y, X, H, W int }

// CutPaste cuts a rectangle from src (area U(0.02, 0.15) of the image, aspect ratio
// log-uniform in [0.3, 1/0.3], at a random place), jitters its colour and pastes it at a
// random place of a copy of dst. With src == dst this is cutpaste; with another training
// normal (same size) it is cutmix. dst and src are not modified.
func CutPaste(dst, src imgs.Image, rng *rand.Rand) imgs.Image {
	out, _, _ := cutPaste(dst, src, rng)
	return out
}

// cutPaste is CutPaste that also returns where the patch came from and where it went.
func cutPaste(dst, src imgs.Image, rng *rand.Rand) (imgs.Image, Box, Box) {
	h, w := dst.H, dst.W
	area := uniform(rng, areaMin, areaMax) * float64(h*w)
	aspect := math.Exp(uniform(rng, math.Log(aspectMin), math.Log(1/aspectMin)))
	cw := clampInt(int(math.Round(math.Sqrt(area*aspect))), 1, w)
	ch := clampInt(int(math.Round(math.Sqrt(area/aspect))), 1, h)
	from := Box{Y: int(uniform(rng, 0, float64(h-ch))), X: int(uniform(rng, 0, float64(w-cw))), H: ch, W: cw}
	patch := crop(src, from)
	colorJitter(patch, rng)
	to := Box{Y: int(uniform(rng, 0, float64(h-ch))), X: int(uniform(rng, 0, float64(w-cw))), H: ch, W: cw}
	out := clone(dst)
	paste(out, patch, to)
	return out, from, to
}

func clampInt(v, lo, hi int) int { return max(lo, min(v, hi)) }

// crop copies box b of img into a new image.
func crop(img imgs.Image, b Box) imgs.Image {
	out := imgs.NewImage(b.H, b.W)
	for c := 0; c < 3; c++ {
		s, d := img.Plane(c), out.Plane(c)
		for y := 0; y < b.H; y++ {
			copy(d[y*b.W:(y+1)*b.W], s[(b.Y+y)*img.W+b.X:(b.Y+y)*img.W+b.X+b.W])
		}
	}
	return out
}

// paste writes patch into img at box b (b.H, b.W equal the patch's size).
func paste(img, patch imgs.Image, b Box) {
	for c := 0; c < 3; c++ {
		s, d := patch.Plane(c), img.Plane(c)
		for y := 0; y < b.H; y++ {
			copy(d[(b.Y+y)*img.W+b.X:(b.Y+y)*img.W+b.X+b.W], s[y*b.W:(y+1)*b.W])
		}
	}
}

// colorJitter changes brightness, contrast and saturation by factors drawn from
// U(1-0.1, 1+0.1) and shifts the hue by U(-0.1, 0.1) turns, in a random order, as
// torchvision's ColorJitter(0.1, 0.1, 0.1, 0.1) does. Values stay in [0, 1].
func colorJitter(img imgs.Image, rng *rand.Rand) {
	order := rng.Perm(4)
	bright := uniform(rng, 1-jitter, 1+jitter)
	contrast := uniform(rng, 1-jitter, 1+jitter)
	sat := uniform(rng, 1-jitter, 1+jitter)
	hue := uniform(rng, -jitter, jitter)
	r, g, b := img.Plane(0), img.Plane(1), img.Plane(2)
	for _, op := range order {
		switch op {
		case 0: // brightness: blend with black
			for i := range img.Pix {
				img.Pix[i] = clamp01(float32(bright) * img.Pix[i])
			}
		case 1: // contrast: blend with the mean grey level
			var mean float64
			for i := range r {
				mean += float64(grey(r[i], g[i], b[i]))
			}
			mean /= float64(len(r))
			for i := range img.Pix {
				img.Pix[i] = clamp01(float32(contrast*float64(img.Pix[i]) + (1-contrast)*mean))
			}
		case 2: // saturation: blend with the pixel's grey level
			for i := range r {
				gr := float64(grey(r[i], g[i], b[i]))
				r[i] = clamp01(float32(sat*float64(r[i]) + (1-sat)*gr))
				g[i] = clamp01(float32(sat*float64(g[i]) + (1-sat)*gr))
				b[i] = clamp01(float32(sat*float64(b[i]) + (1-sat)*gr))
			}
		case 3: // hue: rotate in HSV
			for i := range r {
				h, s, v := rgbToHSV(r[i], g[i], b[i])
				h = float32(math.Mod(float64(h)+hue+1, 1))
				r[i], g[i], b[i] = hsvToRGB(h, s, v)
			}
		}
	}
}

// grey is the ITU-R 601 luma torchvision uses for grey levels.
func grey(r, g, b float32) float32 { return 0.299*r + 0.587*g + 0.114*b }

func clamp01(v float32) float32 { return min(max(v, 0), 1) }

// rgbToHSV converts RGB in [0, 1] to hue (turns, [0, 1)), saturation and value.
func rgbToHSV(r, g, b float32) (h, s, v float32) {
	mx, mn := max(r, g, b), min(r, g, b)
	v = mx
	d := mx - mn
	if mx == 0 || d == 0 {
		return 0, 0, v
	}
	s = d / mx
	switch mx {
	case r:
		h = (g - b) / d
	case g:
		h = 2 + (b-r)/d
	default:
		h = 4 + (r-g)/d
	}
	h /= 6
	if h < 0 {
		h++
	}
	return h, s, v
}

// hsvToRGB is the inverse of rgbToHSV.
func hsvToRGB(h, s, v float32) (r, g, b float32) {
	if s == 0 {
		return v, v, v
	}
	h6 := h * 6
	i := int(h6) % 6
	f := h6 - float32(int(h6))
	p, q, t := v*(1-s), v*(1-s*f), v*(1-s*(1-f))
	switch i {
	case 0:
		return v, t, p
	case 1:
		return q, v, p
	case 2:
		return p, v, t
	case 3:
		return p, q, v
	case 4:
		return t, p, v
	default:
		return v, p, q
	}
}
