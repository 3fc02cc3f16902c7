package imgs

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"math"
)

// EncodePNG encodes img as an 8-bit RGB PNG, so a person can look at a pseudo anomaly.
func EncodePNG(img Image) ([]byte, error) {
	m := image.NewNRGBA(image.Rect(0, 0, img.W, img.H))
	r, g, b := img.Plane(0), img.Plane(1), img.Plane(2)
	q := func(v float32) uint8 { return uint8(math.Round(float64(min(max(v, 0), 1)) * 255)) }
	for y := 0; y < img.H; y++ {
		for x := 0; x < img.W; x++ {
			i := y*img.W + x
			m.SetNRGBA(x, y, color.NRGBA{q(r[i]), q(g[i]), q(b[i]), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
