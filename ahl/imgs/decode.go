package imgs

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // registers JPEG for image.Decode
	_ "image/png"  // registers PNG for image.Decode
)

// maxPixels bounds width x height (8192 x 8192), so that a corrupt or hostile header cannot
// make Decode allocate without limit; the datasets' largest images (MVTec AD) are 1024 x
// 1024. A larger image is refused from its header (ingest names the file), before any
// pixel is decoded; docs/design.md documents the limit
// beside the stage table. Memory while decoding an image of P pixels: the decoder's own 8-bit (or 16-bit)
// image, 1 byte per pixel for grey, 4 for RGB(A) and YCbCr, 8 for 16-bit colour; then
// Decode's result, 12 bytes per pixel (three float32 planes): about 1 GB for an 8000 x 8000
// RGB PNG. DecodeResized never holds the full-size float image: an 8000 x 8000 RGB PNG
// resized to 448 x 448 peaks at the decoder's 256 MB plus about 50 MB.
const maxPixels = 8192 * 8192

// Decode decodes a PNG or JPEG image (grey, RGB, RGBA, 8 or 16 bits per channel) into an
// Image with values in [0, 1]. Grey images are replicated to three channels. Alpha is dropped:
// the stored (non-premultiplied) colour is kept, as PIL's convert("RGB") does. An image over
// maxPixels is an error, found from its header before any pixel is decoded.
func Decode(data []byte) (Image, error) {
	src, err := decode8(data)
	if err != nil {
		return Image{}, err
	}
	b := src.Bounds()
	h, w := b.Dy(), b.Dx()
	out := NewImage(h, w)
	rows := rowReader(src)
	r, g, bl := out.Plane(0), out.Plane(1), out.Plane(2)
	for y := 0; y < h; y++ {
		rows(y, r[y*w:(y+1)*w], g[y*w:(y+1)*w], bl[y*w:(y+1)*w])
	}
	return out, nil
}

// Check decodes data as Decode would and returns Decode's error, without making the float
// image: its memory is the decoder's own 8-bit image only (for an 8000 x 8000 RGB PNG,
// 256 MB instead of Decode's 1 GB more). Ingest checks every file with it.
func Check(data []byte) error {
	_, err := decode8(data)
	return err
}

// Size is an image size, H rows by W columns.
type Size struct{ H, W int }

// DecodeResized decodes data as Decode does and returns the image resized to each of sizes
// as Resize would (bit for bit the same values as Resize(Decode(data), H, W)), without
// making the full-size float image: each decoded row is converted and filtered horizontally
// at once, so the memory beyond the decoder's own image is the outputs plus, per output,
// three planes of the source's height by the output's width.
func DecodeResized(data []byte, sizes ...Size) ([]Image, error) {
	for _, s := range sizes {
		if s.H <= 0 || s.W <= 0 {
			return nil, fmt.Errorf("imgs: decode: resize to %dx%d, want positive sides", s.W, s.H)
		}
	}
	src, err := decode8(data)
	if err != nil {
		return nil, err
	}
	b := src.Bounds()
	h, w := b.Dy(), b.Dx()
	rows := rowReader(src)
	rr, gg, bb := make([]float32, w), make([]float32, w), make([]float32, w)
	out := make([]Image, len(sizes))
	for i, s := range sizes {
		if s.H == h && s.W == w {
			out[i] = NewImage(h, w)
			r, g, bl := out[i].Plane(0), out[i].Plane(1), out[i].Plane(2)
			for y := 0; y < h; y++ {
				rows(y, r[y*w:(y+1)*w], g[y*w:(y+1)*w], bl[y*w:(y+1)*w])
			}
			continue
		}
		out[i] = resample(h, w, s.H, s.W, func(y int) (r, g, b []float32) {
			rows(y, rr, gg, bb)
			return rr, gg, bb
		})
	}
	return out, nil
}

// decode8 checks the header against maxPixels, then decodes the image with the standard
// library's decoders.
func decode8(data []byte) (image.Image, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("imgs: decode: %w", err)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, fmt.Errorf("imgs: decode: the header says %dx%d pixels, more than the %d (8192 x 8192) this reader accepts", cfg.Width, cfg.Height, maxPixels)
	}
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("imgs: decode: %w", err)
	}
	if b := src.Bounds(); b.Dy() <= 0 || b.Dx() <= 0 {
		return nil, fmt.Errorf("imgs: decode: empty image %dx%d", b.Dx(), b.Dy())
	}
	return src, nil
}

// rowReader returns a function that writes row y of src, values in [0, 1], into r, g and b
// (each the image's width long).
func rowReader(src image.Image) func(y int, r, g, b []float32) {
	const s8, s16 = 1.0 / 255, 1.0 / 65535
	w := src.Bounds().Dx()
	switch m := src.(type) {
	case *image.Gray:
		return func(y int, r, g, bl []float32) {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			r, g, bl = r[:w], g[:w], bl[:w]
			for x, v := range row {
				f := float32(v) * s8
				r[x], g[x], bl[x] = f, f, f
			}
		}
	case *image.Gray16:
		return func(y int, r, g, bl []float32) {
			row := m.Pix[y*m.Stride : y*m.Stride+2*w]
			r, g, bl = r[:w], g[:w], bl[:w]
			for x := 0; x < w; x++ {
				f := float32(uint16(row[2*x])<<8|uint16(row[2*x+1])) * s16
				r[x], g[x], bl[x] = f, f, f
			}
		}
	case *image.NRGBA:
		return func(y int, r, g, bl []float32) { rgba8(m.Pix[y*m.Stride:y*m.Stride+4*w], r, g, bl) }
	case *image.RGBA:
		if m.Opaque() {
			return func(y int, r, g, bl []float32) { rgba8(m.Pix[y*m.Stride:y*m.Stride+4*w], r, g, bl) }
		}
	}
	// YCbCr (JPEG), 16-bit RGB(A), paletted, translucent RGBA and the rest go through the
	// non-premultiplied 16-bit colour model.
	b := src.Bounds()
	return func(y int, r, g, bl []float32) {
		for x := 0; x < w; x++ {
			c := color.NRGBA64Model.Convert(src.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
			r[x], g[x], bl[x] = float32(c.R)*s16, float32(c.G)*s16, float32(c.B)*s16
		}
	}
}

// rgba8 copies the R, G and B bytes of one 8-bit RGBA row into r, g and b.
func rgba8(row []uint8, r, g, b []float32) {
	const s8 = 1.0 / 255
	w := len(row) / 4
	r, g, b = r[:w], g[:w], b[:w]
	for x := 0; x < w; x++ {
		r[x] = float32(row[4*x]) * s8
		g[x] = float32(row[4*x+1]) * s8
		b[x] = float32(row[4*x+2]) * s8
	}
}
