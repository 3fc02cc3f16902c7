package stages

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/metrics"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// evaluateVersion is the evaluate stage's code version (part of its cache key).
const evaluateVersion = 1

// EvaluateParams configures the evaluate stage. It has no knobs: the metrics are the
// paper's (AUROC and AUPRC over all test images and per anomaly class).
type EvaluateParams struct{}

func init() {
	register(kind.Definition{
		Kind:    "evaluate",
		Version: evaluateVersion,
		Params:  func() any { return &EvaluateParams{} },
		Inputs:  kind.Inputs{Required: []string{"scores"}},
		Outputs: []string{"metrics", "roc"},
		Run:     runEvaluate,
	})
}

// runEvaluate reads the scores of the single upstream score instance and writes the metrics
// table (auroc and auprc for class "all" and for every anomaly class, each against all test
// normals) and the ROC points of the same classes (stages/TABLES.md).
func runEvaluate(ctx context.Context, env *kind.Env) error {
	in, err := env.With("scores")
	if err != nil {
		return err
	}
	rec, err := in.Open(ctx, "scores")
	if err != nil {
		return fmt.Errorf("input %s: %w", in.Stage, err)
	}
	defer rec.Release()
	ids, err1 := artifacts.StringCol(rec, "id")
	labels64, err2 := artifacts.Int64Col(rec, "label")
	classes, err3 := artifacts.StringCol(rec, "class")
	scores, err4 := artifacts.Float64Col(rec, "score")
	if err := firstErr(err1, err2, err3, err4); err != nil {
		return fmt.Errorf("input %s scores: %w", in.Stage, err)
	}
	labels := make([]int, len(labels64))
	for i, l := range labels64 {
		labels[i] = int(l)
	}
	results, err := metrics.ByClass(scores, labels, classes)
	if err != nil {
		return fmt.Errorf("%d scored images from %s: %w", len(ids), in.Stage, err)
	}
	var mName, mClass []string
	var mValue []float64
	for _, r := range results {
		mName = append(mName, "auroc", "auprc")
		mClass = append(mClass, r.Class, r.Class)
		mValue = append(mValue, r.AUROC, r.AUPRC)
	}
	mt, err := artifacts.NewTable(artifacts.Strings("metric", mName), artifacts.Strings("class", mClass), artifacts.Float64s("value", mValue))
	if err != nil {
		return err
	}
	meta := metaOf(rec, modelMethodKey, modelHeadKey)
	env.Output("metrics", withMeta(mt, meta))

	var rClass []string
	var fpr, tpr, thr []float64
	for _, r := range results {
		var s []float64
		var pos []bool
		for i := range scores {
			if labels[i] == 0 || r.Class == metrics.All || classes[i] == r.Class {
				s = append(s, scores[i])
				pos = append(pos, labels[i] != 0)
			}
		}
		c, err := metrics.ROC(s, pos)
		if err != nil {
			return fmt.Errorf("roc of class %q: %w", r.Class, err)
		}
		for range c.FPR {
			rClass = append(rClass, r.Class)
		}
		fpr = append(fpr, c.FPR...)
		tpr = append(tpr, c.TPR...)
		thr = append(thr, c.Thresholds...)
	}
	rt, err := artifacts.NewTable(artifacts.Strings("class", rClass), artifacts.Float64s("fpr", fpr),
		artifacts.Float64s("tpr", tpr), artifacts.Float64s("threshold", thr))
	if err != nil {
		return err
	}
	env.Output("roc", withMeta(rt, meta))
	fmt.Fprintf(env.Log, "%s: auroc %.4f auprc %.4f over %d normals and %d anomalies\n",
		env.Stage, results[0].AUROC, results[0].AUPRC, results[0].Normals, results[0].Anomalies)
	return nil
}

// metaOf returns the values of the given schema metadata keys that rec carries.
func metaOf(rec arrow.RecordBatch, keys ...string) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		if v := schemaMeta(rec, k); v != "" {
			out[k] = v
		}
	}
	return out
}
