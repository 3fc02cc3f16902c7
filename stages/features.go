package stages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipe-ahl/pipe/ahl/augment"
	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// featuresVersion is the features stage's code version (part of its cache key). 2: the
// convnet trains with batch norm.
const featuresVersion = 2

// Schema metadata keys of the backbone table: which backbone its tensors rebuild and S.
const (
	backboneNameKey = "backbone"
	backboneSizeKey = "size"
)

// FeaturesParams configures the features stage: the frozen backbone that turns every image
// into feature maps at two scales (AHL_SPEC.md, "Inputs to AHL").
type FeaturesParams struct {
	// Backbone is resnet18 (ImageNet weights from Weights) or convnet (trained here from
	// scratch as the DevNet base model on the run's training split, then frozen).
	Backbone string `json:"backbone"`
	// Weights is the safetensors file of torchvision-named resnet18 weights (resnet18 only;
	// ahl/backbone/README.md says how to make one). Its content hash is part of the cache key.
	Weights string `json:"weights"`
	// Size is S: scale 0 sees images at S x S, scale 1 at S/2 x S/2 (paper: 448).
	Size int `json:"size"`

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
			return fmt.Errorf("weights: required for backbone resnet18 (a safetensors file of torchvision ImageNet weights; see ahl/backbone/README.md), or use backbone convnet")
		}
	case backbone.ConvNetName:
		if p.Weights != "" {
			return fmt.Errorf("weights: %q given, but only backbone resnet18 reads a weights file (convnet trains its own)", p.Weights)
		}
	default:
		return fmt.Errorf("backbone: %q, want %s or %s", p.Backbone, backbone.ResNet18Name, backbone.ConvNetName)
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
	}
	for _, g := range p.Generators {
		if err := augment.Valid(g); err != nil {
			return fmt.Errorf("generators: %w", err)
		}
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
	defer f.Close()
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
	in, err := env.With("images")
	if err != nil {
		return err
	}
	rec, err := in.Open(ctx, "images")
	if err != nil {
		return fmt.Errorf("input %s images: %w", in.Stage, err)
	}
	defer rec.Release()
	ids, err1 := artifacts.StringCol(rec, "id")
	split, err2 := artifacts.StringCol(rec, "split")
	label, err3 := artifacts.Int64Col(rec, "label")
	data, err4 := artifacts.BinaryCol(rec, "bytes")
	if err := firstErr(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("input %s images: %w", in.Stage, err)
	}
	decode := func(i int) (imgs.Image, error) {
		im, err := imgs.Decode(data[i])
		if err != nil {
			return imgs.Image{}, fmt.Errorf("input %s images: id %q: %w", in.Stage, ids[i], err)
		}
		return im, nil
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
		var normals, anomalies []imgs.Image
		for i := range ids {
			if split[i] != "train" {
				continue
			}
			im, err := decode(i)
			if err != nil {
				return err
			}
			im = imgs.Resize(im, p.Size, p.Size)
			if label[i] == 0 {
				normals = append(normals, im)
			} else {
				anomalies = append(anomalies, im)
			}
		}
		fmt.Fprintf(env.Log, "%s: training convnet %v at %dx%d on %d normals, %d anomalies and pseudo anomalies %v (%d epochs x %d steps)\n",
			env.Stage, p.Channels, p.Size, p.Size, len(normals), len(anomalies), p.Generators, p.Epochs, p.Steps)
		cfg := backbone.ConvNetConfig{
			Size: p.Size, Channels: p.Channels, Epochs: p.Epochs, Steps: p.Steps, Batch: p.Batch,
			LR: p.LR, WeightDecay: p.WeightDecay, Seed: env.Seed, Flip: p.Flip,
			Generators: p.Generators, Pseudo: augment.Apply,
			Progress: func(done, _ int) { env.Progress(done, total) },
		}
		net, losses, err := backbone.TrainConvNet(ctx, cfg, normals, anomalies)
		if err != nil {
			return err
		}
		for ep, l := range losses {
			fmt.Fprintf(env.Log, "%s: convnet epoch %d loss %.4f\n", env.Stage, ep, l)
		}
		bb = net
	}
	fmt.Fprintf(env.Log, "%s: backbone %s ready in %.1fs; extracting %d images at %d and %d\n",
		env.Stage, bb.Name(), time.Since(start).Seconds(), len(ids), p.Size, p.Size/2)

	rows := mapRows{Images: len(ids)}
	for c := 0; c < chunks; c++ {
		lo, hi := c*len(ids)/chunks, (c+1)*len(ids)/chunks
		batch := make([]imgs.Image, 0, hi-lo)
		for i := lo; i < hi; i++ {
			im, err := decode(i)
			if err != nil {
				return err
			}
			batch = append(batch, im)
		}
		if err := rows.add(ctx, bb, ids[lo:hi], batch); err != nil {
			return err
		}
		env.Progress(trainSteps+c+1, total)
	}
	feats, err := rows.table()
	if err != nil {
		return fmt.Errorf("features: %w", err)
	}
	bt, err := backboneTable(bb)
	if err != nil {
		feats.Release()
		return fmt.Errorf("backbone: %w", err)
	}
	env.Output("backbone", bt)
	env.Output("features", feats)
	return nil
}

// extractionImages is how many images are decoded and extracted at once: enough to fill the
// backbone's batches, few enough that decoded full-size images (MVTec: 12 MB each) stay small.
const extractionImages = 32

// extractionChunks splits n images into chunks of at most extractionImages.
func extractionChunks(n int) int { return (n + extractionImages - 1) / extractionImages }

// backboneTable stores a backbone as a tensor table (artifacts.TensorTable) whose schema
// metadata holds the backbone's name ("backbone") and S ("size"); backboneFromTable reads
// it back.
func backboneTable(b backbone.Backbone) (arrow.RecordBatch, error) {
	ws := b.Weights()
	ts := make([]artifacts.Tensor, len(ws))
	for i, w := range ws {
		shape := make([]int64, len(w.Shape))
		for j, d := range w.Shape {
			shape[j] = int64(d)
		}
		ts[i] = artifacts.Tensor{Name: w.Name, Shape: shape, Values: w.Values}
	}
	rec, err := artifacts.TensorTable(ts)
	if err != nil {
		return nil, err
	}
	return withMeta(rec, map[string]string{backboneNameKey: b.Name(), backboneSizeKey: strconv.Itoa(b.Size())}), nil
}

// backboneFromTable rebuilds the frozen backbone from the features stage's backbone table
// (for the augment stage, which must extract pseudo anomalies with the same network). The
// weights are copied, so rec may be released afterwards.
func backboneFromTable(rec arrow.RecordBatch) (backbone.Backbone, error) {
	name := schemaMeta(rec, backboneNameKey)
	size, err := strconv.Atoi(schemaMeta(rec, backboneSizeKey))
	if name == "" || err != nil {
		return nil, fmt.Errorf("backbone table: schema metadata %q = %q and %q = %q, want a backbone name and an integer size",
			backboneNameKey, name, backboneSizeKey, schemaMeta(rec, backboneSizeKey))
	}
	ts, err := artifacts.ReadTensors(rec)
	if err != nil {
		return nil, fmt.Errorf("backbone table: %w", err)
	}
	ws := make([]backbone.Tensor, len(ts))
	for i, t := range ts {
		shape := make([]int, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int(d)
		}
		ws[i] = backbone.Tensor{Name: t.Name, Shape: shape, Values: append([]float32(nil), t.Values...)}
	}
	b, err := backbone.FromTensors(name, size, ws)
	if err != nil {
		return nil, fmt.Errorf("backbone table: %w", err)
	}
	return b, nil
}

// perImage is a string column with one value per image, repeated on each of the image's
// rows (for example the pseudo table's source and generator).
type perImage struct {
	Name   string
	Values []string
}

// mapRows accumulates feature-map table rows: one per image per scale, images in the order
// added, scale 0 then scale 1 (stages/TABLES.md, features and pseudo). The maps go straight
// into an Arrow list builder, so a large table is held once, not twice.
type mapRows struct {
	// Images, when set before the first add, is the number of images that will be added:
	// the value buffer is then allocated once, at its final size.
	Images int

	ids            []string
	scale, c, h, w []int64
	extraNames     []string
	extra          [][]string
	values         *array.ListBuilder
	added          int
}

// add extracts the maps of images (named ids) with b and appends their rows. Every call must
// pass the same extra columns (by name, in order), with one value per image each.
func (r *mapRows) add(ctx context.Context, b backbone.Backbone, ids []string, images []imgs.Image, extra ...perImage) error {
	if len(ids) != len(images) {
		return fmt.Errorf("extract: %d ids for %d images", len(ids), len(images))
	}
	if r.values == nil {
		for _, e := range extra {
			r.extraNames = append(r.extraNames, e.Name)
		}
		r.extra = make([][]string, len(extra))
		r.values = array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	}
	if len(extra) != len(r.extraNames) {
		return fmt.Errorf("extract: %d extra columns, earlier calls had %v", len(extra), r.extraNames)
	}
	for k, e := range extra {
		if e.Name != r.extraNames[k] || len(e.Values) != len(ids) {
			return fmt.Errorf("extract: extra column %q with %d values for %d images (want %q)", e.Name, len(e.Values), len(ids), r.extraNames[k])
		}
	}
	ms, err := b.Extract(ctx, images)
	if err != nil {
		return err
	}
	vb := r.values.ValueBuilder().(*array.Float32Builder)
	if r.added == 0 && r.Images > len(ids) {
		per := 0
		for _, m := range ms {
			per += m.Size()
		}
		vb.Reserve(per * r.Images)
	}
	for i, id := range ids {
		for s, m := range ms {
			r.ids = append(r.ids, id)
			r.scale = append(r.scale, int64(s))
			r.c, r.h, r.w = append(r.c, int64(m.C)), append(r.h, int64(m.H)), append(r.w, int64(m.W))
			r.values.Append(true)
			vb.AppendValues(m.At(i), nil)
			for k, e := range extra {
				r.extra[k] = append(r.extra[k], e.Values[i])
			}
		}
	}
	r.added += len(ids)
	return nil
}

// table builds the rows' table, columns id, the extra columns, scale, c, h, w, values (the
// types artifacts.NewTable gives them), and resets r.
func (r *mapRows) table() (arrow.RecordBatch, error) {
	if r.values == nil {
		r.values = array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	}
	defer r.values.Release()
	// Build the small columns through artifacts, then swap in the values column.
	cols := []artifacts.Col{artifacts.Strings("id", r.ids)}
	for k, name := range r.extraNames {
		cols = append(cols, artifacts.Strings(name, r.extra[k]))
	}
	cols = append(cols, artifacts.Int64s("scale", r.scale), artifacts.Int64s("c", r.c), artifacts.Int64s("h", r.h),
		artifacts.Int64s("w", r.w))
	small, err := artifacts.NewTable(cols...)
	if err != nil {
		return nil, err
	}
	defer small.Release()
	vals := r.values.NewArray()
	defer vals.Release()
	if vals.Len() != int(small.NumRows()) {
		return nil, fmt.Errorf("extract: %d value rows for %d rows", vals.Len(), small.NumRows())
	}
	fields := append(small.Schema().Fields(), arrow.Field{Name: "values", Type: vals.DataType()})
	arrs := append(append([]arrow.Array(nil), small.Columns()...), vals)
	*r = mapRows{}
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, int64(vals.Len())), nil
}
