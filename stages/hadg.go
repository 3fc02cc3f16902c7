package stages

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"

	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// hadgVersion is the hadg stage's code version (part of its cache key).
const hadgVersion = 1

// HADGParams configures the tasks stage (docs/algorithm.md, "HADG tasks"). The number of labelled
// anomalies M is the ingest stage's; the number of clusters C the clusters stage's.
type HADGParams struct {
	// T is the number of tasks: task 0 holistic, tasks 1..T-1 cluster pairs (paper: 7).
	T int `json:"T"`
	// Generators restricts the pseudo-anomaly generators the tasks draw from; empty means
	// every generator in the pseudo table.
	Generators []string `json:"generators"`
}

// Validate checks the hadg params.
func (p *HADGParams) Validate() error {
	if p.T < 1 {
		//nolint:staticcheck // ST1005: T is the param's name, as the DAG spells it.
		return fmt.Errorf("T: %d, want >= 1", p.T)
	}
	seen := map[string]bool{}
	for _, g := range p.Generators {
		if g == "" || seen[g] {
			return fmt.Errorf("generators: %q: names must be distinct and non-empty", p.Generators)
		}
		seen[g] = true
	}
	return nil
}

func init() {
	register(kind.Definition{
		Kind:    "hadg",
		Version: hadgVersion,
		Params:  func() any { return &HADGParams{T: 7} },
		Inputs:  kind.Inputs{Required: []string{"images"}, Optional: []string{"assignments", "pseudo"}},
		Outputs: []string{"tasks"},
		Run:     runHADG,
	})
}

// runHADG builds the T tasks from the training normals and seen anomalies (ingest images),
// the normals' clusters (kmeans assignments; without a clusters input every task is
// holistic) and the pseudo anomalies (augment pseudo; without it the tasks hold none).
func runHADG(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*HADGParams)
	imgs, err := tables.ReadImageIndex(ctx, env)
	if err != nil {
		return err
	}
	in := hadg.Input{Normals: imgs.TrainNormals(), Anomalies: imgs.TrainAnomalies(), Tasks: p.T}

	if env.Has("assignments") {
		byID, err := tables.ReadAssignments(ctx, env)
		if err != nil {
			return err
		}
		normal := setOf(in.Normals)
		for _, id := range slices.Sorted(maps.Keys(byID)) {
			if !normal[id] {
				return fmt.Errorf("the assignments table assigns %q to a cluster, but it is not a training normal of the images table", id)
			}
		}
		in.Clusters = make([]int, len(in.Normals))
		for i, id := range in.Normals {
			c, ok := byID[id]
			if !ok {
				c = -1 // its cluster was dropped: holistic tasks only
			}
			in.Clusters[i] = c
		}
	}

	if env.Has("pseudo") {
		pseudo, err := tables.ReadPseudoIndex(ctx, env)
		if err != nil {
			return err
		}
		uid, usrc, ugen := make([]string, len(pseudo)), make([]string, len(pseudo)), make([]string, len(pseudo))
		gens := map[string]bool{}
		for i, ps := range pseudo {
			uid[i], usrc[i], ugen[i] = ps.ID, ps.Source, ps.Generator
			gens[ps.Generator] = true
		}
		in.PseudoID, err = hadg.PseudoLookup(uid, usrc, ugen)
		if err != nil {
			return fmt.Errorf("pseudo table: %w", err)
		}
		if len(p.Generators) > 0 {
			for _, g := range p.Generators {
				if !gens[g] {
					return fmt.Errorf("generators: %q is not in the pseudo table (has %v)", g, sortedStrings(gens))
				}
			}
			in.Generators = append([]string(nil), p.Generators...)
		} else {
			in.Generators = sortedStrings(gens)
		}
	} else if len(p.Generators) > 0 {
		return fmt.Errorf("generators %v given but no input has a pseudo output (add the augment stage to needs)", p.Generators)
	}

	samples, rep, err := hadg.Build(in, rand.New(rand.NewPCG(env.Seed, 0)))
	if err != nil {
		return err
	}
	for _, l := range rep.Lines() {
		fmt.Fprintln(env.Log, l)
	}
	return tables.WriteTasks(env, samples)
}

func sortedStrings(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
