package imgs

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"testing"
)

// FuzzDecode checks that no encoded image bytes (they come from dataset folders and from
// stored ingest tables) make Decode panic, and that an accepted image has the shape it says.
func FuzzDecode(f *testing.F) {
	src := image.NewRGBA(image.Rect(0, 0, 5, 3))
	for i := range src.Pix {
		src.Pix[i] = uint8(i * 7)
	}
	var pb, jb bytes.Buffer
	if err := png.Encode(&pb, src); err != nil {
		f.Fatal(err)
	}
	if err := jpeg.Encode(&jb, src, nil); err != nil {
		f.Fatal(err)
	}
	grey := image.NewGray16(image.Rect(0, 0, 2, 2))
	grey.SetGray16(1, 1, color.Gray16{Y: 40000})
	var gb bytes.Buffer
	if err := png.Encode(&gb, grey); err != nil {
		f.Fatal(err)
	}
	f.Add(pb.Bytes())
	f.Add(jb.Bytes())
	f.Add(gb.Bytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		img, err := Decode(b)
		if err != nil {
			return
		}
		if img.W <= 0 || img.H <= 0 || len(img.Pix) != 3*img.W*img.H {
			t.Fatalf("decoded %dx%d with %d values", img.W, img.H, len(img.Pix))
		}
	})
}
