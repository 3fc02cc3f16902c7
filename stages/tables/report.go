package tables

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Result is one row of the report stage's results table: one metric of one class under one
// setting and method, summarised over the replicates (seeds).
type Result struct {
	Setting string  `json:"setting"`
	Method  string  `json:"method"`
	Class   string  `json:"class"`
	Metric  string  `json:"metric"`
	Mean    float64 `json:"mean"`
	Std     float64 `json:"std"`
	N       int64   `json:"n"`
}

// ResultsTable builds the results table of rows.
func ResultsTable(rows []Result) (arrow.RecordBatch, error) {
	n := len(rows)
	set, meth, cls, met := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	mean, std, cnt := make([]float64, n), make([]float64, n), make([]int64, n)
	for i, r := range rows {
		set[i], meth[i], cls[i], met[i] = r.Setting, r.Method, r.Class, r.Metric
		mean[i], std[i], cnt[i] = r.Mean, r.Std, r.N
	}
	return artifacts.NewTable(artifacts.Strings("setting", set), artifacts.Strings("method", meth),
		artifacts.Strings("class", cls), artifacts.Strings("metric", met),
		artifacts.Float64s("mean", mean), artifacts.Float64s("std", std), artifacts.Int64s("n", cnt))
}

// WriteResults hands the results table of rows to env.
func WriteResults(env *kind.Env, rows []Result) error {
	rec, err := ResultsTable(rows)
	if err != nil {
		return fmt.Errorf("results table: %w", err)
	}
	env.Output("results", rec)
	return nil
}

// DecodeResults reads a results table record into owned rows; the caller releases rec.
func DecodeResults(rec arrow.RecordBatch) ([]Result, error) {
	c := cols{rec: rec}
	set, meth, cls, met := c.strings("setting"), c.strings("method"), c.strings("class"), c.strings("metric")
	mean, std, cnt := c.float64s("mean"), c.float64s("std"), c.int64s("n")
	if c.err != nil {
		return nil, fmt.Errorf("results table: %w", c.err)
	}
	out := make([]Result, len(set))
	for i := range set {
		out[i] = Result{set[i], meth[i], cls[i], met[i], mean[i], std[i], cnt[i]}
	}
	return out, nil
}

// LoadResults reads a results table from the store by digest.
func LoadResults(ctx context.Context, s artifacts.Store, d artifacts.Digest) ([]Result, error) {
	rec, err := load(ctx, s, d)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	return DecodeResults(rec)
}

// ReportROC is one row of the report stage's roc table: an evaluate instance's ROC point.
type ReportROC struct {
	Setting, Method, Replicate, Class string
	FPR, TPR                          float64
}

// WriteReportROC hands the report's roc table of rows to env.
func WriteReportROC(env *kind.Env, rows []ReportROC) error {
	n := len(rows)
	set, meth, rep, cls := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	fpr, tpr := make([]float64, n), make([]float64, n)
	for i, r := range rows {
		set[i], meth[i], rep[i], cls[i], fpr[i], tpr[i] = r.Setting, r.Method, r.Replicate, r.Class, r.FPR, r.TPR
	}
	return output(env, "roc", nil, artifacts.Strings("setting", set), artifacts.Strings("method", meth),
		artifacts.Strings("replicate", rep), artifacts.Strings("class", cls),
		artifacts.Float64s("fpr", fpr), artifacts.Float64s("tpr", tpr))
}

// LoadReportROC reads a report roc table from the store by digest.
func LoadReportROC(ctx context.Context, s artifacts.Store, d artifacts.Digest) ([]ReportROC, error) {
	rec, err := load(ctx, s, d)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	c := cols{rec: rec}
	set, meth, rep, cls := c.strings("setting"), c.strings("method"), c.strings("replicate"), c.strings("class")
	fpr, tpr := c.float64s("fpr"), c.float64s("tpr")
	if c.err != nil {
		return nil, fmt.Errorf("report roc table: %w", c.err)
	}
	out := make([]ReportROC, len(set))
	for i := range set {
		out[i] = ReportROC{set[i], meth[i], rep[i], cls[i], fpr[i], tpr[i]}
	}
	return out, nil
}

// ReportLog is one row of the report stage's log table: a train instance's log row.
type ReportLog struct {
	Setting, Method, Replicate string
	LogRow
}

// WriteReportLog hands the report's log table of rows to env.
func WriteReportLog(env *kind.Env, rows []ReportLog) error {
	n := len(rows)
	set, meth, rep := make([]string, n), make([]string, n), make([]string, n)
	ep, task := make([]int64, n), make([]int64, n)
	loss, w := make([]float64, n), make([]float64, n)
	for i, r := range rows {
		set[i], meth[i], rep[i] = r.Setting, r.Method, r.Replicate
		ep[i], task[i], loss[i], w[i] = r.Epoch, r.Task, r.QueryLoss, r.Weight
	}
	return output(env, "log", nil, artifacts.Strings("setting", set), artifacts.Strings("method", meth),
		artifacts.Strings("replicate", rep), artifacts.Int64s("epoch", ep), artifacts.Int64s("task", task),
		artifacts.Float64s("query_loss", loss), artifacts.Float64s("weight", w))
}

// LoadReportLog reads a report log table from the store by digest.
func LoadReportLog(ctx context.Context, s artifacts.Store, d artifacts.Digest) ([]ReportLog, error) {
	rec, err := load(ctx, s, d)
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	c := cols{rec: rec}
	set, meth, rep := c.strings("setting"), c.strings("method"), c.strings("replicate")
	ep, task, loss, w := c.int64s("epoch"), c.int64s("task"), c.float64s("query_loss"), c.float64s("weight")
	if c.err != nil {
		return nil, fmt.Errorf("report log table: %w", c.err)
	}
	out := make([]ReportLog, len(set))
	for i := range set {
		out[i] = ReportLog{set[i], meth[i], rep[i], LogRow{ep[i], task[i], loss[i], w[i]}}
	}
	return out, nil
}
