// Package fusion combines a supervised head's anomaly scores with the unsupervised knn
// baseline's (docs/algorithm.md, "Score fusion"). Each detector's score is standardised by
// the mean and standard deviation of its scores on held-out normals (images neither was
// trained on), so that both speak in the same unit, "standard deviations above a normal
// image", and the fused score is their weighted sum
//
//	s(x) = w * (g(x) - mu_g) / sigma_g + (1 - w) * (k(x) - mu_k) / sigma_k
//
// where g is the head, k the knn distance and w the head's share. w = 1 is the head alone,
// w = 0 knn alone (up to a monotone map, so the AUROC of either is unchanged).
package fusion

import (
	"fmt"
	"math"
)

// Scale is an affine standardisation: the mean and standard deviation of one detector's
// scores on normal images.
type Scale struct {
	Mean, Std float64
}

// FitScale returns the mean and the sample standard deviation (n - 1) of normal images'
// scores. It is an error when there are fewer than two scores, a score is not finite, or all
// scores are equal (no spread to standardise by).
func FitScale(normal []float64) (Scale, error) {
	n := len(normal)
	if n < 2 {
		return Scale{}, fmt.Errorf("fusion: %d normal scores, want at least 2 to estimate a spread", n)
	}
	var sum float64
	for i, v := range normal {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Scale{}, fmt.Errorf("fusion: normal score %d is %v", i, v)
		}
		sum += v
	}
	mean := sum / float64(n)
	var ss float64
	for _, v := range normal {
		ss += (v - mean) * (v - mean)
	}
	std := math.Sqrt(ss / float64(n-1))
	if std == 0 || math.IsNaN(std) || math.IsInf(std, 0) {
		return Scale{}, fmt.Errorf("fusion: the %d normal scores have no usable spread (std %v)", n, std)
	}
	return Scale{Mean: mean, Std: std}, nil
}

// Z returns v in standard deviations above the normals' mean.
func (s Scale) Z(v float64) float64 { return (v - s.Mean) / s.Std }

// Fusion is a fitted combination of a head's scores and knn's.
type Fusion struct {
	Head, KNN Scale
	// HeadWeight is w, the head's share in [0, 1].
	HeadWeight float64
}

// Check reports why f cannot fuse scores: a weight outside [0, 1] or a scale whose standard
// deviation is not positive and finite.
func (f Fusion) Check() error {
	if !(f.HeadWeight >= 0 && f.HeadWeight <= 1) {
		return fmt.Errorf("fusion: head weight %v, want 0 <= w <= 1", f.HeadWeight)
	}
	for _, s := range []struct {
		name string
		sc   Scale
	}{{"head", f.Head}, {"knn", f.KNN}} {
		if !(s.sc.Std > 0) || math.IsInf(s.sc.Std, 0) || math.IsNaN(s.sc.Mean) || math.IsInf(s.sc.Mean, 0) {
			return fmt.Errorf("fusion: %s scale mean %v, std %v; want a finite mean and a positive, finite std", s.name, s.sc.Mean, s.sc.Std)
		}
	}
	return nil
}

// Scores returns the fused score of each image from its head score and its knn score (same
// length and order).
func (f Fusion) Scores(head, knn []float64) ([]float64, error) {
	if len(head) != len(knn) {
		return nil, fmt.Errorf("fusion: %d head scores and %d knn scores", len(head), len(knn))
	}
	if err := f.Check(); err != nil {
		return nil, err
	}
	out := make([]float64, len(head))
	for i := range head {
		out[i] = f.HeadWeight*f.Head.Z(head[i]) + (1-f.HeadWeight)*f.KNN.Z(knn[i])
	}
	return out, nil
}
