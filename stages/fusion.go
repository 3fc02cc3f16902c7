package stages

import (
	"errors"
	"fmt"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/fusion"
	"github.com/pipe-ahl/pipe/kind"
)

// FusionKNN is train.fusion's one value: fuse a head's scores with knn's.
const FusionKNN = "knn"

// The validation table's row of a fused model: metric head_weight, class fusion, the head's
// share w of its score (0 when the guard dropped the head).
const (
	MetricHeadWeight = "head_weight"
	ClassFusion      = "fusion"
)

// DefaultFusionWeight is the head's share of a fused score when fusion_weight is not set:
// equal shares of the two standardised scores.
const DefaultFusionWeight = 0.5

// fuseWithKNN makes m, a trained head model, score by fusing its heads' scores with knn's
// (train.fusion: knn; docs/algorithm.md "Score fusion"): it fits knn to the training normals
// and standardises each detector by its scores of the validation normals, which neither has
// seen. It logs the validation AUROC of the fused score for a range of head weights beside
// the chosen one's, so a user sees how much each detector contributes.
func fuseWithKNN(env *kind.Env, p *TrainParams, m *model, d *trainData, val *validationSet) error {
	if val == nil {
		return errors.New("fusion: knn standardises the scores on the validation normals, and this run has none; set ingest's validation (e.g. 0.2) or drop train's fusion")
	}
	k, err := fitKNN(d, p.Neighbours)
	if err != nil {
		return fmt.Errorf("fusion: %w", err)
	}
	ref, err := batch.Ref(d.Pool, rowsOf(d.Pool, d.Normals))
	if err != nil {
		return err
	}
	m.KNN = k
	all := batch.AllRows(val.Set.Len())
	hs, err := m.headScores(val.Set, all, ref, 64)
	if err != nil {
		return err
	}
	ks, err := m.knnScores(val.Set, all, 64)
	if err != nil {
		return err
	}
	isNormal := setOf(val.Normals)
	var hn, kn []float64
	for i, id := range val.Set.IDs {
		if isNormal[id] {
			hn, kn = append(hn, hs[i]), append(kn, ks[i])
		}
	}
	f := fusion.Fusion{HeadWeight: cmpOrFloat(p.FusionWeight, DefaultFusionWeight)}
	if f.Head, err = fusion.FitScale(hn); err != nil {
		return fmt.Errorf("fusion: the head's scores of the validation normals: %w", err)
	}
	if f.KNN, err = fusion.FitScale(kn); err != nil {
		return fmt.Errorf("fusion: knn's distances of the validation normals: %w", err)
	}
	fmt.Fprintf(env.Log, "fusion with knn (k = %d over %d training normals): on the %d validation normals head %.4g ± %.4g, knn %.4g ± %.4g\n",
		k.K, k.N, len(hn), f.Head.Mean, f.Head.Std, f.KNN.Mean, f.KNN.Std)
	var headReal float64
	var hasReal bool
	for _, w := range []float64{0, 0.25, 0.5, 0.75, 1} {
		g := f
		g.HeadWeight = w
		s, err := g.Scores(hs, ks)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("fusion: head weight %.2f:", w)
		for _, class := range []string{ValidationReal, ValidationPseudo} {
			v, nNormal, nAnomaly, err := val.auroc(s, class)
			if err != nil {
				return err
			}
			if nNormal > 0 && nAnomaly > 0 {
				line += fmt.Sprintf(" validation AUROC %s %.3f", class, v)
				if w == 1 && class == ValidationReal {
					headReal, hasReal = v, true
				}
			}
		}
		fmt.Fprintln(env.Log, line)
	}
	// A head that ranks the held-out real defects below the held-out normals has learnt the
	// wrong cue (docs/algorithm.md, "Score fusion"): it is not used, and the model scores as
	// knn alone. The model's metadata records head weight 0, and pipe report says so.
	if hasReal && headReal < 0.5 {
		f.HeadWeight = 0
		fmt.Fprintf(env.Log, "fusion: the head alone has validation AUROC %.3f on the held-out labelled anomalies, below chance: it is dropped (head weight 0) and this model scores as knn alone\n", headReal)
	}
	fmt.Fprintf(env.Log, "fusion: head weight %g\n", f.HeadWeight)
	m.Fusion = &f
	return nil
}

func cmpOrFloat(v, def float64) float64 {
	if v != 0 {
		return v
	}
	return def
}
