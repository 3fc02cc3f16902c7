package hadg

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

var gens3 = []string{"cutpaste", "cutmix", "draem"}

// input makes normals n000, n001, ... in clusters of the given sizes (in order; a negative
// size makes that many unclustered normals), m anomalies a0, a1, ... and T tasks.
func input(sizes []int, m, tasks int, gens []string) Input {
	in := Input{Tasks: tasks, Generators: gens}
	for c, n := range sizes {
		id := c
		if n < 0 {
			id, n = -1, -n
		}
		for i := 0; i < n; i++ {
			in.Normals = append(in.Normals, fmt.Sprintf("n%03d", len(in.Normals)))
			in.Clusters = append(in.Clusters, id)
		}
	}
	for i := 0; i < m; i++ {
		in.Anomalies = append(in.Anomalies, fmt.Sprintf("a%d", i))
	}
	return in
}

func build(t *testing.T, in Input, seed uint64) ([]Sample, Report) {
	t.Helper()
	s, r, err := Build(in, rand.New(rand.NewPCG(seed, 0)))
	if err != nil {
		t.Fatal(err)
	}
	checkInvariants(t, in, s, r)
	return s, r
}

// source returns the normal a normal or pseudo sample stands for.
func source(s Sample) string {
	if s.Kind == KindPseudo {
		return strings.TrimSuffix(s.ID, "#"+s.Generator)
	}
	return s.ID
}

// set is one role of one task.
type set struct {
	normals   []string // sources of normal and pseudo samples, in order
	seen      []string
	unseen    []string
	generator string // of its pseudo samples ("" when none)
	counts    Counts
}

func split(samples []Sample, tasks int) [][2]set {
	out := make([][2]set, tasks)
	for _, s := range samples {
		r := 0
		if s.Role == Query {
			r = 1
		}
		st := &out[s.Task][r]
		switch s.Kind {
		case KindNormal:
			st.normals = append(st.normals, s.ID)
			st.counts.Normal++
		case KindPseudo:
			st.normals = append(st.normals, source(s))
			st.generator = s.Generator
			st.counts.Pseudo++
		case KindSeen:
			st.seen = append(st.seen, s.ID)
			st.counts.Seen++
		case KindUnseen:
			st.unseen = append(st.unseen, s.ID)
			st.counts.Unseen++
		}
	}
	return out
}

func sorted(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

// checkInvariants checks what holds for every build: labels match kinds, ids are known,
// generators match the task report, unseen anomalies are query-only, anomalies split as
// docs/algorithm.md ("HADG tasks") says, counts match, and no normal appears twice in a set.
func checkInvariants(t *testing.T, in Input, samples []Sample, rep Report) {
	t.Helper()
	if len(rep.Tasks) != in.Tasks {
		t.Fatalf("report has %d tasks, want %d", len(rep.Tasks), in.Tasks)
	}
	normal := map[string]bool{}
	for _, id := range in.Normals {
		normal[id] = true
	}
	m := len(in.Anomalies)
	for _, s := range samples {
		wantLabel := map[Kind]int{KindNormal: 0, KindSeen: 1, KindUnseen: 1, KindPseudo: 2}[s.Kind]
		if s.Label != wantLabel || (s.Kind == KindPseudo) != (s.Generator != "") {
			t.Fatalf("sample %+v: label or generator does not match its kind", s)
		}
		if (s.Kind == KindNormal || s.Kind == KindPseudo) && !normal[source(s)] {
			t.Fatalf("sample %+v does not come from a training normal", s)
		}
		if s.Kind == KindUnseen && s.Role != Query {
			t.Fatalf("virtual unseen anomaly %+v outside the query set", s)
		}
	}
	for task, sets := range split(samples, in.Tasks) {
		tr := rep.Tasks[task]
		if sets[0].counts != tr.Support || sets[1].counts != tr.Query {
			t.Errorf("task %d: counts %+v / %+v, report %+v / %+v", task, sets[0].counts, sets[1].counts, tr.Support, tr.Query)
		}
		if sets[0].generator != "" && sets[0].generator != tr.SupportGenerator ||
			sets[1].generator != "" && sets[1].generator != tr.QueryGenerator {
			t.Errorf("task %d: pseudo generators %q/%q, report %q/%q", task, sets[0].generator, sets[1].generator, tr.SupportGenerator, tr.QueryGenerator)
		}
		if len(in.Generators) >= 2 && tr.SupportGenerator == tr.QueryGenerator {
			t.Errorf("task %d: support and query share generator %q", task, tr.SupportGenerator)
		}
		for r, st := range sets {
			if len(slices.Compact(sorted(st.normals))) != len(st.normals) {
				t.Errorf("task %d role %d: a normal appears twice", task, r)
			}
		}
		// Anomalies: ceil(M/2) virtual seen in both sets, the rest virtual unseen in query.
		if !reflect.DeepEqual(sets[0].seen, sets[1].seen) || len(sets[0].unseen) != 0 {
			t.Errorf("task %d: support seen %v, query seen %v, support unseen %v", task, sets[0].seen, sets[1].seen, sets[0].unseen)
		}
		wantSeen := (m + 1) / 2
		if m == 1 {
			wantSeen = 1
		}
		if len(sets[1].seen) != wantSeen || len(sets[1].unseen) != m-wantSeen {
			t.Errorf("task %d: M = %d gives %d seen and %d unseen, want %d and %d", task, m, len(sets[1].seen), len(sets[1].unseen), wantSeen, m-wantSeen)
		}
		if got := sorted(append(append([]string(nil), sets[1].seen...), sets[1].unseen...)); !reflect.DeepEqual(got, sorted(in.Anomalies)) && m > 0 {
			t.Errorf("task %d: query anomalies %v, want all of %v", task, got, in.Anomalies)
		}
	}
}

func members(in Input, c int) []string {
	var out []string
	for i, id := range in.Normals {
		if in.Clusters[i] == c {
			out = append(out, id)
		}
	}
	return out
}

func TestHolisticTaskPartitionsNormals(t *testing.T) {
	in := input([]int{10, 12, 9, -3}, 10, 7, gens3) // 34 normals, 3 unclustered
	s, _ := build(t, in, 1)
	sets := split(s, in.Tasks)[0]
	if len(sets[0].normals) != 17 || len(sets[1].normals) != 17 {
		t.Errorf("halves of %d and %d, want 17 and 17", len(sets[0].normals), len(sets[1].normals))
	}
	all := sorted(append(append([]string(nil), sets[0].normals...), sets[1].normals...))
	if !reflect.DeepEqual(all, sorted(in.Normals)) {
		t.Errorf("task 0's halves %v do not partition the normals", all)
	}
	// Shuffled: the support half is not simply the first 17 normals in input order.
	if reflect.DeepEqual(sorted(sets[0].normals), in.Normals[:17]) {
		t.Error("task 0's support half is the input's first half: not shuffled")
	}
	in = input([]int{5, 6}, 2, 1, gens3) // odd total: support is the smaller half
	s, _ = build(t, in, 1)
	sets = split(s, 1)[0]
	if len(sets[0].normals) != 5 || len(sets[1].normals) != 6 {
		t.Errorf("11 normals split %d/%d, want 5/6", len(sets[0].normals), len(sets[1].normals))
	}
}

func TestPairTasks(t *testing.T) {
	in := input([]int{10, 12, 8}, 10, 7, gens3)
	s, rep := build(t, in, 2)
	sets := split(s, in.Tasks)
	pairs := map[[2]int]bool{}
	for task := 1; task < 7; task++ {
		tr := rep.Tasks[task]
		a, b := tr.Pair[0], tr.Pair[1]
		if tr.Holistic || a == b || a < 0 || b < 0 {
			t.Fatalf("task %d: %+v is not a pair of distinct clusters", task, tr)
		}
		if pairs[tr.Pair] {
			t.Errorf("task %d repeats pair %v before all 6 were used", task, tr.Pair)
		}
		pairs[tr.Pair] = true
		// Support normals are all of cluster a's real members, query normals all of b's.
		if !reflect.DeepEqual(sorted(sets[task][0].normals), members(in, a)) {
			t.Errorf("task %d: support normals %v, cluster %d is %v", task, sets[task][0].normals, a, members(in, a))
		}
		if !reflect.DeepEqual(sorted(sets[task][1].normals), members(in, b)) {
			t.Errorf("task %d: query normals %v, cluster %d is %v", task, sets[task][1].normals, b, members(in, b))
		}
	}
	if len(pairs) != 6 || !rep.Tasks[0].Holistic {
		t.Errorf("pairs %v, task 0 %+v: want all 6 ordered pairs and a holistic task 0", pairs, rep.Tasks[0])
	}
}

func TestTAndCIndependent(t *testing.T) {
	// T = 3 with C = 3: two distinct pairs out of six.
	_, rep := build(t, input([]int{5, 5, 5}, 4, 3, gens3), 3)
	if rep.Tasks[1].Pair == rep.Tasks[2].Pair || rep.Tasks[1].Holistic || rep.Tasks[2].Holistic || len(rep.Pairs) != 6 {
		t.Errorf("T = 3, C = 3: tasks %+v", rep.Tasks)
	}
	// T = 10 with C = 3: tasks 7, 8, 9 cycle back to the pairs of tasks 1, 2, 3.
	_, rep = build(t, input([]int{5, 5, 5}, 4, 10, gens3), 3)
	for task := 7; task < 10; task++ {
		if rep.Tasks[task].Pair != rep.Tasks[task-6].Pair {
			t.Errorf("task %d has pair %v, task %d has %v: no cycling", task, rep.Tasks[task].Pair, task-6, rep.Tasks[task-6].Pair)
		}
	}
	// T = 7 with C = 2: two pairs, (0,1) and (1,0), cycled three times.
	_, rep = build(t, input([]int{5, 5}, 4, 7, gens3), 3)
	if len(rep.Pairs) != 2 {
		t.Errorf("C = 2 gives pairs %v", rep.Pairs)
	}
	for task := 3; task < 7; task++ {
		if rep.Tasks[task].Pair != rep.Tasks[task-2].Pair {
			t.Errorf("C = 2, task %d pair %v, task %d %v", task, rep.Tasks[task].Pair, task-2, rep.Tasks[task-2].Pair)
		}
	}
}

func TestOneClusterAllHolistic(t *testing.T) {
	in := input([]int{20}, 3, 4, gens3)
	in.Clusters = nil // nil: one cluster
	s, rep := build(t, in, 4)
	sets := split(s, in.Tasks)
	for task, tr := range rep.Tasks {
		if !tr.Holistic || len(sets[task][0].normals) != 10 || len(sets[task][1].normals) != 10 {
			t.Errorf("task %d: %+v, want holistic with halves of 10", task, tr)
		}
	}
	if reflect.DeepEqual(sorted(sets[1][0].normals), sorted(sets[2][0].normals)) {
		t.Error("tasks 1 and 2 have the same random halves")
	}
	if len(rep.Notes) == 0 || !strings.Contains(strings.Join(rep.Notes, "\n"), "holistic") {
		t.Errorf("notes %v do not say every task is holistic", rep.Notes)
	}
}

func TestDroppedAndUnclustered(t *testing.T) {
	// Cluster 1 has two normals and is dropped; three normals have no cluster. Both appear
	// in the holistic task only.
	in := input([]int{6, 2, 7, -3}, 2, 5, gens3)
	s, rep := build(t, in, 5)
	if !reflect.DeepEqual(rep.Dropped, []Cluster{{ID: 1, Size: 2}}) || rep.Unclustered != 3 ||
		!reflect.DeepEqual(rep.Clusters, []Cluster{{0, 6}, {2, 7}}) {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(strings.Join(rep.Lines(), "\n"), "cluster 1 dropped: 2 normals") {
		t.Errorf("log lines do not mention the dropped cluster:\n%s", strings.Join(rep.Lines(), "\n"))
	}
	outside := append(members(in, 1), members(in, -1)...)
	for _, x := range s {
		if x.Task > 0 && (x.Kind == KindNormal || x.Kind == KindPseudo) && slices.Contains(outside, source(x)) {
			t.Errorf("task %d uses %s, which is in no kept cluster", x.Task, source(x))
		}
	}
}

func TestAnomalySplit(t *testing.T) {
	for _, m := range []int{0, 1, 2, 3, 10} {
		s, _ := build(t, input([]int{5, 5, 5}, m, 7, gens3), uint64(10+m)) // checkInvariants checks the sizes
		sets := split(s, 7)
		if m == 1 && (!reflect.DeepEqual(sets[3][0].seen, []string{"a0"}) || !reflect.DeepEqual(sets[3][1].seen, []string{"a0"})) {
			t.Errorf("M = 1: support %v, query %v; want a0 in both", sets[3][0].seen, sets[3][1].seen)
		}
		if m == 10 {
			// Each task shuffles on its own seed: the virtual seen sets are not all equal.
			distinct := map[string]bool{}
			for task := range sets {
				distinct[strings.Join(sorted(sets[task][0].seen), ",")] = true
			}
			if len(distinct) < 2 {
				t.Errorf("M = 10: every task has the same virtual seen set %v", distinct)
			}
		}
	}
}

func TestPseudoReplacement(t *testing.T) {
	in := input([]int{70, 60, 70}, 10, 20, gens3)
	s, rep := build(t, in, 6)
	var normals, pseudo int
	used := map[[2]string]bool{}
	for _, tr := range rep.Tasks {
		normals += tr.Support.Normal + tr.Query.Normal
		pseudo += tr.Support.Pseudo + tr.Query.Pseudo
		used[[2]string{"support", tr.SupportGenerator}] = true
		used[[2]string{"query", tr.QueryGenerator}] = true
	}
	// Each normal is replaced with probability 1/2: over n draws the count is Binomial(n, 1/2),
	// so 4 standard deviations (sqrt(n)/2 each) bound a correct implementation.
	n := float64(normals + pseudo)
	if dev := math.Abs(float64(pseudo) - n/2); dev > 4*math.Sqrt(n)/2 {
		t.Errorf("%d of %v normals replaced: %.0f from n/2, beyond 4 standard deviations", pseudo, n, dev)
	}
	// Over 20 tasks every generator serves in both roles (chance of missing one: < 1e-3).
	if len(used) != 6 {
		t.Errorf("generator roles used: %v, want each of 3 generators in both roles", used)
	}
	// Pseudo ids are "<normal>#<generator>" (the default) with the set's generator.
	for _, x := range s {
		if x.Kind == KindPseudo && x.ID != source(x)+"#"+x.Generator {
			t.Errorf("pseudo sample %+v", x)
		}
	}
	// A custom PseudoID is used.
	in.PseudoID = func(normal, gen string) (string, bool) { return gen + ":" + normal, true }
	in.Tasks = 2
	s, _, err := Build(in, rand.New(rand.NewPCG(6, 0)))
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range s {
		if x.Kind == KindPseudo && !strings.HasPrefix(x.ID, x.Generator+":n") {
			t.Errorf("custom pseudo id not used: %+v", x)
		}
	}
}

func TestGeneratorFallbacks(t *testing.T) {
	_, rep := build(t, input([]int{5, 5}, 2, 3, []string{"cutpaste"}), 7)
	for _, tr := range rep.Tasks {
		if tr.SupportGenerator != "cutpaste" || tr.QueryGenerator != "cutpaste" {
			t.Errorf("one generator: task %+v", tr)
		}
	}
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "one generator") {
		t.Errorf("notes %v do not mention the single generator", rep.Notes)
	}
	s, rep := build(t, input([]int{5, 5}, 2, 3, nil), 7)
	for _, x := range s {
		if x.Kind == KindPseudo {
			t.Fatalf("no generators, but pseudo sample %+v", x)
		}
	}
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "no generators") {
		t.Errorf("notes %v do not mention the missing generators", rep.Notes)
	}
}

func TestDeterminism(t *testing.T) {
	in := input([]int{8, 9, 10}, 10, 7, gens3)
	a, ra := build(t, in, 42)
	b, rb := build(t, in, 42)
	if !reflect.DeepEqual(a, b) || !reflect.DeepEqual(ra, rb) {
		t.Error("same seed, different tasks")
	}
	c, _ := build(t, in, 43)
	if reflect.DeepEqual(a, c) {
		t.Error("different seeds, identical tasks")
	}
	// Tasks 0..4 do not change when T grows from 5 to 7.
	in.Tasks = 5
	d, _ := build(t, in, 42)
	var prefix []Sample
	for _, x := range a {
		if x.Task < 5 {
			prefix = append(prefix, x)
		}
	}
	if !reflect.DeepEqual(d, prefix) {
		t.Error("T = 5 is not the first five tasks of T = 7")
	}
}

func TestErrors(t *testing.T) {
	ok := input([]int{4, 4}, 2, 3, gens3)
	cases := []struct {
		mod  func(*Input)
		rng  bool
		want string
	}{
		{func(in *Input) { in.Tasks = 0 }, true, "T = 0"},
		{func(in *Input) { in.Normals, in.Clusters = in.Normals[:1], in.Clusters[:1] }, true, "1 training normals"},
		{func(in *Input) { in.Clusters = in.Clusters[:3] }, true, "3 cluster assignments for 8 normals"},
		{func(in *Input) { in.Clusters[2] = -2 }, true, "cluster -2"},
		{func(in *Input) { in.Normals[1] = in.Normals[0] }, true, `"n000" is listed as normal and as normal`},
		{func(in *Input) { in.Anomalies[0] = "n003" }, true, `"n003" is listed as normal and as anomaly`},
		{func(in *Input) { in.Anomalies[0] = "" }, true, "empty anomaly id"},
		{func(in *Input) { in.Generators = []string{"cutpaste", "cutpaste"} }, true, "distinct"},
		{func(in *Input) {
			in.PseudoID = func(n, g string) (string, bool) { return n + "#" + g, n != "n005" || g != "draem" }
		}, true, `no pseudo anomaly of normal "n005" by generator "draem"`},
		{func(in *Input) { in.MinClusterSize = -1 }, true, "negative"},
		{func(in *Input) {}, false, "nil random source"},
	}
	for i, c := range cases {
		in := ok
		in.Normals = slices.Clone(ok.Normals)
		in.Clusters = slices.Clone(ok.Clusters)
		in.Anomalies = slices.Clone(ok.Anomalies)
		c.mod(&in)
		var rng *rand.Rand
		if c.rng {
			rng = rand.New(rand.NewPCG(1, 1))
		}
		_, _, err := Build(in, rng)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: error %v, want one containing %q", i+1, err, c.want)
		}
	}
}

func TestPseudoLookup(t *testing.T) {
	f, err := PseudoLookup([]string{"p1", "p2"}, []string{"n000", "n000"}, []string{"cutpaste", "draem"})
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := f("n000", "draem"); !ok || id != "p2" {
		t.Errorf("lookup n000/draem: %q %v, want p2", id, ok)
	}
	if _, ok := f("n001", "draem"); ok {
		t.Error("lookup of a missing pair succeeded")
	}
	if _, err := PseudoLookup([]string{"p1", "p2"}, []string{"n000", "n000"}, []string{"draem", "draem"}); err == nil {
		t.Error("duplicate (source, generator): no error")
	}
	if _, err := PseudoLookup([]string{"p1"}, nil, nil); err == nil {
		t.Error("columns of different lengths: no error")
	}
	// Build reports a normal the table does not cover.
	in := input([]int{3}, 0, 1, []string{"cutpaste", "draem"})
	in.PseudoID = f
	if _, _, err := Build(in, rand.New(rand.NewPCG(1, 1))); err == nil || !strings.Contains(err.Error(), `normal "n001" by generator "cutpaste"`) {
		t.Errorf("incomplete table: %v", err)
	}
}
