package psi

import (
	"math"
	"testing"
)

// TestGorgoniaReference checks the hand-written forward pass, loss and gradient against the
// gorgonia graph: the loss, every prediction and every gradient component. Both sides
// compute in float64 with the same operations in different orders (gorgonia's BLAS products
// and reductions against plain loops), so they differ only by rounding: a few hundred
// operations per value, each off by at most 1.1e-16 relative, through an LSTM whose
// derivatives are bounded by 1. A tolerance of 1e-9 relative plus 1e-12 absolute leaves
// orders of magnitude of margin over that (the largest difference seen is about 1e-16),
// while any wrong term (a swapped gate, a missed path through time) is off by the size of
// the gradient itself. K = 1 covers sequences of a single step, where U has no effect.
func TestGorgoniaReference(t *testing.T) {
	for _, tc := range []struct{ N, K, T int }{{6, 5, 4}, {6, 5, 7}, {3, 1, 3}} {
		m, err := New(tc.T, 11, uint64(tc.T), LR, WeightDecay)
		if err != nil {
			t.Fatal(err)
		}
		x, y := randomData(tc.N, tc.K, tc.T, 12)
		want := make([]float64, len(m.Weights()))
		wl := m.lossGrad(m.Weights(), x, y, want)
		wp, err := m.Predict(x)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]float64, len(want))
		gl, gp, err := GorgoniaLossGrad(m.Weights(), x, y, got)
		if err != nil {
			t.Fatalf("N=%d K=%d T=%d: %v", tc.N, tc.K, tc.T, err)
		}
		close := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Abs(b)+1e-12 }
		if !close(gl, wl) {
			t.Errorf("N=%d K=%d T=%d: gorgonia loss %v, psi %v", tc.N, tc.K, tc.T, gl, wl)
		}
		worst := 0.0
		for i := range wp {
			if !close(gp[i], wp[i]) {
				t.Errorf("N=%d K=%d T=%d: prediction %d: gorgonia %v, psi %v", tc.N, tc.K, tc.T, i, gp[i], wp[i])
			}
			worst = max(worst, math.Abs(gp[i]-wp[i]))
		}
		nonzero := 0
		for i := range want {
			if !close(got[i], want[i]) {
				t.Fatalf("N=%d K=%d T=%d: gradient %d: gorgonia %v, psi %v", tc.N, tc.K, tc.T, i, got[i], want[i])
			}
			worst = max(worst, math.Abs(got[i]-want[i]))
			if want[i] != 0 {
				nonzero++
			}
		}
		if nonzero < len(want)/2 {
			t.Errorf("N=%d K=%d T=%d: only %d of %d gradient components are nonzero; the comparison checks little", tc.N, tc.K, tc.T, nonzero, len(want))
		}
		t.Logf("N=%d K=%d T=%d: loss %.6f, %d weights (%d with nonzero gradient), largest difference %.2g",
			tc.N, tc.K, tc.T, wl, len(want), nonzero, worst)
	}
}

// TestGorgoniaErrors checks that bad shapes give errors, not panics.
func TestGorgoniaErrors(t *testing.T) {
	m, _ := New(3, 0, 0, LR, WeightDecay)
	x, y := randomData(2, 4, 3, 1)
	grad := make([]float64, len(m.Weights()))
	if _, _, err := GorgoniaLossGrad(m.Weights(), x, y[:5], grad); err == nil {
		t.Error("short targets accepted")
	}
	if _, _, err := GorgoniaLossGrad(m.Weights(), x, y, grad[:10]); err == nil {
		t.Error("short gradient accepted")
	}
	x.T = 4
	if _, _, err := GorgoniaLossGrad(m.Weights(), x, y, grad); err == nil {
		t.Error("sequences of the wrong shape accepted")
	}
}
