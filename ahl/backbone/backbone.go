// Package backbone turns images into AHL's frozen two-scale feature maps (docs/algorithm.md,
// "Feature maps at two scales"): resnet18 (torchvision layout, ImageNet weights from a
// PyTorch checkpoint or a safetensors file) and convnet (a small CNN trained from scratch as
// the DevNet base model, the offline path).
package backbone

import (
	"context"
	"fmt"
	"sort"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// Backbone is a frozen feature extractor.
type Backbone interface {
	// Name is "resnet18" or "convnet".
	Name() string
	// Size is S: scale 0 sees each image resized to S x S, scale 1 at S/2 x S/2.
	Size() int
	// Extract returns the maps of imgs at both scales: [0] from S x S, [1] from S/2 x S/2,
	// each with N = len(imgs), in input order. An image already at a scale's size is not
	// resampled.
	Extract(ctx context.Context, images []imgs.Image) ([]fmap.Maps, error)
	// Weights returns the tensors FromTensors rebuilds the backbone from.
	Weights() []Tensor
}

// ExtractSized is Extract for images the caller has already brought to both scales:
// scale0[i] is image i at S x S and scale1[i] the same image at S/2 x S/2 (for example
// imgs.DecodeResized to both sizes, which gives the values Extract's own resampling of the
// full-size image would, without holding it). An image not at its scale's size is
// resampled as Extract does. A backbone of another package gets scale0 through Extract.
func ExtractSized(ctx context.Context, bb Backbone, scale0, scale1 []imgs.Image) ([]fmap.Maps, error) {
	if len(scale0) != len(scale1) {
		return nil, fmt.Errorf("backbone: %d images at scale 0 but %d at scale 1", len(scale0), len(scale1))
	}
	if se, ok := bb.(sizedExtractor); ok {
		return se.extractSized(ctx, [2][]imgs.Image{scale0, scale1})
	}
	return bb.Extract(ctx, scale0)
}

// sizedExtractor is implemented by the backbones of this package.
type sizedExtractor interface {
	extractSized(ctx context.Context, scales [2][]imgs.Image) ([]fmap.Maps, error)
}

// Tensor is one named float32 tensor, row-major.
type Tensor struct {
	Name   string
	Shape  []int
	Values []float32
}

// Names of the backbones.
const (
	ResNet18Name = "resnet18"
	ConvNetName  = "convnet"
)

// FromTensors rebuilds a backbone from the tensors its Weights returned.
func FromTensors(name string, size int, ts []Tensor) (Backbone, error) {
	switch name {
	case ResNet18Name:
		return NewResNet18(size, ts)
	case ConvNetName:
		return convNetFromTensors(size, ts)
	}
	return nil, fmt.Errorf("backbone: unknown backbone %q (want %s or %s)", name, ResNet18Name, ConvNetName)
}

// checkSize validates S: scale 1 is S/2, which must still be a usable image.
func checkSize(size int) error {
	if size < 8 {
		return fmt.Errorf("backbone: size %d too small (need S >= 8; scale 1 is S/2)", size)
	}
	return nil
}

// ImageNet normalisation constants (torchvision's).
var (
	imagenetMean = [3]float32{0.485, 0.456, 0.406}
	imagenetStd  = [3]float32{0.229, 0.224, 0.225}
)

// prepare resizes each image to s x s (unless it already is), normalises it with the
// ImageNet mean and std and lays the batch out as [3][B][s][s], the activation layout the
// layers use.
func prepare(images []imgs.Image, s int) (act, error) {
	b := len(images)
	x := newAct(3, b, s, s)
	hw := s * s
	for i, im := range images {
		if im.H <= 0 || im.W <= 0 || len(im.Pix) != 3*im.H*im.W {
			return act{}, fmt.Errorf("backbone: image %d: %dx%d with %d values, want 3*H*W", i, im.H, im.W, len(im.Pix))
		}
		if im.H != s || im.W != s {
			im = imgs.Resize(im, s, s)
		}
		for c := 0; c < 3; c++ {
			dst := x.Data[(c*b+i)*hw : (c*b+i+1)*hw]
			src := im.Plane(c)
			m, sd := imagenetMean[c], imagenetStd[c]
			for k, v := range src {
				dst[k] = (v - m) / sd
			}
		}
	}
	return x, nil
}

// toMaps converts an activation [C][B][H][W] into per-image maps B x C x H x W.
func toMaps(a act) fmap.Maps {
	m := fmap.New(a.B, a.C, a.H, a.W)
	hw := a.H * a.W
	for c := 0; c < a.C; c++ {
		for i := 0; i < a.B; i++ {
			copy(m.Data[(i*a.C+c)*hw:(i*a.C+c+1)*hw], a.Data[(c*a.B+i)*hw:(c*a.B+i+1)*hw])
		}
	}
	return m
}

// tensorMap indexes tensors by name.
func tensorMap(ts []Tensor) map[string]Tensor {
	m := make(map[string]Tensor, len(ts))
	for _, t := range ts {
		m[t.Name] = t
	}
	return m
}

// take returns the tensor called name with exactly the shape want, or an error naming both.
func take(m map[string]Tensor, name string, want ...int) (Tensor, error) {
	t, ok := m[name]
	if !ok {
		return Tensor{}, fmt.Errorf("backbone: tensor %q missing (expected shape %v)", name, want)
	}
	if !equalShape(t.Shape, want) {
		return Tensor{}, fmt.Errorf("backbone: tensor %q has shape %v, expected %v", name, t.Shape, want)
	}
	n := 1
	for _, d := range want {
		n *= d
	}
	if len(t.Values) != n {
		return Tensor{}, fmt.Errorf("backbone: tensor %q has %d values for shape %v", name, len(t.Values), want)
	}
	return t, nil
}

func equalShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sortedTensors returns ts sorted by name, so exported weights have a stable order.
func sortedTensors(ts []Tensor) []Tensor {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	return ts
}
