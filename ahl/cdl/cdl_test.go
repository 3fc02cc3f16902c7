package cdl

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/batch/batchtest"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/ahl/optim"
)

func synth(seed uint64) (batchtest.Synth, batchtest.Linear) {
	cfg := batchtest.DefaultSynth()
	return batchtest.NewSynth(cfg, seed), batchtest.Linear{C: cfg.C, S: len(cfg.Sizes)}
}

func smallConfig() Config {
	c := DefaultConfig()
	c.Epochs = 8
	c.K = 2
	c.InnerSteps = 5
	c.QuerySteps = 5
	c.Seed = 11
	return c
}

// TestOneTaskIsFirstOrderMAML checks that with one task (w = 1) an epoch is exactly: copy
// theta_g, inner SGD steps on support batches, the mean query gradient at the adapted
// weights, clipped, one Adam step, with the batches drawn from the task's own streams.
func TestOneTaskIsFirstOrderMAML(t *testing.T) {
	syn, head := synth(1)
	var one []hadg.Sample
	for _, s := range syn.Samples {
		if s.Task == 0 {
			one = append(one, s)
		}
	}
	cfg := smallConfig()
	cfg.Epochs = 2
	cfg.InnerLR = 0.05 // large enough that the inner steps matter
	res, err := Train(context.Background(), cfg, head, syn.Pool, one)
	if err != nil {
		t.Fatal(err)
	}
	ts, _ := ResolveTasks(syn.Pool, one)
	tk, _ := newTask(cfg, head, ts, syn.Pool, 0, len(res.Theta))
	theta := head.Init(rand.New(rand.NewPCG(cfg.Seed, streamInit)))
	prior := heads.NewPrior(rand.New(rand.NewPCG(cfg.Seed, streamPrior)))
	adam := optim.NewAdam(len(theta), cfg.MetaWeightDecay)
	grad := make([]float32, len(theta))
	for e := 0; e < cfg.Epochs; e++ {
		th := slices.Clone(theta)
		for s := 0; s < cfg.InnerSteps; s++ {
			head.LossGrad(th, tk.gather.Batch(tk.support.Next()), prior, grad)
			for k := range th {
				th[k] -= float32(cfg.InnerLR) * grad[k]
			}
		}
		g := make([]float32, len(theta))
		var loss float64
		for s := 0; s < cfg.QuerySteps; s++ {
			loss += float64(head.LossGrad(th, tk.gather.Batch(tk.query.Next()), prior, grad))
			for k := range g {
				g[k] += grad[k]
			}
		}
		for k := range g {
			g[k] /= float32(cfg.QuerySteps)
		}
		if got := res.Log[e].QueryLoss; math.Abs(got-loss/float64(cfg.QuerySteps)) > 1e-12 {
			t.Fatalf("epoch %d: query loss %v, by hand %v", e, got, loss/float64(cfg.QuerySteps))
		}
		optim.ClipNorm(g, cfg.ClipNorm)
		adam.Step(theta, g, cfg.MetaLR)
		if res.Weights[e][0] != 1 {
			t.Fatalf("epoch %d: one task's weight %v, want 1", e, res.Weights[e][0])
		}
	}
	if !slices.Equal(theta, res.Theta) {
		t.Fatalf("theta_g differs from the hand-run first-order MAML:\n%v\n%v", theta, res.Theta)
	}
}

func TestImportanceByHand(t *testing.T) {
	// Two tasks, four samples: a normal in task 0's support, a normal in neither support,
	// a real anomaly in task 0's support, a pseudo anomaly in no support. Margin 5.
	ts := Tasks{T: 2, Labels: []int{heads.Normal, heads.Normal, heads.Seen, heads.Pseudo},
		InSupport: [][]bool{{true, false, true, false}, {false, false, false, false}}}
	pred := []float64{ // row j: task 0, task 1
		10, 0,
		2.5, 5,
		5, 2.5,
		-5, 10,
	}
	w, r := Importance(pred, ts, 5)
	// Task 0 skips sample 0 (its support normal): c = 0.5, 0.5, 1 on (0.5-0)^2, (1-1)^2, (-1-1)^2.
	r0 := (0.5*0.25 + 0.5*0 + 1*4) / 3
	// Task 1 keeps all four: 0.5*(0)^2 + 0.5*(1)^2 + 1*(0.5-1)^2 + 1*(1-1)^2.
	r1 := (0.5*0 + 0.5*1 + 1*0.25 + 0) / 4
	if math.Abs(r[0]-r0) > 1e-15 || math.Abs(r[1]-r1) > 1e-15 {
		t.Fatalf("r = %v, want [%v %v]", r, r0, r1)
	}
	e0, e1 := math.Exp(-r0), math.Exp(-r1)
	if math.Abs(w[0]-e0/(e0+e1)) > 1e-15 || math.Abs(w[1]-e1/(e0+e1)) > 1e-15 {
		t.Fatalf("w = %v, want softmax(-r)", w)
	}
}

// TestWeights checks the epoch weights: uniform up to epoch K, from psi afterwards, always
// positive and summing to 1.
func TestWeights(t *testing.T) {
	syn, head := synth(2)
	cfg := smallConfig()
	res, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Weights) != cfg.Epochs || len(res.Log) != cfg.Epochs*7 {
		t.Fatalf("%d weight vectors and %d log rows, want %d and %d", len(res.Weights), len(res.Log), cfg.Epochs, cfg.Epochs*7)
	}
	for e, w := range res.Weights {
		var sum float64
		uniform := true
		for _, v := range w {
			sum += v
			uniform = uniform && v == 1.0/7
			if !(v > 0) {
				t.Fatalf("epoch %d: weight %v", e, v)
			}
		}
		if math.Abs(sum-1) > 1e-12 {
			t.Fatalf("epoch %d: weights sum to %v", e, sum)
		}
		if (e <= cfg.K) != uniform {
			t.Fatalf("epoch %d (K = %d): weights %v", e, cfg.K, w)
		}
		t.Logf("epoch %d: w = %.4f", e, w)
	}
}

// TestTrainingLowersLoss checks that CDL lowers the mean query loss. The paper's meta
// learning rate is made for 512-channel heads; the 34 weights of the test head need a larger
// one to move in a few epochs.
func TestTrainingLowersLoss(t *testing.T) {
	syn, head := synth(3)
	cfg := DefaultConfig()
	cfg.Epochs = 12
	cfg.MetaLR = 0.05
	res, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples)
	if err != nil {
		t.Fatal(err)
	}
	mean := func(e int) float64 {
		var s float64
		for _, r := range res.Log[e*7 : (e+1)*7] {
			s += r.QueryLoss
		}
		return s / 7
	}
	first, last := mean(0), mean(cfg.Epochs-1)
	t.Logf("mean query loss: epoch 0 %.4f, epoch %d %.4f", first, cfg.Epochs-1, last)
	if !(last < 0.8*first) {
		t.Fatalf("query loss did not fall: %.4f -> %.4f", first, last)
	}
}

// TestDeterministic checks bit-identical weights and logs across runs and worker counts.
func TestDeterministic(t *testing.T) {
	syn, head := synth(4)
	run := func(workers int) Result {
		cfg := smallConfig()
		cfg.Workers = workers
		res, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	a, b, c := run(1), run(1), run(3)
	for _, o := range []Result{b, c} {
		if !slices.Equal(a.Theta, o.Theta) {
			t.Fatal("theta_g differs between runs")
		}
		for e := range a.Weights {
			if !slices.Equal(a.Weights[e], o.Weights[e]) {
				t.Fatalf("epoch %d weights differ: %v vs %v", e, a.Weights[e], o.Weights[e])
			}
		}
		for k := range a.Log {
			if a.Log[k].QueryLoss != o.Log[k].QueryLoss {
				t.Fatalf("log row %d: query loss %v vs %v", k, a.Log[k].QueryLoss, o.Log[k].QueryLoss)
			}
		}
	}
	ref, _ := batch.Ref(syn.Pool, batch.AllRows(90))
	rows := batch.AllRows(syn.Test.Len())
	if !slices.Equal(batch.Scores(head, a.Theta, syn.Test, rows, ref, 48), batch.Scores(head, c.Theta, syn.Test, rows, ref, 48)) {
		t.Fatal("test scores differ")
	}
	cfg := smallConfig()
	cfg.Seed++
	d, _ := Train(context.Background(), cfg, head, syn.Pool, syn.Samples)
	if slices.Equal(a.Theta, d.Theta) {
		t.Fatal("another seed gave the same weights")
	}
}

func TestProgressAndCancel(t *testing.T) {
	syn, head := synth(5)
	cfg := smallConfig()
	cfg.Epochs = 3
	var calls []int
	cfg.Progress = func(done, total int) {
		if total != 3 {
			t.Errorf("progress total %d, want 3", total)
		}
		calls = append(calls, done)
	}
	if _, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(calls, []int{1, 2, 3}) {
		t.Fatalf("progress calls %v, want [1 2 3]", calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cfg.Progress = func(done, total int) {
		if done == 1 {
			cancel()
		}
	}
	if _, err := Train(ctx, cfg, head, syn.Pool, syn.Samples); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled training returned %v, want context.Canceled", err)
	}
}

func TestErrors(t *testing.T) {
	syn, head := synth(6)
	bad := slices.Clone(syn.Samples)
	bad[3].ID = "missing"
	if _, err := Train(context.Background(), smallConfig(), head, syn.Pool, bad); err == nil {
		t.Error("sample with no feature maps accepted")
	}
	bad = slices.Clone(syn.Samples)
	bad[0].Label = 1 // a normal also labelled normal elsewhere
	if _, err := Train(context.Background(), smallConfig(), head, syn.Pool, bad); err == nil {
		t.Error("one image with two labels accepted")
	}
	var noQuery []hadg.Sample
	for _, s := range syn.Samples {
		if s.Task != 2 || s.Role == hadg.Support {
			noQuery = append(noQuery, s)
		}
	}
	if _, err := Train(context.Background(), smallConfig(), head, syn.Pool, noQuery); err == nil {
		t.Error("task without query samples accepted")
	}
	cfg := smallConfig()
	cfg.MetaLR = math.NaN()
	if _, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples); err == nil {
		t.Error("NaN meta_lr accepted")
	}
	cfg = smallConfig()
	cfg.QuerySteps = 0
	if _, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples); err == nil {
		t.Error("query_steps = 0 accepted")
	}
}

// TestDeterministicRealHeads checks bit-identical results across runs and worker counts with
// the devnet and dra heads (dra's composite sub-head needs maps of at least 3 x 3).
func TestDeterministicRealHeads(t *testing.T) {
	scfg := batchtest.DefaultSynth()
	scfg.C = 8
	scfg.Sizes = [][2]int{{6, 6}, {3, 3}}
	scfg.PerMode = 12
	scfg.Test = 10
	syn := batchtest.NewSynth(scfg, 7)
	devnet, err := heads.NewDevNet(scfg.C)
	if err != nil {
		t.Fatal(err)
	}
	dra, err := heads.NewDRA(scfg.C, 8, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, head := range []heads.Head{devnet, dra} {
		run := func(workers int) Result {
			cfg := smallConfig()
			cfg.InnerSteps, cfg.QuerySteps = 2, 2
			cfg.Workers = workers
			res, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples)
			if err != nil {
				t.Fatalf("%s: %v", head.Name(), err)
			}
			return res
		}
		a, b, c := run(1), run(1), run(2)
		if !slices.Equal(a.Theta, b.Theta) || !slices.Equal(a.Theta, c.Theta) {
			t.Fatalf("%s: theta_g differs between runs or worker counts", head.Name())
		}
		for e := range a.Weights {
			if !slices.Equal(a.Weights[e], c.Weights[e]) {
				t.Fatalf("%s: epoch %d weights differ: %v vs %v", head.Name(), e, a.Weights[e], c.Weights[e])
			}
		}
		if slices.Equal(a.Weights[len(a.Weights)-1], Uniform(7)) {
			t.Fatalf("%s: psi's weights are uniform", head.Name())
		}
	}
}

// TestDivergenceIsAnError checks that a loss that overflows stops training with an error.
func TestDivergenceIsAnError(t *testing.T) {
	syn, head := synth(8)
	cfg := smallConfig()
	cfg.InnerLR = 1e38
	if _, err := Train(context.Background(), cfg, head, syn.Pool, syn.Samples); err == nil {
		t.Fatal("training with inner_lr 1e38 returned no error")
	} else {
		t.Log(err)
	}
}

// TestQueryScoresReused checks psi's score vectors with the devnet head, whose query pass
// hands over the adapted models' scores of the query samples: every task's scores equal a
// full scoring pass of all training samples under its adapted theta_i, bit for bit, and the
// query pass did supply some of them (and the scoring pass the rest).
func TestQueryScoresReused(t *testing.T) {
	scfg := batchtest.DefaultSynth()
	scfg.C = 8
	scfg.Sizes = [][2]int{{6, 6}, {3, 3}}
	scfg.PerMode = 12
	syn := batchtest.NewSynth(scfg, 7)
	head, err := heads.NewDevNet(scfg.C)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := ResolveTasks(syn.Pool, syn.Samples)
	if err != nil {
		t.Fatal(err)
	}
	cfg := smallConfig()
	cfg.InnerSteps, cfg.QuerySteps = 2, 2
	tr, err := newTrainer(cfg, head, syn.Pool, ts)
	if err != nil {
		t.Fatal(err)
	}
	tr.adaptAndScore(context.Background(), true)
	reused := 0
	for _, tk := range tr.tasks {
		if tk.err != nil {
			t.Fatal(tk.err)
		}
		for _, h := range tk.have {
			if h {
				reused++
			}
		}
		want := batch.Scores(head, tk.theta, syn.Pool, tr.scoreRows, tr.scoreRef, cfg.BatchSize)
		if !slices.Equal(tk.scores, want) {
			t.Fatalf("task %d: recorded scores differ from a full scoring pass", tk.i)
		}
	}
	if all := len(tr.tasks) * len(tr.scoreRows); reused == 0 || reused == all {
		t.Errorf("the query pass supplied %d of %d scores, want some but not all", reused, all)
	}
	// Without recording, no score comes from the query pass.
	tr.adaptAndScore(context.Background(), false)
	for _, tk := range tr.tasks {
		if slices.Contains(tk.have, true) {
			t.Fatalf("task %d kept query scores while not recording", tk.i)
		}
	}
}
