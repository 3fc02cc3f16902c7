package stages

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// This file adds a head the way any new head is added, registered for this package's tests
// only: the head (registration, layout, forward, backward) is its first half and its tests
// the second. Nothing else in the repository names it: the train and score stages reach it
// through the heads registry and codec, and its option through the head_options param.

// toyHead is the "toy" head. Per scale, for F (N, C, H, W):
//
//	g = GAP(F)          (N, C)
//	z = w . g [+ b]     (N)     w (C); the bias b only with the option toy_bias = 1
//	s = |z|             (N)
//
// and the image's score is the mean over scales of s. It trains with the deviation loss,
// pseudo anomalies counted as anomalies.
type toyHead struct {
	c    int
	bias bool
}

const toyBiasOpt = "toy_bias" // 1: the layout has fc.bias; 0: it has not

func init() {
	heads.Register(heads.Kind{
		Name:    "toy",
		Options: []heads.Option{{Name: toyBiasOpt, Default: 1, Min: 0}},
		Build: func(cfg heads.Config) (heads.Head, error) {
			if b := cfg.Options[toyBiasOpt]; b > 1 {
				return nil, fmt.Errorf("heads toy: %s = %d, want 0 or 1", toyBiasOpt, b)
			}
			return &toyHead{c: cfg.Channels, bias: cfg.Options[toyBiasOpt] == 1}, nil
		},
	})
}

func (h *toyHead) Name() string { return "toy" }

// Layout lists fc.weight (1 x C) and, with toy_bias = 1, fc.bias (1).
func (h *toyHead) Layout() []heads.Spec {
	specs := []heads.Spec{{Name: "fc.weight", Shape: []int{1, h.c}}}
	if h.bias {
		specs = append(specs, heads.Spec{Name: "fc.bias", Shape: []int{1}, Offset: h.c})
	}
	return specs
}

// Init draws w ~ N(0, 2 / C) (Kaiming, fan-in C) and a zero bias.
func (h *toyHead) Init(rng *rand.Rand) []float32 {
	theta := make([]float32, h.c, h.c+1)
	for i := range theta {
		theta[i] = float32(rng.NormFloat64() * math.Sqrt(2/float64(h.c)))
	}
	if h.bias {
		theta = append(theta, 0)
	}
	return theta
}

// CheckMaps reports a scale whose channel count is not the head's.
func (h *toyHead) CheckMaps(b heads.Batch) error {
	for s, m := range b.X {
		if m.C != h.c {
			return fmt.Errorf("heads toy: batch X[%d] has %d channels, the head expects %d", s, m.C, h.c)
		}
	}
	return nil
}

// forward returns z (S, N) and the pools g (S, N, C) of every scale of b.
func (h *toyHead) forward(theta []float32, b heads.Batch) (z [][]float32, g [][]float32) {
	if err := heads.CheckBatch(h, b, false); err != nil {
		panic(err.Error())
	}
	// A training batch addresses rows of the feature pool (b.Rows); this simple head copies
	// them into one block per scale, where a fast head would read b.Map(s, i) in place.
	b = b.Dense()
	for _, x := range b.X {
		gs := x.Pooled()
		zs := make([]float32, x.N)
		for i := range zs {
			for c, wc := range theta[:h.c] {
				zs[i] += wc * gs[i*h.c+c]
			}
			if h.bias {
				zs[i] += theta[h.c]
			}
		}
		z, g = append(z, zs), append(g, gs)
	}
	return z, g
}

// Scores returns the mean over scales of |z|.
func (h *toyHead) Scores(theta []float32, b heads.Batch) []float32 {
	z, _ := h.forward(theta, b)
	out := make([]float32, b.Len())
	for _, zs := range z {
		for i, v := range zs {
			out[i] += float32(math.Abs(float64(v))) / float32(len(z))
		}
	}
	return out
}

// LossGrad returns the deviation loss of the scores with targets y = [label != 0] and its
// gradient: ds from the loss; dz = ds sign(z) / S; dw += dz g; db += dz.
func (h *toyHead) LossGrad(theta []float32, b heads.Batch, prior heads.Prior, grad []float32) float32 {
	z, g := h.forward(theta, b)
	s := h.Scores(theta, b)
	y := make([]float32, len(s))
	for i, l := range b.Labels {
		if l != heads.Normal {
			y[i] = 1
		}
	}
	ds := make([]float32, len(s))
	loss := heads.DeviationLoss(s, y, prior, ds)
	clear(grad)
	for k, zs := range z {
		for i, v := range zs {
			dz := ds[i] / float32(len(z))
			if v < 0 {
				dz = -dz
			} else if v == 0 {
				dz = 0
			}
			for c := range h.c {
				grad[c] += dz * g[k][i*h.c+c]
			}
			if h.bias {
				grad[h.c] += dz
			}
		}
	}
	return loss
}

var (
	_ heads.Head    = (*toyHead)(nil)
	_ heads.Checker = (*toyHead)(nil)
)

// TestToyHeadGradient checks LossGrad against central differences of the loss, which is
// piecewise linear in each weight: exact within a piece up to float32 rounding.
func TestToyHeadGradient(t *testing.T) {
	h, err := heads.New("toy", heads.Config{Channels: 4})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var b heads.Batch
	for _, hw := range []int{5, 3} {
		m := fmap.New(6, 4, hw, hw)
		for i := range m.Data {
			m.Data[i] = float32(rng.NormFloat64())
		}
		b.X = append(b.X, m)
	}
	b.Labels = []int{0, 0, 0, 1, 2, 2}
	theta := h.Init(rng)
	theta[4] = 0.3
	p := heads.NewPrior(rand.New(rand.NewPCG(5, 6)))
	grad := make([]float32, len(theta))
	h.LossGrad(theta, b, p, grad)
	const step = 1e-2
	for j := range theta {
		th := slices.Clone(theta)
		th[j] = theta[j] + step
		lp := h.LossGrad(th, b, p, make([]float32, len(th)))
		th[j] = theta[j] - step
		lm := h.LossGrad(th, b, p, make([]float32, len(th)))
		num := float64(lp-lm) / (2 * step)
		if d := math.Abs(float64(grad[j]) - num); d > 1e-3*math.Abs(num)+1e-4 {
			t.Errorf("theta[%d]: analytic %v, numeric %v", j, grad[j], num)
		}
	}
}

// TestToyHeadTrainScore trains the toy head through the train stage (devnet and ahl, with
// and without its bias), scores through the score stage, and checks that the model table
// carries the head's name, config and tensors, that the scores are the head's own, and that
// the head learns the spot.
func TestToyHeadTrainScore(t *testing.T) {
	s := newSpotSet(t)
	for _, tc := range []struct {
		method string
		bias   int
		tensor []string
	}{
		{"devnet", 0, []string{"fc.weight"}},
		{"devnet", 1, []string{"fc.weight", "fc.bias"}},
		{"ahl", 1, []string{"fc.weight", "fc.bias"}},
	} {
		t.Run(fmt.Sprintf("%s/toy_bias=%d", tc.method, tc.bias), func(t *testing.T) {
			p := quick(tc.method, "toy", 10)
			p.LR, p.HeadOptions = 0.02, map[string]int{toyBiasOpt: tc.bias}
			if err := p.Validate(); err != nil {
				t.Fatal(err)
			}
			train, score, eval := s.chain(t, p, 9)
			for key, want := range map[string]string{modelHeadKey: "toy", "pipe.channels": "4", "pipe.toy_bias": fmt.Sprint(tc.bias)} {
				if got := schemaMeta(train["model"], key); got != want {
					t.Errorf("model metadata %s = %q, want %q", key, got, want)
				}
			}
			names, _ := artifacts.StringCol(train["model"], "name")
			if !slices.Equal(names, tc.tensor) {
				t.Errorf("model tensors %v, want %v", names, tc.tensor)
			}
			m, err := readModel(train["model"])
			if err != nil {
				t.Fatal(err)
			}
			h, err := m.newHead()
			if err != nil {
				t.Fatal(err)
			}
			if th, ok := h.(*toyHead); !ok || th.c != 4 || th.bias != (tc.bias == 1) {
				t.Fatalf("model read back as head %#v", h)
			}
			checkToyScores(t, s, h, m.Thetas[0], score["scores"])
			// GAP dilutes the spot (4 at a fifth of channel 0's positions) to a mean shift
			// of 0.8 against unit noise, so the bar is lower than devnet's top-k head's.
			a := metricOf(t, eval["metrics"], "auroc", "all")
			t.Logf("auroc all %.3f", a)
			if tc.method == "devnet" && a < 0.8 {
				t.Errorf("auroc %.3f after training, want >= 0.8", a)
			}
		})
	}
	for _, tc := range []struct {
		opts map[string]int
		want string
	}{
		{map[string]int{toyBiasOpt: -1}, "toy_bias: -1, want >= 0"},
		{map[string]int{"composite_width": 8}, "composite_width is a param of its own"},
		{map[string]int{"width": 1}, "width: no registered head"},
	} {
		p := quick("devnet", "toy", 1)
		p.HeadOptions = tc.opts
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("head_options %v: error %v, want one containing %q", tc.opts, err, tc.want)
		}
	}
}

// checkToyScores compares the score stage's scores with the head's own on the test images.
func checkToyScores(t *testing.T, s spotSet, h heads.Head, theta []float32, scores arrow.RecordBatch) {
	t.Helper()
	ids, _ := artifacts.StringCol(scores, "id")
	got, _ := artifacts.Float64Col(scores, "score")
	set, err := tables.MapSetFromRecords(tables.OpenMaps{Rec: s.features, Keep: setOf(ids)})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, id := range set.IDs {
		pos[id] = i
	}
	rows := make([]int, len(ids))
	for i, id := range ids {
		rows[i] = pos[id]
	}
	want := h.Scores(theta, heads.Batch{X: set.Gather(rows).Scales})
	for i := range got {
		if math.Abs(got[i]-float64(want[i])) > 1e-6*(1+math.Abs(got[i])) {
			t.Fatalf("score of %s = %v, the head gives %v", ids[i], got[i], want[i])
		}
	}
}
