package stages

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// Schema metadata keys of the backbone table (stages/TABLES.md).
const (
	backboneNameKey   = "backbone"
	backboneSizeKey   = "size"
	backboneResizeKey = "resize"
)

// perImage is tables.PerImage.
type perImage = tables.PerImage

// backboneFromTable rebuilds a backbone from a backbone table record.
func backboneFromTable(rec arrow.RecordBatch) (backbone.Backbone, error) {
	bt, err := tables.DecodeBackbone(rec)
	if err != nil {
		return nil, err
	}
	return bt.Build()
}

// backboneTable returns the backbone table of b, as the features stage writes it.
func backboneTable(b backbone.Backbone) (arrow.RecordBatch, error) {
	env := &kind.Env{}
	if err := tables.WriteBackbone(env, b, ""); err != nil {
		return nil, err
	}
	return env.Outputs()["backbone"], nil
}

// extractTable extracts the maps of images (named ids) with b and returns their table in one
// call through tables.MapWriter: id, extra columns (one value per image, e.g. source and
// generator for the pseudo table), scale, c, h, w, values.
func extractTable(ctx context.Context, b backbone.Backbone, ids []string, images []imgs.Image, extra ...perImage) (arrow.RecordBatch, error) {
	ms, err := b.Extract(ctx, images)
	if err != nil {
		return nil, err
	}
	var w tables.MapWriter
	if err := w.Add(ids, ms, extra...); err != nil {
		return nil, err
	}
	env := &kind.Env{}
	if err := w.Write(env, "features"); err != nil {
		return nil, err
	}
	return env.Outputs()["features"], nil
}

// mapSetFromTable reads one feature-map table record into a set.
func mapSetFromTable(rec arrow.RecordBatch, keep map[string]bool) (fmap.Set, error) {
	return tables.MapSetFromRecords(tables.OpenMaps{Rec: rec, Keep: keep})
}
