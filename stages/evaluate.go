package stages

import (
	"context"
	"fmt"

	"github.com/pipe-ahl/pipe/ahl/metrics"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
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
	rows, scoresMeta, err := tables.ReadScores(ctx, env)
	if err != nil {
		return err
	}
	n := len(rows)
	scores, labels, classes := make([]float64, n), make([]int, n), make([]string, n)
	for i, r := range rows {
		scores[i], labels[i], classes[i] = r.Score, int(r.Label), r.Class
	}
	results, err := metrics.ByClass(scores, labels, classes)
	if err != nil {
		return fmt.Errorf("%d scored images: %w", n, err)
	}
	var mt []tables.Metric
	for _, r := range results {
		mt = append(mt, tables.Metric{Metric: "auroc", Class: r.Class, Value: r.AUROC},
			tables.Metric{Metric: "auprc", Class: r.Class, Value: r.AUPRC})
	}
	meta := scoresMeta.Pick(tables.MethodKey, tables.HeadKey, tables.FusionKey)
	if err := tables.WriteMetrics(env, mt, meta); err != nil {
		return err
	}

	var roc []tables.ROCPoint
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
		for k := range c.FPR {
			roc = append(roc, tables.ROCPoint{Class: r.Class, FPR: c.FPR[k], TPR: c.TPR[k], Threshold: c.Thresholds[k]})
		}
	}
	if err := tables.WriteROC(env, roc, meta); err != nil {
		return err
	}
	fmt.Fprintf(env.Log, "auroc %.4f auprc %.4f over %d normals and %d anomalies\n",
		results[0].AUROC, results[0].AUPRC, results[0].Normals, results[0].Anomalies)
	return nil
}
