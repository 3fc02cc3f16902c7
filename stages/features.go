package stages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/pipe-ahl/pipe/ahl/augment"
	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/dataset"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// featuresVersion is the features stage's code version (part of its cache key). 2: the
// convnet trains with batch norm. 3: no new behaviour, but a store's ELPV features of
// version 2 made by an earlier commit differ in their bits from what version 2's code
// gives today (same seed, same inputs; found in session 4: the change lies between commit
// ac10014 and merge 56b6408), so every cached convnet is made again once.
const featuresVersion = 3

// FeaturesParams configures the features stage: the frozen backbone that turns every image
// into feature maps at two scales (docs/algorithm.md, "Feature maps at two scales").
type FeaturesParams struct {
	// Backbone is resnet18 (ImageNet weights from Weights) or convnet (trained here from
	// scratch as the DevNet base model on the run's training split, then frozen).
	Backbone string `json:"backbone"`
	// Weights is the file of torchvision-named resnet18 weights (resnet18 only): a PyTorch
	// checkpoint such as torchvision's resnet18-f37072fd.pth as it is, or safetensors, told
	// apart by content (ahl/backbone/README.md). Its content hash is part of the cache key.
	Weights string `json:"weights"`
	// Size is S: scale 0 sees images at S x S, scale 1 at S/2 x S/2 (paper: 448).
	Size int `json:"size"`
	// Resize is how an image of another aspect ratio becomes S x S: squash (the default,
	// "" in the cache key), crop (torchvision's Resize(S) + CenterCrop(S)) or pad
	// (letterboxed on the image's mean colour); imgs.Squash, imgs.Crop, imgs.Pad. With crop
	// or pad, scale 1 is resized from the S x S image, as augment's pseudo anomalies are.
	Resize string `json:"resize,omitempty"`

	// The convnet's architecture and training (ignored by resnet18).

	// Channels are the output channels of the convnet's stages; each stage halves the
	// resolution, so the maps are Channels[-1] x S/2^L x S/2^L.
	Channels []int `json:"channels"`
	// Epochs of Steps balanced batches of Batch images (DevNet: 20 x 48).
	Epochs int `json:"epochs"`
	Steps  int `json:"steps"`
	Batch  int `json:"batch"`
	// LR and WeightDecay are Adam's.
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	// Flip mirrors training images left-right at random (data augmentation).
	Flip bool `json:"flip"`
	// Generators make the pseudo anomalies the convnet trains on, on the fly.
	Generators []string `json:"generators"`
	// EarlyStop, when > 0, is the patience of early stopping on ingest's validation split:
	// after every epoch the convnet scores the validation normals, the held-out labelled
	// anomalies and a pseudo anomaly of each validation normal; training stops after this
	// many epochs without a better figure and keeps the best epoch's network (Epochs is then
	// the maximum). 0 (the default) trains all Epochs. Needs a validation split.
	EarlyStop int `json:"early_stop,omitempty"`
	// PseudoOnly trains the convnet on the training normals and pseudo anomalies alone,
	// leaving out the labelled anomalies (which the heads still train on): with one or a
	// few labelled images, a base model fitted to them can map real defects close to the
	// normals (RESULTS.md, ELPV M = 1). Needs generators.
	PseudoOnly bool `json:"pseudo_only,omitempty"`
}

func init() {
	register(kind.Definition{
		Kind:    "features",
		Version: featuresVersion,
		Params: func() any {
			return &FeaturesParams{
				Backbone: backbone.ConvNetName, Size: 128,
				Channels: []int{16, 32, 64}, Epochs: 10, Steps: 20, Batch: 48, LR: 3e-3, WeightDecay: 1e-5, Flip: true,
				Generators: append([]string(nil), augment.Generators...),
			}
		},
		Inputs:  kind.Inputs{Required: []string{"images"}},
		Outputs: []string{"backbone", "features"},
		Run:     runFeatures,
	})
}

// Validate checks the features params without reading the disk.
func (p *FeaturesParams) Validate() error {
	switch p.Backbone {
	case backbone.ResNet18Name:
		if p.Weights == "" {
			return fmt.Errorf("weights: required for backbone resnet18 (torchvision's ImageNet weights, resnet18-f37072fd.pth, or a safetensors file; see ahl/backbone/README.md), or use backbone convnet")
		}
	case backbone.ConvNetName:
		if p.Weights != "" {
			return fmt.Errorf("weights: %q given, but only backbone resnet18 reads a weights file (convnet trains its own)", p.Weights)
		}
	default:
		return fmt.Errorf("backbone: %q, want %s or %s", p.Backbone, backbone.ResNet18Name, backbone.ConvNetName)
	}
	if err := imgs.CheckResize(p.Resize); err != nil {
		return err
	}
	if p.Size < 8 {
		return fmt.Errorf("size: %d, want >= 8 (scale 1 is size/2)", p.Size)
	}
	if p.Backbone != backbone.ConvNetName {
		return nil
	}
	if len(p.Channels) == 0 {
		return fmt.Errorf("channels: empty, want at least one stage")
	}
	for i, c := range p.Channels {
		if c <= 0 {
			return fmt.Errorf("channels[%d]: %d, want > 0", i, c)
		}
	}
	if p.Size>>len(p.Channels) < 1 {
		return fmt.Errorf("channels: %d stages halve size %d to nothing", len(p.Channels), p.Size)
	}
	switch {
	case p.Epochs < 0:
		return fmt.Errorf("epochs: %d, want >= 0", p.Epochs)
	case p.Steps <= 0:
		return fmt.Errorf("steps: %d, want > 0", p.Steps)
	case p.Batch < 2:
		return fmt.Errorf("batch: %d, want >= 2", p.Batch)
	case p.LR <= 0:
		return fmt.Errorf("lr: %g, want > 0", p.LR)
	case p.WeightDecay < 0:
		return fmt.Errorf("weight_decay: %g, want >= 0", p.WeightDecay)
	case p.EarlyStop < 0:
		return fmt.Errorf("early_stop: %d, want >= 0 (epochs of patience; 0 trains every epoch)", p.EarlyStop)
	}
	for _, g := range p.Generators {
		if err := augment.Valid(g); err != nil {
			return fmt.Errorf("generators: %w", err)
		}
	}
	if p.PseudoOnly && len(p.Generators) == 0 {
		return fmt.Errorf("pseudo_only: true with no generators: the convnet would have no anomaly to train on")
	}
	return nil
}

// Fingerprint implements Fingerprinter: resnet18's weights file is read from outside the
// store, so its content hash joins the cache key (a replaced file reruns the stage even
// with the same path, size and time). convnet reads nothing outside.
func (p *FeaturesParams) Fingerprint(ctx context.Context) (string, error) {
	if p.Backbone != backbone.ResNet18Name {
		return "", nil
	}
	f, err := os.Open(p.Weights)
	if err != nil {
		return "", fmt.Errorf("weights: %w", err)
	}
	defer func() { _ = f.Close() }() // read only: nothing to flush
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("weights: %s: %w", p.Weights, err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// runFeatures builds the backbone (loads resnet18, or trains the convnet on the training
// split) and extracts every image's maps at both scales.
func runFeatures(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*FeaturesParams)
	images, err := tables.OpenImages(ctx, env)
	if err != nil {
		return err
	}
	defer images.Close()
	ids, split, label := images.IDs, images.Split, images.Label
	// decode returns image i resized to each of sizes while it is decoded (bit for bit
	// Resize(Decode(b)), without the full-size float image of a large photo). With resize
	// crop or pad the image is first made S x S by that mode, and each size is resampled
	// from it, as the backbone resamples an S x S image it is given.
	decode := func(i int, b []byte, sizes ...imgs.Size) ([]imgs.Image, error) {
		var ims []imgs.Image
		var err error
		if p.Resize != "" && p.Resize != imgs.Squash {
			var fit imgs.Image
			if fit, err = imgs.DecodeFit(b, p.Resize, p.Size); err == nil {
				for _, z := range sizes {
					if z.H == fit.H && z.W == fit.W {
						ims = append(ims, fit)
					} else {
						ims = append(ims, imgs.Resize(fit, z.H, z.W))
					}
				}
			}
		} else {
			ims, err = imgs.DecodeResized(b, sizes...)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: id %q: %w", images.Input, ids[i], err)
		}
		return ims, nil
	}
	// decodeMany decodes the images idx (each resized to sizes, as decode does): their bytes
	// are read in order (copied: Bytes reuses its buffer), then decoded on GOMAXPROCS
	// goroutines; out[k] is image idx[k].
	decodeMany := func(idx []int, sizes ...imgs.Size) ([][]imgs.Image, error) {
		bs := make([][]byte, len(idx))
		for k, i := range idx {
			b, err := images.Bytes(ctx, i)
			if err != nil {
				return nil, err
			}
			bs[k] = slices.Clone(b)
		}
		out := make([][]imgs.Image, len(idx))
		err := forEachParallel(len(idx), func(_, k int) (err error) {
			out[k], err = decode(idx[k], bs[k], sizes...)
			return err
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}

	var trainSteps int
	if p.Backbone == backbone.ConvNetName {
		trainSteps = p.Epochs * p.Steps
	}
	chunks := extractionChunks(len(ids))
	total := trainSteps + chunks

	var bb backbone.Backbone
	start := time.Now()
	switch p.Backbone {
	case backbone.ResNet18Name:
		r, err := backbone.LoadResNet18(p.Weights, p.Size)
		if err != nil {
			return err
		}
		bb = r
	case backbone.ConvNetName:
		var normals, anomalies, valNormals, valAnomalies []imgs.Image
		var idx []int
		for i := range ids {
			if split[i] == "train" || (p.EarlyStop > 0 && split[i] == dataset.Validation) {
				idx = append(idx, i)
			}
		}
		decoded := make([]imgs.Image, 0, len(idx))
		for lo := 0; lo < len(idx); lo += extractionImages {
			ims, err := decodeMany(idx[lo:min(lo+extractionImages, len(idx))], imgs.Size{H: p.Size, W: p.Size})
			if err != nil {
				return err
			}
			for _, im := range ims {
				decoded = append(decoded, im[0])
			}
		}
		for k, i := range idx {
			im := decoded[k]
			switch {
			case split[i] != "train" && label[i] == 0:
				valNormals = append(valNormals, im)
			case split[i] != "train":
				valAnomalies = append(valAnomalies, im)
			case label[i] == 0:
				normals = append(normals, im)
			case !p.PseudoOnly:
				anomalies = append(anomalies, im)
			}
		}
		if p.EarlyStop > 0 && len(valNormals) == 0 {
			return fmt.Errorf("early_stop: %d needs ingest's validation split (ingest param validation > 0), but %s has no image of split %s", p.EarlyStop, images.Input, dataset.Validation)
		}
		fmt.Fprintf(env.Log, "training convnet %v at %dx%d on %d normals, %d anomalies and pseudo anomalies %v (%d epochs x %d steps)\n",
			p.Channels, p.Size, p.Size, len(normals), len(anomalies), p.Generators, p.Epochs, p.Steps)
		var figs []float64 // each epoch's validation figure (early stopping)
		cfg := backbone.ConvNetConfig{
			Size: p.Size, Channels: p.Channels, Epochs: p.Epochs, Steps: p.Steps, Batch: p.Batch,
			LR: p.LR, WeightDecay: p.WeightDecay, Seed: env.Seed, Flip: p.Flip,
			Generators: p.Generators, Pseudo: augment.Apply,
			Progress:   func(done, _ int) { env.Progress(done, total) },
			ValNormals: valNormals, ValAnomalies: valAnomalies, Patience: p.EarlyStop,
			OnValidation: func(ep int, fig float64) {
				figs = append(figs, fig)
				fmt.Fprintf(env.Log, "convnet epoch %d validation AUROC (mean over real and pseudo) %.4f\n", ep, fig)
			},
		}
		net, losses, err := backbone.TrainConvNet(ctx, cfg, normals, anomalies)
		if err != nil {
			return err
		}
		for ep, l := range losses {
			fmt.Fprintf(env.Log, "convnet epoch %d loss %.4f\n", ep, l)
		}
		if p.EarlyStop > 0 {
			best := 0
			for ep, f := range figs {
				if f > figs[best] {
					best = ep
				}
			}
			fmt.Fprintf(env.Log, "convnet early stopping: trained %d of %d epochs, kept epoch %d (validation %.4f)\n", len(losses), p.Epochs, best, figs[best])
		}
		bb = net
	}
	fmt.Fprintf(env.Log, "backbone %s ready in %.1fs; extracting %d images at %d and %d\n",
		bb.Name(), time.Since(start).Seconds(), len(ids), p.Size, p.Size/2)

	rows := tables.MapWriter{Images: len(ids)}
	for c := 0; c < chunks; c++ {
		lo, hi := c*len(ids)/chunks, (c+1)*len(ids)/chunks
		// Each image is resized to both scales while it is decoded (the same values as the
		// backbone resampling the full-size image, without holding it).
		idx := make([]int, 0, hi-lo)
		for i := lo; i < hi; i++ {
			idx = append(idx, i)
		}
		decoded, err := decodeMany(idx, imgs.Size{H: p.Size, W: p.Size}, imgs.Size{H: p.Size / 2, W: p.Size / 2})
		if err != nil {
			return err
		}
		scale0, scale1 := make([]imgs.Image, 0, hi-lo), make([]imgs.Image, 0, hi-lo)
		for _, ims := range decoded {
			scale0, scale1 = append(scale0, ims[0]), append(scale1, ims[1])
		}
		ms, err := backbone.ExtractSized(ctx, bb, scale0, scale1)
		if err != nil {
			return err
		}
		if err := rows.Add(ids[lo:hi], ms); err != nil {
			return err
		}
		env.Progress(trainSteps+c+1, total)
	}
	if err := tables.WriteBackbone(env, bb, p.Resize); err != nil {
		return err
	}
	return rows.Write(env, "features")
}

// extractionImages is how many images are decoded and extracted at once: enough to fill the
// backbone's batches, few enough that their images, decoded at both scales, stay small.
const extractionImages = 32

// extractionChunks splits n images into chunks of at most extractionImages.
func extractionChunks(n int) int { return (n + extractionImages - 1) / extractionImages }

// ExternalPaths implements kind.Externals: resnet18 reads its weights file.
func (p *FeaturesParams) ExternalPaths() []kind.ExternalPath {
	if p.Backbone != backbone.ResNet18Name || p.Weights == "" {
		return nil
	}
	return []kind.ExternalPath{{Param: "weights", Path: p.Weights}}
}
