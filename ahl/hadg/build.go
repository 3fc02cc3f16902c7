package hadg

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
)

// DefaultMinClusterSize is the smallest cluster that forms pair tasks (docs/algorithm.md,
// "k-means clusters"). kmeans drops smaller clusters already; Build checks again so any
// assignment works.
const DefaultMinClusterSize = 3

// Input is what HADG draws its tasks from.
type Input struct {
	// Normals are the training normals' ids.
	Normals []string
	// Clusters holds each normal's cluster (kmeans.Result.Labels, row for row): an id >= 0,
	// or -1 for a normal outside every cluster, which then appears in holistic tasks only.
	// Nil puts every normal in one cluster, so every task is holistic.
	Clusters []int
	// Anomalies are the seen (labelled) anomalies' ids; M = len(Anomalies) may be 0.
	Anomalies []string
	// Generators are the pseudo-anomaly generators available (e.g. cutpaste, cutmix, draem).
	// With two or more, every task draws a different one for support and query, as the paper
	// does. With one, support and query share it (the reference code's behaviour) and the
	// report says so. With none, tasks hold no pseudo anomalies and the report says so.
	Generators []string
	// PseudoID names the pseudo anomaly made from a normal by a generator, false when there is
	// none. Nil means DefaultPseudoID. Every (normal, generator) pair must resolve.
	PseudoID func(normal, generator string) (string, bool)
	// Tasks is T >= 1: task 0 is holistic, tasks 1..T-1 are cluster pairs.
	Tasks int
	// MinClusterSize drops smaller clusters from pair tasks; 0 means DefaultMinClusterSize.
	MinClusterSize int
}

// DefaultPseudoID is "<normal id>#<generator>", the id the augment stage gives the pseudo
// anomaly it makes from a normal.
func DefaultPseudoID(normal, generator string) (string, bool) {
	return normal + "#" + generator, true
}

// Cluster is one cluster of the input and its number of normals.
type Cluster struct {
	ID   int
	Size int
}

// Counts is the number of samples of each kind in one role of one task.
type Counts struct {
	Normal, Seen, Unseen, Pseudo int
}

// Total is the number of samples.
func (c Counts) Total() int { return c.Normal + c.Seen + c.Unseen + c.Pseudo }

// TaskReport describes one task.
type TaskReport struct {
	Task     int
	Holistic bool
	// Pair is the ordered cluster pair (a, b): support normals from a, query normals from b;
	// (-1, -1) for a holistic task.
	Pair                             [2]int
	SupportGenerator, QueryGenerator string // "" when there are no generators
	Support, Query                   Counts
}

// Report says what Build did, for the stage's log and tests.
type Report struct {
	Clusters    []Cluster // clusters used for pair tasks, by ascending id
	Dropped     []Cluster // clusters with fewer than MinClusterSize normals (holistic tasks only)
	Unclustered int       // normals with cluster -1
	Pairs       [][2]int  // the seeded order of the ordered pairs; task t >= 1 uses Pairs[(t-1) % len(Pairs)]
	Notes       []string  // departures from the paper's setting worth a log line
	Tasks       []TaskReport
}

// Lines renders the report as log lines, without a prefix (the pipeline prefixes each line
// of a stage's log with the stage instance).
func (r Report) Lines() []string {
	var out []string
	sizes := make([]string, len(r.Clusters))
	for i, c := range r.Clusters {
		sizes[i] = fmt.Sprintf("%d: %d normals", c.ID, c.Size)
	}
	out = append(out, fmt.Sprintf("%d clusters (%s), %d ordered pairs, %d unclustered normals",
		len(r.Clusters), strings.Join(sizes, "; "), len(r.Pairs), r.Unclustered))
	for _, d := range r.Dropped {
		out = append(out, fmt.Sprintf("cluster %d dropped: %d normals, fewer than the minimum", d.ID, d.Size))
	}
	out = append(out, r.Notes...)
	for _, t := range r.Tasks {
		kind := "holistic"
		if !t.Holistic {
			kind = fmt.Sprintf("pair %d->%d", t.Pair[0], t.Pair[1])
		}
		out = append(out, fmt.Sprintf("task %d %s: support %+v gen %q; query %+v gen %q",
			t.Task, kind, t.Support, t.SupportGenerator, t.Query, t.QueryGenerator))
	}
	return out
}

// Build makes the T tasks of HADG (docs/algorithm.md, "HADG tasks"):
//
//   - Task 0 is holistic: all normals shuffled, the first half (rounded down) support, the
//     rest query. Tasks 1..T-1 take the ordered pairs (a, b) of distinct clusters in a seeded
//     shuffled order, cycling when T-1 exceeds the C(C-1) pairs: support normals are cluster
//     a's members, query normals cluster b's (in input order). With fewer than two clusters
//     every task is holistic, each with its own random halves.
//   - Anomalies: with M >= 2 the task shuffles them; the first ceil(M/2) are virtual seen
//     (support and query, label 1), the rest virtual unseen (query only, label 1). With M = 1
//     the one anomaly is virtual seen, in both sets.
//   - Pseudo anomalies: the task draws a support generator and a different query generator;
//     each normal of a set is replaced, with probability 0.5, by its pseudo anomaly from that
//     set's generator (label 2).
//
// Randomness: rng first shuffles the pairs, then gives each task, in order, its own PCG seed;
// everything within a task draws from that task's source. So the result depends only on the
// input and rng's state, and tasks 0..t do not change when T grows beyond t.
func Build(in Input, rng *rand.Rand) ([]Sample, Report, error) {
	if err := in.validate(rng); err != nil {
		return nil, Report{}, err
	}
	var rep Report
	members := map[int][]string{}
	for i, id := range in.Normals {
		c := 0
		if in.Clusters != nil {
			c = in.Clusters[i]
		}
		if c < 0 {
			rep.Unclustered++
			continue
		}
		members[c] = append(members[c], id)
	}
	var ids []int
	for c := range members {
		ids = append(ids, c)
	}
	sort.Ints(ids)
	var kept []int
	for _, c := range ids {
		cl := Cluster{ID: c, Size: len(members[c])}
		if cl.Size < in.MinClusterSize {
			rep.Dropped = append(rep.Dropped, cl)
			continue
		}
		rep.Clusters = append(rep.Clusters, cl)
		kept = append(kept, c)
	}
	for _, a := range kept {
		for _, b := range kept {
			if a != b {
				rep.Pairs = append(rep.Pairs, [2]int{a, b})
			}
		}
	}
	rng.Shuffle(len(rep.Pairs), func(i, j int) { rep.Pairs[i], rep.Pairs[j] = rep.Pairs[j], rep.Pairs[i] })
	if len(kept) < 2 && in.Tasks > 1 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d usable clusters: all %d tasks are holistic", len(kept), in.Tasks))
	}
	switch len(in.Generators) {
	case 0:
		rep.Notes = append(rep.Notes, "no generators: tasks hold no pseudo anomalies")
	case 1:
		rep.Notes = append(rep.Notes, fmt.Sprintf("one generator: support and query both use %q (the paper draws two different ones)", in.Generators[0]))
	}

	seeds := make([][2]uint64, in.Tasks)
	for t := range seeds {
		seeds[t] = [2]uint64{rng.Uint64(), rng.Uint64()}
	}
	var samples []Sample
	for t := 0; t < in.Tasks; t++ {
		trng := rand.New(rand.NewPCG(seeds[t][0], seeds[t][1]))
		tr := TaskReport{Task: t, Holistic: true, Pair: [2]int{-1, -1}}
		var support, query []string
		if t == 0 || len(rep.Pairs) == 0 {
			all := append([]string(nil), in.Normals...)
			trng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
			support, query = all[:len(all)/2], all[len(all)/2:]
		} else {
			p := rep.Pairs[(t-1)%len(rep.Pairs)]
			tr.Holistic, tr.Pair = false, p
			support, query = members[p[0]], members[p[1]]
		}
		seen, unseen := splitAnomalies(in.Anomalies, trng)
		tr.SupportGenerator, tr.QueryGenerator = drawGenerators(in.Generators, trng)

		var s []Sample
		s, tr.Support = makeSet(t, Support, support, seen, nil, tr.SupportGenerator, in.PseudoID, trng)
		samples = append(samples, s...)
		s, tr.Query = makeSet(t, Query, query, seen, unseen, tr.QueryGenerator, in.PseudoID, trng)
		samples = append(samples, s...)
		rep.Tasks = append(rep.Tasks, tr)
	}
	return samples, rep, nil
}

// splitAnomalies returns a task's virtual seen and virtual unseen anomalies.
func splitAnomalies(anomalies []string, rng *rand.Rand) (seen, unseen []string) {
	if len(anomalies) < 2 {
		return anomalies, nil
	}
	a := append([]string(nil), anomalies...)
	rng.Shuffle(len(a), func(i, j int) { a[i], a[j] = a[j], a[i] })
	k := (len(a) + 1) / 2 // ceil(M/2)
	return a[:k], a[k:]
}

// drawGenerators picks the support generator and a different query generator.
func drawGenerators(gens []string, rng *rand.Rand) (support, query string) {
	switch len(gens) {
	case 0:
		return "", ""
	case 1:
		return gens[0], gens[0]
	}
	i := rng.IntN(len(gens))
	j := rng.IntN(len(gens) - 1)
	if j >= i {
		j++
	}
	return gens[i], gens[j]
}

// makeSet builds one role of one task: each normal, or with probability 0.5 its pseudo anomaly
// from gen; then the virtual seen anomalies; then (query only) the virtual unseen ones.
func makeSet(task int, role Role, normals, seen, unseen []string, gen string,
	pseudoID func(string, string) (string, bool), rng *rand.Rand) ([]Sample, Counts) {
	var out []Sample
	var c Counts
	for _, id := range normals {
		if gen != "" && rng.IntN(2) == 0 {
			pid, _ := pseudoID(id, gen) // resolved for every pair in validate
			out = append(out, Sample{Task: task, Role: role, ID: pid, Label: 2, Kind: KindPseudo, Generator: gen})
			c.Pseudo++
			continue
		}
		out = append(out, Sample{Task: task, Role: role, ID: id, Label: 0, Kind: KindNormal})
		c.Normal++
	}
	for _, id := range seen {
		out = append(out, Sample{Task: task, Role: role, ID: id, Label: 1, Kind: KindSeen})
		c.Seen++
	}
	for _, id := range unseen {
		out = append(out, Sample{Task: task, Role: role, ID: id, Label: 1, Kind: KindUnseen})
		c.Unseen++
	}
	return out, c
}

// validate checks the input and fills in defaults.
func (in *Input) validate(rng *rand.Rand) error {
	if rng == nil {
		return fmt.Errorf("hadg: nil random source")
	}
	if in.Tasks < 1 {
		return fmt.Errorf("hadg: T = %d tasks, want at least 1", in.Tasks)
	}
	if len(in.Normals) < 2 {
		return fmt.Errorf("hadg: %d training normals, want at least 2 (one per half of the holistic task)", len(in.Normals))
	}
	if in.Clusters != nil && len(in.Clusters) != len(in.Normals) {
		return fmt.Errorf("hadg: %d cluster assignments for %d normals", len(in.Clusters), len(in.Normals))
	}
	for i, c := range in.Clusters {
		if c < -1 {
			return fmt.Errorf("hadg: normal %q has cluster %d, want >= 0 or -1 (no cluster)", in.Normals[i], c)
		}
	}
	if in.MinClusterSize < 0 {
		return fmt.Errorf("hadg: minimum cluster size %d is negative", in.MinClusterSize)
	}
	if in.MinClusterSize == 0 {
		in.MinClusterSize = DefaultMinClusterSize
	}
	seen := map[string]string{}
	for _, group := range []struct {
		name string
		ids  []string
	}{{"normal", in.Normals}, {"anomaly", in.Anomalies}} {
		for _, id := range group.ids {
			if id == "" {
				return fmt.Errorf("hadg: empty %s id", group.name)
			}
			if prev, ok := seen[id]; ok {
				return fmt.Errorf("hadg: id %q is listed as %s and as %s", id, prev, group.name)
			}
			seen[id] = group.name
		}
	}
	gens := map[string]bool{}
	for _, g := range in.Generators {
		if g == "" || gens[g] {
			return fmt.Errorf("hadg: generator names must be distinct and non-empty, got %q", in.Generators)
		}
		gens[g] = true
	}
	if in.PseudoID == nil {
		in.PseudoID = DefaultPseudoID
	}
	for _, g := range in.Generators {
		for _, id := range in.Normals {
			if pid, ok := in.PseudoID(id, g); !ok || pid == "" {
				return fmt.Errorf("hadg: no pseudo anomaly of normal %q by generator %q", id, g)
			}
		}
	}
	return nil
}

// PseudoLookup turns the rows of a pseudo-anomaly table (its id, source normal id and generator
// columns) into an Input.PseudoID function. Columns of different lengths, or two rows for the
// same (source, generator), are an error.
func PseudoLookup(ids, sources, generators []string) (func(normal, generator string) (string, bool), error) {
	if len(sources) != len(ids) || len(generators) != len(ids) {
		return nil, fmt.Errorf("hadg: pseudo table has %d ids, %d sources and %d generators", len(ids), len(sources), len(generators))
	}
	table := make(map[[2]string]string, len(ids))
	for i, id := range ids {
		key := [2]string{sources[i], generators[i]}
		if prev, ok := table[key]; ok {
			return nil, fmt.Errorf("hadg: pseudo table has two anomalies (%q and %q) of normal %q by generator %q", prev, id, key[0], key[1])
		}
		table[key] = id
	}
	return func(normal, generator string) (string, bool) {
		id, ok := table[[2]string{normal, generator}]
		return id, ok
	}, nil
}
