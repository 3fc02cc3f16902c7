// Package cdl trains AHL's scoring head g by collaborative differentiable learning
// (docs/algorithm.md, "CDL"): T base models adapted from g on the T HADG tasks, their first-order
// meta-gradients combined with importance weights from psi (ahl/psi) into one Adam step on g.
package cdl

import (
	"fmt"
	"runtime"
)

// Config holds CDL's hyperparameters. DefaultConfig returns the paper's values
// (docs/algorithm.md, the tables of "CDL" and "psi and the importance weights").
type Config struct {
	Epochs          int     `json:"epochs"`            // E
	InnerSteps      int     `json:"inner_steps"`       // SGD steps on support batches per task
	QuerySteps      int     `json:"query_steps"`       // query batches per task
	MetaSteps       int     `json:"meta_steps"`        // meta updates per epoch
	BatchSize       int     `json:"batch_size"`        // balanced batch size
	NRef            int     `json:"n_ref"`             // normals averaged into a batch's reference map
	InnerLR         float64 `json:"inner_lr"`          // alpha, plain SGD
	MetaLR          float64 `json:"meta_lr"`           // Adam on theta_g
	MetaWeightDecay float64 `json:"meta_weight_decay"` // Adam L2 weight decay on theta_g
	LRDecayEvery    int     `json:"lr_decay_every"`    // epochs between meta learning rate decays
	LRDecay         float64 `json:"lr_decay"`          // meta learning rate factor per decay
	ClipNorm        float64 `json:"clip_norm"`         // global norm limit of the meta-gradient
	K               int     `json:"k"`                 // epochs of score history psi reads
	PsiLR           float64 `json:"psi_lr"`            // Adam on psi
	PsiWeightDecay  float64 `json:"psi_weight_decay"`  // Adam L2 weight decay on psi
	PsiSteps        int     `json:"psi_steps"`         // full-batch Adam steps on psi per epoch
	Seed            uint64  `json:"seed"`              // every random draw derives from it

	// Offset, when set, holds one score offset per pool row that is added to the head's
	// score of that row in training and in the training samples' scores psi reads
	// (heads.Batch.Offset): the head then learns a residual over the detector whose scores
	// the offsets are. The head must be a heads.OffsetTaker.
	Offset []float32 `json:"-"`
	// Workers is how many tasks adapt at once; 0 means runtime.GOMAXPROCS(0). Results do not
	// depend on it.
	Workers int `json:"-"`
	// Progress, when set, is called after every epoch with the epochs done and the total.
	Progress func(done, total int) `json:"-"`
}

// DefaultConfig returns the paper's defaults: E = 30, 20 inner SGD steps at 2e-4, 20 query
// batches, one meta step per epoch, batch 48 with nRef = 5, meta Adam at 0.005 with weight
// decay 1e-4 and lr x 0.1 every 10 epochs, gradient norm clipped to 1, K = 5, psi Adam at
// 0.02 with weight decay 1e-3. The deviation loss's prior (5000 draws, margin 5) is
// heads.NewPrior's.
func DefaultConfig() Config {
	return Config{
		Epochs:          30,
		InnerSteps:      20,
		QuerySteps:      20,
		MetaSteps:       1,
		BatchSize:       48,
		NRef:            5,
		InnerLR:         2e-4,
		MetaLR:          0.005,
		MetaWeightDecay: 1e-4,
		LRDecayEvery:    10,
		LRDecay:         0.1,
		ClipNorm:        1.0,
		K:               5,
		PsiLR:           0.02,
		PsiWeightDecay:  1e-3,
		// The paper says "a few" steps per epoch; psi is tiny and its data changes each epoch.
		PsiSteps: 10,
	}
}

// Validate reports the first field with an unusable value, naming it as it is spelt in JSON.
func (c Config) Validate() error {
	for _, p := range []struct {
		name   string
		v, min int
	}{{"epochs", c.Epochs, 1}, {"inner_steps", c.InnerSteps, 0}, {"query_steps", c.QuerySteps, 1},
		{"meta_steps", c.MetaSteps, 1}, {"batch_size", c.BatchSize, 1}, {"n_ref", c.NRef, 1},
		{"k", c.K, 1}, {"psi_steps", c.PsiSteps, 0},
		{"lr_decay_every", c.LRDecayEvery, 0}, {"workers", c.Workers, 0}} {
		if p.v < p.min {
			return fmt.Errorf("cdl: %s = %d, want >= %d", p.name, p.v, p.min)
		}
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"inner_lr", c.InnerLR}, {"meta_weight_decay", c.MetaWeightDecay}, {"psi_weight_decay", c.PsiWeightDecay},
		{"lr_decay", c.LRDecay}} {
		if !(p.v >= 0) {
			return fmt.Errorf("cdl: %s = %g, want >= 0", p.name, p.v)
		}
	}
	for _, p := range []struct {
		name string
		v    float64
	}{{"meta_lr", c.MetaLR}, {"clip_norm", c.ClipNorm}, {"psi_lr", c.PsiLR}} {
		if !(p.v > 0) {
			return fmt.Errorf("cdl: %s = %g, want > 0", p.name, p.v)
		}
	}
	return nil
}

func (c Config) workers(tasks int) int {
	w := c.Workers
	if w == 0 {
		w = runtime.GOMAXPROCS(0)
	}
	return max(1, min(w, tasks))
}
