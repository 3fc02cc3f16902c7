package stages

import (
	"context"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// Record-level helpers for the tests, which build and inspect tables by hand; the kinds
// read and write through package tables.

// Schema metadata keys of the method and head (tables.MethodKey, tables.HeadKey).
const (
	modelMethodKey = tables.MethodKey
	modelHeadKey   = tables.HeadKey
)

// loadImageIndex is tables.ReadImageIndex.
func loadImageIndex(ctx context.Context, env *kind.Env) (*tables.ImageIndex, error) {
	return tables.ReadImageIndex(ctx, env)
}

// readTasks is tables.DecodeTasks (its strings are owned, so they outlive rec).
func readTasks(rec arrow.RecordBatch) ([]hadg.Sample, error) { return tables.DecodeTasks(rec) }

// readModel decodes a model table record as the score stage does.
func readModel(rec arrow.RecordBatch) (*model, error) {
	tm, err := tables.DecodeModel(rec)
	if err != nil {
		return nil, err
	}
	return decodeModel(tm)
}

// schemaMeta returns a schema metadata value, or "".
func schemaMeta(rec arrow.RecordBatch, key string) string {
	md := rec.Schema().Metadata()
	if i := md.FindKey(key); i >= 0 {
		return md.Values()[i]
	}
	return ""
}

// withMeta returns rec with the schema metadata kv added; it takes ownership of rec.
func withMeta(rec arrow.RecordBatch, kv map[string]string) arrow.RecordBatch {
	return artifacts.WithMetadata(rec, kv)
}

// methodLabel names the method of a table from the metadata the train stage attached to its
// model and that score and evaluate carried forward (tables.Meta.MethodLabel).
func methodLabel(rec arrow.RecordBatch) string {
	meta := tables.Meta{}
	for _, k := range []string{tables.MethodKey, tables.HeadKey, tables.FusionKey} {
		meta[k] = schemaMeta(rec, k)
	}
	return meta.Pick(tables.MethodKey, tables.HeadKey, tables.FusionKey).MethodLabel()
}
