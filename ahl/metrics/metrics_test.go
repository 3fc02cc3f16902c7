package metrics

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gonum.org/v1/gonum/integrate"
)

const tol = 1e-12

func bools(labels ...int) []bool {
	out := make([]bool, len(labels))
	for i, l := range labels {
		out[i] = l == 1
	}
	return out
}

// TestHandCases checks AUROC and AP against values computed by hand (comments show the work).
func TestHandCases(t *testing.T) {
	cases := []struct {
		scores      []float64
		labels      []int
		auroc, ap   float64
		description string
	}{
		// 1. Anomalies 0.35, 0.8; normals 0.1, 0.4. Pairs (anomaly > normal): 0.35>0.1,
		// 0.35<0.4, 0.8>0.1, 0.8>0.4: 3/4. AP, descending thresholds: 0.8 (tp1 fp0, R 1/2,
		// P 1) adds 1/2; 0.4 (tp1 fp1) recall unchanged; 0.35 (tp2 fp1, R 1, P 2/3) adds
		// 1/2*2/3; 0.1 unchanged. AP = 1/2 + 1/3 = 0.8333 (scikit-learn's value).
		{[]float64{0.1, 0.4, 0.35, 0.8}, []int{0, 0, 1, 1}, 0.75, 5.0 / 6, "sklearn doc example"},
		// 2. All tied: every pair counts 1/2, AUROC 1/2; one threshold with R 1, P 1/2: AP 1/2.
		{[]float64{0.5, 0.5, 0.5, 0.5}, []int{0, 1, 0, 1}, 0.5, 0.5, "all tied"},
		// 3. Anomalies 0.7, 0.7, 0.2; normals 0.9, 0.7. U: each anomaly at 0.7 loses to 0.9 and
		// ties 0.7 (1/2 each, 1 in all), 0.2 loses both: U = 1, AUROC 1/6. AP: 0.9 (tp0 fp1,
		// R 0) adds 0; 0.7 (tp2 fp2, R 2/3, P 1/2) adds 2/3*1/2 = 1/3; 0.2 (tp3 fp2, R 1,
		// P 3/5) adds 1/3*3/5 = 1/5. AP = 8/15.
		{[]float64{0.9, 0.7, 0.7, 0.7, 0.2}, []int{0, 1, 1, 0, 1}, 1.0 / 6, 8.0 / 15, "tie across classes"},
		// 4. Anomalies 0.9, 0.7, 0.7; normals 0.7, 0.2. U: 0.9 beats both (2), each 0.7 ties
		// 0.7 and beats 0.2 (3/2 each): U = 5, AUROC 5/6. AP: 0.9 (tp1 fp0, R 1/3, P 1)
		// adds 1/3; 0.7 (tp3 fp1, R 1, P 3/4) adds 2/3*3/4 = 1/2. AP = 5/6.
		{[]float64{0.9, 0.7, 0.7, 0.7, 0.2}, []int{1, 0, 1, 1, 0}, 5.0 / 6, 5.0 / 6, "tie, anomalies ahead"},
		// 5. Perfect separation: AUROC 1, AP 1. Reversed: AUROC 0; AP: the anomaly comes last
		// at threshold 0.1 with P 1/3: AP 1/3.
		{[]float64{0.9, 0.3, 0.2}, []int{1, 0, 0}, 1, 1, "perfect"},
		{[]float64{0.1, 0.3, 0.2}, []int{1, 0, 0}, 0, 1.0 / 3, "reversed"},
	}
	for i, c := range cases {
		auroc, err := AUROC(c.scores, bools(c.labels...))
		if err != nil {
			t.Fatalf("case %d (%s): %v", i+1, c.description, err)
		}
		ap, err := AveragePrecision(c.scores, bools(c.labels...))
		if err != nil {
			t.Fatalf("case %d (%s): %v", i+1, c.description, err)
		}
		if math.Abs(auroc-c.auroc) > tol {
			t.Errorf("case %d (%s): AUROC %v, want %v", i+1, c.description, auroc, c.auroc)
		}
		if math.Abs(ap-c.ap) > tol {
			t.Errorf("case %d (%s): AP %v, want %v", i+1, c.description, ap, c.ap)
		}
	}
}

// TestAUROCMatchesPairsAndTrapezoid compares the midrank AUROC with two independent
// definitions on random scores with many ties: the pairwise count (ties 1/2) and the trapezoidal
// area under gonum's ROC curve.
func TestAUROCMatchesPairsAndTrapezoid(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		n := 2 + rng.IntN(60)
		scores := make([]float64, n)
		pos := make([]bool, n)
		for i := range scores {
			scores[i] = float64(rng.IntN(8)) / 8 // few distinct values: many ties
			pos[i] = rng.IntN(3) == 0
		}
		pos[0], pos[1] = true, false
		var u, nPos, nNeg float64
		for i := range scores {
			if pos[i] {
				nPos++
			} else {
				nNeg++
			}
			for j := range scores {
				if pos[i] && !pos[j] {
					switch {
					case scores[i] > scores[j]:
						u++
					case scores[i] == scores[j]:
						u += 0.5
					}
				}
			}
		}
		want := u / (nPos * nNeg)
		got, err := AUROC(scores, pos)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-want) > 1e-12 {
			t.Fatalf("trial %d: AUROC %v, pairwise %v", trial, got, want)
		}
		curve, err := ROC(scores, pos)
		if err != nil {
			t.Fatal(err)
		}
		if area := integrate.Trapezoidal(curve.FPR, curve.TPR); math.Abs(area-want) > 1e-12 {
			t.Fatalf("trial %d: trapezoid %v, pairwise %v", trial, area, want)
		}
	}
}

// TestROCPoints checks the curve of the first hand case point by point: thresholds +Inf then
// the distinct scores descending, "anomaly when score >= threshold".
func TestROCPoints(t *testing.T) {
	c, err := ROC([]float64{0.1, 0.4, 0.35, 0.8}, bools(0, 0, 1, 1))
	if err != nil {
		t.Fatal(err)
	}
	thresh := []float64{math.Inf(1), 0.8, 0.4, 0.35, 0.1}
	tpr := []float64{0, 0.5, 0.5, 1, 1}
	fpr := []float64{0, 0, 0.5, 0.5, 1}
	if len(c.Thresholds) != len(thresh) || len(c.TPR) != len(tpr) || len(c.FPR) != len(fpr) {
		t.Fatalf("curve %+v, want %d points", c, len(thresh))
	}
	for i := range thresh {
		if c.Thresholds[i] != thresh[i] || math.Abs(c.TPR[i]-tpr[i]) > tol || math.Abs(c.FPR[i]-fpr[i]) > tol {
			t.Errorf("point %d: (thr %v, fpr %v, tpr %v), want (%v, %v, %v)", i, c.Thresholds[i], c.FPR[i], c.TPR[i], thresh[i], fpr[i], tpr[i])
		}
	}
	// Ties collapse into one point; the endpoints are (0, 0) and (1, 1).
	c, err = ROC([]float64{0.5, 0.5, 0.5}, bools(1, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.FPR) != 2 || c.FPR[0] != 0 || c.TPR[0] != 0 || c.FPR[1] != 1 || c.TPR[1] != 1 {
		t.Errorf("all-tied curve %+v, want (0,0) and (1,1)", c)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		scores []float64
		labels []bool
		want   string
	}{
		{[]float64{0.1, 0.2}, bools(0, 0), "need both classes"},
		{[]float64{0.1, 0.2}, bools(1, 1), "need both classes"},
		{nil, nil, "need both classes"},
		{[]float64{0.1}, bools(0, 1), "1 scores but 2 labels"},
		{[]float64{0.1, math.NaN()}, bools(0, 1), "score 1 is NaN"},
		{[]float64{math.Inf(1), 0.2}, bools(0, 1), "score 0 is +Inf"},
	}
	for i, c := range cases {
		_, err1 := AUROC(c.scores, c.labels)
		_, err2 := AveragePrecision(c.scores, c.labels)
		_, err3 := ROC(c.scores, c.labels)
		for _, err := range []error{err1, err2, err3} {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("case %d: error %v, want one containing %q", i+1, err, c.want)
			}
		}
	}
}

// TestByClass: normals 0.1, 0.2, 0.3; class a anomalies 0.25, 0.9; class b anomaly 0.05.
func TestByClass(t *testing.T) {
	scores := []float64{0.1, 0.25, 0.2, 0.9, 0.3, 0.05}
	labels := []int{0, 1, 0, 1, 0, 1}
	classes := []string{"good", "a", "good", "a", "good", "b"}
	got, err := ByClass(scores, labels, classes)
	if err != nil {
		t.Fatal(err)
	}
	want := []ClassResult{
		// all: 0.25 beats 2 normals, 0.9 beats 3, 0.05 none: 5/9. AP: 0.9 (R 1/3, P 1) 1/3;
		// 0.25 (tp2 fp1, R 2/3, P 2/3) 2/9; 0.05 (tp3 fp3, R 1, P 1/2) 1/6: 13/18.
		{Class: All, Normals: 3, Anomalies: 3, AUROC: 5.0 / 9, AUPRC: 13.0 / 18},
		// a: U = 2 + 3 = 5 of 6. AP: 0.9 (R 1/2, P 1) 1/2; 0.25 (tp2 fp1, R 1, P 2/3) 1/3.
		{Class: "a", Normals: 3, Anomalies: 2, AUROC: 5.0 / 6, AUPRC: 5.0 / 6},
		// b: the anomaly is lowest: AUROC 0; AP: R 1 at P 1/4.
		{Class: "b", Normals: 3, Anomalies: 1, AUROC: 0, AUPRC: 0.25},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d results %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Class != w.Class || g.Normals != w.Normals || g.Anomalies != w.Anomalies ||
			math.Abs(g.AUROC-w.AUROC) > tol || math.Abs(g.AUPRC-w.AUPRC) > tol {
			t.Errorf("result %d: %+v, want %+v", i, g, w)
		}
	}
	if _, err := ByClass([]float64{0.1, 0.2}, []int{0, 2}, []string{"", "x"}); err == nil || !strings.Contains(err.Error(), "label 2") {
		t.Errorf("label 2: error %v", err)
	}
	if _, err := ByClass([]float64{0.1, 0.2}, []int{1, 1}, []string{"x", "x"}); err == nil {
		t.Error("no normals: no error")
	}
	if _, err := ByClass([]float64{0.1}, []int{1, 1}, []string{"x"}); err == nil {
		t.Error("length mismatch: no error")
	}
}

func TestSummarize(t *testing.T) {
	// Mean 0.9; squared deviations 0.01, 0, 0.01; sample variance 0.02 / 2 = 0.01; std 0.1.
	s, err := Summarize([]float64{0.8, 0.9, 1.0})
	if err != nil {
		t.Fatal(err)
	}
	if s.N != 3 || math.Abs(s.Mean-0.9) > tol || math.Abs(s.Std-0.1) > tol {
		t.Errorf("summary %+v, want N 3, mean 0.9, std 0.1", s)
	}
	s, err = Summarize([]float64{0.7})
	if err != nil || s.N != 1 || s.Mean != 0.7 || s.Std != 0 {
		t.Errorf("one run: %+v, %v", s, err)
	}
	if _, err := Summarize(nil); err == nil {
		t.Error("no values: no error")
	}
	if _, err := Summarize([]float64{0.5, math.NaN()}); err == nil {
		t.Error("NaN: no error")
	}
}

func TestSummarizeRuns(t *testing.T) {
	runs := [][]ClassResult{
		{{Class: All, AUROC: 0.8, AUPRC: 0.5}, {Class: "b", AUROC: 0.6, AUPRC: 0.4}, {Class: "a", AUROC: 1, AUPRC: 1}},
		{{Class: All, AUROC: 0.9, AUPRC: 0.7}, {Class: "b", AUROC: 0.8, AUPRC: 0.2}},
		{{Class: All, AUROC: 1.0, AUPRC: 0.6}},
	}
	got, err := SummarizeRuns(runs)
	if err != nil {
		t.Fatal(err)
	}
	// all: AUROC 0.8, 0.9, 1.0 -> mean 0.9, std 0.1; AUPRC 0.5, 0.7, 0.6 -> mean 0.6, std 0.1.
	// a: one run. b: AUROC 0.6, 0.8 -> mean 0.7, std sqrt(0.02) (deviations 0.1, divisor 1);
	// AUPRC 0.4, 0.2 -> mean 0.3, std sqrt(0.02).
	want := []ClassSummary{
		{All, Summary{3, 0.9, 0.1}, Summary{3, 0.6, 0.1}},
		{"a", Summary{1, 1, 0}, Summary{1, 1, 0}},
		{"b", Summary{2, 0.7, math.Sqrt(0.02)}, Summary{2, 0.3, math.Sqrt(0.02)}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	close := func(a, b Summary) bool {
		return a.N == b.N && math.Abs(a.Mean-b.Mean) < 1e-12 && math.Abs(a.Std-b.Std) < 1e-12
	}
	for i := range want {
		if got[i].Class != want[i].Class || !close(got[i].AUROC, want[i].AUROC) || !close(got[i].AUPRC, want[i].AUPRC) {
			t.Errorf("class %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if _, err := SummarizeRuns(nil); err == nil {
		t.Error("no runs: no error")
	}
}
