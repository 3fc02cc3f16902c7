package stages

import (
	"context"
	"fmt"

	"github.com/pipe-ahl/pipe/ahl/augment"
	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/metrics"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// The validation table's anomaly classes besides all: the held-out labelled anomalies (real
// defects; ingest holds out floor(validation x M) of them, none at M = 1) and the held-out
// normals' pseudo anomalies.
const (
	ValidationReal   = "real"
	ValidationPseudo = "pseudo"
)

// pseudoOf returns the ids of the pseudo anomalies of the given normals under every
// generator (`<normal id>#<generator>`, stages/TABLES.md), for a MapSource's Keep.
func pseudoOf(normals []string) map[string]bool {
	keep := make(map[string]bool, len(normals)*len(augment.Generators))
	for _, id := range normals {
		for _, g := range augment.Generators {
			keep[id+"#"+g] = true
		}
	}
	return keep
}

// scoreRows scores the given rows of set with m: knn by its distances, a head model by the
// mean of its members' scores against ref (the training normals' reference maps), fused
// with knn's distances when m.Fusion is set.
func (m *model) scoreRows(set fmap.Set, rows []int, ref []fmap.Maps, batchSize int) ([]float64, error) {
	if m.Method == MethodKNN {
		return m.knnScores(set, rows, batchSize)
	}
	s, err := m.headScores(set, rows, ref, batchSize)
	if err != nil || m.Fusion == nil {
		return s, err
	}
	k, err := m.knnScores(set, rows, batchSize)
	if err != nil {
		return nil, err
	}
	if m.FusionMode == FusionResidual {
		return residualScores(m.Fusion, s, k)
	}
	return m.Fusion.Scores(s, k)
}

// headScores returns the mean of m's heads' scores of the given rows, against ref.
func (m *model) headScores(set fmap.Set, rows []int, ref []fmap.Maps, batchSize int) ([]float64, error) {
	if m.Config.Channels != set.Scales[0].C {
		return nil, fmt.Errorf("the model's head takes %d channels, the features have %d (was the model trained on these features?)", m.Config.Channels, set.Scales[0].C)
	}
	head, err := m.newHead()
	if err != nil {
		return nil, err
	}
	out := make([]float64, len(rows))
	for _, theta := range m.Thetas {
		for i, v := range batch.Scores(head, theta, set, rows, ref, batchSize) {
			out[i] += float64(v) / float64(len(m.Thetas))
		}
	}
	return out, nil
}

// knnScores returns m.KNN's distances of the given rows, gathering batchSize rows at a time
// so that only a batch of maps is ever copied.
func (m *model) knnScores(set fmap.Set, rows []int, batchSize int) ([]float64, error) {
	out := make([]float64, 0, len(rows))
	for i := 0; i < len(rows); i += batchSize {
		s, err := m.KNN.Scores(set.Gather(rows[i:min(i+batchSize, len(rows))]).Scales)
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// validationSet is the validation split's images as train reads them: the held-out normals
// and labelled anomalies and the held-out normals' pseudo anomalies.
type validationSet struct {
	Set                fmap.Set
	Normals, Anomalies []string // ids of the held-out normals and labelled anomalies
}

// readValidation reads the maps of the validation split (ingest's `validation`); it returns
// nil when there is none.
func readValidation(ctx context.Context, env *kind.Env, valNormals, valAnomalies []string) (*validationSet, error) {
	if len(valNormals) == 0 {
		return nil, nil
	}
	srcs := []tables.MapSource{{Table: "features", Keep: setOf(append(append([]string(nil), valNormals...), valAnomalies...))}}
	if env.Has("pseudo") {
		srcs = append(srcs, tables.MapSource{Table: "pseudo", Keep: pseudoOf(valNormals)})
	}
	set, err := tables.ReadMaps(ctx, env, srcs...)
	if err != nil {
		return nil, fmt.Errorf("validation split: %w", err)
	}
	return &validationSet{Set: set, Normals: valNormals, Anomalies: valAnomalies}, nil
}

// auroc returns the AUROC of scores (one per image of v.Set) of the validation normals
// against one class of validation anomaly: all, ValidationReal (the held-out labelled
// anomalies) or ValidationPseudo (the held-out normals' pseudo anomalies), with the numbers
// of normals and anomalies it compared. When either number is 0 there is no AUROC: auc is
// 0 and err nil.
func (v *validationSet) auroc(scores []float64, class string) (auc float64, nNormal, nAnomaly int, err error) {
	isNormal, isSeen := setOf(v.Normals), setOf(v.Anomalies)
	var s []float64
	var positive []bool
	for i, id := range v.Set.IDs {
		anomaly := !isNormal[id] && (class == "all" || (class == ValidationReal) == isSeen[id])
		if isNormal[id] || anomaly {
			s, positive = append(s, scores[i]), append(positive, anomaly)
		}
		switch {
		case isNormal[id]:
			nNormal++
		case anomaly:
			nAnomaly++
		}
	}
	if nNormal == 0 || nAnomaly == 0 {
		return 0, nNormal, nAnomaly, nil
	}
	if auc, err = metrics.AUROC(s, positive); err != nil {
		return 0, nNormal, nAnomaly, fmt.Errorf("validation AUROC, class %s: %w", class, err)
	}
	return auc, nNormal, nAnomaly, nil
}

// rowsOf returns the rows of set that hold the given ids, in the ids' order.
func rowsOf(set fmap.Set, ids []string) []int {
	pos := make(map[string]int, set.Len())
	for i, id := range set.IDs {
		pos[id] = i
	}
	rows := make([]int, len(ids))
	for i, id := range ids {
		rows[i] = pos[id]
	}
	return rows
}

// validate scores the validation split val (held-out training normals and labelled
// anomalies, and the held-out normals' pseudo anomalies) with the trained model m and
// returns its AUROC rows: class all (normals against both kinds of anomaly), real
// (ValidationReal: against the held-out labelled anomalies, real defects) and pseudo
// (ValidationPseudo: against the pseudo anomalies), each when it has anomalies. No stage
// trains on these images: the features' convnet, the clusters, the tasks and the heads see
// split train only, so these figures say how m does on images it has not seen, without the
// test labels. (A fused model's scales are fitted on the validation normals' scores: that
// fixes the unit of each detector from normals alone and uses no anomaly.) It also logs the
// mean score of the training normals beside the validation normals': a gap there is the
// sign of features or a head fitted to the training normals (knn's training normals include
// themselves among their neighbours, so its gap is expected). No validation split (val nil)
// gives no rows.
func validate(env *kind.Env, m *model, d *trainData, val *validationSet) ([]tables.Metric, error) {
	if val == nil {
		return nil, nil
	}
	set := val.Set
	rows := batch.AllRows(set.Len())
	trainRows := rowsOf(d.Pool, d.Normals)
	var ref []fmap.Maps
	var err error
	if m.Method != MethodKNN {
		if ref, err = batch.Ref(d.Pool, trainRows); err != nil {
			return nil, err
		}
	}
	scores, err := m.scoreRows(set, rows, ref, 64)
	if err != nil {
		return nil, err
	}
	trainScores, err := m.scoreRows(d.Pool, trainRows, ref, 64)
	if err != nil {
		return nil, err
	}
	var out []tables.Metric
	for _, class := range []string{"all", ValidationReal, ValidationPseudo} {
		auc, nNormal, nAnomaly, err := val.auroc(scores, class)
		if err != nil {
			return nil, err
		}
		if nAnomaly == 0 || nNormal == 0 {
			continue
		}
		out = append(out, tables.Metric{Metric: "auroc", Class: class, Value: auc})
		fmt.Fprintf(env.Log, "%s: validation AUROC %s %.3f (%d normals, %d anomalies)\n", env.Stage, class, auc, nNormal, nAnomaly)
	}
	isNormal := setOf(val.Normals)
	var normalMean float64
	for i, id := range set.IDs {
		if isNormal[id] {
			normalMean += scores[i] / float64(len(val.Normals))
		}
	}
	fmt.Fprintf(env.Log, "%s: mean score: training normals %.4g, validation normals %.4g\n", env.Stage, mean(trainScores), normalMean)
	return out, nil
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(max(len(v), 1))
}
