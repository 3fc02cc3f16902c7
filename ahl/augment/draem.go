package augment

import (
	"math"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// Draem parameters (docs/algorithm.md, "Pseudo anomalies"; after DRAEM, Zavrtanik et al. 2021).
const (
	perlinScales    = 6    // noise scale 2^U{0..5} per axis
	perlinThreshold = 0.5  // the mask is noise > 0.5
	maxRotation     = 90.0 // the noise is rotated by U(-90, 90) degrees
	maxBeta         = 0.8  // b ~ U(0, 0.8): how much of the image shows through the texture
	// maskTries bounds how often an empty mask is redrawn. DRAEM keeps an empty mask (its
	// copy then equals the image); a pseudo anomaly identical to its normal is a label error,
	// so we redraw. Coarse noise (scale 1 x 1) rotated into the corners is empty about one
	// time in ten; 32 tries leave an empty mask with negligible probability.
	maskTries = 32
)

// Draem makes a DRAEM pseudo anomaly: a thresholded, rotated Perlin-noise mask selects where
// the texture src replaces img, out = (1 - mask) * img + mask * ((1 - b) * src + b * img),
// b ~ U(0, 0.8). src must have img's size. It returns the image and the mask (H x W, 0 or 1).
func Draem(img, src imgs.Image, rng *rand.Rand) (imgs.Image, []float32) {
	mask := PerlinMask(img.H, img.W, rng)
	beta := float32(uniform(rng, 0, maxBeta))
	out := clone(img)
	n := img.H * img.W
	for c := 0; c < 3; c++ {
		o, s := out.Plane(c), src.Plane(c)
		for i := 0; i < n; i++ {
			if mask[i] != 0 {
				o[i] = (1-beta)*s[i] + beta*o[i]
			}
		}
	}
	return out, mask
}

// PerlinMask draws a binary h x w mask: Perlin noise with 2^U{0..5} cells per axis, rotated
// by U(-90, 90) degrees about the centre (zero outside, as imgaug's Affine does), thresholded
// at 0.5. An empty mask is redrawn (see maskTries).
func PerlinMask(h, w int, rng *rand.Rand) []float32 {
	mask := make([]float32, h*w)
	for try := 0; try < maskTries; try++ {
		ry := 1 << rng.IntN(perlinScales)
		rx := 1 << rng.IntN(perlinScales)
		noise := Perlin(h, w, ry, rx, rng)
		noise = rotate(noise, h, w, uniform(rng, -maxRotation, maxRotation))
		var any bool
		for i, v := range noise {
			if v > perlinThreshold {
				mask[i] = 1
				any = true
			} else {
				mask[i] = 0
			}
		}
		if any {
			break
		}
	}
	return mask
}

// Perlin returns h x w gradient noise with ry x rx lattice cells (DRAEM's rand_perlin_2d):
// a random unit gradient at every lattice corner, the fade 6t^5 - 15t^4 + 10t^3 between
// corners, scaled by sqrt(2) so the values lie in about [-1, 1]. Unlike DRAEM it does not
// need h and w to be multiples of the cell counts: pixel y sits at lattice coordinate
// y * ry / h, which is DRAEM's grid wherever DRAEM's is defined.
func Perlin(h, w, ry, rx int, rng *rand.Rand) []float32 {
	gy := make([]float64, (ry+1)*(rx+1))
	gx := make([]float64, (ry+1)*(rx+1))
	for i := range gy {
		a := 2 * math.Pi * rng.Float64()
		gy[i], gx[i] = math.Cos(a), math.Sin(a)
	}
	dot := func(cy, cx int, dy, dx float64) float64 {
		k := cy*(rx+1) + cx
		return gy[k]*dy + gx[k]*dx
	}
	fade := func(t float64) float64 { return t * t * t * (t*(t*6-15) + 10) }
	lerp := func(a, b, t float64) float64 { return a + t*(b-a) }
	out := make([]float32, h*w)
	for y := 0; y < h; y++ {
		u := float64(y) * float64(ry) / float64(h)
		cy := int(u)
		fy := u - float64(cy)
		ty := fade(fy)
		for x := 0; x < w; x++ {
			v := float64(x) * float64(rx) / float64(w)
			cx := int(v)
			fx := v - float64(cx)
			n00 := dot(cy, cx, fy, fx)
			n10 := dot(cy+1, cx, fy-1, fx)
			n01 := dot(cy, cx+1, fy, fx-1)
			n11 := dot(cy+1, cx+1, fy-1, fx-1)
			tx := fade(fx)
			out[y*w+x] = float32(math.Sqrt2 * lerp(lerp(n00, n10, ty), lerp(n01, n11, ty), tx))
		}
	}
	return out
}

// rotate rotates an h x w map by deg degrees about its centre with bilinear sampling; points
// that come from outside the map are 0.
func rotate(m []float32, h, w int, deg float64) []float32 {
	out := make([]float32, h*w)
	s, c := math.Sincos(deg * math.Pi / 180)
	cy, cx := float64(h-1)/2, float64(w-1)/2
	at := func(y, x int) float64 {
		if y < 0 || y >= h || x < 0 || x >= w {
			return 0
		}
		return float64(m[y*w+x])
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			// Inverse map: the source point that lands on (y, x).
			dy, dx := float64(y)-cy, float64(x)-cx
			sy := cy + c*dy - s*dx
			sx := cx + s*dy + c*dx
			y0, x0 := int(math.Floor(sy)), int(math.Floor(sx))
			fy, fx := sy-float64(y0), sx-float64(x0)
			v := (1-fy)*((1-fx)*at(y0, x0)+fx*at(y0, x0+1)) + fy*((1-fx)*at(y0+1, x0)+fx*at(y0+1, x0+1))
			out[y*w+x] = float32(v)
		}
	}
	return out
}
