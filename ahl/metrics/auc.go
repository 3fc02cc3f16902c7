// Package metrics scores anomaly detectors the way docs/algorithm.md ("Metrics") describes:
// AUROC with ties averaged, AUPRC as scikit-learn's average precision, ROC curve points, per
// anomaly class, and the mean and standard deviation over runs.
//
// Every function takes one score per image (higher means more anomalous) and one flag per image
// saying whether it is an anomaly (the positive class). Bad input (different lengths, a NaN or
// infinite score, no positives or no negatives) is an error, never a NaN result or a panic;
// scikit-learn rejects infinite scores too.
package metrics

import (
	"fmt"
	"math"
	"sort"

	"gonum.org/v1/gonum/stat"
)

// check validates scores and their positive flags and counts both classes.
func check(scores []float64, positive []bool) (nPos, nNeg int, err error) {
	if len(scores) != len(positive) {
		return 0, 0, fmt.Errorf("metrics: %d scores but %d labels", len(scores), len(positive))
	}
	for i, s := range scores {
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return 0, 0, fmt.Errorf("metrics: score %d is %v", i, s)
		}
		if positive[i] {
			nPos++
		} else {
			nNeg++
		}
	}
	if nPos == 0 || nNeg == 0 {
		return 0, 0, fmt.Errorf("metrics: need both classes, got %d anomalies and %d normals", nPos, nNeg)
	}
	return nPos, nNeg, nil
}

// order returns the indices of scores sorted by descending score (stable, so equal scores keep
// their input order; no result below depends on the order within a tie).
func order(scores []float64) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] > scores[idx[b]] })
	return idx
}

// AUROC returns the area under the ROC curve: the probability that a random anomaly scores
// higher than a random normal, ties counting one half. It is the Mann-Whitney U statistic of the
// anomalies' midranks, U / (nPos * nNeg) with U = sum of the anomalies' ranks - nPos(nPos+1)/2,
// where tied scores share the mean of the ranks they span. This equals the trapezoidal area
// under the ROC curve (scikit-learn's roc_auc_score).
func AUROC(scores []float64, positive []bool) (float64, error) {
	nPos, nNeg, err := check(scores, positive)
	if err != nil {
		return 0, err
	}
	idx := order(scores)
	// Ranks ascend with the score, so the highest score has rank n. Walk the descending order
	// one group of equal scores at a time; the group covering sorted positions [i, j) has
	// ascending ranks n-j+1 .. n-i, whose mean is n - (i+j-1)/2.
	n := len(scores)
	var rankSum float64
	for i := 0; i < n; {
		j := i + 1
		for j < n && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		mid := float64(n) - float64(i+j-1)/2
		for _, k := range idx[i:j] {
			if positive[k] {
				rankSum += mid
			}
		}
		i = j
	}
	u := rankSum - float64(nPos)*float64(nPos+1)/2
	return u / (float64(nPos) * float64(nNeg)), nil
}

// AveragePrecision returns the area under the precision-recall curve as scikit-learn's
// average_precision_score defines it: AP = sum_n (R_n - R_{n-1}) P_n over the distinct score
// thresholds t_n in descending order, where P_n and R_n are the precision and recall of "score
// >= t_n" and R_0 = 0. Tied scores form one threshold, so a tie is neither optimistic nor
// pessimistic; there is no interpolation between points.
func AveragePrecision(scores []float64, positive []bool) (float64, error) {
	nPos, _, err := check(scores, positive)
	if err != nil {
		return 0, err
	}
	idx := order(scores)
	var tp, fp int
	var ap, prevRecall float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			if positive[idx[j]] {
				tp++
			} else {
				fp++
			}
			j++
		}
		recall := float64(tp) / float64(nPos)
		precision := float64(tp) / float64(tp+fp)
		ap += (recall - prevRecall) * precision
		prevRecall = recall
		i = j
	}
	return ap, nil
}

// Curve is a ROC curve: point i is the false and true positive rate of the rule "anomaly when
// score >= Thresholds[i]". Thresholds descend: the first is +Inf (the point (0, 0)), then every
// distinct score, so the last point is (1, 1). This is scikit-learn's roc_curve with
// drop_intermediate=False.
type Curve struct {
	FPR, TPR, Thresholds []float64
}

// ROC returns the ROC curve of the scores, computed by gonum's stat.ROC.
func ROC(scores []float64, positive []bool) (Curve, error) {
	if _, _, err := check(scores, positive); err != nil {
		return Curve{}, err
	}
	y := append([]float64(nil), scores...)
	cls := append([]bool(nil), positive...)
	stat.SortWeightedLabeled(y, cls, nil)
	tpr, fpr, thresh := stat.ROC(nil, y, cls, nil)
	return Curve{FPR: fpr, TPR: tpr, Thresholds: thresh}, nil
}
