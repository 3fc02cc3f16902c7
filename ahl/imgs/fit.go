package imgs

import (
	"bytes"
	"fmt"
	"image"
	"math"
)

// How an image of any aspect ratio becomes the backbone's s x s input (features.resize).
const (
	// Squash resizes to s x s whatever the aspect ratio (the default; what pipe always did).
	Squash = "squash"
	// Crop is torchvision's Resize(s) followed by CenterCrop(s): the shorter side is
	// resized to s, the longer to int(s x long / short), and the centred s x s window kept.
	Crop = "crop"
	// Pad letterboxes: the longer side is resized to s, the shorter to
	// max(1, round(s x short / long)), and the image is centred on an s x s canvas filled
	// with its own mean colour (per channel), so the border adds no edge of its own.
	Pad = "pad"
)

// CheckResize returns an error unless mode is "", Squash, Crop or Pad ("" is Squash).
func CheckResize(mode string) error {
	switch mode {
	case "", Squash, Crop, Pad:
		return nil
	}
	return fmt.Errorf("resize: %q, want %s, %s or %s", mode, Squash, Crop, Pad)
}

// fitSize returns the size an h x w image is resized to before mode's crop or pad makes
// it s x s.
func fitSize(mode string, h, w, s int) Size {
	switch mode {
	case Crop: // torchvision's _compute_resized_output_size: the long side truncated
		if h <= w {
			return Size{H: s, W: max(s, int(float64(s)*float64(w)/float64(h)))}
		}
		return Size{H: max(s, int(float64(s)*float64(h)/float64(w))), W: s}
	case Pad:
		if h >= w {
			return Size{H: s, W: max(1, min(s, int(float64(s)*float64(w)/float64(h)+0.5)))}
		}
		return Size{H: max(1, min(s, int(float64(s)*float64(h)/float64(w)+0.5))), W: s}
	}
	return Size{H: s, W: s}
}

// Fit returns img as an s x s image by mode (Squash, Crop or Pad; "" is Squash).
func Fit(img Image, mode string, s int) (Image, error) {
	if err := CheckResize(mode); err != nil {
		return Image{}, err
	}
	z := fitSize(mode, img.H, img.W, s)
	return square(Resize(img, z.H, z.W), mode, s), nil
}

// DecodeFit decodes data as Decode does and returns it as an s x s image by mode, as
// Fit(Decode(data), mode, s) would, without the full-size float image (DecodeResized).
func DecodeFit(data []byte, mode string, s int) (Image, error) {
	if err := CheckResize(mode); err != nil {
		return Image{}, err
	}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return Image{}, fmt.Errorf("imgs: decode: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return Image{}, fmt.Errorf("imgs: decode: empty image %dx%d", cfg.Width, cfg.Height)
	}
	ims, err := DecodeResized(data, fitSize(mode, cfg.Height, cfg.Width, s))
	if err != nil {
		return Image{}, err
	}
	return square(ims[0], mode, s), nil
}

// square cuts the centred s x s window of im (Crop; top and left offsets rounded as
// torchvision's CenterCrop does) or centres im on an s x s canvas of its mean colour (Pad).
// Squash's im is already s x s.
func square(im Image, mode string, s int) Image {
	if im.H == s && im.W == s {
		return im
	}
	out := NewImage(s, s)
	switch mode {
	case Crop:
		// Python's round, as torchvision's CenterCrop: halves to even.
		top, left := int(math.RoundToEven(float64(im.H-s)/2)), int(math.RoundToEven(float64(im.W-s)/2))
		for c := 0; c < 3; c++ {
			src, dst := im.Plane(c), out.Plane(c)
			for y := 0; y < s; y++ {
				copy(dst[y*s:(y+1)*s], src[(y+top)*im.W+left:(y+top)*im.W+left+s])
			}
		}
	case Pad:
		top, left := (s-im.H)/2, (s-im.W)/2
		for c := 0; c < 3; c++ {
			src, dst := im.Plane(c), out.Plane(c)
			var sum float64
			for _, v := range src {
				sum += float64(v)
			}
			fill := float32(sum / float64(len(src)))
			for i := range dst {
				dst[i] = fill
			}
			for y := 0; y < im.H; y++ {
				copy(dst[(y+top)*s+left:(y+top)*s+left+im.W], src[y*im.W:(y+1)*im.W])
			}
		}
	}
	return out
}
