package fusion

import (
	"math"
	"strings"
	"testing"
)

// TestFitScale checks the mean and the n-1 standard deviation against a hand computation:
// for 1, 2, 3, 4 the mean is 2.5 and the squared deviations sum to 5, so std = sqrt(5/3).
func TestFitScale(t *testing.T) {
	s, err := FitScale([]float64{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	if s.Mean != 2.5 || math.Abs(s.Std-math.Sqrt(5.0/3)) > 1e-15 {
		t.Errorf("scale %+v, want mean 2.5, std %v", s, math.Sqrt(5.0/3))
	}
	if z := s.Z(2.5 + 2*s.Std); math.Abs(z-2) > 1e-12 {
		t.Errorf("Z(mean + 2 std) = %v, want 2", z)
	}
	for _, tc := range []struct {
		in   []float64
		want string
	}{
		{[]float64{1}, "1 normal scores, want at least 2"},
		{[]float64{1, math.NaN()}, "normal score 1 is NaN"},
		{[]float64{1, math.Inf(1)}, "normal score 1 is +Inf"},
		{[]float64{3, 3, 3}, "no usable spread"},
	} {
		if _, err := FitScale(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("FitScale(%v): err %v, want %q", tc.in, err, tc.want)
		}
	}
}

// TestScores checks the fused score against hand-computed values, and that the weights'
// ends give the ranking of one detector alone.
func TestScores(t *testing.T) {
	f := Fusion{Head: Scale{Mean: 1, Std: 2}, KNN: Scale{Mean: 10, Std: 5}, HeadWeight: 0.25}
	// head 5 -> z 2, knn 20 -> z 2: 0.25*2 + 0.75*2 = 2; head 1 -> 0, knn 0 -> -2: -1.5;
	// head -3 -> -2, knn 15 -> 1: -0.5 + 0.75 = 0.25.
	got, err := f.Scores([]float64{5, 1, -3}, []float64{20, 0, 15})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []float64{2, -1.5, 0.25} {
		if math.Abs(got[i]-want) > 1e-12 {
			t.Errorf("fused score %d = %v, want %v", i, got[i], want)
		}
	}
	head, knn := []float64{3, 1, 2}, []float64{1, 2, 3}
	for _, tc := range []struct {
		w    float64
		rank []float64
	}{{1, head}, {0, knn}} {
		f.HeadWeight = tc.w
		s, err := f.Scores(head, knn)
		if err != nil {
			t.Fatal(err)
		}
		for i := range s {
			for j := range s {
				if (s[i] < s[j]) != (tc.rank[i] < tc.rank[j]) {
					t.Errorf("w = %v: fused scores %v do not rank as %v", tc.w, s, tc.rank)
				}
			}
		}
	}
}

func TestScoresErrors(t *testing.T) {
	ok := Fusion{Head: Scale{0, 1}, KNN: Scale{0, 1}, HeadWeight: 0.5}
	if _, err := ok.Scores([]float64{1, 2}, []float64{1}); err == nil || !strings.Contains(err.Error(), "2 head scores and 1 knn scores") {
		t.Errorf("length mismatch: err %v", err)
	}
	for _, tc := range []struct {
		edit func(f *Fusion)
		want string
	}{
		{func(f *Fusion) { f.HeadWeight = 1.5 }, "head weight 1.5, want 0 <= w <= 1"},
		{func(f *Fusion) { f.HeadWeight = math.NaN() }, "head weight NaN"},
		{func(f *Fusion) { f.Head.Std = 0 }, "head scale mean 0, std 0"},
		{func(f *Fusion) { f.KNN.Mean = math.Inf(-1) }, "knn scale mean -Inf"},
	} {
		f := ok
		tc.edit(&f)
		if _, err := f.Scores([]float64{1}, []float64{1}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", f, err, tc.want)
		}
	}
}
