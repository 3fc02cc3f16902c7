package batchtest

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
)

// SynthConfig sizes a synthetic open-set data set.
type SynthConfig struct {
	C        int      // channels
	Sizes    [][2]int // H, W per scale
	Clusters int      // normal modes
	PerMode  int      // training normals per mode
	Seen     int      // labelled anomalies, all from the seen class
	Test     int      // test normals, and test anomalies per class
	Unseen   int      // unseen anomaly classes
	Amp      float64  // anomaly amplitude, in units of the per-value noise
	T        int      // tasks
}

// DefaultSynth is small enough for unit tests: 64 channels at 4x4 and 2x2, 3 modes of 30
// normals, 10 seen anomalies, 2 unseen classes (60 test images each), amplitude 6, 7 tasks.
func DefaultSynth() SynthConfig {
	return SynthConfig{C: 64, Sizes: [][2]int{{4, 4}, {2, 2}}, Clusters: 3, PerMode: 30, Seen: 10,
		Test: 60, Unseen: 2, Amp: 6, T: 7}
}

// Synth is a synthetic open-set problem in feature space. Normals sit around one of a few
// mode centres with unit noise. An anomaly adds Amp times a unit direction at a few positions:
// the seen class along one direction, each unseen class along its own direction, different
// from the seen one; pseudo anomalies (two generators, one copy of every training normal each)
// perturb normals along random directions scattered around a pseudo direction that the unseen
// directions partly share, so what is learnt from pseudo anomalies carries over to unseen
// classes while the seen class alone does not.
type Synth struct {
	Pool    fmap.Set      // training normals, seen anomalies, pseudo copies
	Labels  []int         // label of every pool row
	Samples []hadg.Sample // T HADG tasks over the pool (hadg.Build with the true modes as clusters)
	Test    fmap.Set      // test normals, then Test seen anomalies, then Test per unseen class
	Class   []string      // "normal", "seen" or "unseen<k>" per test row
}

type gen struct {
	cfg    SynthConfig
	rng    *rand.Rand
	center [][]float64
}

func unit(v []float64) []float64 {
	var n float64
	for _, x := range v {
		n += x * x
	}
	n = math.Sqrt(n)
	for i := range v {
		v[i] /= n
	}
	return v
}

func (g *gen) randDir() []float64 {
	v := make([]float64, g.cfg.C)
	for i := range v {
		v[i] = g.rng.NormFloat64()
	}
	return unit(v)
}

// normal returns a normal's values at every scale (C x H x W each).
func (g *gen) normal(mode int) [][]float32 {
	out := make([][]float32, len(g.cfg.Sizes))
	for s, hw := range g.cfg.Sizes {
		n := hw[0] * hw[1]
		x := make([]float32, g.cfg.C*n)
		for c := 0; c < g.cfg.C; c++ {
			for p := 0; p < n; p++ {
				x[c*n+p] = float32(g.center[mode][c] + g.rng.NormFloat64())
			}
		}
		out[s] = x
	}
	return out
}

// perturb adds amp * dir at one random position of the coarsest scale and the positions it
// covers at every finer scale.
func (g *gen) perturb(x [][]float32, dir []float64) {
	last := g.cfg.Sizes[len(g.cfg.Sizes)-1]
	py, px := g.rng.IntN(last[0]), g.rng.IntN(last[1])
	for s, hw := range g.cfg.Sizes {
		fy, fx := hw[0]/last[0], hw[1]/last[1]
		n := hw[0] * hw[1]
		for y := py * fy; y < (py+1)*fy; y++ {
			for xx := px * fx; xx < (px+1)*fx; xx++ {
				for c := 0; c < g.cfg.C; c++ {
					x[s][c*n+y*hw[1]+xx] += float32(g.cfg.Amp * dir[c])
				}
			}
		}
	}
}

type builder struct {
	ids  []string
	maps [][][]float32
}

func (b *builder) add(id string, x [][]float32) {
	b.ids = append(b.ids, id)
	b.maps = append(b.maps, x)
}

func (b *builder) set(cfg SynthConfig) fmap.Set {
	s := fmap.Set{IDs: b.ids}
	for k, hw := range cfg.Sizes {
		m := fmap.New(len(b.ids), cfg.C, hw[0], hw[1])
		for i, x := range b.maps {
			copy(m.At(i), x[k])
		}
		s.Scales = append(s.Scales, m)
	}
	return s
}

// NewSynth draws a synthetic problem from seed.
func NewSynth(cfg SynthConfig, seed uint64) Synth {
	g := &gen{cfg: cfg, rng: rand.New(rand.NewPCG(seed, 0))}
	for k := 0; k < cfg.Clusters; k++ {
		c := g.randDir()
		for i := range c {
			c[i] *= 2
		}
		g.center = append(g.center, c)
	}
	seenDir, pseudoDir := g.randDir(), g.randDir()
	unseen := make([][]float64, cfg.Unseen)
	for k := range unseen {
		e := g.randDir()
		d := make([]float64, cfg.C)
		for i := range d {
			d[i] = 0.6*pseudoDir[i] + 0.8*e[i]
		}
		unseen[k] = unit(d)
	}
	anomaly := func(dir []float64) [][]float32 {
		x := g.normal(g.rng.IntN(cfg.Clusters))
		g.perturb(x, dir)
		if g.rng.IntN(2) == 0 { // half the anomalies are hit at two places
			g.perturb(x, dir)
		}
		return x
	}
	var train builder
	var labels, mode []int
	var normals [][][]float32
	for k := 0; k < cfg.Clusters; k++ {
		for i := 0; i < cfg.PerMode; i++ {
			x := g.normal(k)
			normals = append(normals, x)
			train.add(fmt.Sprintf("normal%03d", len(labels)), x)
			labels = append(labels, heads.Normal)
			mode = append(mode, k)
		}
	}
	nNormals := len(labels)
	for i := 0; i < cfg.Seen; i++ {
		train.add(fmt.Sprintf("seen%02d", i), anomaly(seenDir))
		labels = append(labels, heads.Seen)
	}
	gens := []string{"gen_a", "gen_b"}
	for _, gn := range gens {
		for i := 0; i < nNormals; i++ {
			x := make([][]float32, len(normals[i]))
			for s := range x {
				x[s] = append([]float32(nil), normals[i][s]...)
			}
			d := g.randDir()
			for c := range d {
				d[c] = pseudoDir[c] + 0.8*d[c]
			}
			g.perturb(x, unit(d))
			id, _ := hadg.DefaultPseudoID(train.ids[i], gn)
			train.add(id, x)
			labels = append(labels, heads.Pseudo)
		}
	}
	var test builder
	var class []string
	for i := 0; i < cfg.Test; i++ {
		test.add(fmt.Sprintf("test_normal%03d", i), g.normal(g.rng.IntN(cfg.Clusters)))
		class = append(class, "normal")
	}
	for i := 0; i < cfg.Test; i++ {
		test.add(fmt.Sprintf("test_seen%03d", i), anomaly(seenDir))
		class = append(class, "seen")
	}
	for k, d := range unseen {
		for i := 0; i < cfg.Test; i++ {
			test.add(fmt.Sprintf("test_unseen%d_%03d", k, i), anomaly(d))
			class = append(class, fmt.Sprintf("unseen%d", k))
		}
	}
	syn := Synth{Pool: train.set(cfg), Labels: labels, Test: test.set(cfg), Class: class}
	var err error
	syn.Samples, _, err = hadg.Build(hadg.Input{Normals: train.ids[:nNormals], Clusters: mode,
		Anomalies: train.ids[nNormals : nNormals+cfg.Seen], Generators: gens, Tasks: cfg.T},
		rand.New(rand.NewPCG(seed, 1)))
	if err != nil {
		panic(fmt.Sprintf("batchtest: hadg.Build on synthetic data: %v", err))
	}
	return syn
}

// UnseenRows returns the test rows of normals and unseen-class anomalies, and which of them
// are anomalies: the data of the unseen-class AUROC.
func (s Synth) UnseenRows() (rows []int, positive []bool) {
	for i, c := range s.Class {
		switch {
		case c == "normal":
			rows = append(rows, i)
			positive = append(positive, false)
		case len(c) > 6 && c[:6] == "unseen":
			rows = append(rows, i)
			positive = append(positive, true)
		}
	}
	return rows, positive
}
