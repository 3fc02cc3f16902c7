package augment

import (
	"math"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// Texture generates an h x w anomaly-source texture in code, standing in for DRAEM's DTD
// images when no source folder is given. It draws one of three families, each coloured with
// two random colours: multi-octave Perlin noise (stains, marble), oriented sinusoidal stripes
// (fabric, scratches) and a rotated checkerboard (grids, tiles).
func Texture(h, w int, rng *rand.Rand) imgs.Image {
	var a, b [3]float32
	for c := 0; c < 3; c++ {
		a[c], b[c] = rng.Float32(), rng.Float32()
	}
	t := make([]float32, h*w) // blend factor between colour a (0) and colour b (1)
	switch rng.IntN(3) {
	case 0: // fractal Perlin noise: octaves of doubling frequency and halving amplitude
		base := 1 << rng.IntN(4)
		amp, total := 1.0, 0.0
		for o := 0; o < 4; o++ {
			n := Perlin(h, w, base<<o, base<<o, rng)
			for i, v := range n {
				t[i] += float32(amp) * v
			}
			total += amp
			amp /= 2
		}
		for i := range t {
			t[i] = clamp01(0.5 + t[i]/float32(total))
		}
	case 1: // stripes: sin of a rotated coordinate, sharpened with a random gain
		theta := rng.Float64() * math.Pi
		period := uniform(rng, 3, float64(max(h, w))/4+3)
		gain := uniform(rng, 1, 6)
		sy, cx := math.Sincos(theta)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				u := (float64(x)*cx + float64(y)*sy) * 2 * math.Pi / period
				t[y*w+x] = float32(0.5 + 0.5*math.Tanh(gain*math.Sin(u)))
			}
		}
	default: // checkerboard in rotated coordinates
		theta := rng.Float64() * math.Pi / 2
		cell := uniform(rng, 2, float64(max(h, w))/4+2)
		s, c := math.Sincos(theta)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				u := math.Floor((float64(x)*c - float64(y)*s) / cell)
				v := math.Floor((float64(x)*s + float64(y)*c) / cell)
				if int(u+v)&1 == 0 {
					t[y*w+x] = 1
				}
			}
		}
	}
	out := imgs.NewImage(h, w)
	for c := 0; c < 3; c++ {
		p := out.Plane(c)
		for i, v := range t {
			p[i] = (1-v)*a[c] + v*b[c]
		}
	}
	return out
}
