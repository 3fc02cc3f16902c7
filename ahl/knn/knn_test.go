package knn

import (
	"math"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// maps1x1 makes one scale of 1x1 maps with the given per-image channel values, so pooling
// leaves the values unchanged.
func maps1x1(rows ...[]float32) fmap.Maps {
	m := fmap.Maps{N: len(rows), C: len(rows[0]), H: 1, W: 1}
	for _, r := range rows {
		m.Data = append(m.Data, r...)
	}
	return m
}

func TestHandCase(t *testing.T) {
	// Training normals (2-D pooled points): (0,0), (3,0), (0,4), (10,10). k = 2.
	train := []fmap.Maps{maps1x1([]float32{0, 0}, []float32{3, 0}, []float32{0, 4}, []float32{10, 10})}
	m, err := Fit(train, 2)
	if err != nil {
		t.Fatal(err)
	}
	test := []fmap.Maps{maps1x1([]float32{0, 0}, []float32{3, 4}, []float32{20, 10})}
	got, err := m.Scores(test)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{
		// (0,0): distances 0, 3, 4, 14.14; two nearest 0 and 3: mean 1.5.
		1.5,
		// (3,4): distances 5, 4, 3, 9.22; two nearest 3 and 4: mean 3.5.
		3.5,
		// (20,10): distances 22.36, 19.72, 20.88, 10; two nearest 10 and sqrt(17^2+10^2) =
		// sqrt(389) = 19.723: mean (10 + sqrt(389)) / 2.
		(10 + math.Sqrt(389)) / 2,
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Errorf("image %d: score %v, want %v", i, got[i], want[i])
		}
	}
	again, _ := m.Scores(test)
	for i := range got {
		if again[i] != got[i] {
			t.Errorf("image %d: score %v then %v", i, got[i], again[i])
		}
	}
}

func TestPoolConcatenatesScales(t *testing.T) {
	// Scale 0: 1 channel of 2x2 (mean of 1, 2, 3, 6 is 3); scale 1: 2 channels of 1x1.
	s0 := fmap.Maps{N: 1, C: 1, H: 2, W: 2, Data: []float32{1, 2, 3, 6}}
	s1 := fmap.Maps{N: 1, C: 2, H: 1, W: 1, Data: []float32{7, 8}}
	n, d, x, err := Pool([]fmap.Maps{s0, s1})
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || d != 3 || x[0] != 3 || x[1] != 7 || x[2] != 8 {
		t.Errorf("pooled %d x %d %v, want 1 x 3 [3 7 8]", n, d, x)
	}
	// With two scales, the distance covers both: (3,7,8) vs (0,3,8): sqrt(9 + 16) = 5.
	m, err := Fit([]fmap.Maps{{N: 1, C: 1, H: 1, W: 1, Data: []float32{0}}, {N: 1, C: 2, H: 1, W: 1, Data: []float32{3, 8}}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Scores([]fmap.Maps{s0, s1})
	if err != nil || math.Abs(got[0]-5) > 1e-9 {
		t.Errorf("two-scale score %v (%v), want 5", got, err)
	}
}

func TestErrors(t *testing.T) {
	train := []fmap.Maps{maps1x1([]float32{0}, []float32{1}, []float32{2})}
	if _, err := Fit(train, 4); err == nil || !strings.Contains(err.Error(), "k = 4 neighbours with 3") {
		t.Errorf("k > N: %v", err)
	}
	if _, err := Fit(train, -1); err == nil {
		t.Error("k < 0: no error")
	}
	m, err := Fit(train, 0)
	if err == nil || !strings.Contains(err.Error(), "k = 5") {
		t.Errorf("default k = 5 with 3 normals: model %+v, error %v", m, err)
	}
	m, _ = Fit(train, 2)
	if _, err := m.Scores([]fmap.Maps{maps1x1([]float32{0, 1})}); err == nil || !strings.Contains(err.Error(), "2 pooled features, the model 1") {
		t.Errorf("feature mismatch: %v", err)
	}
	if _, err := Fit(nil, 1); err == nil {
		t.Error("no scales: no error")
	}
	if _, err := Fit([]fmap.Maps{maps1x1([]float32{float32(math.NaN())})}, 1); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("NaN feature: %v", err)
	}
	if _, err := (Model{}).Scores(train); err == nil {
		t.Error("zero model: no error")
	}
}

// TestScoresExcluding checks leave-one-out scores by hand on the hand case's normals.
func TestScoresExcluding(t *testing.T) {
	train := []fmap.Maps{maps1x1([]float32{0, 0}, []float32{3, 0}, []float32{0, 4}, []float32{10, 10})}
	m, err := Fit(train, 2)
	if err != nil {
		t.Fatal(err)
	}
	test := []fmap.Maps{maps1x1([]float32{0, 0}, []float32{0, 0}, []float32{3, 4})}
	got, err := m.ScoresExcluding(test, []int{0, -1, 2})
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{
		// (0,0) without normal 0: distances 3, 4, 14.14; mean of 3 and 4.
		3.5,
		// (0,0) with every normal, as Scores: 0 and 3.
		1.5,
		// (3,4) without normal 2 (0,4): distances 5, 4, 9.22; mean of 4 and 5.
		4.5,
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Errorf("image %d: score %v, want %v", i, got[i], want[i])
		}
	}
	for _, tc := range []struct {
		exclude []int
		err     string
	}{
		{[]int{0}, "1 rows to exclude for 3 images"},
		{[]int{0, 4, -1}, "image 1 excludes training normal 4, outside 0..3"},
	} {
		if _, err := m.ScoresExcluding(test, tc.exclude); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("exclude %v: error %v, want %q", tc.exclude, err, tc.err)
		}
	}
	all, _ := Fit(train, 4)
	if _, err := all.ScoresExcluding(test, []int{0, -1, -1}); err == nil || !strings.Contains(err.Error(), "k = 4 neighbours from 4 training normals less the one left out") {
		t.Errorf("k = N with an exclusion: error %v", err)
	}
}
