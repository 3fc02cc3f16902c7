package baseline

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/batch/batchtest"
	"github.com/pipe-ahl/pipe/ahl/heads"
)

func setup(t *testing.T, seed uint64) (batchtest.Synth, heads.Head) {
	cfg := batchtest.DefaultSynth()
	head, err := heads.NewDevNet(cfg.C)
	if err != nil {
		t.Fatal(err)
	}
	return batchtest.NewSynth(cfg, seed), head
}

func quick() DevnetConfig {
	c := DefaultDevnet()
	c.Epochs = 10
	c.LRDecayEvery = 4
	c.Seed = 3
	return c
}

func TestDevnetLowersLossAndIsDeterministic(t *testing.T) {
	syn, head := setup(t, 1)
	cfg := quick()
	cfg.LR = 2e-3
	var epochs []int
	cfg.Progress = func(done, total int) { epochs = append(epochs, done) }
	rows := batch.AllRows(syn.Pool.Len())
	theta, log, err := Devnet(context.Background(), cfg, head, syn.Pool, rows, syn.Labels)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != cfg.Epochs || len(epochs) != cfg.Epochs || epochs[cfg.Epochs-1] != cfg.Epochs {
		t.Fatalf("%d log rows and progress calls %v for %d epochs", len(log), epochs, cfg.Epochs)
	}
	t.Logf("loss %.4f -> %.4f", log[0].Loss, log[len(log)-1].Loss)
	if !(log[len(log)-1].Loss < 0.8*log[0].Loss) {
		t.Fatalf("loss did not fall: %.4f -> %.4f", log[0].Loss, log[len(log)-1].Loss)
	}
	again, _, _ := Devnet(context.Background(), cfg, head, syn.Pool, rows, syn.Labels)
	if !slices.Equal(theta, again) {
		t.Fatal("two runs with the same seed differ")
	}
	cfg.Seed++
	other, _, _ := Devnet(context.Background(), cfg, head, syn.Pool, rows, syn.Labels)
	if slices.Equal(theta, other) {
		t.Fatal("another seed gave the same weights")
	}
}

// TestEnsemble checks that the ensemble has one member per task, that each member is direct
// training on its task's samples, and that it scores by the members' mean.
func TestEnsemble(t *testing.T) {
	syn, head := setup(t, 2)
	cfg := quick()
	cfg.Epochs = 2
	e, err := TrainEnsemble(context.Background(), cfg, head, syn.Pool, syn.Samples)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Thetas) != 7 || len(e.Logs) != 7 {
		t.Fatalf("%d members, want 7", len(e.Thetas))
	}
	for i := 1; i < len(e.Thetas); i++ {
		if slices.Equal(e.Thetas[0], e.Thetas[i]) {
			t.Fatalf("members 0 and %d are equal", i)
		}
	}
	again, _ := TrainEnsemble(context.Background(), cfg, head, syn.Pool, syn.Samples)
	for i := range e.Thetas {
		if !slices.Equal(e.Thetas[i], again.Thetas[i]) {
			t.Fatalf("member %d differs between runs", i)
		}
	}
	ref, _ := batch.Ref(syn.Pool, batch.AllRows(90))
	rows := batch.AllRows(syn.Test.Len())
	got := e.Scores(head, syn.Test, rows, ref, 48)
	want := make([]float64, len(rows))
	for _, th := range e.Thetas {
		for k, v := range batch.Scores(head, th, syn.Test, rows, ref, 48) {
			want[k] += float64(v) / 7
		}
	}
	for k := range got {
		if math.Abs(float64(got[k])-want[k]) > 1e-5*math.Max(1, math.Abs(want[k])) {
			t.Fatalf("row %d: ensemble score %v, mean of members %v", k, got[k], want[k])
		}
	}
}

func TestErrors(t *testing.T) {
	syn, head := setup(t, 3)
	rows := batch.AllRows(syn.Pool.Len())
	ctx := context.Background()
	if _, _, err := Devnet(ctx, quick(), head, syn.Pool, rows, syn.Labels[:10]); err == nil {
		t.Error("fewer labels than rows accepted")
	}
	if _, _, err := Devnet(ctx, quick(), head, syn.Pool, []int{0, 99999}, []int{0, 1}); err == nil {
		t.Error("row outside the pool accepted")
	}
	if _, _, err := Devnet(ctx, quick(), head, syn.Pool, []int{95, 96}, []int{1, 1}); err == nil {
		t.Error("training without normals accepted")
	}
	c := quick()
	c.LR = 0
	if _, _, err := Devnet(ctx, c, head, syn.Pool, rows, syn.Labels); err == nil {
		t.Error("lr = 0 accepted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := Devnet(cancelled, quick(), head, syn.Pool, rows, syn.Labels); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled training returned %v", err)
	}
}
