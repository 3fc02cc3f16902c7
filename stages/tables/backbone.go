package tables

import (
	"cmp"
	"context"
	"fmt"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Schema metadata keys of the features stage's backbone table.
const (
	backboneNameKey   = "backbone"
	backboneSizeKey   = "size"
	backboneResizeKey = "resize"
)

// WriteBackbone hands the backbone table of b to env: a tensor table of its weights, with
// schema metadata backbone (its name), size (its input size) and, unless it is squash or
// "", resize (how images of other aspect ratios become size x size: imgs.Crop or imgs.Pad),
// so that augment prepares its images as features did.
func WriteBackbone(env *kind.Env, b backbone.Backbone, resize string) error {
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
		return fmt.Errorf("backbone table: %w", err)
	}
	meta := Meta{backboneNameKey: b.Name(), backboneSizeKey: strconv.Itoa(b.Size())}
	if resize != "" && resize != imgs.Squash {
		meta[backboneResizeKey] = resize
	}
	env.Output("backbone", withMeta(rec, meta))
	return nil
}

// BackboneTensors is the content of a backbone table: the network's name and input size as
// its schema metadata says (Build checks them), and its weights (copies).
type BackboneTensors struct {
	Name    string
	Size    string
	Resize  string // imgs.Squash when the metadata has none
	Weights []backbone.Tensor
}

// ReadBackboneTensors reads the backbone table of the one input of env that has it.
func ReadBackboneTensors(ctx context.Context, env *kind.Env) (BackboneTensors, error) {
	rec, in, err := openFrom(ctx, env, "backbone")
	if err != nil {
		return BackboneTensors{}, err
	}
	defer rec.Release()
	bt, err := DecodeBackbone(rec)
	if err != nil {
		return BackboneTensors{}, fmt.Errorf("input %s backbone: %w", in, err)
	}
	return bt, nil
}

// DecodeBackbone reads a backbone table record into copies; the caller releases rec.
func DecodeBackbone(rec arrow.RecordBatch) (BackboneTensors, error) {
	meta := metaOf(rec)
	ts, err := readTensors(rec)
	if err != nil {
		return BackboneTensors{}, err
	}
	ws := make([]backbone.Tensor, len(ts))
	for i, t := range ts {
		shape := make([]int, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int(d)
		}
		ws[i] = backbone.Tensor{Name: t.Name, Shape: shape, Values: t.Values}
	}
	resize := cmp.Or(meta[backboneResizeKey], imgs.Squash)
	if err := imgs.CheckResize(resize); err != nil {
		return BackboneTensors{}, fmt.Errorf("backbone table: schema metadata %w", err)
	}
	return BackboneTensors{Name: meta[backboneNameKey], Size: meta[backboneSizeKey], Resize: resize, Weights: ws}, nil
}

// Build rebuilds the frozen backbone from its tensors.
func (bt BackboneTensors) Build() (backbone.Backbone, error) {
	size, err := strconv.Atoi(bt.Size)
	if bt.Name == "" || err != nil {
		return nil, fmt.Errorf("backbone table: schema metadata %q = %q and %q = %q, want a backbone name and an integer size",
			backboneNameKey, bt.Name, backboneSizeKey, bt.Size)
	}
	b, err := backbone.FromTensors(bt.Name, size, bt.Weights)
	if err != nil {
		return nil, fmt.Errorf("backbone table: %w", err)
	}
	return b, nil
}

// ReadBackbone rebuilds the frozen backbone from the backbone table of the one input of env
// that has it (for the augment stage, which must extract pseudo anomalies with the same
// network as the features stage).
func ReadBackbone(ctx context.Context, env *kind.Env) (backbone.Backbone, error) {
	bt, err := ReadBackboneTensors(ctx, env)
	if err != nil {
		return nil, err
	}
	return bt.Build()
}
