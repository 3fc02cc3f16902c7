package heads

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 1)) }

func TestDeviationLossHand(t *testing.T) {
	p := Prior{Mean: 0, Std: 1, Margin: 5}
	s := []float32{0.5, -2, 3, 7}
	y := []float32{0, 0, 1, 1}
	ds := make([]float32, 4)
	// (|0.5| + |-2| + max(0, 5-3) + max(0, 5-7)) / 4 = 4.5 / 4.
	if got := DeviationLoss(s, y, p, ds); got != 1.125 {
		t.Errorf("loss = %v, want 1.125", got)
	}
	want := []float32{0.25, -0.25, -0.25, 0}
	for i := range ds {
		if ds[i] != want[i] {
			t.Errorf("dL/ds[%d] = %v, want %v", i, ds[i], want[i])
		}
	}
	// A shifted, scaled prior: dev = (s - 1) / 2.
	p = Prior{Mean: 1, Std: 2, Margin: 5}
	if got := DeviationLoss([]float32{5, 3}, []float32{0, 1}, p, ds[:2]); got != (2+4)/2.0 {
		t.Errorf("loss = %v, want 3", got)
	}
	if ds[0] != 0.25 || ds[1] != -0.25 {
		t.Errorf("gradient %v, want [0.25 -0.25]", ds[:2])
	}
	if got := DeviationLoss(nil, nil, p, nil); got != 0 {
		t.Errorf("empty batch loss = %v, want 0", got)
	}
}

func TestNewPrior(t *testing.T) {
	p := NewPrior(newRand(7))
	if p.Margin != 5 {
		t.Errorf("margin = %v, want 5", p.Margin)
	}
	// 5000 N(0,1) draws: the mean's standard error is 0.014, the std's about 0.01.
	if math.Abs(float64(p.Mean)) > 0.06 || math.Abs(float64(p.Std)-1) > 0.05 {
		t.Errorf("prior mean %v std %v, want near 0 and 1", p.Mean, p.Std)
	}
	if q := NewPrior(newRand(7)); q != p {
		t.Errorf("same seed gave %v and %v", p, q)
	}
	if q := NewPrior(newRand(8)); q == p {
		t.Errorf("different seeds gave the same prior %v", p)
	}
}

// TestDevNetScoreHand checks a score computed by hand: scale 0 is one channel of 4 x 5 values
// 1..20 (k = 2), scale 1 one channel of 2 x 2 (k = 1); w = 0.5, b = -1.
func TestDevNetScoreHand(t *testing.T) {
	h, err := NewDevNet(1)
	if err != nil {
		t.Fatal(err)
	}
	x0 := fmap.New(1, 1, 4, 5)
	for i := range x0.Data {
		x0.Data[i] = float32(i + 1)
	}
	x1 := fmap.Maps{N: 1, C: 1, H: 2, W: 2, Data: []float32{1, -3, 2, 0}}
	got := h.Scores([]float32{0.5, -1}, Batch{X: []fmap.Maps{x0, x1}})
	// Scale 0: z = 0.5 v - 1, the two largest |z| are 9 and 8.5 -> 8.75.
	// Scale 1: z = (-0.5, -2.5, 0, -1) -> 2.5. Mean: 5.625.
	if len(got) != 1 || got[0] != 5.625 {
		t.Fatalf("score = %v, want [5.625]", got)
	}
}

// gradCheck compares h's float32 loss and gradient with central differences of the float64
// reference loss. The loss is piecewise linear in each single weight (no weight multiplies
// itself), so within a piece the central difference is exact up to float64 rounding; steps
// that cross a kink (the reference's discrete choices change) are skipped and counted.
// Tolerance: |analytic - numeric| <= 1e-3 |numeric| + 1e-5. The float32 forward and backward
// sum at most a few thousand terms of size O(1), a relative error near 1e-6, so 1e-3 leaves
// a wide margin, while a wrong index, sign or factor is off by O(1); the 1e-5 floor covers
// entries that cancel to near zero.
func gradCheck(t *testing.T, h Head, theta []float32, b Batch, p Prior, ref func([]float64, *refState) float64) {
	t.Helper()
	grad := make([]float32, len(theta))
	loss := h.LossGrad(theta, b, p, grad)
	th := f64(theta)
	var r0 refState
	want := ref(th, &r0)
	if d := math.Abs(float64(loss) - want); d > 1e-5*(1+math.Abs(want)) {
		t.Fatalf("loss %v, reference %v", loss, want)
	}
	rng := newRand(99)
	const step = 1e-3
	checked, skipped := 0, 0
	for _, s := range h.Layout() {
		n := specSize(s)
		coords := []int{0, n - 1}
		for range 6 {
			coords = append(coords, rng.IntN(n))
		}
		if n <= 8 {
			coords = coords[:0]
			for j := range n {
				coords = append(coords, j)
			}
		}
		ok := 0
		for _, j := range coords {
			at := s.Offset + j
			saved := th[at]
			var rp, rm refState
			th[at] = saved + step
			lp := ref(th, &rp)
			th[at] = saved - step
			lm := ref(th, &rm)
			th[at] = saved
			if rp.sig.String() != r0.sig.String() || rm.sig.String() != r0.sig.String() {
				skipped++
				continue
			}
			num := (lp - lm) / (2 * step)
			if d := math.Abs(float64(grad[at]) - num); !(d <= 1e-3*math.Abs(num)+1e-5) {
				t.Errorf("%s[%d]: analytic %v, numeric %v", s.Name, j, grad[at], num)
			}
			ok++
			checked++
		}
		if ok == 0 {
			t.Errorf("%s: every step crossed a kink; choose other inputs", s.Name)
		}
	}
	if skipped*4 > checked {
		t.Errorf("%d of %d steps crossed a kink; choose other inputs", skipped, checked+skipped)
	}
	t.Logf("%s: checked %d coordinates, %d skipped at kinks", h.Name(), checked, skipped)
}

func TestDevNetGradient(t *testing.T) {
	h, _ := NewDevNet(6)
	theta := h.Init(newRand(1))
	theta[len(theta)-1] = 0.2 // a nonzero bias, so its gradient matters
	b := testBatch(2, 7, 6, 7, 4, []int{0, 0, 0, 1, 1, 2, 2})
	p := NewPrior(newRand(3))
	gradCheck(t, h, theta, b, p, func(th []float64, r *refState) float64 {
		return refDevNetLoss(h.Layout(), th, b, p, r)
	})
}

func TestDRAGradient(t *testing.T) {
	for _, tc := range []struct {
		cp, stride int
		labels     []int
	}{
		{5, 3, []int{0, 0, 0, 1, 1, 2, 2}},
		{4, 1, []int{0, 0, 1, 2, 2, 0}}, // composite top-k of 25 positions: k = 2
		{3, 3, []int{0, 2, 2, 0}},       // no seen anomalies: h1 over the normals only
		{3, 2, []int{2, 2, 2}},          // only pseudo: h1's row set is empty
	} {
		h, err := NewDRA(6, tc.cp, tc.stride)
		if err != nil {
			t.Fatal(err)
		}
		theta := h.Init(newRand(4))
		rng := newRand(5)
		for _, s := range h.Layout() { // move biases, gammas and betas off their init values
			if !strings.HasSuffix(s.Name, ".weight") {
				for j := s.Offset; j < s.Offset+specSize(s); j++ {
					theta[j] += float32(0.1 * rng.NormFloat64())
				}
			}
		}
		b := testBatch(6, len(tc.labels), 6, 7, 4, tc.labels)
		p := NewPrior(newRand(7))
		gradCheck(t, h, theta, b, p, func(th []float64, r *refState) float64 {
			return refDRALoss(h.Layout(), th, b, tc.cp, tc.stride, p, r)
		})
		if len(tc.labels) == 3 {
			grad := make([]float32, len(theta))
			h.LossGrad(theta, b, p, grad)
			for j := h.seenW; j <= h.seenB; j++ {
				if grad[j] != 0 {
					t.Fatalf("seen sub-head has no rows but gradient %v at %d", grad[j], j)
				}
			}
		}
	}
}

func TestScoresMatchReference(t *testing.T) {
	labels := []int{0, 1, 2, 0, 2}
	b := testBatch(8, 5, 6, 7, 4, labels)
	dn, _ := NewDevNet(6)
	th := dn.Init(newRand(9))
	var r refState
	want := refDevNetScores(dn.Layout(), f64(th), b, &r)
	for i, got := range dn.Scores(th, b) {
		if math.Abs(float64(got)-want[i]) > 1e-5*(1+math.Abs(want[i])) {
			t.Errorf("devnet score %d = %v, reference %v", i, got, want[i])
		}
	}
	dra, _ := NewDRA(6, 5, 3)
	th = dra.Init(newRand(10))
	sub := refDRASubScores(dra.Layout(), f64(th), b, 5, 3, &r)
	got := dra.Scores(th, b)
	if len(got) != 5 {
		t.Fatalf("dra gave %d scores for 5 images", len(got))
	}
	for i := range got {
		w := -sub[0][i] + sub[1][i] + sub[2][i] + sub[3][i]
		if math.Abs(float64(got[i])-w) > 1e-5*(1+math.Abs(w)) {
			t.Errorf("dra score %d = %v, reference %v", i, got[i], w)
		}
	}
}

// TestScoresChunked checks that scoring more images than one chunk gives the same scores as
// scoring them one by one.
func TestScoresChunked(t *testing.T) {
	n := scoreChunk + 3
	b := testBatch(11, n, 4, 6, 3, make([]int, n))
	b.Labels = nil
	h, _ := NewDRA(4, 3, 3)
	th := h.Init(newRand(12))
	all := h.Scores(th, b)
	for _, i := range []int{0, scoreChunk - 1, scoreChunk, n - 1} {
		one := Batch{Ref: b.Ref}
		for _, x := range b.X {
			one.X = append(one.X, x.Gather([]int{i}))
		}
		if got := h.Scores(th, one)[0]; got != all[i] {
			t.Errorf("image %d: alone %v, in a batch %v", i, got, all[i])
		}
	}
}

// TestDeterministicConcurrent runs LossGrad for several weight vectors at once and checks
// that every result is bit-identical to a sequential run.
func TestDeterministicConcurrent(t *testing.T) {
	b := testBatch(13, 6, 6, 7, 4, []int{0, 0, 1, 1, 2, 2})
	p := NewPrior(newRand(14))
	dn, _ := NewDevNet(6)
	dra, _ := NewDRA(6, 5, 3)
	for _, h := range []Head{dn, dra} {
		thetas := make([][]float32, 4)
		want := make([][]float32, 4)
		wantLoss := make([]float32, 4)
		for i := range thetas {
			thetas[i] = h.Init(newRand(uint64(20 + i)))
			want[i] = make([]float32, len(thetas[i]))
			wantLoss[i] = h.LossGrad(thetas[i], b, p, want[i])
		}
		var wg sync.WaitGroup
		got := make([][]float32, 4)
		gotLoss := make([]float32, 4)
		for i := range thetas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i] = make([]float32, len(thetas[i]))
				gotLoss[i] = h.LossGrad(thetas[i], b, p, got[i])
			}()
		}
		wg.Wait()
		for i := range thetas {
			if math.Float32bits(gotLoss[i]) != math.Float32bits(wantLoss[i]) {
				t.Errorf("%s: loss %d differs: %v vs %v", h.Name(), i, gotLoss[i], wantLoss[i])
			}
			for j := range got[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
					t.Fatalf("%s: grad %d[%d] differs: %v vs %v", h.Name(), i, j, got[i][j], want[i][j])
				}
			}
		}
		s1, s2 := h.Scores(thetas[0], b), h.Scores(thetas[0], b)
		for i := range s1 {
			if math.Float32bits(s1[i]) != math.Float32bits(s2[i]) {
				t.Errorf("%s: score %d differs between calls", h.Name(), i)
			}
		}
	}
}

func TestInit(t *testing.T) {
	h, _ := NewDRA(64, 32, 3)
	theta := h.Init(newRand(15))
	next := 0
	for _, s := range h.Layout() {
		if s.Offset != next {
			t.Fatalf("%s at offset %d, want %d (contiguous layout)", s.Name, s.Offset, next)
		}
		next += specSize(s)
		v := theta[s.Offset : s.Offset+specSize(s)]
		switch {
		case strings.HasSuffix(s.Name, ".weight"):
			fanIn := specSize(s) / s.Shape[0]
			var ss float64
			for _, x := range v {
				ss += float64(x) * float64(x)
			}
			std, want := math.Sqrt(ss/float64(len(v))), math.Sqrt(2/float64(fanIn))
			// The sample std of n normal draws is off by about 1/sqrt(2n) relative.
			if tol := 4 / math.Sqrt(2*float64(len(v))); math.Abs(std/want-1) > tol {
				t.Errorf("%s: std %v, want %v (fan-in %d) within %.0f%%", s.Name, std, want, fanIn, 100*tol)
			}
		case strings.HasSuffix(s.Name, ".gamma"):
			for _, x := range v {
				if x != 1 {
					t.Fatalf("%s holds %v, want 1", s.Name, x)
				}
			}
		default:
			for _, x := range v {
				if x != 0 {
					t.Fatalf("%s holds %v, want 0", s.Name, x)
				}
			}
		}
	}
	if next != len(theta) {
		t.Errorf("layout covers %d values, theta has %d", next, len(theta))
	}
	again := h.Init(newRand(15))
	for i := range theta {
		if theta[i] != again[i] {
			t.Fatal("Init is not a function of the seed")
		}
	}
}

func TestCheckBatch(t *testing.T) {
	dn, _ := NewDevNet(4)
	dra, _ := NewDRA(4, 3, 3)
	good := testBatch(16, 3, 4, 6, 3, []int{0, 1, 2})
	if err := CheckBatch(dra, good, true); err != nil {
		t.Fatalf("good batch: %v", err)
	}
	wrongC := testBatch(16, 3, 5, 6, 3, []int{0, 1, 2})
	noRef := good
	noRef.Ref = nil
	badLabel := good
	badLabel.Labels = []int{0, 3, 1}
	for _, tc := range []struct {
		h    Head
		b    Batch
		want string
	}{
		{dn, wrongC, "5 channels, the head expects 4"},
		{dra, noRef, "0 reference maps for 2 scales"},
		{dn, badLabel, "label 1 is 3"},
		{dn, Batch{}, "no scales"},
	} {
		err := CheckBatch(tc.h, tc.b, true)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.h.Name(), err, tc.want)
		}
	}
	if _, err := NewDRA(4, 0, 3); err == nil {
		t.Error("NewDRA accepted composite width 0")
	}
	if _, err := NewDevNet(0); err == nil {
		t.Error("NewDevNet accepted 0 channels")
	}
}

// TestGorgoniaReference checks the hand-written heads against the gorgonia graphs: loss
// and every gradient value, to float32 rounding (both sides compute in float32, in different
// orders; 1e-4 relative plus 1e-6 absolute covers sums of a few thousand O(1) terms).
func TestGorgoniaReference(t *testing.T) {
	b := testBatch(17, 6, 6, 7, 4, []int{0, 0, 1, 1, 2, 2})
	p := NewPrior(newRand(18))
	dn, _ := NewDevNet(6)
	dra3, _ := NewDRA(6, 5, 3)
	dra1, _ := NewDRA(6, 4, 1)
	for _, h := range []Head{dn, dra3, dra1} {
		theta := h.Init(newRand(19))
		want := make([]float32, len(theta))
		got := make([]float32, len(theta))
		wl := h.LossGrad(theta, b, p, want)
		gl, err := GorgoniaLossGrad(h, theta, b, p, got)
		if err != nil {
			t.Fatalf("%s: %v", h.Name(), err)
		}
		if math.Abs(float64(gl-wl)) > 1e-4*(1+math.Abs(float64(wl))) {
			t.Errorf("%s: gorgonia loss %v, heads %v", h.Name(), gl, wl)
		}
		for _, s := range h.Layout() {
			for j := s.Offset; j < s.Offset+specSize(s); j++ {
				if d := math.Abs(float64(got[j] - want[j])); d > 1e-4*math.Abs(float64(want[j]))+1e-6 {
					t.Errorf("%s: %s[%d]: gorgonia %v, heads %v", h.Name(), s.Name, j-s.Offset, got[j], want[j])
					break
				}
			}
		}
	}
}

// TestTopKMeanAbs checks the top-k selection on hand-made rows, ties included.
func TestTopKMeanAbs(t *testing.T) {
	for _, tc := range []struct {
		z    []float32
		k    int
		want float32
		idx  []int
	}{
		{[]float32{1, -3, 3, 2}, 2, 3, []int{1, 2}}, // a tie: the lower position first
		{[]float32{0.5, -0.25, 0, 4, -4}, 3, (4 + 4 + 0.5) / 3, []int{3, 4, 0}},
		{[]float32{-7}, 1, 7, []int{0}},
		{[]float32{1, 2, 3, 4, 5, 6}, 1, 6, []int{5}},
		{[]float32{6, 5, 4, 3, 2, 1}, 2, 5.5, []int{0, 1}},
	} {
		idx := make([]int, tc.k)
		if got := topKMeanAbs(tc.z, idx); got != tc.want {
			t.Errorf("topKMeanAbs(%v, k=%d) = %v, want %v", tc.z, tc.k, got, tc.want)
		}
		for j := range idx {
			if idx[j] != tc.idx[j] {
				t.Errorf("topKMeanAbs(%v, k=%d) chose %v, want %v", tc.z, tc.k, idx, tc.idx)
				break
			}
		}
	}
	// Random rows, ties and zeros included, against sorting: the positions stably sorted by
	// decreasing |z|, the first k summed in that order.
	rng := newRand(12)
	for it := 0; it < 3000; it++ {
		n := 1 + rng.IntN(2000)
		z := make([]float32, n)
		for i := range z {
			z[i] = float32(rng.NormFloat64())
			if rng.IntN(4) == 0 {
				z[i] = float32(rng.IntN(5)) - 2
			}
		}
		k := topK(n)
		pos := make([]int, n)
		for i := range pos {
			pos[i] = i
		}
		abs := func(v float32) float32 { return float32(math.Abs(float64(v))) }
		slices.SortStableFunc(pos, func(a, b int) int {
			switch {
			case abs(z[a]) > abs(z[b]):
				return -1
			case abs(z[a]) < abs(z[b]):
				return 1
			}
			return 0
		})
		var want float32
		for _, p := range pos[:k] {
			want += abs(z[p])
		}
		want /= float32(k)
		idx := make([]int, k)
		if got := topKMeanAbs(z, idx); math.Float32bits(got) != math.Float32bits(want) || !slices.Equal(idx, pos[:k]) {
			t.Fatalf("n = %d, k = %d: topKMeanAbs %v at %v, sorting gives %v at %v", n, k, got, idx, want, pos[:k])
		}
	}
	for n, want := range map[int]int{1: 1, 9: 1, 16: 1, 19: 1, 20: 2, 49: 4, 196: 19} {
		if got := topK(n); got != want {
			t.Errorf("topK(%d) = %d, want %d", n, got, want)
		}
	}
}

// TestRowsBatch checks that a batch addressing rows of a pool in place (Batch.Rows) gives
// bit for bit the losses, gradients and scores of the same images copied into one block
// (Dense), for every head, rows repeated and out of order included; that devnet's
// LossGradScores scores are its Scores; and that the gorgonia reference takes such batches.
func TestRowsBatch(t *testing.T) {
	pool := testBatch(21, 9, 6, 7, 4, []int{0, 1, 2, 0, 1, 2, 0, 1, 2})
	rows := []int{7, 2, 2, 5, 0, 8, 3}
	b := Batch{X: pool.X, Rows: rows, Ref: pool.Ref}
	for _, r := range rows {
		b.Labels = append(b.Labels, pool.Labels[r])
	}
	dense := b.Dense()
	if dense.Rows != nil || dense.Len() != len(rows) || dense.X[1].N != len(rows) || !slices.Equal(dense.X[1].At(1), pool.X[1].At(2)) {
		t.Fatalf("Dense: %d images, rows %v; want the %d rows copied", dense.Len(), dense.Rows, len(rows))
	}
	p := NewPrior(newRand(22))
	dn, _ := NewDevNet(6)
	dra3, _ := NewDRA(6, 5, 3)
	dra1, _ := NewDRA(6, 4, 1)
	for _, h := range []Head{dn, dra3, dra1} {
		theta := h.Init(newRand(23))
		gr, gd := make([]float32, len(theta)), make([]float32, len(theta))
		if lr, ld := h.LossGrad(theta, b, p, gr), h.LossGrad(theta, dense, p, gd); lr != ld || !slices.Equal(gr, gd) {
			t.Errorf("%s: rows batch loss %v, dense %v (gradients equal: %v)", h.Name(), lr, ld, slices.Equal(gr, gd))
		}
		if sr, sd := h.Scores(theta, b), h.Scores(theta, dense); !slices.Equal(sr, sd) {
			t.Errorf("%s: rows batch scores %v, dense %v", h.Name(), sr, sd)
		}
		gl, err := GorgoniaLossGrad(h, theta, b, p, gr)
		if want, _ := GorgoniaLossGrad(h, theta, dense, p, gd); err != nil || gl != want || !slices.Equal(gr, gd) {
			t.Errorf("%s: gorgonia on the rows batch: loss %v (err %v), on the dense batch %v", h.Name(), gl, err, want)
		}
	}
	theta := dn.Init(newRand(24))
	scores := make([]float32, len(rows))
	dn.LossGradScores(theta, b, p, make([]float32, len(theta)), scores)
	noRef := Batch{X: pool.X, Rows: rows}
	if want := dn.Scores(theta, noRef); !slices.Equal(scores, want) {
		t.Errorf("devnet LossGradScores scores %v, Scores %v", scores, want)
	}
	// dra scores more rows than one chunk a chunk at a time.
	many := Batch{X: pool.X, Ref: pool.Ref}
	for i := range scoreChunk + 3 {
		many.Rows = append(many.Rows, (5*i)%9)
	}
	theta = dra3.Init(newRand(25))
	if got, want := dra3.Scores(theta, many), dra3.Scores(theta, many.Dense()); !slices.Equal(got, want) {
		t.Errorf("dra: %d rows scored in place differ from the same rows copied", len(many.Rows))
	}
	// A row outside the pool, or labels that do not match the rows, are refused.
	bad := b
	bad.Rows = []int{1, 9}
	bad.Labels = []int{0, 1}
	if err := CheckBatch(dn, bad, true); err == nil || !strings.Contains(err.Error(), "row 1 is 9, outside the pool's 9 rows") {
		t.Errorf("row outside the pool: error %v", err)
	}
	bad.Rows = []int{1, 2, 3}
	if err := CheckBatch(dn, bad, true); err == nil || !strings.Contains(err.Error(), "2 labels for 3 images") {
		t.Errorf("labels for 2 of 3 rows: error %v", err)
	}
}

// TestDevNetOffset checks a batch's score offsets (a residual over another detector): each
// score is the head's plus the image's offset, in a dense batch and a rows batch alike; the
// loss is the deviation loss of the offset scores (checked numerically against the float64
// reference on those scores); and heads that take no offsets refuse them.
func TestDevNetOffset(t *testing.T) {
	h, _ := NewDevNet(6)
	theta := h.Init(newRand(31))
	theta[len(theta)-1] = 0.2
	b := testBatch(32, 7, 6, 7, 4, []int{0, 0, 0, 1, 1, 2, 2})
	plain := h.Scores(theta, b)
	b.Offset = []float32{1.5, -2, 0, 3.25, -0.5, 4, 0.75}
	got := h.Scores(theta, b)
	for i := range got {
		if want := plain[i] + b.Offset[i]; got[i] != want {
			t.Errorf("image %d: score %v with offset %v, want %v + %v = %v", i, got[i], b.Offset[i], plain[i], b.Offset[i], want)
		}
	}
	p := NewPrior(newRand(33))
	gradCheck(t, h, theta, b, p, func(th []float64, r *refState) float64 {
		s := refDevNetScores(h.Layout(), th, b, r)
		y := make([]float64, len(s))
		for i, l := range b.Labels {
			s[i] += float64(b.Offset[i])
			if l != Normal {
				y[i] = 1
			}
		}
		return r.devLoss(s, y, p)
	})
	// A rows batch takes the offsets of its pool rows.
	rows := []int{6, 1, 1, 4}
	rb := Batch{X: b.X, Rows: rows, Offset: b.Offset}
	for _, r := range rows {
		rb.Labels = append(rb.Labels, b.Labels[r])
	}
	sr := h.Scores(theta, rb)
	for i, r := range rows {
		if sr[i] != got[r] {
			t.Errorf("rows batch image %d (row %d): score %v, want %v", i, r, sr[i], got[r])
		}
	}
	if sd := h.Scores(theta, rb.Dense()); !slices.Equal(sd, sr) {
		t.Errorf("Dense lost the offsets: %v, want %v", sd, sr)
	}
	if ss := h.Scores(theta, rb.Slice(1, 3)); !slices.Equal(ss, sr[1:3]) {
		t.Errorf("Slice lost the offsets: %v, want %v", ss, sr[1:3])
	}
	gr, gd := make([]float32, len(theta)), make([]float32, len(theta))
	scores := make([]float32, len(rows))
	if lr, ld := h.LossGradScores(theta, rb, p, gr, scores), h.LossGrad(theta, rb.Dense(), p, gd); lr != ld || !slices.Equal(gr, gd) || !slices.Equal(scores, sr) {
		t.Errorf("rows batch with offsets: loss %v, dense %v; scores %v, want %v", lr, ld, scores, sr)
	}
	dra, _ := NewDRA(6, 5, 3)
	if err := CheckBatch(dra, b, true); err == nil || !strings.Contains(err.Error(), "takes no score offsets") {
		t.Errorf("dra with offsets: error %v", err)
	}
	short := b
	short.Offset = b.Offset[:3]
	if err := CheckBatch(h, short, true); err == nil || !strings.Contains(err.Error(), "3 score offsets for 7 rows") {
		t.Errorf("3 offsets for 7 images: error %v", err)
	}
}
