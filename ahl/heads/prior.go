package heads

import (
	"math"
	"math/rand/v2"
)

// Deviation-loss constants (docs/algorithm.md, "Deviation loss"; DevNet, Pang et al. 2019).
const (
	PriorDraws = 5000 // l: draws from the N(0, 1) prior
	Margin     = 5    // m: the margin anomalies' deviations must exceed
)

// NewPrior draws l = 5000 values r ~ N(0, 1) from rng and returns their mean and standard
// deviation (the n-1 estimate, as torch.std computes it in DevNet) and the margin m = 5.
func NewPrior(rng *rand.Rand) Prior {
	r := make([]float64, PriorDraws)
	var sum float64
	for i := range r {
		r[i] = rng.NormFloat64()
		sum += r[i]
	}
	mean := sum / PriorDraws
	var ss float64
	for _, v := range r {
		ss += (v - mean) * (v - mean)
	}
	return Prior{Mean: float32(mean), Std: float32(math.Sqrt(ss / (PriorDraws - 1))), Margin: Margin}
}

// DeviationLoss is DevNet's deviation loss over n scores s with binary targets y (1 for the
// anomalous class): dev_i = (s_i - mean(r)) / std(r) and
//
//	L = (1/n) sum_i (1 - y_i) |dev_i| + y_i max(0, m - dev_i).
//
// When ds is not nil it receives dL/ds_i (len n; overwritten). At the kinks (dev = 0 and
// dev = m) it takes the zero subgradient. An empty batch has loss 0.
func DeviationLoss(s, y []float32, p Prior, ds []float32) float32 {
	if len(s) != len(y) || (ds != nil && len(ds) != len(s)) {
		panic("heads: DeviationLoss: scores, targets and gradient lengths differ")
	}
	n := len(s)
	if n == 0 {
		return 0
	}
	inv := 1 / float64(p.Std)
	var loss float64
	for i, si := range s {
		dev := (float64(si) - float64(p.Mean)) * inv
		yi := float64(y[i])
		var g float64 // dL_i / d dev
		if yi != 1 {
			loss += (1 - yi) * math.Abs(dev)
			switch {
			case dev > 0:
				g += 1 - yi
			case dev < 0:
				g -= 1 - yi
			}
		}
		if yi != 0 {
			if h := float64(p.Margin) - dev; h > 0 {
				loss += yi * h
				g -= yi
			}
		}
		if ds != nil {
			ds[i] = float32(g * inv / float64(n))
		}
	}
	return float32(loss / float64(n))
}
