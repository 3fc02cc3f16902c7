package stages

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipe-ahl/pipe/ahl/metrics"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// reportVersion is the report stage's code version (part of its cache key). Bump it when the
// results table changes meaning.
const reportVersion = 1

// ReportParams configures the report stage, which gathers every evaluate instance (and, when
// the DAG lists it in needs, every train instance) of a DAG into one table.
type ReportParams struct {
	// Replicates are the matrix keys whose values are repetitions of one experiment; the
	// report averages over them. Default ["seed"].
	Replicates []string `json:"replicates"`
	// MethodKey is the matrix key that names the method (a column of the report, not part of
	// the setting). Default "method". When an instance has no such key, the method comes
	// from the evaluated model's metadata (see modelMethodKey).
	MethodKey string `json:"method_key"`
	// Setting is a label put in front of every instance's setting, for what the matrix does
	// not say (e.g. "general M=${M}" when the protocol and M are DAG vars).
	Setting string `json:"setting"`
}

// Validate checks the report params.
func (p *ReportParams) Validate() error {
	if p.MethodKey == "" {
		return fmt.Errorf("method_key: must not be empty")
	}
	for _, r := range p.Replicates {
		if r == "" {
			return fmt.Errorf("replicates: empty key")
		}
		if r == p.MethodKey {
			return fmt.Errorf("replicates: %q is also method_key", r)
		}
	}
	return nil
}

func init() {
	register(kind.Definition{
		Kind:    "report",
		Version: reportVersion,
		Params: func() any {
			return &ReportParams{Replicates: []string{"seed"}, MethodKey: "method"}
		},
		Inputs:  kind.Inputs{Required: []string{"metrics"}, Optional: []string{"roc", "log"}, Each: true},
		Outputs: []string{"results", "roc", "log"},
		Run:     runReport,
	})
}

// Schema metadata keys that the train stage writes on its model table and that score and
// evaluate carry forward, so that a report can name the method of an instance whose matrix
// does not.
const (
	modelMethodKey = "pipe.method"
	modelHeadKey   = "pipe.head"
)

// ReportResult is one row of the report stage's results table: one metric of one class
// under one setting and method, summarised over the replicates (seeds).
type ReportResult struct {
	Setting string  `json:"setting"`
	Method  string  `json:"method"`
	Class   string  `json:"class"`
	Metric  string  `json:"metric"`
	Mean    float64 `json:"mean"`
	Std     float64 `json:"std"`
	N       int64   `json:"n"`
}

// reportLabels splits an instance's matrix values into its setting (every key but the
// replicates and the method, as sorted "k=v" pairs), its method and its replicate label.
func reportLabels(p *ReportParams, matrix map[string]string) (setting, method, replicate string) {
	var set, rep []string
	keys := make([]string, 0, len(matrix))
	for k := range matrix {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kv := k + "=" + matrix[k]
		switch {
		case k == p.MethodKey:
			method = matrix[k]
		case slices.Contains(p.Replicates, k):
			rep = append(rep, kv)
		default:
			set = append(set, kv)
		}
	}
	setting = strings.Join(set, " ")
	if setting == "" {
		setting = "default"
	}
	return setting, method, strings.Join(rep, " ")
}

// schemaMeta returns a schema metadata value, or "".
func schemaMeta(rec arrow.RecordBatch, key string) string {
	md := rec.Schema().Metadata()
	if i := md.FindKey(key); i >= 0 {
		return md.Values()[i]
	}
	return ""
}

func runReport(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*ReportParams)
	type key struct{ setting, method, class, metric string }
	values := map[key][]float64{}
	var (
		rocSet, rocMethod, rocRep, rocClass []string
		rocFPR, rocTPR                      []float64
		logSet, logMethod, logRep           []string
		logEpoch, logTask                   []int64
		logLoss, logWeight                  []float64
		nEval                               int
	)
	for _, in := range env.Inputs {
		if err := ctx.Err(); err != nil {
			return err
		}
		setting, method, rep := reportLabels(p, in.Matrix)
		if p.Setting != "" {
			if setting == "default" {
				setting = p.Setting
			} else {
				setting = p.Setting + " " + setting
			}
		}
		switch {
		case in.Has("metrics"):
			nEval++
			m, err := in.Open(ctx, "metrics")
			if err != nil {
				return fmt.Errorf("input %s[%s]: %w", in.Stage, in.Instance, err)
			}
			if method == "" {
				method = methodLabel(m)
			}
			names, err1 := artifacts.StringCol(m, "metric")
			classes, err2 := artifacts.StringCol(m, "class")
			vals, err3 := artifacts.Float64Col(m, "value")
			m.Release()
			if err := firstErr(err1, err2, err3); err != nil {
				return fmt.Errorf("input %s[%s] metrics: %w", in.Stage, in.Instance, err)
			}
			for i := range names {
				k := key{setting, method, classes[i], names[i]}
				values[k] = append(values[k], vals[i])
			}
			if in.Has("roc") {
				r, err := in.Open(ctx, "roc")
				if err != nil {
					return fmt.Errorf("input %s[%s]: %w", in.Stage, in.Instance, err)
				}
				cls, err1 := artifacts.StringCol(r, "class")
				fpr, err2 := artifacts.Float64Col(r, "fpr")
				tpr, err3 := artifacts.Float64Col(r, "tpr")
				if err := firstErr(err1, err2, err3); err != nil {
					r.Release()
					return fmt.Errorf("input %s[%s] roc: %w", in.Stage, in.Instance, err)
				}
				for i := range cls {
					rocSet = append(rocSet, setting)
					rocMethod = append(rocMethod, method)
					rocRep = append(rocRep, rep)
					rocClass = append(rocClass, cls[i])
					rocFPR = append(rocFPR, fpr[i])
					rocTPR = append(rocTPR, tpr[i])
				}
				r.Release()
			}
		case in.Has("log"):
			l, err := in.Open(ctx, "log")
			if err != nil {
				return fmt.Errorf("input %s[%s]: %w", in.Stage, in.Instance, err)
			}
			if method == "" {
				method = methodLabel(l)
			}
			ep, err1 := artifacts.Int64Col(l, "epoch")
			task, err2 := artifacts.Int64Col(l, "task")
			loss, err3 := artifacts.Float64Col(l, "query_loss")
			w, err4 := artifacts.Float64Col(l, "weight")
			if err := firstErr(err1, err2, err3, err4); err != nil {
				l.Release()
				return fmt.Errorf("input %s[%s] log: %w", in.Stage, in.Instance, err)
			}
			for i := range ep {
				logSet = append(logSet, setting)
				logMethod = append(logMethod, method)
				logRep = append(logRep, rep)
				logEpoch = append(logEpoch, ep[i])
				logTask = append(logTask, task[i])
				logLoss = append(logLoss, loss[i])
				logWeight = append(logWeight, w[i])
			}
			l.Release()
		default:
			return fmt.Errorf("input %s has neither a metrics nor a log output (outputs %v); needs evaluate (and optionally train) stages", in.Stage, in.Outputs)
		}
	}
	if nEval == 0 {
		return errors.New("no evaluate instance among the inputs (needs an evaluate stage and gather: true)")
	}

	keys := make([]key, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.setting != b.setting {
			return a.setting < b.setting
		}
		if a.class != b.class {
			return classLess(a.class, b.class)
		}
		if a.method != b.method {
			return a.method < b.method
		}
		return a.metric < b.metric
	})
	rows := make([]ReportResult, len(keys))
	for i, k := range keys {
		// Mean and sample standard deviation (divisor n - 1; 0 for a single run).
		sum, err := metrics.Summarize(values[k])
		if err != nil {
			return fmt.Errorf("%s %s %s %s: %w", k.setting, k.method, k.class, k.metric, err)
		}
		rows[i] = ReportResult{k.setting, k.method, k.class, k.metric, sum.Mean, sum.Std, int64(sum.N)}
	}
	res, err := ResultsTable(rows)
	if err != nil {
		return err
	}
	env.Output("results", res)

	roc, err := artifacts.NewTable(artifacts.Strings("setting", rocSet), artifacts.Strings("method", rocMethod),
		artifacts.Strings("replicate", rocRep), artifacts.Strings("class", rocClass),
		artifacts.Float64s("fpr", rocFPR), artifacts.Float64s("tpr", rocTPR))
	if err != nil {
		return err
	}
	env.Output("roc", roc)
	lg, err := artifacts.NewTable(artifacts.Strings("setting", logSet), artifacts.Strings("method", logMethod),
		artifacts.Strings("replicate", logRep), artifacts.Int64s("epoch", logEpoch), artifacts.Int64s("task", logTask),
		artifacts.Float64s("query_loss", logLoss), artifacts.Float64s("weight", logWeight))
	if err != nil {
		return err
	}
	env.Output("log", lg)
	return nil
}

// methodLabel names the method of a table from the metadata the train stage attached to its
// model and that score and evaluate carried forward: "ahl", or "ahl/dra" style when a head
// is recorded; "?" when the table carries none.
func methodLabel(rec arrow.RecordBatch) string {
	m := schemaMeta(rec, modelMethodKey)
	if m == "" {
		return "?"
	}
	if h := schemaMeta(rec, modelHeadKey); h != "" {
		return m + "/" + h
	}
	return m
}

// classLess orders classes with "all" first, then by name.
func classLess(a, b string) bool {
	if (a == "all") != (b == "all") {
		return a == "all"
	}
	return a < b
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// ResultsTable builds the report's results table (stages/TABLES.md) from rows.
func ResultsTable(rows []ReportResult) (arrow.RecordBatch, error) {
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

// ReadResults reads a results table written by the report stage.
func ReadResults(rec arrow.RecordBatch) ([]ReportResult, error) {
	set, err1 := artifacts.StringCol(rec, "setting")
	meth, err2 := artifacts.StringCol(rec, "method")
	cls, err3 := artifacts.StringCol(rec, "class")
	met, err4 := artifacts.StringCol(rec, "metric")
	mean, err5 := artifacts.Float64Col(rec, "mean")
	std, err6 := artifacts.Float64Col(rec, "std")
	cnt, err7 := artifacts.Int64Col(rec, "n")
	if err := firstErr(err1, err2, err3, err4, err5, err6, err7); err != nil {
		return nil, fmt.Errorf("results table: %w", err)
	}
	out := make([]ReportResult, len(set))
	for i := range set {
		out[i] = ReportResult{set[i], meth[i], cls[i], met[i], mean[i], std[i], cnt[i]}
	}
	return out, nil
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

// ReportTables are the latest outputs of a DAG's report stage.
type ReportTables struct {
	// Manifest is the report stage instance's manifest (when and from what it was made).
	Manifest artifacts.Manifest
	// Results holds the results table's rows; ROC and Log are the roc and log tables
	// (nil when the stored report predates them). The caller releases ROC and Log.
	Results  []ReportResult
	ROC, Log arrow.RecordBatch
}

// LoadReport reads the latest outputs of the report stage `stage` of DAG `dag` through the
// store's heads. It fails with a message that says to run the DAG first when there is none.
func LoadReport(ctx context.Context, s artifacts.Store, dag, stage string) (*ReportTables, error) {
	h, err := s.Head(ctx, dag, stage, "")
	if err != nil {
		if errors.Is(err, artifacts.ErrNotFound) {
			return nil, fmt.Errorf("DAG %s has no results of stage %s in this store yet: run `pipe run` on it first", dag, stage)
		}
		return nil, err
	}
	m, err := s.Manifest(ctx, h.Key)
	if err != nil {
		return nil, fmt.Errorf("DAG %s stage %s: manifest %s: %w", dag, stage, h.Key, err)
	}
	out := &ReportTables{Manifest: m}
	res, ok := m.Outputs["results"]
	if !ok {
		return nil, fmt.Errorf("DAG %s stage %s (kind %s) has no results output; is it a report stage?", dag, stage, m.Kind)
	}
	rec, err := artifacts.Get(ctx, s, res.Digest)
	if err != nil {
		return nil, fmt.Errorf("DAG %s stage %s results: %w", dag, stage, err)
	}
	out.Results, err = ReadResults(rec)
	rec.Release()
	if err != nil {
		return nil, fmt.Errorf("DAG %s stage %s: %w", dag, stage, err)
	}
	for name, dst := range map[string]*arrow.RecordBatch{"roc": &out.ROC, "log": &out.Log} {
		o, ok := m.Outputs[name]
		if !ok {
			continue
		}
		if *dst, err = artifacts.Get(ctx, s, o.Digest); err != nil {
			out.Release()
			return nil, fmt.Errorf("DAG %s stage %s %s: %w", dag, stage, name, err)
		}
	}
	return out, nil
}

// Release frees the ROC and log tables.
func (r *ReportTables) Release() {
	for _, t := range []arrow.RecordBatch{r.ROC, r.Log} {
		if t != nil {
			t.Release()
		}
	}
	r.ROC, r.Log = nil, nil
}
