package imgs

import (
	"math/rand/v2"
	"strings"
	"testing"
)

func randomImage(h, w int, seed uint64) Image {
	rng := rand.New(rand.NewPCG(seed, 0))
	im := NewImage(h, w)
	for i := range im.Pix {
		im.Pix[i] = float32(rng.IntN(256)) / 255
	}
	return im
}

// TestFit: squash is Resize; crop is torchvision's Resize(s) + CenterCrop(s) (short side to s,
// long side truncated, centred window with Python's round); pad centres the long-side-to-s
// image on its mean colour; DecodeFit gives Fit(Decode) bit for bit.
func TestFit(t *testing.T) {
	im := randomImage(21, 40, 1) // h < w
	sq, err := Fit(im, Squash, 10)
	if err != nil {
		t.Fatal(err)
	}
	if want := Resize(im, 10, 10); !equalPix(sq, want) {
		t.Error("squash differs from Resize")
	}
	cr, _ := Fit(im, Crop, 10)
	// int(10 * 40 / 21) = 19 columns; (19 - 10) / 2 = 4.5 rounds to 4.
	mid := Resize(im, 10, 19)
	if cr.H != 10 || cr.W != 10 {
		t.Fatalf("crop: %dx%d", cr.W, cr.H)
	}
	for c := 0; c < 3; c++ {
		for y := 0; y < 10; y++ {
			for x := 0; x < 10; x++ {
				if cr.Plane(c)[y*10+x] != mid.Plane(c)[y*19+x+4] {
					t.Fatalf("crop: pixel (%d,%d,%d) is not the centred window at left 4", c, y, x)
				}
			}
		}
	}
	tall := randomImage(40, 16, 2)
	pd, _ := Fit(tall, Pad, 10)
	small := Resize(tall, 10, 4) // round(10 * 16 / 40) = 4 columns, left offset 3
	for c := 0; c < 3; c++ {
		var mean float64
		for _, v := range small.Plane(c) {
			mean += float64(v) / 40
		}
		for y := 0; y < 10; y++ {
			for x := 0; x < 10; x++ {
				got := pd.Plane(c)[y*10+x]
				want := float32(mean)
				if x >= 3 && x < 7 {
					want = small.Plane(c)[y*4+x-3]
				}
				if got != want {
					t.Fatalf("pad: pixel (%d,%d,%d) = %g, want %g", c, y, x, got, want)
				}
			}
		}
	}
	for _, mode := range []string{Squash, Crop, Pad} {
		src := randomImage(30, 17, 3)
		b, err := EncodePNG(src)
		if err != nil {
			t.Fatal(err)
		}
		dec, _ := Decode(b)
		want, _ := Fit(dec, mode, 12)
		got, err := DecodeFit(b, mode, 12)
		if err != nil || !equalPix(got, want) {
			t.Errorf("%s: DecodeFit differs from Fit(Decode) (err %v)", mode, err)
		}
	}
	if _, err := Fit(im, "stretch", 10); err == nil || !strings.Contains(err.Error(), `resize: "stretch"`) {
		t.Errorf("unknown mode: err = %v", err)
	}
}

func equalPix(a, b Image) bool {
	if a.H != b.H || a.W != b.W {
		return false
	}
	for i := range a.Pix {
		if a.Pix[i] != b.Pix[i] {
			return false
		}
	}
	return true
}
