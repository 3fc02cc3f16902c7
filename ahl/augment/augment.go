// Package augment makes the pseudo anomalies of docs/algorithm.md ("Pseudo anomalies"): cutpaste,
// cutmix and draem copies of training normals. Every random draw comes from the caller's
// seeded *rand.Rand, so the same stream gives the same image.
package augment

import (
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// Generators lists the pseudo-anomaly generators, in the order stages use by default.
var Generators = []string{"cutpaste", "cutmix", "draem"}

// Augmenter holds what the generators need beyond the image itself.
type Augmenter struct {
	// Textures are draem's anomaly sources (the paper uses DTD). When empty, draem generates
	// a texture in code for every call.
	Textures []imgs.Image
}

// Apply makes one pseudo anomaly of img with the named generator and the default Augmenter
// (draem textures generated in code). others is the pool cutmix draws its source image from;
// the caller leaves img itself out of it. img is not modified.
func Apply(generator string, img imgs.Image, others []imgs.Image, rng *rand.Rand) (imgs.Image, error) {
	return Augmenter{}.Apply(generator, img, others, rng)
}

// Apply makes one pseudo anomaly of img with the named generator; see the package function.
func (a Augmenter) Apply(generator string, img imgs.Image, others []imgs.Image, rng *rand.Rand) (imgs.Image, error) {
	if img.H <= 0 || img.W <= 0 || len(img.Pix) != 3*img.H*img.W {
		return imgs.Image{}, fmt.Errorf("augment: image shape %dx%d does not match %d values", img.H, img.W, len(img.Pix))
	}
	switch generator {
	case "cutpaste":
		return CutPaste(img, img, rng), nil
	case "cutmix":
		if len(others) == 0 {
			return imgs.Image{}, fmt.Errorf("augment: cutmix needs at least one other training normal to cut from")
		}
		src := others[rng.IntN(len(others))]
		return CutPaste(img, imgs.Resize(src, img.H, img.W), rng), nil
	case "draem":
		var tex imgs.Image
		if len(a.Textures) > 0 {
			tex = imgs.Resize(a.Textures[rng.IntN(len(a.Textures))], img.H, img.W)
		} else {
			tex = Texture(img.H, img.W, rng)
		}
		out, _ := Draem(img, tex, rng)
		return out, nil
	}
	return imgs.Image{}, fmt.Errorf("augment: unknown generator %q (valid: %s)", generator, strings.Join(Generators, ", "))
}

// Valid reports an error naming the valid generators when name is not one of them.
func Valid(name string) error {
	for _, g := range Generators {
		if g == name {
			return nil
		}
	}
	return fmt.Errorf("unknown generator %q (valid: %s)", name, strings.Join(Generators, ", "))
}

// clone returns a deep copy of img.
func clone(img imgs.Image) imgs.Image {
	out := imgs.Image{H: img.H, W: img.W, Pix: make([]float32, len(img.Pix))}
	copy(out.Pix, img.Pix)
	return out
}

// uniform draws from U(lo, hi).
func uniform(rng *rand.Rand, lo, hi float64) float64 { return lo + (hi-lo)*rng.Float64() }
