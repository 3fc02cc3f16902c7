// Package baseline trains the baselines that share AHL's features (docs/algorithm.md, "Baselines"):
// devnet, the same head trained directly on all training data, and the ensemble of T base
// models trained independently on the T HADG tasks (the "+HADG" ablation). knn lives in
// ahl/knn.
package baseline

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/ahl/optim"
)

// Random streams of one direct training run: rand.NewPCG(cfg.Seed, stream). The sampler uses
// batch stream 0 (PCG streams 0 .. 2).
const (
	streamInit     = 1 << 40
	streamPrior    = 1<<40 + 1
	streamGatherer = 1 << 41
	streamMembers  = 1 << 42 // + task: the seed of ensemble member i
)

// DevnetConfig holds direct training's hyperparameters.
type DevnetConfig struct {
	Epochs        int     `json:"epochs"`          // 50
	StepsPerEpoch int     `json:"steps_per_epoch"` // balanced batches per epoch, 20
	BatchSize     int     `json:"batch_size"`      // 48
	NRef          int     `json:"n_ref"`           // normals averaged into a batch's reference, 5
	LR            float64 `json:"lr"`              // Adam, 2e-4
	// WeightDecay is Adam's L2 weight decay. The paper does not give one; 1e-5 is what the
	// DevNet and DRA PyTorch training scripts pass to torch.optim.Adam (docs/algorithm.md,
	// "Where pipe differs").
	WeightDecay  float64 `json:"weight_decay"`
	LRDecayEvery int     `json:"lr_decay_every"` // epochs between learning rate decays, 10
	LRDecay      float64 `json:"lr_decay"`       // factor per decay, 0.1
	Seed         uint64  `json:"seed"`

	// Offset, when set, holds one score offset per pool row that is added to the head's
	// score of that row (heads.Batch.Offset): the head learns a residual over the detector
	// whose scores the offsets are. The head must be a heads.OffsetTaker.
	Offset []float32 `json:"-"`
	// Progress, when set, is called after every epoch with the epochs done and the total.
	Progress func(done, total int) `json:"-"`
}

// DefaultDevnet returns the paper's direct-training defaults: Adam at 2e-4, 50 epochs of 20
// balanced batches of 48, lr x 0.1 every 10 epochs.
func DefaultDevnet() DevnetConfig {
	return DevnetConfig{Epochs: 50, StepsPerEpoch: 20, BatchSize: 48, NRef: 5, LR: 2e-4,
		WeightDecay: 1e-5, LRDecayEvery: 10, LRDecay: 0.1}
}

// Validate reports the first field with an unusable value, naming it as it is spelt in JSON.
func (c DevnetConfig) Validate() error {
	for _, p := range []struct {
		name   string
		v, min int
	}{{"epochs", c.Epochs, 1}, {"steps_per_epoch", c.StepsPerEpoch, 1}, {"batch_size", c.BatchSize, 1},
		{"n_ref", c.NRef, 1}, {"lr_decay_every", c.LRDecayEvery, 0}} {
		if p.v < p.min {
			return fmt.Errorf("baseline: %s = %d, want >= %d", p.name, p.v, p.min)
		}
	}
	if !(c.LR > 0) {
		return fmt.Errorf("baseline: lr = %g, want > 0", c.LR)
	}
	if !(c.WeightDecay >= 0) || !(c.LRDecay >= 0) {
		return fmt.Errorf("baseline: weight_decay = %g and lr_decay = %g, want >= 0", c.WeightDecay, c.LRDecay)
	}
	return nil
}

// EpochLog is one epoch of direct training.
type EpochLog struct {
	Epoch   int     `json:"epoch"`
	Loss    float64 `json:"loss"` // mean training loss over the epoch's batches
	Seconds float64 `json:"seconds"`
}

// Devnet trains head directly on the rows of pool with the given labels (normals, real and
// pseudo anomalies): balanced batches, Adam, step-decayed learning rate. It returns the
// trained weights and the per-epoch log.
func Devnet(ctx context.Context, cfg DevnetConfig, head heads.Head, pool fmap.Set, rows, labels []int) ([]float32, []EpochLog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if head == nil {
		return nil, nil, fmt.Errorf("baseline: no head")
	}
	if err := batch.CheckPool(pool); err != nil {
		return nil, nil, fmt.Errorf("baseline: %w", err)
	}
	for k, r := range rows {
		if r < 0 || r >= pool.Len() {
			return nil, nil, fmt.Errorf("baseline: training row %d (%d-th) outside the pool's %d rows", r, k, pool.Len())
		}
	}
	var normals []int
	for k, l := range labels {
		if l == heads.Normal && k < len(rows) {
			normals = append(normals, rows[k])
		}
	}
	sampler, err := batch.NewSampler(rows, labels, cfg.BatchSize, cfg.Seed, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("baseline: %w", err)
	}
	if len(normals) == 0 {
		return nil, nil, fmt.Errorf("baseline: no normal training rows")
	}
	if err := heads.CheckOffsets(head, cfg.Offset, pool.Len()); err != nil {
		return nil, nil, fmt.Errorf("baseline: %w", err)
	}
	gather, err := batch.NewGatherer(pool, normals, cfg.NRef, cfg.Seed, streamGatherer)
	if err != nil {
		return nil, nil, fmt.Errorf("baseline: %w", err)
	}
	if _, ok := head.(heads.RefFreeScorer); ok {
		gather.SkipRef()
	}
	gather.Offset = cfg.Offset
	theta := head.Init(rand.New(rand.NewPCG(cfg.Seed, streamInit)))
	prior := heads.NewPrior(rand.New(rand.NewPCG(cfg.Seed, streamPrior)))
	grad := make([]float32, len(theta))
	adam := optim.NewAdam(len(theta), cfg.WeightDecay)
	var log []EpochLog
	for e := 0; e < cfg.Epochs; e++ {
		start := time.Now()
		lr := optim.StepDecay(cfg.LR, e, cfg.LRDecayEvery, cfg.LRDecay)
		var loss float64
		for s := 0; s < cfg.StepsPerEpoch; s++ {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			loss += float64(head.LossGrad(theta, gather.Batch(sampler.Next()), prior, grad))
			adam.Step(theta, grad, lr)
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, nil, fmt.Errorf("baseline: epoch %d: training loss is %v (lr %g too large?)", e, loss, lr)
		}
		log = append(log, EpochLog{Epoch: e, Loss: loss / float64(cfg.StepsPerEpoch), Seconds: time.Since(start).Seconds()})
		if cfg.Progress != nil {
			cfg.Progress(e+1, cfg.Epochs)
		}
	}
	return theta, log, nil
}
