package stages

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// This file keeps the record-level helpers that train.go and score.go's model reading still
// call, on top of package tables, until the heads branch that rewrites them reads through
// tables (ReadImageIndex, ReadMaps, ReadTasks, ReadModel, WriteModel, WriteTrainLog). Delete
// it then.

// Schema metadata keys of the method and head (tables.MethodKey, tables.HeadKey).
const (
	modelMethodKey = tables.MethodKey
	modelHeadKey   = tables.HeadKey
)

// imageIndex is tables.ImageIndex with the method names train.go uses.
type imageIndex struct{ *tables.ImageIndex }

func (x imageIndex) trainNormals() []string   { return x.TrainNormals() }
func (x imageIndex) trainAnomalies() []string { return x.TrainAnomalies() }

// loadImageIndex is tables.ReadImageIndex.
func loadImageIndex(ctx context.Context, env *kind.Env) (imageIndex, error) {
	x, err := tables.ReadImageIndex(ctx, env)
	return imageIndex{x}, err
}

// mapSource is one open feature-map table and the ids to read from it (all when keep is nil).
type mapSource struct {
	rec  arrow.RecordBatch
	keep map[string]bool
}

// mapSetFromTables is tables.MapSetFromRecords.
func mapSetFromTables(srcs ...mapSource) (fmap.Set, error) {
	open := make([]tables.OpenMaps, len(srcs))
	for i, s := range srcs {
		open[i] = tables.OpenMaps{Rec: s.rec, Keep: s.keep}
	}
	return tables.MapSetFromRecords(open...)
}

// readTasks is tables.DecodeTasks (its strings are owned, so they outlive rec).
func readTasks(rec arrow.RecordBatch) ([]hadg.Sample, error) { return tables.DecodeTasks(rec) }

// schemaMeta returns a schema metadata value, or "".
func schemaMeta(rec arrow.RecordBatch, key string) string {
	md := rec.Schema().Metadata()
	if i := md.FindKey(key); i >= 0 {
		return md.Values()[i]
	}
	return ""
}

// withMeta returns rec with the schema metadata kv added (replacing equal keys); it takes
// ownership of rec.
func withMeta(rec arrow.RecordBatch, kv map[string]string) arrow.RecordBatch {
	old := rec.Schema().Metadata()
	merged := map[string]string{}
	for i, k := range old.Keys() {
		merged[k] = old.Values()[i]
	}
	for k, v := range kv {
		merged[k] = v
	}
	md := arrow.MetadataFrom(merged)
	schema := arrow.NewSchema(rec.Schema().Fields(), &md)
	out := array.NewRecordBatch(schema, rec.Columns(), rec.NumRows())
	rec.Release()
	return out
}

// metaOf returns the values of the given schema metadata keys that rec carries.
func metaOf(rec arrow.RecordBatch, keys ...string) tables.Meta {
	out := tables.Meta{}
	for _, k := range keys {
		if v := schemaMeta(rec, k); v != "" {
			out[k] = v
		}
	}
	return out
}

// methodLabel names the method of a table from the metadata the train stage attached to its
// model and that score and evaluate carried forward (tables.Meta.MethodLabel).
func methodLabel(rec arrow.RecordBatch) string {
	return metaOf(rec, tables.MethodKey, tables.HeadKey).MethodLabel()
}
