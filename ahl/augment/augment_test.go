package augment

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// noiseImage is an h x w image of independent uniform values, so that nearly every pasted
// pixel differs from the one it covers.
func noiseImage(h, w int, seed uint64) imgs.Image {
	rng := rand.New(rand.NewPCG(seed, 99))
	m := imgs.NewImage(h, w)
	for i := range m.Pix {
		m.Pix[i] = rng.Float32()
	}
	return m
}

func TestApplyDeterministic(t *testing.T) {
	img := noiseImage(40, 48, 1)
	others := []imgs.Image{noiseImage(40, 48, 2), noiseImage(20, 30, 3)}
	for _, g := range Generators {
		a, err := Apply(g, img, others, rand.New(rand.NewPCG(7, 1)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Apply(g, img, others, rand.New(rand.NewPCG(7, 1)))
		c, _ := Apply(g, img, others, rand.New(rand.NewPCG(8, 1)))
		if !slices.Equal(a.Pix, b.Pix) {
			t.Errorf("%s: same seed, different images", g)
		}
		if slices.Equal(a.Pix, c.Pix) {
			t.Errorf("%s: different seeds, same image", g)
		}
		if slices.Equal(a.Pix, img.Pix) {
			t.Errorf("%s: output equals the input", g)
		}
		if a.H != img.H || a.W != img.W {
			t.Errorf("%s: size %dx%d, want %dx%d", g, a.H, a.W, img.H, img.W)
		}
		for i, v := range a.Pix {
			if v < 0 || v > 1 || math.IsNaN(float64(v)) {
				t.Fatalf("%s: value %d = %v outside [0, 1]", g, i, v)
			}
		}
	}
	if ref := noiseImage(40, 48, 1); !slices.Equal(ref.Pix, img.Pix) {
		t.Fatal("Apply modified its input")
	}
}

func TestApplyErrors(t *testing.T) {
	img := noiseImage(8, 8, 1)
	rng := rand.New(rand.NewPCG(1, 1))
	if _, err := Apply("mixup", img, nil, rng); err == nil || !strings.Contains(err.Error(), "cutpaste, cutmix, draem") {
		t.Errorf("unknown generator: %v", err)
	}
	if _, err := Apply("cutmix", img, nil, rng); err == nil {
		t.Error("cutmix without other normals gave no error")
	}
	if _, err := Apply("cutpaste", imgs.Image{H: 2, W: 2}, nil, rng); err == nil {
		t.Error("malformed image gave no error")
	}
}

// changedBox returns the bounding box of pixels where a and b differ and how many differ.
func changedBox(a, b imgs.Image) (Box, int) {
	y0, x0, y1, x1, n := a.H, a.W, -1, -1, 0
	for y := 0; y < a.H; y++ {
		for x := 0; x < a.W; x++ {
			i := y*a.W + x
			if a.Pix[i] != b.Pix[i] || a.Plane(1)[i] != b.Plane(1)[i] || a.Plane(2)[i] != b.Plane(2)[i] {
				y0, x0, y1, x1 = min(y0, y), min(x0, x), max(y1, y), max(x1, x)
				n++
			}
		}
	}
	return Box{Y: y0, X: x0, H: y1 - y0 + 1, W: x1 - x0 + 1}, n
}

func TestCutPasteRectangle(t *testing.T) {
	const h, w = 64, 80
	img := noiseImage(h, w, 5)
	for seed := uint64(0); seed < 50; seed++ {
		rng := rand.New(rand.NewPCG(seed, 2))
		out, from, to := cutPaste(img, img, rng)
		for _, b := range []Box{from, to} {
			if b.Y < 0 || b.X < 0 || b.Y+b.H > h || b.X+b.W > w {
				t.Fatalf("seed %d: box %+v outside the %dx%d image", seed, b, h, w)
			}
		}
		area := float64(to.H*to.W) / (h * w)
		// Rounding each side to whole pixels moves the area by up to about a side's length.
		if area < areaMin*0.8 || area > areaMax*1.2 {
			t.Errorf("seed %d: patch area %.3f of the image, want in [0.02, 0.15]", seed, area)
		}
		if r := float64(to.W) / float64(to.H); r < aspectMin*0.7 || r > 1/aspectMin/0.7 {
			t.Errorf("seed %d: aspect %.2f outside [0.3, 3.3]", seed, r)
		}
		got, n := changedBox(img, out)
		// Every changed pixel lies in the paste box, and on noise nearly all of them change.
		if n == 0 || got.Y < to.Y || got.X < to.X || got.Y+got.H > to.Y+to.H || got.X+got.W > to.X+to.W {
			t.Fatalf("seed %d: changed pixels span %+v (%d), paste box %+v", seed, got, n, to)
		}
		if n < to.H*to.W*9/10 {
			t.Errorf("seed %d: only %d of %d pasted pixels changed", seed, n, to.H*to.W)
		}
	}
}

// TestCutMixSource checks that cutmix's patch comes from the other image: pasting from a
// constant grey image leaves a patch whose pixels are all (jittered) copies of one grey.
func TestCutMixSource(t *testing.T) {
	img := noiseImage(32, 32, 1)
	grey := imgs.NewImage(16, 16) // another size: Apply resizes it to img's
	for i := range grey.Pix {
		grey.Pix[i] = 0.5
	}
	out, err := Apply("cutmix", img, []imgs.Image{grey}, rand.New(rand.NewPCG(3, 3)))
	if err != nil {
		t.Fatal(err)
	}
	box, n := changedBox(img, out)
	if n == 0 {
		t.Fatal("nothing changed")
	}
	// Brightness, contrast and saturation keep a grey patch grey and within 0.5 * 1.1^2.
	var first float32 = -1
	for y := box.Y; y < box.Y+box.H; y++ {
		for x := box.X; x < box.X+box.W; x++ {
			i := y*32 + x
			if out.Pix[i] == img.Pix[i] {
				continue
			}
			v := out.Pix[i]
			if first < 0 {
				first = v
			}
			if v != first || out.Plane(1)[i] != v || out.Plane(2)[i] != v {
				t.Fatalf("pixel (%d,%d) = %v,%v,%v, want one grey %v", y, x, v, out.Plane(1)[i], out.Plane(2)[i], first)
			}
		}
	}
	if first < 0.5*0.9*0.9-1e-6 || first > 0.5*1.1*1.1+1e-6 {
		t.Errorf("jittered grey %v outside 0.5 * [0.81, 1.21]", first)
	}
}

func TestColorJitterHSVRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 1000; i++ {
		r, g, b := rng.Float32(), rng.Float32(), rng.Float32()
		h, s, v := rgbToHSV(r, g, b)
		r2, g2, b2 := hsvToRGB(h, s, v)
		if !near(r, r2) || !near(g, g2) || !near(b, b2) {
			t.Fatalf("HSV round trip %v,%v,%v -> %v,%v,%v", r, g, b, r2, g2, b2)
		}
	}
	// Pure red shifted by a third of a turn becomes pure green.
	h, s, v := rgbToHSV(1, 0, 0)
	if r, g, b := hsvToRGB(h+1.0/3, s, v); !near(r, 0) || !near(g, 1) || !near(b, 0) {
		t.Fatalf("red + 1/3 turn = %v,%v,%v, want green", r, g, b)
	}
}

func near(a, b float32) bool { return math.Abs(float64(a-b)) < 1e-5 }

func TestPerlinLattice(t *testing.T) {
	// At lattice points every corner offset is 0 or 1 along an axis where the fade picks
	// the corner itself, so the noise is exactly 0 there.
	const h, w, ry, rx = 32, 48, 4, 8
	n := Perlin(h, w, ry, rx, rand.New(rand.NewPCG(1, 1)))
	for y := 0; y < h; y += h / ry {
		for x := 0; x < w; x += w / rx {
			if math.Abs(float64(n[y*w+x])) > 1e-6 {
				t.Fatalf("noise at lattice point (%d,%d) = %v, want 0", y, x, n[y*w+x])
			}
		}
	}
	var lo, hi float32
	for _, v := range n {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo < -1.01 || hi > 1.01 || hi-lo < 0.5 {
		t.Fatalf("noise range [%v, %v], want a spread inside [-1, 1]", lo, hi)
	}
}

func TestRotate(t *testing.T) {
	const n = 5
	m := make([]float32, n*n)
	for i := range m {
		m[i] = float32(i)
	}
	if got := rotate(m, n, n, 0); !slices.Equal(got, m) {
		t.Fatalf("rotation by 0 changed the map: %v", got)
	}
	// A quarter turn of a square map about its centre moves every pixel to another pixel.
	got := rotate(m, n, n, 90)
	src := rotate(got, n, n, -90)
	for i := range m {
		if math.Abs(float64(src[i]-m[i])) > 1e-4 {
			t.Fatalf("rotating by 90 and back: pixel %d = %v, want %v", i, src[i], m[i])
		}
	}
	if slices.Equal(got, m) {
		t.Fatal("rotation by 90 left the map unchanged")
	}
}

// TestDraemMask checks the mask's coverage over many draws and the blend formula.
func TestDraemMask(t *testing.T) {
	const h, w, draws = 64, 64, 200
	img := noiseImage(h, w, 1)
	src := noiseImage(h, w, 2)
	var sum float64
	lo, hi := 1.0, 0.0
	for d := 0; d < draws; d++ {
		rng := rand.New(rand.NewPCG(uint64(d), 4))
		out, mask := Draem(img, src, rng)
		var cover float64
		var beta float64 = -1
		for i, mv := range mask {
			switch mv {
			case 0:
				for c := 0; c < 3; c++ {
					if out.Plane(c)[i] != img.Plane(c)[i] {
						t.Fatalf("draw %d: pixel %d outside the mask changed", d, i)
					}
				}
			case 1:
				cover++
				// out = (1 - b) src + b img  =>  b = (out - src) / (img - src), one b per draw.
				den := img.Pix[i] - src.Pix[i]
				if math.Abs(float64(den)) < 0.1 {
					continue
				}
				b := float64((out.Pix[i] - src.Pix[i]) / den)
				if beta < 0 {
					beta = b
				}
				if math.Abs(b-beta) > 1e-3 || b < -1e-4 || b > maxBeta+1e-4 {
					t.Fatalf("draw %d: blend factor %v (first %v), want one value in [0, 0.8]", d, b, beta)
				}
			default:
				t.Fatalf("draw %d: mask value %v, want 0 or 1", d, mv)
			}
		}
		cover /= h * w
		if cover == 0 {
			t.Fatalf("draw %d: empty mask", d)
		}
		sum += cover
		lo, hi = min(lo, cover), max(hi, cover)
	}
	mean := sum / draws
	// Perlin noise scaled by sqrt(2) is symmetric around 0 with variance about 0.093 (std
	// 0.30), so about 5.5% of an unrotated field lies above 0.5 (measured: 4.2% at 1 x 1 cells,
	// 5.5% at 4 x 4, 7.1% at 32 x 32); rotation by U(-90, 90) degrees blanks the corners, on
	// average about a fifth of the field, which leaves about 4.5%.
	t.Logf("draem mask coverage: mean %.3f, min %.4f, max %.3f", mean, lo, hi)
	if mean < 0.025 || mean > 0.08 {
		t.Errorf("mean mask coverage %.3f, want about 0.045 (0.025 to 0.08)", mean)
	}
	if hi > 0.99 {
		t.Errorf("a mask covers %.3f of the image", hi)
	}
}

func TestAugmenterTextures(t *testing.T) {
	img := noiseImage(24, 24, 1)
	red := imgs.NewImage(10, 10)
	for i := range red.Plane(0) {
		red.Plane(0)[i] = 1
	}
	a := Augmenter{Textures: []imgs.Image{red}}
	out, err := a.Apply("draem", img, nil, rand.New(rand.NewPCG(2, 2)))
	if err != nil {
		t.Fatal(err)
	}
	// Inside the mask, green and blue shrink towards the texture's 0: out = b * img there.
	_, n := changedBox(img, out)
	if n == 0 {
		t.Fatal("draem changed nothing")
	}
	for i := range out.Plane(1) {
		if out.Plane(1)[i] > img.Plane(1)[i]+1e-6 {
			t.Fatalf("pixel %d: green grew from %v to %v with a red texture", i, img.Plane(1)[i], out.Plane(1)[i])
		}
	}
}

func TestTexture(t *testing.T) {
	for seed := uint64(0); seed < 12; seed++ {
		tex := Texture(30, 40, rand.New(rand.NewPCG(seed, 5)))
		lo, hi := float32(1), float32(0)
		for _, v := range tex.Pix {
			if v < 0 || v > 1 {
				t.Fatalf("seed %d: value %v outside [0, 1]", seed, v)
			}
			lo, hi = min(lo, v), max(hi, v)
		}
		if hi-lo < 0.01 {
			t.Errorf("seed %d: flat texture (range %v)", seed, hi-lo)
		}
	}
}

// BenchmarkApply448 measures one pseudo anomaly per generator at the paper's S = 448 (one
// run of the augment stage makes 3 per training normal).
func BenchmarkApply448(b *testing.B) {
	img := noiseImage(448, 448, 1)
	others := []imgs.Image{noiseImage(448, 448, 2)}
	for _, g := range Generators {
		b.Run(g, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			for b.Loop() {
				if _, err := Apply(g, img, others, rng); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
