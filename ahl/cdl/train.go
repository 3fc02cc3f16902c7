package cdl

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/ahl/optim"
	"github.com/pipe-ahl/pipe/ahl/psi"
)

// Random streams: every draw comes from rand.NewPCG(cfg.Seed, stream) with one of these
// streams, so each consumer's draws are independent of how the others are scheduled. Task i's
// support and query samplers use batch streams 2i and 2i+1 (PCG streams 6i .. 6i+5).
const (
	streamInit     = 1 << 40 // theta_g's initial weights
	streamPrior    = 1<<40 + 1
	streamPsi      = 1<<40 + 2
	streamGatherer = 1 << 41 // + task: each task's reference-map draws
)

// LogRow is one line of the training log: one task in one epoch.
type LogRow struct {
	Epoch     int     `json:"epoch"`
	Task      int     `json:"task"`
	QueryLoss float64 `json:"query_loss"` // mean query loss at the adapted theta_i (mean over meta steps)
	Weight    float64 `json:"weight"`     // w_i used for this epoch's meta-gradient
	Seconds   float64 `json:"seconds"`    // wall-clock seconds of the task's adaptation and scoring
}

// Result is what CDL produces.
type Result struct {
	Theta        []float32   // g's weights theta_g after the last epoch
	Log          []LogRow    // one row per epoch and task, epoch-major
	Weights      [][]float64 // the importance weights w of every epoch
	EpochSeconds []float64   // wall-clock seconds of every epoch
	Prior        heads.Prior // the deviation loss's prior used throughout
}

// Train runs CDL on the HADG task samples, whose IDs name rows of pool (normals, real and
// pseudo anomalies, every scale), and returns g's trained weights and the training log.
func Train(ctx context.Context, cfg Config, head heads.Head, pool fmap.Set, samples []hadg.Sample) (Result, error) {
	if err := batch.CheckPool(pool); err != nil {
		return Result{}, fmt.Errorf("cdl: %w", err)
	}
	ts, err := ResolveTasks(pool, samples)
	if err != nil {
		return Result{}, err
	}
	return TrainTasks(ctx, cfg, head, pool, ts)
}

// task is one base model's state, kept across epochs so its batch streams run on endlessly.
type task struct {
	i                int
	support, query   *batch.Sampler
	gather           *batch.Gatherer
	theta, grad, sum []float32
	// scores are the training samples' scores under the adapted theta_i, in the order of
	// trainer.scoreRows; have marks those the query pass already wrote (RefFreeScorer heads),
	// which the scoring pass skips. batchScores is the query pass's buffer.
	scores       []float32
	have         []bool
	batchScores  []float32
	loss         float64   // mean query loss of the last adaptation
	seconds      float64   // the last adaptation's, plus its scoring when it scored
	scoreSeconds []float64 // per scoring batch
	err          error
}

func newTask(cfg Config, head heads.Head, ts Tasks, pool fmap.Set, i, nWeights int) (*task, error) {
	tk := &task{i: i, theta: make([]float32, nWeights), grad: make([]float32, nWeights),
		sum: make([]float32, nWeights), scores: make([]float32, len(ts.Rows)),
		have: make([]bool, len(ts.Rows)), batchScores: make([]float32, cfg.BatchSize)}
	var err error
	s, q := ts.Support[i], ts.Query[i]
	if tk.support, err = batch.NewSampler(s.Rows, s.Labels, cfg.BatchSize, cfg.Seed, uint64(2*i)); err != nil {
		return nil, fmt.Errorf("cdl: task %d support: %w", i, err)
	}
	if tk.query, err = batch.NewSampler(q.Rows, q.Labels, cfg.BatchSize, cfg.Seed, uint64(2*i+1)); err != nil {
		return nil, fmt.Errorf("cdl: task %d query: %w", i, err)
	}
	if tk.gather, err = batch.NewGatherer(pool, ts.Normals, cfg.NRef, cfg.Seed, streamGatherer+uint64(i)); err != nil {
		return nil, fmt.Errorf("cdl: task %d: %w", i, err)
	}
	if _, ok := head.(heads.RefFreeScorer); ok {
		tk.gather.SkipRef()
	}
	tk.gather.Offset = cfg.Offset
	return tk, nil
}

// adapt sets theta_i <- theta_g, takes the inner SGD steps on support batches, and then
// averages the query loss and its gradient at theta_i over the query batches into tk.sum
// (the first-order meta-gradient G_i). When keep is not nil (it maps a pool row to its place
// in tk.scores) and head is a heads.RefFreeScorer, the query batches' scores at theta_i go
// into tk.scores, marked in tk.have.
func (tk *task) adapt(ctx context.Context, cfg Config, head heads.Head, prior heads.Prior, thetaG []float32, keep []int) error {
	clear(tk.have)
	rf, _ := head.(heads.RefFreeScorer)
	if keep == nil {
		rf = nil
	}
	copy(tk.theta, thetaG)
	for s := 0; s < cfg.InnerSteps; s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		head.LossGrad(tk.theta, tk.gather.Batch(tk.support.Next()), prior, tk.grad)
		optim.SGD(tk.theta, tk.grad, cfg.InnerLR)
	}
	clear(tk.sum)
	var loss float64
	for s := 0; s < cfg.QuerySteps; s++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := tk.gather.Batch(tk.query.Next())
		if rf == nil {
			loss += float64(head.LossGrad(tk.theta, b, prior, tk.grad))
		} else {
			loss += float64(rf.LossGradScores(tk.theta, b, prior, tk.grad, tk.batchScores[:b.Len()]))
			for j, r := range b.Rows {
				tk.scores[keep[r]], tk.have[keep[r]] = tk.batchScores[j], true
			}
		}
		for k, g := range tk.grad {
			tk.sum[k] += g
		}
	}
	inv := 1 / float32(cfg.QuerySteps)
	for k := range tk.sum {
		tk.sum[k] *= inv
	}
	tk.loss = loss / float64(cfg.QuerySteps)
	return nil
}

// TrainTasks is Train on tasks already resolved against the pool.
func TrainTasks(ctx context.Context, cfg Config, head heads.Head, pool fmap.Set, ts Tasks) (Result, error) {
	tr, err := newTrainer(cfg, head, pool, ts)
	if err != nil {
		return Result{}, err
	}
	for epoch := 0; epoch < cfg.Epochs; epoch++ {
		if err := tr.epoch(ctx, epoch); err != nil {
			return Result{}, err
		}
		if cfg.Progress != nil {
			cfg.Progress(epoch+1, cfg.Epochs)
		}
	}
	tr.res.Theta = tr.thetaG
	return tr.res, nil
}

// trainer is CDL's state between epochs.
type trainer struct {
	cfg      Config
	head     heads.Head
	pool     fmap.Set
	ts       Tasks
	thetaG   []float32
	prior    heads.Prior
	scoreRef []fmap.Maps
	// scoreRows are the training samples' rows in increasing order; scoreRows[k] is sample
	// scoreJ[k], and scoreAt[r] is k for pool row r = scoreRows[k] (-1 for other rows).
	scoreRows, scoreJ, scoreAt []int
	chunks                     [][2]int // scoreRows's scoring batches
	workers                    int
	tasks                      []*task
	psi                        *psi.Model
	adam                       *optim.Adam
	meta                       []float32   // G
	history                    [][]float64 // s^t per epoch: N x T, row-major
	res                        Result
}

func newTrainer(cfg Config, head heads.Head, pool fmap.Set, ts Tasks) (*trainer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if head == nil {
		return nil, fmt.Errorf("cdl: no head")
	}
	if err := heads.CheckOffsets(head, cfg.Offset, pool.Len()); err != nil {
		return nil, fmt.Errorf("cdl: %w", err)
	}
	tr := &trainer{cfg: cfg, head: head, pool: pool, ts: ts}
	tr.thetaG = head.Init(rand.New(rand.NewPCG(cfg.Seed, streamInit)))
	tr.prior = heads.NewPrior(rand.New(rand.NewPCG(cfg.Seed, streamPrior)))
	tr.res.Prior = tr.prior
	var err error
	if tr.scoreRef, err = batch.Ref(pool, ts.Normals); err != nil {
		return nil, fmt.Errorf("cdl: %w", err)
	}
	tr.scoreJ = make([]int, len(ts.Rows))
	for j := range tr.scoreJ {
		tr.scoreJ[j] = j
	}
	slices.SortFunc(tr.scoreJ, func(a, b int) int { return ts.Rows[a] - ts.Rows[b] })
	for _, j := range tr.scoreJ {
		tr.scoreRows = append(tr.scoreRows, ts.Rows[j])
	}
	tr.scoreAt = make([]int, pool.Len())
	for r := range tr.scoreAt {
		tr.scoreAt[r] = -1
	}
	for k, r := range tr.scoreRows {
		tr.scoreAt[r] = k
	}
	tr.chunks = batch.Chunks(tr.scoreRows, cfg.BatchSize)
	tr.workers = cfg.workers(ts.T)
	tr.tasks = make([]*task, ts.T)
	for i := range tr.tasks {
		if tr.tasks[i], err = newTask(cfg, head, ts, pool, i, len(tr.thetaG)); err != nil {
			return nil, err
		}
		tr.tasks[i].scoreSeconds = make([]float64, len(tr.chunks))
	}
	if tr.psi, err = psi.New(ts.T, cfg.Seed, streamPsi, cfg.PsiLR, cfg.PsiWeightDecay); err != nil {
		return nil, fmt.Errorf("cdl: %w", err)
	}
	tr.adam = optim.NewAdam(len(tr.thetaG), cfg.MetaWeightDecay)
	tr.meta = make([]float32, len(tr.thetaG))
	return tr, nil
}

// epoch runs CDL's epoch t (docs/algorithm.md, "CDL", steps 1-4).
func (tr *trainer) epoch(ctx context.Context, epoch int) error {
	cfg, t, n := tr.cfg, tr.ts.T, len(tr.ts.Rows)
	start := time.Now()
	// Step 1: importance weights.
	w := Uniform(t)
	if epoch >= cfg.K+1 {
		pred, err := tr.psi.Predict(sequences(tr.history[epoch-cfg.K:epoch], n, t))
		if err != nil {
			return fmt.Errorf("cdl: epoch %d: %w", epoch, err)
		}
		w, _ = Importance(pred, tr.ts, float64(tr.prior.Margin))
	}
	// psi reads epochs t-K .. t-1 at epoch t >= K+1 and trains on them at t >= K, so the score
	// vectors s^t are needed only for t <= E-2, and only when psi is used at all.
	record := cfg.Epochs >= cfg.K+2 && epoch <= cfg.Epochs-2
	losses := make([]float64, t)
	seconds := make([]float64, t)
	for m := 0; m < cfg.MetaSteps; m++ {
		// Step 2: adapt every task, and in the last meta step score every training sample
		// under every adapted theta_i (step 4's s^t).
		tr.adaptAndScore(ctx, m == cfg.MetaSteps-1 && record)
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, tk := range tr.tasks {
			if tk.err != nil {
				return fmt.Errorf("cdl: epoch %d task %d: %w", epoch, tk.i, tk.err)
			}
			if math.IsNaN(tk.loss) || math.IsInf(tk.loss, 0) {
				return fmt.Errorf("cdl: epoch %d task %d: query loss is %v (inner_lr %g too large?)", epoch, tk.i, tk.loss, cfg.InnerLR)
			}
			losses[tk.i] += tk.loss / float64(cfg.MetaSteps)
			seconds[tk.i] += tk.seconds
		}
		// Step 3: G = sum_i w_i G_i (Eq. 4), clipped to norm 1, one Adam step on theta_g.
		clear(tr.meta)
		for i, tk := range tr.tasks {
			wi := float32(w[i])
			for k, g := range tk.sum {
				tr.meta[k] += wi * g
			}
		}
		optim.ClipNorm(tr.meta, cfg.ClipNorm)
		tr.adam.Step(tr.thetaG, tr.meta, optim.StepDecay(cfg.MetaLR, epoch, cfg.LRDecayEvery, cfg.LRDecay))
	}
	// Step 4: record s^t, and train psi on [s^{t-K} .. s^{t-1}] -> s^t.
	if record {
		s := make([]float64, n*t)
		for i, tk := range tr.tasks {
			for k, v := range tk.scores {
				s[tr.scoreJ[k]*t+i] = float64(v)
			}
		}
		tr.history = append(tr.history[:epoch], s)
		if epoch >= cfg.K && cfg.PsiSteps > 0 {
			if _, err := tr.psi.Train(sequences(tr.history[epoch-cfg.K:epoch], n, t), s, cfg.PsiSteps); err != nil {
				return fmt.Errorf("cdl: epoch %d: %w", epoch, err)
			}
		}
	}
	for i := range tr.tasks {
		tr.res.Log = append(tr.res.Log, LogRow{Epoch: epoch, Task: i, QueryLoss: losses[i], Weight: w[i], Seconds: seconds[i]})
	}
	tr.res.Weights = append(tr.res.Weights, w)
	tr.res.EpochSeconds = append(tr.res.EpochSeconds, time.Since(start).Seconds())
	return nil
}

// adaptAndScore adapts every task from theta_g and, when score is set, scores the training
// samples under every adapted theta_i into the tasks' score vectors (those the query pass
// already scored are not scored again: devnet's scores do not depend on the batch's
// reference, so the query batches' scores at theta_i are the very same). The work runs on
// cfg.Workers goroutines as a queue of units: first the T adaptations, then the scoring
// batches task by task; a scoring unit waits for its task's adaptation, which an earlier
// worker already holds. Every unit writes only its own task's buffers, so the result does not
// depend on the number of workers or their timing.
func (tr *trainer) adaptAndScore(ctx context.Context, score bool) {
	type unit struct {
		tk      *task
		c, a, b int // scoring batch tr.chunks[c] = [a, b); adaptation when b == 0
	}
	done := make([]chan struct{}, len(tr.tasks))
	units := make(chan unit)
	var wg sync.WaitGroup
	var keep []int
	if score {
		keep = tr.scoreAt
	}
	for range tr.workers {
		var rows, at []int // the rows of a scoring batch still to score, and their places
		wg.Go(func() {
			for u := range units {
				t0 := time.Now()
				tk := u.tk
				if u.b == 0 {
					tk.err = tk.adapt(ctx, tr.cfg, tr.head, tr.prior, tr.thetaG, keep)
					tk.seconds = time.Since(t0).Seconds()
					close(done[tk.i])
					continue
				}
				<-done[tk.i]
				rows, at = rows[:0], at[:0]
				for k := u.a; k < u.b; k++ {
					if !tk.have[k] {
						rows, at = append(rows, tr.scoreRows[k]), append(at, k)
					}
				}
				if len(rows) > 0 && tk.err == nil && ctx.Err() == nil {
					s := tr.head.Scores(tk.theta, heads.Batch{X: tr.pool.Scales, Rows: rows, Ref: tr.scoreRef, Offset: tr.cfg.Offset})
					for j, k := range at {
						tk.scores[k] = s[j]
					}
				}
				tk.scoreSeconds[u.c] = time.Since(t0).Seconds()
			}
		})
	}
	for i, tk := range tr.tasks {
		done[i] = make(chan struct{})
		units <- unit{tk: tk}
	}
	if score {
		for _, tk := range tr.tasks {
			for c, r := range tr.chunks {
				units <- unit{tk: tk, a: r[0], b: r[1], c: c}
			}
		}
	}
	close(units)
	wg.Wait()
	if score {
		for _, tk := range tr.tasks {
			for _, s := range tk.scoreSeconds {
				tk.seconds += s
			}
		}
	}
}

// sequences lays out psi's input: for every sample j, the K score vectors of the given epochs
// (each N x T) in time order, as N x K x T.
func sequences(epochs [][]float64, n, t int) psi.Sequences {
	k := len(epochs)
	x := psi.Sequences{N: n, K: k, T: t, Data: make([]float64, n*k*t)}
	for e, s := range epochs {
		for j := 0; j < n; j++ {
			copy(x.Data[(j*k+e)*t:(j*k+e+1)*t], s[j*t:(j+1)*t])
		}
	}
	return x
}
