package tables

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Score is one row of the score stage's scores table: one test image.
type Score struct {
	ID    string
	Label int64
	Class string
	Score float64
}

// WriteScores hands the scores table of rows, with schema metadata meta (the model's method
// and head), to env.
func WriteScores(env *kind.Env, rows []Score, meta Meta) error {
	n := len(rows)
	ids, classes, labels, scores := make([]string, n), make([]string, n), make([]int64, n), make([]float64, n)
	for i, r := range rows {
		ids[i], labels[i], classes[i], scores[i] = r.ID, r.Label, r.Class, r.Score
	}
	return output(env, "scores", meta, artifacts.Strings("id", ids), artifacts.Int64s("label", labels),
		artifacts.Strings("class", classes), artifacts.Float64s("score", scores))
}

// ReadScores reads the scores table of the one input of env that has it, and its metadata.
func ReadScores(ctx context.Context, env *kind.Env) ([]Score, Meta, error) {
	rec, in, err := openFrom(ctx, env, "scores")
	if err != nil {
		return nil, nil, err
	}
	defer rec.Release()
	c := cols{rec: rec}
	ids, labels, classes, scores := c.strings("id"), c.int64s("label"), c.strings("class"), c.float64s("score")
	if c.err != nil {
		return nil, nil, fmt.Errorf("input %s scores: %w", in, c.err)
	}
	out := make([]Score, len(ids))
	for i := range ids {
		out[i] = Score{ids[i], labels[i], classes[i], scores[i]}
	}
	return out, metaOf(rec), nil
}

// Metric is one row of the evaluate stage's metrics table.
type Metric struct {
	Metric string // auroc or auprc
	Class  string // all or an anomaly class
	Value  float64
}

// WriteMetrics hands the metrics table of rows, with schema metadata meta, to env.
func WriteMetrics(env *kind.Env, rows []Metric, meta Meta) error {
	n := len(rows)
	names, classes, values := make([]string, n), make([]string, n), make([]float64, n)
	for i, r := range rows {
		names[i], classes[i], values[i] = r.Metric, r.Class, r.Value
	}
	return output(env, "metrics", meta, artifacts.Strings("metric", names), artifacts.Strings("class", classes),
		artifacts.Float64s("value", values))
}

// ReadMetrics reads the metrics table of input in (an evaluate instance) and its metadata.
func ReadMetrics(ctx context.Context, in *kind.Input) ([]Metric, Meta, error) {
	rec, err := open(ctx, in, "metrics")
	if err != nil {
		return nil, nil, err
	}
	defer rec.Release()
	rows, err := DecodeMetrics(rec)
	if err != nil {
		return nil, nil, fmt.Errorf("input %s metrics: %w", in.ID(), err)
	}
	return rows, metaOf(rec), nil
}

// LoadMetrics reads a metrics table from the store by digest (for pipe run's JSON).
func LoadMetrics(ctx context.Context, s artifacts.Store, d artifacts.Digest) ([]Metric, error) {
	rec, err := load(ctx, s, d)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	return DecodeMetrics(rec)
}

// DecodeMetrics reads a metrics table record into owned rows; the caller releases rec.
func DecodeMetrics(rec arrow.RecordBatch) ([]Metric, error) {
	c := cols{rec: rec}
	names, classes, values := c.strings("metric"), c.strings("class"), c.float64s("value")
	if c.err != nil {
		return nil, c.err
	}
	out := make([]Metric, len(names))
	for i := range names {
		out[i] = Metric{names[i], classes[i], values[i]}
	}
	return out, nil
}

// ROCPoint is one row of the evaluate stage's roc table.
type ROCPoint struct {
	Class     string
	FPR, TPR  float64
	Threshold float64
}

// WriteROC hands the roc table of rows, with schema metadata meta, to env.
func WriteROC(env *kind.Env, rows []ROCPoint, meta Meta) error {
	n := len(rows)
	classes, fpr, tpr, thr := make([]string, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i, r := range rows {
		classes[i], fpr[i], tpr[i], thr[i] = r.Class, r.FPR, r.TPR, r.Threshold
	}
	return output(env, "roc", meta, artifacts.Strings("class", classes), artifacts.Float64s("fpr", fpr),
		artifacts.Float64s("tpr", tpr), artifacts.Float64s("threshold", thr))
}

// ReadROC reads the roc table of input in (an evaluate instance).
func ReadROC(ctx context.Context, in *kind.Input) ([]ROCPoint, error) {
	rec, err := open(ctx, in, "roc")
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	c := cols{rec: rec}
	classes, fpr, tpr, thr := c.strings("class"), c.float64s("fpr"), c.float64s("tpr"), c.float64s("threshold")
	if c.err != nil {
		return nil, fmt.Errorf("input %s roc: %w", in.ID(), c.err)
	}
	out := make([]ROCPoint, len(classes))
	for i := range classes {
		out[i] = ROCPoint{classes[i], fpr[i], tpr[i], thr[i]}
	}
	return out, nil
}
