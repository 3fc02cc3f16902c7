package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/stages"
	"github.com/pipe-ahl/pipe/stages/tables"
)

var reportRows = []stages.ReportResult{
	{Setting: "M=10 seen_class=mono", Method: "ahl", Class: "all", Metric: "auroc", Mean: 0.8, Std: 0.01, N: 3},
	{Setting: "M=10 seen_class=mono", Method: "devnet", Class: "all", Metric: "auroc", Mean: 0.7, Std: 0.02, N: 3},
	{Setting: "M=10 seen_class=mono", Method: "ahl", Class: "poly", Metric: "auroc", Mean: 0.75, Std: 0, N: 3},
	{Setting: "M=10 seen_class=poly", Method: "ahl", Class: "all", Metric: "auroc", Mean: 0.9, Std: 0.03, N: 3},
	{Setting: "M=10 seen_class=poly", Method: "devnet", Class: "all", Metric: "auroc", Mean: 0.6, Std: 0.04, N: 3},
	{Setting: "M=10 seen_class=mono", Method: "ahl", Class: "all", Metric: "auprc", Mean: 0.5, Std: 0.1, N: 3},
}

func TestResultsTableLayout(t *testing.T) {
	var b bytes.Buffer
	if err := writeResultsTable(&b, stages.SeenClassMeans(reportRows)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"AUPRC (mean ± std over 3 seed(s))",
		"AUROC (mean ± std over 3 seed(s))",
		"setting",
		"0.800 ± 0.010",
		"0.700 ± 0.020",
		// The mean over seen classes: ahl (0.8 + 0.9) / 2, devnet (0.7 + 0.6) / 2.
		"M=10 seen_class=mean",
		"0.850 ± 0.071",
		"0.650 ± 0.071",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// AUPRC has no devnet cell for mono: a dash.
	auprc := out[strings.Index(out, "AUPRC"):strings.Index(out, "AUROC")]
	if !strings.Contains(auprc, "-") {
		t.Errorf("missing cell not shown as '-':\n%s", auprc)
	}
	// Rows: class all before per-class rows, the mean row last.
	auroc := out[strings.Index(out, "AUROC"):]
	lines := strings.Split(strings.TrimSpace(auroc), "\n")
	if len(lines) != 6 || !strings.Contains(lines[2], "mono") || !strings.Contains(lines[2], "all") ||
		!strings.Contains(lines[3], "poly") || !strings.Contains(lines[5], "seen_class=mean") {
		t.Errorf("AUROC block rows out of order:\n%s", auroc)
	}
}

func TestResultsCSVAndJSON(t *testing.T) {
	var b bytes.Buffer
	if err := writeResultsCSV(&b, reportRows[:1]); err != nil {
		t.Fatal(err)
	}
	if want := "setting,method,class,metric,mean,std,n\nM=10 seen_class=mono,ahl,all,auroc,0.8,0.01,3\n"; b.String() != want {
		t.Errorf("csv = %q, want %q", b.String(), want)
	}
	b.Reset()
	if err := writeResultsJSON(&b, reportRows); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(reportRows) || got[0]["setting"] != "M=10 seen_class=mono" || got[0]["mean"] != 0.8 || got[0]["n"] != 3.0 {
		t.Errorf("json = %s", b.String())
	}
	for _, k := range []string{"setting", "method", "class", "metric", "mean", "std", "n"} {
		if _, ok := got[0][k]; !ok {
			t.Errorf("json object lacks %q", k)
		}
	}
}

// TestReportCommandFromStore stores a report stage's outputs under a head, as the pipeline
// does, and runs the command on a DAG file that names it.
func TestReportCommandFromStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	dag := filepath.Join(dir, "tiny.yaml")
	if err := os.WriteFile(dag, []byte("name: tiny\nstages:\n  summary: {kind: report}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	storeDir := filepath.Join(dir, "store")
	st, err := artifacts.Open(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tables.ResultsTable(reportRows)
	if err != nil {
		t.Fatal(err)
	}
	roc := mustTable(t, artifacts.Strings("setting", []string{"s", "s", "s", "s", "s", "s"}),
		artifacts.Strings("method", []string{"ahl", "ahl", "ahl", "devnet", "devnet", "devnet"}),
		artifacts.Strings("replicate", []string{"seed=0", "seed=0", "seed=0", "seed=0", "seed=0", "seed=0"}),
		artifacts.Strings("class", []string{"all", "all", "all", "all", "all", "all"}),
		artifacts.Float64s("fpr", []float64{0, 0.1, 1, 0, 0.5, 1}), artifacts.Float64s("tpr", []float64{0, 0.9, 1, 0, 0.6, 1}))
	var ls, lm, lr []string
	var le, lt []int64
	var lq, lw []float64
	for e := 0; e < 6; e++ {
		for task := 0; task < 3; task++ {
			ls, lm, lr = append(ls, "s"), append(lm, "ahl"), append(lr, "seed=0")
			le, lt = append(le, int64(e)), append(lt, int64(task))
			lq = append(lq, 1/float64(e+task+1))
			lw = append(lw, (1+0.1*float64(task*e))/(3+0.3*float64(e)))
		}
	}
	lg := mustTable(t, artifacts.Strings("setting", ls), artifacts.Strings("method", lm), artifacts.Strings("replicate", lr),
		artifacts.Int64s("epoch", le), artifacts.Int64s("task", lt), artifacts.Float64s("query_loss", lq), artifacts.Float64s("weight", lw))
	outs := map[string]artifacts.Output{}
	for name, rec := range map[string]arrow.RecordBatch{"results": res, "roc": roc, "log": lg} {
		_, o, err := artifacts.Put(ctx, st, rec)
		if err != nil {
			t.Fatal(err)
		}
		outs[name] = o
		rec.Release()
	}
	m := artifacts.Manifest{Key: "k1", Kind: "report", Version: 1, Outputs: outs, Created: time.Now()}
	rep, err := stages.LoadReportManifest(ctx, st, "tiny", "summary", m)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	plots := filepath.Join(dir, "plots")
	var stdout, stderr bytes.Buffer
	o := ReportOptions{Format: "json", Plots: plots, Store: storeDir}
	if err := printReport(o, "tiny", "summary", rep, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var got []stages.ReportResult
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(reportRows) || got[3] != reportRows[3] {
		t.Errorf("json results %+v, want %+v", got, reportRows)
	}
	for _, f := range []string{"roc_s.png", "weights_s_ahl.png", "query_loss_s_ahl.png"} {
		fi, err := os.Stat(filepath.Join(plots, f))
		if err != nil || fi.Size() < 1000 {
			t.Errorf("plot %s: %v (size %v)", f, err, fi)
		}
	}
	if os.Getenv("PIPE_KEEP_PLOTS") != "" {
		for _, f := range []string{"roc_s.png", "weights_s_ahl.png", "query_loss_s_ahl.png"} {
			b, err := os.ReadFile(filepath.Join(plots, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(os.Getenv("PIPE_KEEP_PLOTS"), f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	o = ReportOptions{Format: "xml", Store: storeDir}
	if err := runReportCommand(ctx, &cobra.Command{}, o, dag, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("bad format: err = %v", err)
	}
}

func mustTable(t *testing.T, cols ...artifacts.Col) arrow.RecordBatch {
	t.Helper()
	rec, err := artifacts.NewTable(cols...)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}
