package stages

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// memInput is an upstream stage instance whose outputs are the given in-memory tables. Open
// retains the table, so the caller's Release does not free it.
func memInput(stage, instance string, matrix map[string]string, tables map[string]arrow.RecordBatch) kind.Input {
	var names []string
	for n := range tables {
		names = append(names, n)
	}
	return kind.Input{
		Stage: stage, Instance: instance, Matrix: matrix, Outputs: names,
		Open: func(_ context.Context, output string) (arrow.RecordBatch, error) {
			rec, ok := tables[output]
			if !ok {
				return nil, fmt.Errorf("no output %q", output)
			}
			rec.Retain()
			return rec, nil
		},
	}
}

// runKind runs the stage kind with params p (nil: defaults) over inputs and returns its outputs.
func runKind(t *testing.T, name string, p any, seed uint64, inputs ...kind.Input) map[string]arrow.RecordBatch {
	t.Helper()
	out, err := tryKind(name, p, seed, inputs...)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out
}

func tryKind(name string, p any, seed uint64, inputs ...kind.Input) (map[string]arrow.RecordBatch, error) {
	d, ok := lookup(name)
	if !ok {
		return nil, fmt.Errorf("kind %q not registered", name)
	}
	if p == nil {
		p = d.Params()
	}
	if v, ok := p.(kind.Validator); ok {
		if err := v.Validate(); err != nil {
			return nil, err
		}
	}
	env := &kind.Env{DAG: "test", Stage: name, Params: p, Seed: seed, Inputs: inputs, Log: io.Discard, Progress: func(int, int) {}}
	if err := d.Run(context.Background(), env); err != nil {
		return nil, err
	}
	return env.Outputs(), nil
}

func metricsTable(t *testing.T, rows ...any) arrow.RecordBatch {
	t.Helper()
	var m, c []string
	var v []float64
	for i := 0; i < len(rows); i += 3 {
		m = append(m, rows[i].(string))
		c = append(c, rows[i+1].(string))
		v = append(v, rows[i+2].(float64))
	}
	rec, err := artifacts.NewTable(artifacts.Strings("metric", m), artifacts.Strings("class", c), artifacts.Float64s("value", v))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestReportMeanStdOverSeeds(t *testing.T) {
	var ins []kind.Input
	// Two settings (seen_class a, b) x two methods x seeds; seen_class b has one seed only.
	auroc := map[string][]float64{
		"a/ahl": {0.9, 0.8, 0.7}, "a/devnet": {0.6, 0.6, 0.6},
		"b/ahl": {0.5}, "b/devnet": {0.4},
	}
	for _, cls := range []string{"a", "b"} {
		for _, meth := range []string{"ahl", "devnet"} {
			for s, v := range auroc[cls+"/"+meth] {
				mx := map[string]string{"seen_class": cls, "method": meth, "seed": fmt.Sprint(s)}
				rec := metricsTable(t, "auroc", "all", v, "auroc", "x", v/2, "auprc", "all", 1-v)
				ins = append(ins, memInput("evaluate", fmt.Sprint(mx), mx, map[string]arrow.RecordBatch{"metrics": rec}))
			}
		}
	}
	out := runKind(t, "report", nil, 0, ins...)
	rows, err := tables.DecodeResults(out["results"])
	if err != nil {
		t.Fatal(err)
	}
	// 2 settings x 2 methods x (auroc all, auroc x, auprc all), then the means over the seen
	// classes a and b: 2 methods x (auroc all, auprc all).
	if len(rows) != 16 {
		t.Fatalf("got %d rows, want 16: %+v", len(rows), rows)
	}
	find := func(set, meth, cls, met string) ReportResult {
		for _, r := range rows {
			if r.Setting == set && r.Method == meth && r.Class == cls && r.Metric == met {
				return r
			}
		}
		t.Fatalf("no row %s %s %s %s in %+v", set, meth, cls, met, rows)
		return ReportResult{}
	}
	const tol = 1e-12
	r := find("seen_class=a", "ahl", "all", "auroc")
	// mean 0.8, sample std sqrt(((0.1)^2 + 0 + (0.1)^2) / 2) = 0.1.
	if math.Abs(r.Mean-0.8) > tol || math.Abs(r.Std-0.1) > tol || r.N != 3 {
		t.Errorf("a/ahl/all/auroc = %+v, want mean 0.8 std 0.1 n 3", r)
	}
	r = find("seen_class=a", "ahl", "x", "auroc")
	if math.Abs(r.Mean-0.4) > tol || math.Abs(r.Std-0.05) > tol {
		t.Errorf("a/ahl/x/auroc = %+v, want mean 0.4 std 0.05", r)
	}
	r = find("seen_class=a", "devnet", "all", "auprc")
	if math.Abs(r.Mean-0.4) > tol || r.Std > tol || r.N != 3 {
		t.Errorf("a/devnet/all/auprc = %+v, want mean 0.4 std 0 n 3", r)
	}
	r = find("seen_class=b", "devnet", "all", "auroc")
	if r.Mean != 0.4 || r.Std != 0 || r.N != 1 {
		t.Errorf("b/devnet/all/auroc = %+v, want mean 0.4 std 0 n 1", r)
	}
	// Rows are sorted: setting, then class "all" first, then method, then metric.
	if rows[0].Setting != "seen_class=a" || rows[0].Class != "all" || rows[0].Method != "ahl" || rows[0].Metric != "auprc" {
		t.Errorf("first row %+v", rows[0])
	}
	if rows[11].Setting != "seen_class=b" || rows[11].Class != "x" {
		t.Errorf("last per-setting row %+v", rows[11])
	}
	// The mean over seen classes of the per-setting means: ahl auroc (0.8 + 0.5) / 2, std the
	// sample std of {0.8, 0.5}; n counts settings, not seeds.
	r = find("seen_class=mean", "ahl", "all", "auroc")
	if math.Abs(r.Mean-0.65) > tol || math.Abs(r.Std-0.15*math.Sqrt2) > tol || r.N != 2 {
		t.Errorf("mean/ahl/all/auroc = %+v, want mean 0.65 std %.4f n 2", r, 0.15*math.Sqrt2)
	}
	for _, r := range rows[12:] {
		if r.Setting != "seen_class=mean" || r.Class != "all" {
			t.Errorf("row %+v after the per-setting rows, want a seen_class=mean row of class all", r)
		}
	}
}

func TestReportMethodFromMetadataAndLogs(t *testing.T) {
	rec := metricsTable(t, "auroc", "all", 0.75)
	rec = withMeta(rec, map[string]string{modelMethodKey: "ahl", modelHeadKey: "dra"})
	roc, err := artifacts.NewTable(artifacts.Strings("class", []string{"all", "all"}),
		artifacts.Float64s("fpr", []float64{0, 1}), artifacts.Float64s("tpr", []float64{0, 1}),
		artifacts.Float64s("threshold", []float64{math.Inf(1), 0}))
	if err != nil {
		t.Fatal(err)
	}
	lg, err := artifacts.NewTable(artifacts.Int64s("epoch", []int64{0, 0}), artifacts.Int64s("task", []int64{0, 1}),
		artifacts.Float64s("query_loss", []float64{1.5, 2.5}), artifacts.Float64s("weight", []float64{0.5, 0.5}),
		artifacts.Float64s("seconds", []float64{1, 1}))
	if err != nil {
		t.Fatal(err)
	}
	mx := map[string]string{"seed": "3"}
	out := runKind(t, "report", &ReportParams{Replicates: []string{"seed"}, MethodKey: "method", Setting: "hard M=1"}, 0,
		memInput("evaluate", "seed=3", mx, map[string]arrow.RecordBatch{"metrics": rec, "roc": roc}),
		memInput("train", "seed=3", mx, map[string]arrow.RecordBatch{"model": rec, "log": withMeta(lg, map[string]string{modelMethodKey: "ahl", modelHeadKey: "dra"})}))
	rows, err := tables.DecodeResults(out["results"])
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0].Method != "ahl/dra" || rows[0].Setting != "hard M=1" || rows[0].Mean != 0.75 {
		t.Fatalf("rows %+v, want one ahl/dra row in setting %q", rows, "hard M=1")
	}
	if out["roc"].NumRows() != 2 {
		t.Errorf("roc has %d rows, want 2", out["roc"].NumRows())
	}
	reps, _ := artifacts.StringCol(out["log"], "replicate")
	loss, _ := artifacts.Float64Col(out["log"], "query_loss")
	if len(reps) != 2 || reps[0] != "seed=3" || loss[1] != 2.5 {
		t.Errorf("log replicate %v loss %v", reps, loss)
	}
}

func TestReportErrors(t *testing.T) {
	if _, err := tryKind("report", nil, 0); err == nil || !strings.Contains(err.Error(), "no evaluate instance") {
		t.Errorf("no inputs: err = %v", err)
	}
	bad := metricsTable(t, "auroc", "all", 0.5)
	in := memInput("evaluate", "", nil, map[string]arrow.RecordBatch{"scores": bad})
	if _, err := tryKind("report", nil, 0, in); err == nil || !strings.Contains(err.Error(), "neither a metrics nor a log") {
		t.Errorf("wrong input: err = %v", err)
	}
	p := &ReportParams{Replicates: []string{"method"}, MethodKey: "method"}
	if err := p.Validate(); err == nil {
		t.Error("replicates containing method_key should not validate")
	}
}

func TestValidationWarnings(t *testing.T) {
	v := func(setting, method, class string, mean float64) ReportResult {
		return ReportResult{Setting: setting, Method: method, Class: class, Metric: ValidationPrefix + "auroc", Mean: mean, N: 3}
	}
	rows := []ReportResult{
		// a: pseudo-only validation (no class real): judged on class all.
		v("a", "knn", "all", 0.80), v("a", "ahl", "all", 0.85), v("a", "devnet", "all", 0.70),
		v("b", "ahl", "all", 0.55), v("b", "devnet", "all", 0.65),
		{Setting: "a", Method: "devnet", Class: "all", Metric: "auroc", Mean: 0.1, N: 3}, // test, not validation
		// c: class real present: judged on it, not on class all (where the heads lead).
		v("c", "knn", "all", 0.90), v("c", "ahl", "all", 0.95), v("c", "devnet", "all", 0.96),
		v("c", "knn", ValidationReal, 0.80), v("c", "ahl", ValidationReal, 0.75), v("c", "devnet", ValidationReal, 0.85),
		v("c", "ahl", ValidationPseudo, 0.99),
	}
	got := ValidationWarnings(rows)
	if len(got) != 5 {
		t.Fatalf("got %d warnings %q, want 5 (a and b pseudo only, a devnet below knn, b ahl below 0.6, c ahl below knn on real)", len(got), got)
	}
	for i, set := range []string{"a", "b"} {
		if !strings.HasPrefix(got[i], set+": the validation split holds no labelled anomaly") {
			t.Errorf("line %d %q, want setting %s's pseudo-only note", i, got[i], set)
		}
	}
	got = got[2:]
	if !strings.Contains(got[0], "a, method devnet") || !strings.Contains(got[0], "below knn's 0.800") || strings.Contains(got[0], "below 0.6") ||
		!strings.Contains(got[0], "pseudo anomalies only") {
		t.Errorf("warning %q, want setting a devnet below knn only, on pseudo anomalies only", got[0])
	}
	if !strings.Contains(got[1], "b, method ahl") || !strings.Contains(got[1], "below 0.6") {
		t.Errorf("warning %q, want setting b ahl below 0.6", got[1])
	}
	if !strings.Contains(got[2], "c, method ahl") || !strings.Contains(got[2], "0.750") || !strings.Contains(got[2], "below knn's 0.800") ||
		!strings.Contains(got[2], "class real") {
		t.Errorf("warning %q, want setting c ahl at 0.750 on class real, below knn's 0.800", got[2])
	}
}

// TestSeenClassMeansValidation: the mean over seen classes covers the validation metric's
// classes real and pseudo (every seen class has them), but of the test metric only class
// all (the per-class test rows name different classes per seen class).
func TestSeenClassMeansValidation(t *testing.T) {
	r := func(set, class, metric string, mean float64) ReportResult {
		return ReportResult{Setting: set, Method: "ahl", Class: class, Metric: metric, Mean: mean, N: 3}
	}
	rows := []ReportResult{
		r("h seen_class=a", "all", "auroc", 0.6), r("h seen_class=b", "all", "auroc", 0.8),
		r("h seen_class=a", "b", "auroc", 0.6), r("h seen_class=b", "a", "auroc", 0.8),
		r("h seen_class=a", ValidationReal, ValidationPrefix+"auroc", 0.7), r("h seen_class=b", ValidationReal, ValidationPrefix+"auroc", 0.9),
	}
	got := map[string]float64{}
	for _, x := range SeenClassMeans(rows)[len(rows):] {
		got[x.Class+" "+x.Metric] = x.Mean
	}
	if len(got) != 2 || math.Abs(got["all auroc"]-0.7) > 1e-12 || math.Abs(got[ValidationReal+" "+ValidationPrefix+"auroc"]-0.8) > 1e-12 {
		t.Errorf("seen-class means %v, want all auroc 0.7 and real val_auroc 0.8 only", got)
	}
	if w := ValidationWarnings(SeenClassMeans(rows)); len(w) != 0 {
		t.Errorf("warnings %q, want none (real validation rows in every setting, including the mean)", w)
	}
}

func TestSweepMeans(t *testing.T) {
	r := func(set, method, class string, mean float64) ReportResult {
		return ReportResult{Setting: set, Method: method, Class: class, Metric: "auroc", Mean: mean, Std: 0.1, N: 3}
	}
	rows := []ReportResult{
		r("g C=1 T=1", "ahl", "all", 0.6), r("g C=2 T=1", "ahl", "all", 0.8),
		r("g C=1 T=3", "ahl", "all", 0.7), r("g C=2 T=3", "ahl", "all", 0.9),
		r("g C=1 T=1", "ahl", "mono", 0.1), // not class all: not swept
	}
	got := SweepMeans(rows, []string{"T", "C"})
	if len(got) != len(rows)+4 {
		t.Fatalf("got %d rows, want %d: %+v", len(got), len(rows)+4, got)
	}
	// Mean and sample std over the two settings' means.
	want := map[string][2]float64{
		"g sweep=T T=1 C=mean": {0.7, math.Sqrt(0.02)}, "g sweep=T T=3 C=mean": {0.8, math.Sqrt(0.02)},
		"g sweep=C C=1 T=mean": {0.65, math.Sqrt(0.005)}, "g sweep=C C=2 T=mean": {0.85, math.Sqrt(0.005)},
	}
	for _, g := range got[len(rows):] {
		w, ok := want[g.Setting]
		if !ok || math.Abs(g.Mean-w[0]) > 1e-12 || math.Abs(g.Std-w[1]) > 1e-12 || g.N != 2 || g.Class != "all" || g.Method != "ahl" {
			t.Errorf("sweep row %+v, want one of %v (mean, std) over n=2", g, want)
		}
	}
	if got := SweepMeans(rows, nil); len(got) != len(rows) {
		t.Errorf("no sweep: %d rows, want %d", len(got), len(rows))
	}
}
