package stages

import (
	"errors"
	"fmt"

	"strings"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/fusion"
	"github.com/pipe-ahl/pipe/ahl/knn"
	"github.com/pipe-ahl/pipe/kind"
)

// train.fusion's values: FusionKNN fuses a trained head's scores with knn's afterwards;
// FusionResidual trains the head as a residual over knn's standardised distance, and scores
// by their sum.
const (
	FusionKNN      = "knn"
	FusionResidual = "knn-residual"
)

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
	m.Fusion, m.FusionMode = &f, FusionKNN
	return nil
}

// residualOffsets prepares a head's training as a residual over knn (train.fusion:
// knn-residual; docs/algorithm.md "Score fusion"): it fits knn to the training normals and
// returns it, the scale that standardises its distances, and every pool row's offset, its
// standardised knn distance. A training normal is scored without itself and a pseudo
// anomaly without the normal it was made from (leave-one-out), so that each offset is what
// knn would give an image it has not seen; the scale is the mean and standard deviation of
// the training normals' leave-one-out distances, so that it needs no validation split.
func residualOffsets(env *kind.Env, p *TrainParams, d *trainData) (knn.Model, fusion.Scale, []float32, error) {
	k, err := fitKNN(d, p.Neighbours)
	if err != nil {
		return k, fusion.Scale{}, nil, fmt.Errorf("fusion: %w", err)
	}
	normalAt := make(map[string]int, len(d.Normals))
	for i, id := range d.Normals {
		normalAt[id] = i
	}
	exclude := make([]int, d.Pool.Len())
	for r, id := range d.Pool.IDs {
		src, _, _ := strings.Cut(id, "#") // a pseudo anomaly is <source id>#<generator>
		exclude[r] = -1
		if i, ok := normalAt[src]; ok {
			exclude[r] = i
		}
	}
	dist, err := k.ScoresExcluding(d.Pool.Scales, exclude)
	if err != nil {
		return k, fusion.Scale{}, nil, fmt.Errorf("fusion: %w", err)
	}
	var normal []float64
	for r, id := range d.Pool.IDs {
		if _, ok := normalAt[id]; ok {
			normal = append(normal, dist[r])
		}
	}
	sc, err := fusion.FitScale(normal)
	if err != nil {
		return k, sc, nil, fmt.Errorf("fusion: knn's leave-one-out distances of the training normals: %w", err)
	}
	offset := make([]float32, len(dist))
	for r, v := range dist {
		offset[r] = float32(sc.Z(v))
	}
	fmt.Fprintf(env.Log, "residual over knn (k = %d over %d training normals): leave-one-out distances of the training normals %.4g ± %.4g\n",
		k.K, k.N, sc.Mean, sc.Std)
	return k, sc, offset, nil
}

// finishResidual makes m, a head trained as a residual over knn, score as the head's score
// plus knn's standardised distance. When the model ranks the validation split's held-out
// labelled anomalies below its held-out normals, the head is dropped (head weight 0: the
// model scores as knn alone), as fuseWithKNN drops a head below chance.
func finishResidual(env *kind.Env, m *model, k knn.Model, sc fusion.Scale, d *trainData, val *validationSet) error {
	m.KNN, m.FusionMode = k, FusionResidual
	m.Fusion = &fusion.Fusion{HeadWeight: 1, Head: fusion.Scale{Mean: 0, Std: 1}, KNN: sc}
	if val == nil {
		return nil
	}
	ref, err := batch.Ref(d.Pool, rowsOf(d.Pool, d.Normals))
	if err != nil {
		return err
	}
	all := batch.AllRows(val.Set.Len())
	s, err := m.scoreRows(val.Set, all, ref, 64)
	if err != nil {
		return err
	}
	real, nNormal, nAnomaly, err := val.auroc(s, ValidationReal)
	if err != nil {
		return err
	}
	if nNormal > 0 && nAnomaly > 0 && real < 0.5 {
		m.Fusion.HeadWeight = 0
		fmt.Fprintf(env.Log, "fusion: the residual model has validation AUROC %.3f on the held-out labelled anomalies, below chance: its head is dropped (head weight 0) and this model scores as knn alone\n", real)
	}
	return nil
}

// residualScores is the score of a head trained as a residual over knn: the head's score
// plus knn's standardised distance, or knn's alone when the head was dropped.
func residualScores(f *fusion.Fusion, head, dist []float64) ([]float64, error) {
	if len(head) != len(dist) {
		return nil, fmt.Errorf("fusion: %d head scores and %d knn scores", len(head), len(dist))
	}
	out := make([]float64, len(head))
	for i := range head {
		out[i] = f.KNN.Z(dist[i])
		if f.HeadWeight != 0 {
			out[i] += head[i]
		}
	}
	return out, nil
}

func cmpOrFloat(v, def float64) float64 {
	if v != 0 {
		return v
	}
	return def
}
