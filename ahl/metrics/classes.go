package metrics

import (
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/gonum/stat"
)

// All is the Class of the result over every test image.
const All = "all"

// ClassResult is the detection quality on normals versus the anomalies of one class (or of
// every class, when Class is All).
type ClassResult struct {
	Class     string
	Normals   int // number of normal images scored
	Anomalies int // number of anomalies of Class scored
	AUROC     float64
	AUPRC     float64
}

// ByClass evaluates one test set. labels[i] is 0 for a normal image and 1 for an anomaly;
// classes[i] names image i's anomaly class (ignored for normals). The first result is over
// all images (Class All); then one result per anomaly class, in sorted class order, over all
// normals and that class's anomalies only. It is an error when there are no normals or no
// anomalies, or when a label is neither 0 nor 1.
func ByClass(scores []float64, labels []int, classes []string) ([]ClassResult, error) {
	if len(labels) != len(scores) || len(classes) != len(scores) {
		return nil, fmt.Errorf("metrics: %d scores, %d labels and %d classes: lengths differ", len(scores), len(labels), len(classes))
	}
	positive := make([]bool, len(labels))
	byClass := map[string][]int{}
	var normals []int
	for i, l := range labels {
		switch l {
		case 0:
			normals = append(normals, i)
		case 1:
			positive[i] = true
			byClass[classes[i]] = append(byClass[classes[i]], i)
		default:
			return nil, fmt.Errorf("metrics: label %d of image %d is not 0 (normal) or 1 (anomaly)", l, i)
		}
	}
	all, err := evaluate(All, scores, positive, len(normals), len(scores)-len(normals))
	if err != nil {
		return nil, err
	}
	out := []ClassResult{all}
	names := make([]string, 0, len(byClass))
	for c := range byClass {
		names = append(names, c)
	}
	sort.Strings(names)
	for _, c := range names {
		idx := append(append([]int(nil), normals...), byClass[c]...)
		s := make([]float64, len(idx))
		p := make([]bool, len(idx))
		for j, i := range idx {
			s[j], p[j] = scores[i], positive[i]
		}
		r, err := evaluate(c, s, p, len(normals), len(byClass[c]))
		if err != nil {
			return nil, fmt.Errorf("metrics: class %q: %w", c, err)
		}
		out = append(out, r)
	}
	return out, nil
}

func evaluate(class string, scores []float64, positive []bool, normals, anomalies int) (ClassResult, error) {
	auroc, err := AUROC(scores, positive)
	if err != nil {
		return ClassResult{}, err
	}
	auprc, err := AveragePrecision(scores, positive)
	if err != nil {
		return ClassResult{}, err
	}
	return ClassResult{Class: class, Normals: normals, Anomalies: anomalies, AUROC: auroc, AUPRC: auprc}, nil
}

// Summary is the mean and standard deviation of one figure over N runs.
type Summary struct {
	N         int
	Mean, Std float64
}

// Summarize returns the mean and the sample standard deviation (ddof = 1, divisor N - 1, gonum's
// stat.MeanStdDev) of values, one per run. The sample form is the usual estimate of the
// run-to-run spread when the runs are a small sample of all seeds (the paper averages 3); numpy's
// default np.std (ddof = 0) would report a spread smaller by sqrt((N-1)/N), 18% for N = 3. With a
// single run the spread is unknown; Std is then 0 and N = 1 says so. No values, or a NaN or
// infinite value, is an error.
func Summarize(values []float64) (Summary, error) {
	if len(values) == 0 {
		return Summary{}, fmt.Errorf("metrics: no values to summarize")
	}
	for i, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Summary{}, fmt.Errorf("metrics: value %d is %v", i, v)
		}
	}
	if len(values) == 1 {
		return Summary{N: 1, Mean: values[0]}, nil
	}
	mean, std := stat.MeanStdDev(values, nil)
	return Summary{N: len(values), Mean: mean, Std: std}, nil
}

// ClassSummary is one class's AUROC and AUPRC summarized over runs.
type ClassSummary struct {
	Class        string
	AUROC, AUPRC Summary
}

// SummarizeRuns groups the ByClass results of several runs (one slice per run) by class and
// summarizes each class's AUROC and AUPRC over the runs that have it (Summarize: mean and
// sample standard deviation). Classes come out with All first, then in sorted order. It is an
// error when there are no runs.
func SummarizeRuns(runs [][]ClassResult) ([]ClassSummary, error) {
	if len(runs) == 0 {
		return nil, fmt.Errorf("metrics: no runs to summarize")
	}
	auroc, auprc := map[string][]float64{}, map[string][]float64{}
	for _, run := range runs {
		for _, r := range run {
			auroc[r.Class] = append(auroc[r.Class], r.AUROC)
			auprc[r.Class] = append(auprc[r.Class], r.AUPRC)
		}
	}
	names := make([]string, 0, len(auroc))
	for c := range auroc {
		names = append(names, c)
	}
	sort.Slice(names, func(i, j int) bool {
		if (names[i] == All) != (names[j] == All) {
			return names[i] == All
		}
		return names[i] < names[j]
	})
	out := make([]ClassSummary, 0, len(names))
	for _, c := range names {
		a, err := Summarize(auroc[c])
		if err != nil {
			return nil, fmt.Errorf("metrics: class %q AUROC: %w", c, err)
		}
		p, err := Summarize(auprc[c])
		if err != nil {
			return nil, fmt.Errorf("metrics: class %q AUPRC: %w", c, err)
		}
		out = append(out, ClassSummary{Class: c, AUROC: a, AUPRC: p})
	}
	return out, nil
}
