package tables

import (
	"context"
	"fmt"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// WriteValidation hands the train stage's validation table to env: the metrics of the model
// on the validation split (metric auroc, class all, seen or pseudo), with schema metadata
// meta. It has the metrics table's columns; no rows when there is no validation split.
func WriteValidation(env *kind.Env, rows []Metric, meta Meta) error {
	n := len(rows)
	names, classes, values := make([]string, n), make([]string, n), make([]float64, n)
	for i, r := range rows {
		names[i], classes[i], values[i] = r.Metric, r.Class, r.Value
	}
	return output(env, "validation", meta, artifacts.Strings("metric", names), artifacts.Strings("class", classes),
		artifacts.Float64s("value", values))
}

// ReadValidation reads the validation table of input in (a train instance) and its metadata.
func ReadValidation(ctx context.Context, in *kind.Input) ([]Metric, Meta, error) {
	rec, err := open(ctx, in, "validation")
	if err != nil {
		return nil, nil, err
	}
	defer rec.Release()
	rows, err := DecodeMetrics(rec)
	if err != nil {
		return nil, nil, fmt.Errorf("input %s validation: %w", in.ID(), err)
	}
	return rows, metaOf(rec), nil
}
