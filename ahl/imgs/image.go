// Package imgs decodes and resizes images into the float32 form backbones and pseudo-anomaly
// generators work on.
package imgs

// Image is an RGB image with values in [0, 1], row-major 3 x H x W (channel planes R, G, B).
// Grey inputs are replicated to three channels when decoded.
type Image struct {
	H, W int
	Pix  []float32
}

// NewImage allocates a black image.
func NewImage(h, w int) Image { return Image{H: h, W: w, Pix: make([]float32, 3*h*w)} }

// Plane returns channel c (0 R, 1 G, 2 B) as a view of H*W values.
func (m Image) Plane(c int) []float32 { return m.Pix[c*m.H*m.W : (c+1)*m.H*m.W] }
