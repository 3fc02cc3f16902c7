package imgs

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

func encodePNG(t *testing.T, m image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pixel returns the R, G, B values of img at (y, x).
func pixel(img Image, y, x int) [3]float32 {
	i := y*img.W + x
	return [3]float32{img.Plane(0)[i], img.Plane(1)[i], img.Plane(2)[i]}
}

func near(a, b, tol float32) bool { return math.Abs(float64(a-b)) <= float64(tol) }

func TestDecodeFormats(t *testing.T) {
	const w, h = 5, 3
	grey := image.NewGray(image.Rect(0, 0, w, h))
	grey16 := image.NewGray16(image.Rect(0, 0, w, h))
	rgb := image.NewRGBA(image.Rect(0, 0, w, h)) // opaque: PNG writes it as RGB
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	rgba64 := image.NewRGBA64(image.Rect(0, 0, w, h))
	want := func(y, x int) [3]float32 {
		return [3]float32{float32(10*x+y) / 255, float32(200-7*x) / 255, float32(3*y) / 255}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			r8, g8, b8 := uint8(10*x+y), uint8(200-7*x), uint8(3*y)
			grey.SetGray(x, y, color.Gray{Y: r8})
			grey16.SetGray16(x, y, color.Gray16{Y: uint16(r8)*257 + 1})
			rgb.SetRGBA(x, y, color.RGBA{r8, g8, b8, 255})
			nrgba.SetNRGBA(x, y, color.NRGBA{r8, g8, b8, uint8(40 * y)})
			rgba64.SetRGBA64(x, y, color.RGBA64{uint16(r8) * 257, uint16(g8) * 257, uint16(b8) * 257, 65535})
		}
	}
	cases := []struct {
		name  string
		img   image.Image
		grey  bool
		delta float32
	}{
		{"grey8", grey, true, 1e-6},
		{"grey16", grey16, true, 2e-5},
		{"rgb8", rgb, false, 1e-6},
		{"rgba8-transparent", nrgba, false, 1e-6},
		{"rgb16", rgba64, false, 1e-6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := Decode(encodePNG(t, c.img))
			if err != nil {
				t.Fatal(err)
			}
			if img.H != h || img.W != w || len(img.Pix) != 3*h*w {
				t.Fatalf("shape %dx%d, %d values", img.H, img.W, len(img.Pix))
			}
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					got, exp := pixel(img, y, x), want(y, x)
					if c.grey {
						exp = [3]float32{exp[0], exp[0], exp[0]}
					}
					for k := 0; k < 3; k++ {
						if !near(got[k], exp[k], c.delta) {
							t.Fatalf("(%d,%d) channel %d: got %v want %v", y, x, k, got[k], exp[k])
						}
					}
				}
			}
		})
	}
}

func TestDecodeJPEG(t *testing.T) {
	const w, h = 16, 16
	src := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			src.SetRGBA(x, y, color.RGBA{200, 100, 30, 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, src, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	img, err := Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := [3]float32{200.0 / 255, 100.0 / 255, 30.0 / 255}
	for _, p := range [][2]int{{0, 0}, {7, 9}, {15, 15}} {
		got := pixel(img, p[0], p[1])
		for k := range got {
			if !near(got[k], want[k], 4.0/255) { // JPEG is lossy
				t.Fatalf("pixel %v channel %d: got %v want %v", p, k, got[k], want[k])
			}
		}
	}
	// Grey JPEG.
	g := image.NewGray(image.Rect(0, 0, w, h))
	for i := range g.Pix {
		g.Pix[i] = 77
	}
	buf.Reset()
	if err := jpeg.Encode(&buf, g, nil); err != nil {
		t.Fatal(err)
	}
	img, err = Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got := pixel(img, 5, 5)
	if !near(got[0], 77.0/255, 2.0/255) || got[0] != got[1] || got[1] != got[2] {
		t.Fatalf("grey JPEG pixel %v", got)
	}
}

func TestDecodeCorrupt(t *testing.T) {
	if _, err := Decode([]byte("not an image")); err == nil {
		t.Fatal("no error for garbage bytes")
	}
	data := encodePNG(t, image.NewGray(image.Rect(0, 0, 8, 8)))
	if _, err := Decode(data[:len(data)/2]); err == nil {
		t.Fatal("no error for a truncated PNG")
	}
}

// A PNG whose header claims 100000 x 100000 pixels is rejected before its pixels are
// allocated.
func TestDecodeHugeHeader(t *testing.T) {
	data := encodePNG(t, image.NewGray(image.Rect(0, 0, 8, 8)))
	// IHDR: length (4), "IHDR" (4), width (4), height (4), ..., CRC over type and data.
	const ihdr = 8
	binary.BigEndian.PutUint32(data[ihdr+8:], 100000)
	binary.BigEndian.PutUint32(data[ihdr+12:], 100000)
	binary.BigEndian.PutUint32(data[ihdr+8+13:], crc32.ChecksumIEEE(data[ihdr+4:ihdr+8+13]))
	if cfg, err := png.DecodeConfig(bytes.NewReader(data)); err != nil || cfg.Width != 100000 {
		t.Fatalf("the patched header does not read as 100000 wide: %+v, %v", cfg, err)
	}
	_, err := Decode(data)
	if err == nil || !strings.Contains(err.Error(), "100000x100000") {
		t.Fatalf("Decode of a 100000 x 100000 header: error %v, want one naming the size", err)
	}
}

func TestResizeIdentity(t *testing.T) {
	img := NewImage(4, 6)
	for i := range img.Pix {
		img.Pix[i] = float32(i%7) / 7
	}
	out := Resize(img, 4, 6)
	if &out.Pix[0] != &img.Pix[0] {
		t.Fatal("same-size Resize resampled (new backing array)")
	}
}

func TestResizeConstantAndMean(t *testing.T) {
	img := NewImage(9, 12)
	for i := range img.Pix {
		img.Pix[i] = 0.3
	}
	for _, s := range [][2]int{{3, 4}, {18, 24}, {5, 7}, {1, 1}} {
		out := Resize(img, s[0], s[1])
		for i, v := range out.Pix {
			if !near(v, 0.3, 1e-6) {
				t.Fatalf("size %v: value %d = %v, want 0.3 (weights must sum to 1)", s, i, v)
			}
		}
	}
}

// TestResizeHandValues checks bilinear values worked out by hand.
func TestResizeHandValues(t *testing.T) {
	// A 1 x 2 ramp [0, 1] upscaled to 1 x 4: output centres at source x = 0.25, 0.75, 1.25,
	// 1.75 (pixel units, centres at 0.5 and 1.5) -> clamped 0, then 0.25, 0.75, clamped 1.
	img := NewImage(1, 2)
	for c := 0; c < 3; c++ {
		img.Plane(c)[0], img.Plane(c)[1] = 0, 1
	}
	out := Resize(img, 1, 4)
	want := []float32{0, 0.25, 0.75, 1}
	for x, v := range out.Plane(0) {
		if !near(v, want[x], 1e-6) {
			t.Fatalf("upscale x=%d: got %v want %v", x, v, want[x])
		}
	}
	// Downscale 1 x 8 ramp [0..7] to 1 x 4 (scale 2, PIL's widened triangle of radius 2):
	// output 1 is centred at 3.0; taps at source centres 1.5, 2.5, 3.5, 4.5 weigh
	// 0.25, 0.75, 0.75, 0.25 (sum 2) -> (0.25*1 + 0.75*2 + 0.75*3 + 0.25*4) / 2 = 2.5.
	// Output 0 (centre 1.0) meets the edge: taps 0.5, 1.5, 2.5 weigh 0.75, 0.75, 0.25,
	// renormalised -> (0.75*1 + 0.25*2) / 1.75 = 5/7.
	img = NewImage(1, 8)
	copy(img.Plane(0), []float32{0, 1, 2, 3, 4, 5, 6, 7})
	out = Resize(img, 1, 4)
	if got := out.Plane(0); !near(got[1], 2.5, 1e-6) || !near(got[0], 5.0/7, 1e-6) {
		t.Fatalf("downscale: got %v want [5/7 2.5 ...]", got)
	}
}

// BenchmarkResize1024To448 measures the MVTec case: a 1024 x 1024 image down to S = 448.
func BenchmarkResize1024To448(b *testing.B) {
	img := NewImage(1024, 1024)
	for i := range img.Pix {
		img.Pix[i] = float32(i%251) / 251
	}
	for b.Loop() {
		Resize(img, 448, 448)
	}
}

func TestDecodePaletted(t *testing.T) {
	pal := color.Palette{color.RGBA{0, 0, 0, 255}, color.RGBA{255, 128, 0, 255}}
	m := image.NewPaletted(image.Rect(0, 0, 2, 1), pal)
	m.SetColorIndex(1, 0, 1)
	img, err := Decode(encodePNG(t, m))
	if err != nil {
		t.Fatal(err)
	}
	if got := pixel(img, 0, 1); !near(got[0], 1, 1e-6) || !near(got[1], 128.0/255, 1e-6) || got[2] != 0 || pixel(img, 0, 0) != [3]float32{} {
		t.Fatalf("paletted pixels %v %v", pixel(img, 0, 0), got)
	}
}

// TestDecodeResizedMatches checks that DecodeResized gives, bit for bit, Resize(Decode(data))
// for every decoder path (grey, 16-bit grey, opaque and translucent RGBA, 16-bit colour,
// paletted, JPEG), shrinking, enlarging and at the source size.
func TestDecodeResizedMatches(t *testing.T) {
	const w, h = 37, 23
	grey := image.NewGray(image.Rect(0, 0, w, h))
	grey16 := image.NewGray16(image.Rect(0, 0, w, h))
	rgb := image.NewRGBA(image.Rect(0, 0, w, h))
	nrgba := image.NewNRGBA(image.Rect(0, 0, w, h))
	rgba64 := image.NewRGBA64(image.Rect(0, 0, w, h))
	pal := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{color.Black, color.RGBA{255, 128, 9, 255}, color.RGBA{3, 90, 200, 255}})
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := uint8(x*7 + y*13)
			grey.SetGray(x, y, color.Gray{Y: v})
			grey16.SetGray16(x, y, color.Gray16{Y: uint16(v)*251 + uint16(x)})
			rgb.SetRGBA(x, y, color.RGBA{v, 255 - v, uint8(x * y), 255})
			nrgba.SetNRGBA(x, y, color.NRGBA{v, uint8(3 * x), uint8(5 * y), uint8(x * 6)})
			rgba64.SetRGBA64(x, y, color.RGBA64{uint16(v) * 257, uint16(x) * 999, uint16(y) * 1234, 65535})
			pal.SetColorIndex(x, y, uint8((x+y)%3))
		}
	}
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, rgb, nil); err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{
		"grey": encodePNG(t, grey), "grey16": encodePNG(t, grey16), "rgb": encodePNG(t, rgb),
		"nrgba": encodePNG(t, nrgba), "rgb16": encodePNG(t, rgba64), "paletted": encodePNG(t, pal),
		"jpeg": jpg.Bytes(),
	}
	sizes := []Size{{8, 8}, {h, w}, {50, 41}, {1, 3}, {16, 8}}
	for name, data := range inputs {
		full, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeResized(data, sizes...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, s := range sizes {
			want := Resize(full, s.H, s.W)
			if got[i].H != s.H || got[i].W != s.W {
				t.Fatalf("%s to %v: got %dx%d", name, s, got[i].H, got[i].W)
			}
			for k := range want.Pix {
				if math.Float32bits(got[i].Pix[k]) != math.Float32bits(want.Pix[k]) {
					t.Fatalf("%s to %v: value %d = %v, Resize(Decode) gives %v", name, s, k, got[i].Pix[k], want.Pix[k])
				}
			}
		}
	}
	if _, err := DecodeResized(inputs["grey"], Size{0, 4}); err == nil || !strings.Contains(err.Error(), "4x0") {
		t.Errorf("resize to 4x0: error %v, want one naming the size", err)
	}
	if _, err := DecodeResized(inputs["grey"][:40], Size{4, 4}); err == nil {
		t.Error("no error for a truncated PNG")
	}
}

// BenchmarkDecodeHuge decodes an 8000 x 8000 RGB PNG (a smooth gradient) in full and resized
// to 448 x 448 and 224 x 224 (the features stage's two scales), reporting the peak heap
// above what was live before: go test -run '^$' -bench DecodeHuge -benchtime 1x ./ahl/imgs/
func BenchmarkDecodeHuge(b *testing.B) {
	const side = 8000
	m := image.NewRGBA(image.Rect(0, 0, side, side))
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			i := m.PixOffset(x, y)
			m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = uint8(x/32), uint8(y/32), uint8((x+y)/64), 255
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, m); err != nil {
		b.Fatal(err)
	}
	m = nil
	data := buf.Bytes()
	for _, c := range []struct {
		name   string
		decode func() error
	}{
		{"Decode", func() error { _, err := Decode(data); return err }},
		{"DecodeResized", func() error { _, err := DecodeResized(data, Size{448, 448}, Size{224, 224}); return err }},
	} {
		b.Run(c.name, func(b *testing.B) {
			var peak uint64
			for b.Loop() {
				runtime.GC()
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				stop := make(chan struct{})
				done := make(chan uint64)
				go func() {
					s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
					var top uint64
					for {
						metrics.Read(s)
						top = max(top, s[0].Value.Uint64())
						select {
						case <-stop:
							done <- top
							return
						case <-time.After(time.Millisecond):
						}
					}
				}()
				if err := c.decode(); err != nil {
					b.Fatal(err)
				}
				close(stop)
				if top := <-done; top > before.HeapAlloc {
					peak = max(peak, top-before.HeapAlloc)
				}
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-MB")
		})
	}
}

// TestDecodeHugeBounded: an 8000 x 8000 grey PNG (made here, 64 M pixels, under the limit)
// is checked and decoded to the features stage's two scales with the decoder's own 8-bit
// image (64 MB) and the resampling's planes (source height x output width) allocated, where
// Decode would add a 768 MB float image (three planes) on top.
func TestDecodeHugeBounded(t *testing.T) {
	const side = 8000
	m := image.NewGray(image.Rect(0, 0, side, side))
	for i := range m.Pix {
		m.Pix[i] = 200 - uint8(i>>20)
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, m); err != nil {
		t.Fatal(err)
	}
	m = nil
	data := buf.Bytes()
	allocated := func(f func() error) uint64 {
		t.Helper()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if err := f(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	const mb = 1 << 20
	if a := allocated(func() error { return Check(data) }); a > 100*mb {
		t.Errorf("Check of an 8000 x 8000 PNG allocated %d MB, want at most 100", a/mb)
	}
	var ims []Image
	a := allocated(func() (err error) {
		ims, err = DecodeResized(data, Size{448, 448}, Size{224, 224})
		return err
	})
	if a > 200*mb {
		t.Errorf("DecodeResized of an 8000 x 8000 PNG to 448 and 224 allocated %d MB, want at most 200", a/mb)
	}
	if ims[0].H != 448 || ims[1].W != 224 {
		t.Fatalf("DecodeResized sizes %dx%d and %dx%d", ims[0].W, ims[0].H, ims[1].W, ims[1].H)
	}
	if r := ims[1].Plane(0)[0]; !near(r, 200.0/255, 1e-5) {
		t.Errorf("red at (0, 0) after resizing: %g, want %g", r, 200.0/255)
	}
}
