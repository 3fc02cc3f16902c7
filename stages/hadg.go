package stages

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// hadgVersion is the hadg stage's code version (part of its cache key).
const hadgVersion = 1

// HADGParams configures the tasks stage (HADG, AHL_SPEC.md). The number of labelled
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
	imgs, err := loadImageIndex(ctx, env)
	if err != nil {
		return err
	}
	in := hadg.Input{Normals: imgs.trainNormals(), Anomalies: imgs.trainAnomalies(), Tasks: p.T}

	if env.Has("assignments") {
		asg, err := env.With("assignments")
		if err != nil {
			return err
		}
		rec, err := asg.Open(ctx, "assignments")
		if err != nil {
			return fmt.Errorf("input %s assignments: %w", asg.Stage, err)
		}
		ids, err1 := artifacts.StringCol(rec, "id")
		cl, err2 := artifacts.Int64Col(rec, "cluster")
		if err := firstErr(err1, err2); err != nil {
			rec.Release()
			return fmt.Errorf("input %s assignments: %w", asg.Stage, err)
		}
		byID := make(map[string]int, len(ids))
		for i, id := range ids {
			byID[id] = int(cl[i])
		}
		rec.Release()
		normal := setOf(in.Normals)
		for id := range byID {
			if !normal[id] {
				return fmt.Errorf("input %s assigns %q to a cluster, but it is not a training normal of the images table", asg.Stage, id)
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
		ps, err := env.With("pseudo")
		if err != nil {
			return err
		}
		rec, err := ps.Open(ctx, "pseudo")
		if err != nil {
			return fmt.Errorf("input %s pseudo: %w", ps.Stage, err)
		}
		ids, err1 := artifacts.StringCol(rec, "id")
		src, err2 := artifacts.StringCol(rec, "source")
		gen, err3 := artifacts.StringCol(rec, "generator")
		if err := firstErr(err1, err2, err3); err != nil {
			rec.Release()
			return fmt.Errorf("input %s pseudo: %w", ps.Stage, err)
		}
		// The table has one row per scale; keep each pseudo anomaly once. The kept strings
		// are cloned: they alias the table's blob, which holds every pseudo anomaly's maps.
		var uid, usrc, ugen []string
		dup := map[string]bool{}
		gens := map[string]bool{}
		for i, id := range ids {
			if dup[id] {
				continue
			}
			dup[id] = true
			uid = append(uid, strings.Clone(id))
			usrc, ugen = append(usrc, strings.Clone(src[i])), append(ugen, strings.Clone(gen[i]))
			gens[ugen[len(ugen)-1]] = true
		}
		rec.Release() // after the clones: ids, src and gen alias its memory
		in.PseudoID, err = hadg.PseudoLookup(uid, usrc, ugen)
		if err != nil {
			return fmt.Errorf("input %s: %w", ps.Stage, err)
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
	rec, err := tasksTable(samples)
	if err != nil {
		return err
	}
	env.Output("tasks", rec)
	return nil
}

func sortedStrings(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// tasksTable writes task samples as the tasks table (stages/TABLES.md).
func tasksTable(samples []hadg.Sample) (arrow.RecordBatch, error) {
	n := len(samples)
	task, label := make([]int64, n), make([]int64, n)
	role, id, kinds, gen := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, s := range samples {
		task[i], label[i] = int64(s.Task), int64(s.Label)
		role[i], id[i], kinds[i], gen[i] = string(s.Role), s.ID, string(s.Kind), s.Generator
	}
	return artifacts.NewTable(artifacts.Int64s("task", task), artifacts.Strings("role", role), artifacts.Strings("id", id),
		artifacts.Int64s("label", label), artifacts.Strings("kind", kinds), artifacts.Strings("generator", gen))
}

// readTasks reads a tasks table back into samples, checking roles, labels and kinds.
func readTasks(rec arrow.RecordBatch) ([]hadg.Sample, error) {
	task, err1 := artifacts.Int64Col(rec, "task")
	role, err2 := artifacts.StringCol(rec, "role")
	id, err3 := artifacts.StringCol(rec, "id")
	label, err4 := artifacts.Int64Col(rec, "label")
	kinds, err5 := artifacts.StringCol(rec, "kind")
	gen, err6 := artifacts.StringCol(rec, "generator")
	if err := firstErr(err1, err2, err3, err4, err5, err6); err != nil {
		return nil, err
	}
	out := make([]hadg.Sample, len(task))
	for i := range out {
		s := hadg.Sample{Task: int(task[i]), Role: hadg.Role(role[i]), ID: id[i], Label: int(label[i]), Kind: hadg.Kind(kinds[i]), Generator: gen[i]}
		if s.Task < 0 || (s.Role != hadg.Support && s.Role != hadg.Query) || s.Label < 0 || s.Label > 2 || s.ID == "" {
			return nil, fmt.Errorf("row %d: task %d role %q id %q label %d: want task >= 0, role support or query, label 0, 1 or 2", i, s.Task, s.Role, s.ID, s.Label)
		}
		out[i] = s
	}
	return out, nil
}
