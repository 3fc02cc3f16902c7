package imgs

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // registers JPEG for image.Decode
	_ "image/png"  // registers PNG for image.Decode
)

// maxPixels bounds width x height (8192 x 8192, 768 MB as three float32 planes), so that a
// corrupt or hostile header cannot make Decode allocate without limit; the datasets' largest
// images (MVTec AD) are 1024 x 1024.
const maxPixels = 8192 * 8192

// Decode decodes a PNG or JPEG image (grey, RGB, RGBA, 8 or 16 bits per channel) into an
// Image with values in [0, 1]. Grey images are replicated to three channels. Alpha is dropped:
// the stored (non-premultiplied) colour is kept, as PIL's convert("RGB") does. An image over
// maxPixels is an error, found from its header before any pixel is decoded.
func Decode(data []byte) (Image, error) {
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return Image{}, fmt.Errorf("imgs: decode: %w", err)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return Image{}, fmt.Errorf("imgs: decode: the header says %dx%d pixels, more than the %d this reader accepts", cfg.Width, cfg.Height, maxPixels)
	}
	src, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return Image{}, fmt.Errorf("imgs: decode: %w", err)
	}
	b := src.Bounds()
	h, w := b.Dy(), b.Dx()
	if h <= 0 || w <= 0 {
		return Image{}, fmt.Errorf("imgs: decode: empty image %dx%d", w, h)
	}
	out := NewImage(h, w)
	r, g, bl := out.Plane(0), out.Plane(1), out.Plane(2)
	const s8, s16 = 1.0 / 255, 1.0 / 65535
	switch m := src.(type) {
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			for x, v := range row {
				f := float32(v) * s8
				r[y*w+x], g[y*w+x], bl[y*w+x] = f, f, f
			}
		}
	case *image.Gray16:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+2*w]
			for x := 0; x < w; x++ {
				f := float32(uint16(row[2*x])<<8|uint16(row[2*x+1])) * s16
				r[y*w+x], g[y*w+x], bl[y*w+x] = f, f, f
			}
		}
	case *image.NRGBA:
		rgba8(m.Pix, m.Stride, h, w, r, g, bl)
	case *image.RGBA:
		if m.Opaque() {
			rgba8(m.Pix, m.Stride, h, w, r, g, bl)
			break
		}
		generic(src, r, g, bl)
	default:
		// YCbCr (JPEG), 16-bit RGB(A), paletted and the rest go through the colour model.
		generic(src, r, g, bl)
	}
	return out, nil
}

// generic converts any image through the non-premultiplied 16-bit colour model.
func generic(src image.Image, r, g, bl []float32) {
	const s16 = 1.0 / 65535
	b := src.Bounds()
	w := b.Dx()
	for y := 0; y < b.Dy(); y++ {
		for x := 0; x < w; x++ {
			c := color.NRGBA64Model.Convert(src.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
			i := y*w + x
			r[i], g[i], bl[i] = float32(c.R)*s16, float32(c.G)*s16, float32(c.B)*s16
		}
	}
}

// rgba8 copies the R, G and B bytes of 8-bit RGBA rows into the planes.
func rgba8(pix []uint8, stride, h, w int, r, g, b []float32) {
	const step = 4
	const s8 = 1.0 / 255
	for y := 0; y < h; y++ {
		row := pix[y*stride : y*stride+step*w]
		for x := 0; x < w; x++ {
			i := y*w + x
			r[i] = float32(row[step*x]) * s8
			g[i] = float32(row[step*x+1]) * s8
			b[i] = float32(row[step*x+2]) * s8
		}
	}
}
