package baseline

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/cdl"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
)

// Ensemble is T base models, one per HADG task; it scores an image by the mean of their
// scores (docs/algorithm.md, "Baselines", ensemble: the "+HADG" ablation without CDL).
type Ensemble struct {
	Thetas [][]float32  // one weight vector per task
	Logs   [][]EpochLog // one training log per task
}

// TrainEnsemble trains one base model per task, each by direct training (Devnet, with cfg)
// on the task's support and query samples together (each pool row once), member i seeded
// from rand.NewPCG(cfg.Seed, 1<<42 + i). Members train in parallel, one per core; Progress
// is called as each finishes.
func TrainEnsemble(ctx context.Context, cfg DevnetConfig, head heads.Head, pool fmap.Set, samples []hadg.Sample) (Ensemble, error) {
	ts, err := cdl.ResolveTasks(pool, samples)
	if err != nil {
		return Ensemble{}, fmt.Errorf("baseline: %w", err)
	}
	e := Ensemble{Thetas: make([][]float32, ts.T), Logs: make([][]EpochLog, ts.T)}
	errs := make([]error, ts.T)
	// Members are independent, so they train in parallel; each owns its streams and buffers.
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	next := make(chan int)
	for range max(1, min(runtime.GOMAXPROCS(0), ts.T)) {
		wg.Go(func() {
			for i := range next {
				rows, labels := memberRows(ts, i)
				c := cfg
				c.Seed = rand.New(rand.NewPCG(cfg.Seed, streamMembers+uint64(i))).Uint64()
				c.Progress = nil
				e.Thetas[i], e.Logs[i], errs[i] = Devnet(ctx, c, head, pool, rows, labels)
				if cfg.Progress != nil {
					mu.Lock()
					done++
					cfg.Progress(done, ts.T)
					mu.Unlock()
				}
			}
		})
	}
	for i := 0; i < ts.T; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return Ensemble{}, fmt.Errorf("baseline: ensemble member %d: %w", i, err)
		}
	}
	return e, nil
}

// memberRows returns task i's support and query rows together, each pool row once.
func memberRows(ts cdl.Tasks, i int) (rows, labels []int) {
	seen := map[int]bool{}
	for _, set := range []cdl.RowSet{ts.Support[i], ts.Query[i]} {
		for k, r := range set.Rows {
			if !seen[r] {
				seen[r] = true
				rows = append(rows, r)
				labels = append(labels, set.Labels[k])
			}
		}
	}
	return rows, labels
}

// Scores returns the mean of the members' scores of rows of pool, scored size rows at a time
// against the reference ref (one map per scale).
func (e Ensemble) Scores(head heads.Head, pool fmap.Set, rows []int, ref []fmap.Maps, size int) []float32 {
	out := make([]float32, len(rows))
	buf := make([]float32, len(rows))
	for _, theta := range e.Thetas {
		batch.ScoresInto(head, theta, pool, rows, ref, size, buf)
		for k, v := range buf {
			out[k] += v
		}
	}
	inv := 1 / float32(len(e.Thetas))
	for k := range out {
		out[k] *= inv
	}
	return out
}
