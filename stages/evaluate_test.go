package stages

import (
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
)

func scoresTable(t *testing.T, ids []string, labels []int64, classes []string, scores []float64) arrow.RecordBatch {
	t.Helper()
	rec, err := artifacts.NewTable(artifacts.Strings("id", ids), artifacts.Int64s("label", labels),
		artifacts.Strings("class", classes), artifacts.Float64s("score", scores))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestEvaluateHandComputed(t *testing.T) {
	// Normals score 0.1 and 0.4; class a anomalies 0.35 and 0.8; class b 0.2.
	rec := scoresTable(t, []string{"n1", "n2", "a1", "a2", "b1"}, []int64{0, 0, 1, 1, 1},
		[]string{"good", "good", "a", "a", "b"}, []float64{0.1, 0.4, 0.35, 0.8, 0.2})
	rec = withMeta(rec, map[string]string{modelMethodKey: "devnet"})
	out := runKind(t, "evaluate", nil, 0, memInput("score", "", nil, map[string]arrow.RecordBatch{"scores": rec}))
	names, _ := artifacts.StringCol(out["metrics"], "metric")
	classes, _ := artifacts.StringCol(out["metrics"], "class")
	values, _ := artifacts.Float64Col(out["metrics"], "value")
	got := map[string]float64{}
	for i := range names {
		got[names[i]+"/"+classes[i]] = values[i]
	}
	want := map[string]float64{
		// AUROC = fraction of (anomaly, normal) pairs ordered right: all 4/6, a 3/4, b 1/2.
		"auroc/all": 4.0 / 6, "auroc/a": 0.75, "auroc/b": 0.5,
		// AP over descending thresholds: all 1/3*1 + 1/3*2/3 + 1/3*3/4; a 1/2*1 + 1/2*2/3;
		// b 1*1/2.
		"auprc/all": 29.0 / 36, "auprc/a": 0.5 + 1.0/3, "auprc/b": 0.5,
	}
	if len(got) != len(want) {
		t.Fatalf("metrics %v, want keys of %v", got, want)
	}
	for k, w := range want {
		if math.Abs(got[k]-w) > 1e-12 {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	if m := schemaMeta(out["metrics"], modelMethodKey); m != "devnet" {
		t.Errorf("metrics carry method %q, want devnet", m)
	}
	rc, _ := artifacts.StringCol(out["roc"], "class")
	fpr, _ := artifacts.Float64Col(out["roc"], "fpr")
	tpr, _ := artifacts.Float64Col(out["roc"], "tpr")
	// Class a's curve: +Inf then the 4 distinct scores of {n1, n2, a1, a2}.
	var a []int
	for i, c := range rc {
		if c == "a" {
			a = append(a, i)
		}
	}
	if len(a) != 5 {
		t.Fatalf("class a has %d roc points, want 5", len(a))
	}
	first, last := a[0], a[len(a)-1]
	if fpr[first] != 0 || tpr[first] != 0 || fpr[last] != 1 || tpr[last] != 1 {
		t.Errorf("class a roc runs from (%v,%v) to (%v,%v), want (0,0) to (1,1)", fpr[first], tpr[first], fpr[last], tpr[last])
	}
	// Thresholds 0.8: (0, 1/2); 0.4: (1/2, 1/2); 0.35: (1/2, 1); 0.1: (1, 1).
	wantF, wantT := []float64{0, 0, 0.5, 0.5, 1}, []float64{0, 0.5, 0.5, 1, 1}
	for j, i := range a {
		if math.Abs(fpr[i]-wantF[j]) > 1e-12 || math.Abs(tpr[i]-wantT[j]) > 1e-12 {
			t.Errorf("class a point %d = (%v, %v), want (%v, %v)", j, fpr[i], tpr[i], wantF[j], wantT[j])
		}
	}
}

func TestEvaluateErrors(t *testing.T) {
	onlyNormals := scoresTable(t, []string{"n1", "n2"}, []int64{0, 0}, []string{"good", "good"}, []float64{0.1, 0.2})
	_, err := tryKind("evaluate", nil, 0, memInput("score", "", nil, map[string]arrow.RecordBatch{"scores": onlyNormals}))
	if err == nil || !strings.Contains(err.Error(), "need both classes") {
		t.Errorf("only normals: err = %v", err)
	}
	_, err = tryKind("evaluate", nil, 0)
	if err == nil || !strings.Contains(err.Error(), `no input has a "scores" output`) {
		t.Errorf("no input: err = %v", err)
	}
	noScore, _ := artifacts.NewTable(artifacts.Strings("id", []string{"x"}))
	_, err = tryKind("evaluate", nil, 0, memInput("score", "", nil, map[string]arrow.RecordBatch{"scores": noScore}))
	if err == nil || !strings.Contains(err.Error(), "column") {
		t.Errorf("missing columns: err = %v", err)
	}
}
