package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/artifacts"
)

const chainDAG = `
name: chain
seed: 7
vars: {N: 4, OFF: 0}
stages:
  a: {kind: ptest-gen, with: {n: "${N}"}}
  b: {kind: ptest-sum, needs: [a], with: {note: hello}}
  c: {kind: ptest-sum, needs: [b], with: {offset: "${OFF}"}}
`

func statuses(res map[string]*Result) map[string]string {
	out := map[string]string{}
	for id, r := range res {
		out[id] = r.Status
	}
	return out
}

func TestKeyPartsEachChangeTheKey(t *testing.T) {
	base := KeyParts{Kind: "cdl", Version: 2, Params: map[string]any{"T": 7, "lr": 0.01}, Seed: 9,
		Inputs: map[string]artifacts.Digest{"features/features": "aa", "tasks/tasks": "bb"}}
	k0 := base.Key()
	if len(k0) != 64 {
		t.Fatalf("key %q is not a hex sha256", k0)
	}
	variants := map[string]func(k *KeyParts){
		"param": func(k *KeyParts) { k.Params = map[string]any{"T": 5, "lr": 0.01} },
		"input bytes": func(k *KeyParts) {
			k.Inputs = map[string]artifacts.Digest{"features/features": "ab", "tasks/tasks": "bb"}
		},
		"code version": func(k *KeyParts) { k.Version = 3 },
		"seed":         func(k *KeyParts) { k.Seed = 10 },
		"kind":         func(k *KeyParts) { k.Kind = "devnet" },
	}
	for name, change := range variants {
		k := base
		change(&k)
		if k.Key() == k0 {
			t.Errorf("%s change left the key unchanged", name)
		}
	}
	// Map order must not matter: the same parts built in another order give the same key.
	same := KeyParts{Kind: "cdl", Version: 2, Params: map[string]any{"lr": 0.01, "T": 7}, Seed: 9,
		Inputs: map[string]artifacts.Digest{"tasks/tasks": "bb", "features/features": "aa"}}
	if same.Key() != k0 {
		t.Error("key depends on map order")
	}
	want := []string{"pipe-key 1", "kind cdl", "version 2", `params {"T":7,"lr":0.01}`, "seed 9",
		"input features/features aa", "input tasks/tasks bb"}
	if got := base.Lines(); !slices.Equal(got, want) {
		t.Errorf("lines = %q, want %q", got, want)
	}
}

func TestExplain(t *testing.T) {
	old := KeyParts{Kind: "cdl", Version: 2, Params: map[string]any{"T": 7, "C": 3}, Seed: 1,
		Inputs: map[string]artifacts.Digest{"features/features": "aa"}}
	now := old
	now.Params = map[string]any{"T": 5, "C": 3}
	if got := Explain(old, now); got != "param T: 7 -> 5" {
		t.Errorf("param: got %q", got)
	}
	now = old
	now.Version = 3
	if got := Explain(old, now); got != "code version 2 -> 3" {
		t.Errorf("version: got %q", got)
	}
	now = old
	now.Inputs = map[string]artifacts.Digest{"features/features": "ab"}
	if got := Explain(old, now); got != "input features/features changed" {
		t.Errorf("input: got %q", got)
	}
}

func TestRunThenRerunIsCached(t *testing.T) {
	s := memStore(t)
	takeCounts()
	res, err := run(t, s, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeCounts(), map[string]int{"a": 1, "b": 1, "c": 1}; !maps.Equal(got, want) {
		t.Fatalf("first run executed %v, want %v", got, want)
	}
	for id, r := range res {
		if r.Status != Ran || r.Reason != "never ran" {
			t.Errorf("%s: status %s (%s), want ran (never ran)", id, r.Status, r.Reason)
		}
	}
	// c sums b's single value: sum(0..3) = 6.
	rec, err := artifacts.Get(context.Background(), s, res["c"].Outputs["sum"].Digest)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := artifacts.Float64Col(rec, "value")
	rec.Release()
	if len(v) != 1 || v[0] != 6 {
		t.Errorf("c = %v, want [6]", v)
	}
	res2, err := run(t, s, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	if got := takeCounts(); len(got) != 0 {
		t.Errorf("rerun executed %v, want nothing", got)
	}
	for id, r := range res2 {
		if r.Status != Cached || r.Key != res[id].Key {
			t.Errorf("%s: rerun status %s key %s, want cached with key %s", id, r.Status, r.Key, res[id].Key)
		}
	}
	runs, err := s.Runs(context.Background())
	if err != nil || len(runs) != 2 || runs[0].Status != "ok" || len(runs[1].Keys) != 3 {
		t.Errorf("run records = %+v, %v; want 2 ok runs of 3 keys", runs, err)
	}
}

func TestSetVarRerunsOnlyDependents(t *testing.T) {
	s := memStore(t)
	if _, err := run(t, s, compile(t, chainDAG)); err != nil {
		t.Fatal(err)
	}
	takeCounts()
	res, err := run(t, s, compile(t, chainDAG, "OFF=5"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeCounts(), map[string]int{"c": 1}; !maps.Equal(got, want) {
		t.Errorf("--set OFF=5 executed %v, want %v", got, want)
	}
	if r := res["c"]; r.Reason != "param offset: 0 -> 5" {
		t.Errorf("c reason %q, want param offset: 0 -> 5", r.Reason)
	}
	// Changing a's var reruns everything, and the reason names the input.
	res, err = run(t, s, compile(t, chainDAG, "N=5", "OFF=5"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeCounts(), map[string]int{"a": 1, "b": 1, "c": 1}; !maps.Equal(got, want) {
		t.Errorf("--set N=5 executed %v, want %v", got, want)
	}
	if r := res["b"]; r.Reason != "input a/values changed" {
		t.Errorf("b reason %q", r.Reason)
	}
}

func TestHeadsFollowTheLatestRun(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	first, err := run(t, s, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, s, compile(t, chainDAG, "OFF=5")); err != nil {
		t.Fatal(err)
	}
	// Back to OFF=0: c is cached, and its head names the OFF=0 result again.
	res, err := run(t, s, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	if res["c"].Status != Cached {
		t.Fatalf("c: %s", res["c"].Status)
	}
	h, err := s.Head(ctx, "chain", "c", "")
	if err != nil || h.Key != first["c"].Key {
		t.Errorf("head of c = %+v, %v; want key %s", h, err, first["c"].Key)
	}
	// The same stages under another DAG name are cached, and get heads of their own.
	other := strings.Replace(chainDAG, "name: chain", "name: other", 1)
	takeCounts()
	if _, err = run(t, s, compile(t, other)); err != nil {
		t.Fatal(err)
	}
	if n := takeCounts(); len(n) != 0 {
		t.Errorf("renamed DAG executed %v", n)
	}
	if h, err := s.Head(ctx, "other", "c", ""); err != nil || h.Key != first["c"].Key {
		t.Errorf("head of other/c = %+v, %v", h, err)
	}
}

func TestEarlyCutoff(t *testing.T) {
	s := memStore(t)
	first, err := run(t, s, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	takeCounts()
	// b's note changes b's key but not b's bytes: c keeps its key and stays cached.
	res, err := run(t, s, compile(t, chainDAG, "b.note=changed"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeCounts(), map[string]int{"b": 1}; !maps.Equal(got, want) {
		t.Errorf("executed %v, want %v", got, want)
	}
	if res["b"].Key == first["b"].Key || res["b"].Outputs["sum"] != first["b"].Outputs["sum"] {
		t.Errorf("b: want a new key with identical output")
	}
	if res["c"].Status != Cached || res["c"].Key != first["c"].Key {
		t.Errorf("c: %s key %s, want cached with unchanged key", res["c"].Status, res["c"].Key)
	}
	// --force reruns a stage even when cached; identical bytes keep dependents cached.
	takeCounts()
	res, err = run(t, s, compile(t, chainDAG), func(o *Options) { o.Force = []string{"a"} })
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeCounts(), map[string]int{"a": 1}; !maps.Equal(got, want) {
		t.Errorf("--force a executed %v, want %v", got, want)
	}
	if res["a"].Reason != "forced" {
		t.Errorf("a reason %q, want forced", res["a"].Reason)
	}
}

const matrixDAG = `
name: mx
seed: 1
matrix:
  x: [1, 2]
  seed: [10, 20]
stages:
  shared: {kind: ptest-gen}
  perx:   {kind: ptest-gen, with: {n: "${matrix.x}"}}
  sum:    {kind: ptest-sum, needs: [shared, perx], seed: "${matrix.seed}"}
  all:    {kind: ptest-sum, needs: [sum], gather: true}
`

func TestMatrixExpansion(t *testing.T) {
	p := compile(t, matrixDAG)
	var ids []string
	for _, in := range p.Instances {
		ids = append(ids, in.ID())
	}
	want := []string{"shared", "perx[x=1]", "perx[x=2]",
		"sum[x=1,seed=10]", "sum[x=1,seed=20]", "sum[x=2,seed=10]", "sum[x=2,seed=20]", "all"}
	if !slices.Equal(ids, want) {
		t.Fatalf("instances %q, want %q", ids, want)
	}
	byID := map[string]*Instance{}
	for _, in := range p.Instances {
		byID[in.ID()] = in
	}
	sum := byID["sum[x=2,seed=10]"]
	if len(sum.Deps) != 2 || sum.Deps[0].ID() != "shared" || sum.Deps[1].ID() != "perx[x=2]" {
		t.Errorf("sum[x=2,seed=10] deps wrong: %v", sum.Deps)
	}
	if n := len(byID["all"].Deps); n != 4 {
		t.Errorf("gather stage has %d inputs, want 4", n)
	}
	if byID["perx[x=2]"].Params.(*genParams).N != 2 {
		t.Error("${matrix.x} did not keep its int type")
	}
	seeds := map[uint64]bool{}
	for _, id := range want[3:7] {
		seeds[byID[id].Seed] = true
	}
	if len(seeds) != 4 {
		t.Errorf("matrix instances share seeds: %v", seeds)
	}
	if again := compile(t, matrixDAG); again.Instances[3].Seed != p.Instances[3].Seed {
		t.Error("seed derivation is not reproducible")
	}

	s := memStore(t)
	takeCounts()
	res, err := run(t, s, p)
	if err != nil {
		t.Fatal(err)
	}
	got := takeCounts()
	if got["shared"] != 1 || got["all"] != 1 || len(got) != 8 {
		t.Errorf("executions %v: want every instance once, the shared stage once", got)
	}
	// all = 4 sums, each sum = shared(0+1+2) + perx(x=1: 0; x=2: 0+1): 3+3+4+4.
	rec, err := artifacts.Get(context.Background(), s, res["all"].Outputs["sum"].Digest)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := artifacts.Float64Col(rec, "value")
	rec.Release()
	if len(v) != 1 || v[0] != 14 {
		t.Errorf("all = %v, want [14]", v)
	}
	// A cached rerun reports its instances in plan order, whatever order they finish in.
	var order []string
	if _, err := run(t, s, compile(t, matrixDAG), func(o *Options) {
		o.Jobs = 4
		o.OnResult = func(r *Result) { order = append(order, r.Instance.ID()) }
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(order, want) {
		t.Errorf("rerun reported %q, want plan order %q", order, want)
	}
}

func TestSetMatrixValues(t *testing.T) {
	p := compile(t, matrixDAG, "matrix.x=2", "matrix.seed=[20, 30]")
	var ids []string
	for _, in := range p.Instances {
		ids = append(ids, in.ID())
	}
	want := []string{"shared", "perx[x=2]", "sum[x=2,seed=20]", "sum[x=2,seed=30]", "all"}
	if !slices.Equal(ids, want) {
		t.Errorf("instances %q, want %q", ids, want)
	}
	// The kept instances have the seeds they have in the full matrix.
	full := compile(t, matrixDAG)
	if p.Instances[2].Seed != full.Instances[6].Seed || full.Instances[6].ID() != "sum[x=2,seed=20]" {
		t.Error("restricting the matrix changed an instance's seed")
	}
	if _, err := compileErr(matrixDAG, "matrix.nope=1"); err == nil || !strings.Contains(err.Error(), `undefined matrix variable "nope"`) {
		t.Errorf("err = %v", err)
	}
}

func TestFailedStageSkipsDependentsOnce(t *testing.T) {
	s := memStore(t)
	src := `
stages:
  a: {kind: ptest-gen}
  b: {kind: ptest-sum, needs: [a], with: {fail: true}}
  c: {kind: ptest-sum, needs: [b]}
  d: {kind: ptest-sum, needs: [c]}
  e: {kind: ptest-sum, needs: [a]}
`
	res, err := run(t, s, compile(t, src))
	if !errors.Is(err, ErrStageFailed) || !strings.Contains(err.Error(), "b: asked to fail") {
		t.Fatalf("err = %v, want ErrStageFailed naming b", err)
	}
	want := map[string]string{"a": Ran, "b": Failed, "c": Skipped, "d": Skipped, "e": Ran}
	if got := statuses(res); !maps.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	for _, id := range []string{"c", "d"} {
		if res[id].Reason != "upstream b failed" || res[id].Err != nil {
			t.Errorf("%s: reason %q err %v; want the root failure named once", id, res[id].Reason, res[id].Err)
		}
	}
}

func TestCancelStopsPromptlyWithoutCommit(t *testing.T) {
	s := memStore(t)
	p := compile(t, `
stages:
  a: {kind: ptest-gen}
  b: {kind: ptest-sum, needs: [a], with: {block: true}}
  c: {kind: ptest-sum, needs: [b]}
`)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	go func() { <-started; time.Sleep(50 * time.Millisecond); cancel() }()
	t0 := time.Now()
	rep, err := Run(ctx, p, Options{Store: s, Jobs: 1, OnStart: func(in *Instance) {
		if in.Stage == "b" {
			close(started)
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("cancel took %v", d)
	}
	heads, _ := s.Heads(context.Background(), "test")
	if len(heads) != 1 || heads[0].Stage != "a" {
		t.Errorf("heads after cancel = %+v, want only a", heads)
	}
	if rep.Status != "interrupted" {
		t.Errorf("report status %q", rep.Status)
	}
}

func TestDryRunAndStatus(t *testing.T) {
	s := memStore(t)
	p := compile(t, chainDAG)
	st, err := Status(context.Background(), p, Options{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range st {
		if x.State != Missing || x.Reason != "never ran" {
			t.Errorf("%s: %s (%s) before any run", x.Instance.ID(), x.State, x.Reason)
		}
	}
	if _, err := run(t, s, p); err != nil {
		t.Fatal(err)
	}
	st, err = Status(context.Background(), compile(t, chainDAG, "OFF=2"), Options{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, x := range st {
		got[x.Instance.ID()] = x.State + ": " + x.Reason
	}
	want := map[string]string{"a": "fresh: ", "b": "fresh: ", "c": "stale: param offset: 0 -> 2"}
	if !maps.Equal(got, want) {
		t.Errorf("status %v, want %v", got, want)
	}
	takeCounts()
	res, err := run(t, s, compile(t, chainDAG, "N=9"), func(o *Options) { o.DryRun = true })
	if err != nil {
		t.Fatal(err)
	}
	if n := takeCounts(); len(n) != 0 {
		t.Errorf("dry run executed %v", n)
	}
	if w := map[string]string{"a": WouldRun, "b": Unknown, "c": Unknown}; !maps.Equal(statuses(res), w) {
		t.Errorf("dry run %v, want %v", statuses(res), w)
	}
}

func TestSubstitutionKeepsTypes(t *testing.T) {
	p := compile(t, `
vars: {N: 6, S: 0.5, L: abc}
stages:
  a: {kind: ptest-gen, with: {n: "${N}", scale: "${S}", label: "x-${L}-${N}", tags: ["${L}", b]}}
`)
	got := p.Instances[0].Params.(*genParams)
	if got.N != 6 || got.Scale != 0.5 || got.Label != "x-abc-6" || !slices.Equal(got.Tags, []string{"abc", "b"}) {
		t.Errorf("params %+v", got)
	}
	p = compile(t, `
vars: {N: 6}
stages:
  a: {kind: ptest-gen, with: {n: "${N}"}}
`, "N=11", "a.scale=2")
	got = p.Instances[0].Params.(*genParams)
	if got.N != 11 || got.Scale != 2 {
		t.Errorf("overrides: params %+v", got)
	}
	if p.Instances[0].CanonParams["n"] == nil || p.Instances[0].CanonParams["label"] == nil {
		t.Errorf("canonical params miss defaults: %v", p.Instances[0].CanonParams)
	}
}

func TestValidationErrors(t *testing.T) {
	cases := []struct {
		name string
		src  string
		sets []string
		want []string // substrings of the message
	}{
		{"unknown kind", `
stages:
  a: {kind: nosuch}
`, nil, []string{"test.yaml:3", "stage a", "field kind", `unknown kind "nosuch"`, "ptest-gen", "ptest-sum"}},
		{"unknown param", `
stages:
  a:
    kind: ptest-gen
    with:
      n: 3
      bogus: 1
`, nil, []string{"test.yaml:7", "stage a", "field with.bogus", `unknown param "bogus"`, "label, n, scale, tags"}},
		{"wrong type", `
stages:
  a:
    kind: ptest-gen
    with: {n: many}
`, nil, []string{"test.yaml:5", "stage a", "field with.n", "want an integer", `"many"`}},
		{"wrong type from var", `
vars: {N: 1.5}
stages:
  a: {kind: ptest-gen, with: {n: "${N}"}}
`, nil, []string{"test.yaml:4", "stage a", "field with.n", "want an integer"}},
		{"missing input", `
stages:
  a: {kind: ptest-gen}
  b:
    kind: ptest-sum
    needs: [a, z]
`, nil, []string{"test.yaml:6", "stage b", "field needs", `unknown input stage "z"`}},
		{"cycle", `
stages:
  a: {kind: ptest-sum, needs: [c]}
  b: {kind: ptest-sum, needs: [a]}
  c: {kind: ptest-sum, needs: [b]}
`, nil, []string{"test.yaml:", "field needs", "cycle: a -> c -> b -> a"}},
		{"undefined variable", `
vars: {N: 1}
stages:
  a: {kind: ptest-gen, with: {n: "${M}"}}
`, nil, []string{"test.yaml:4", "stage a", "field with.n", "undefined variable ${M}"}},
		{"undefined variable at its field's line", `
vars: {T: 1}
stages:
  a:
    kind: ptest-gen
    with:
      scale: 2
      n: "${TT}"
`, nil, []string{"test.yaml:8:", "stage a", "field with.n", "undefined variable ${TT}"}},
		{"undefined seed variable", `
stages:
  a:
    kind: ptest-gen
    seed: "${S}"
`, nil, []string{"test.yaml:5:", "stage a", "field seed", "undefined variable ${S}"}},
		{"undefined matrix variable", `
matrix: {x: [1]}
stages:
  a: {kind: ptest-gen, with: {label: "${matrix.y}"}}
`, nil, []string{"test.yaml:4", "stage a", "field with.label", "undefined matrix variable ${matrix.y}"}},
		{"set undefined variable", `
vars: {N: 1}
stages:
  a: {kind: ptest-gen}
`, []string{"T=5"}, []string{"test.yaml", "field --set T", `undefined variable "T"`}},
		{"set unknown stage param", `
stages:
  a: {kind: ptest-gen}
`, []string{"a.epochs=5"}, []string{"test.yaml", "stage a", "field --set a.epochs", `unknown param "epochs"`}},
		{"set a list param", `
stages:
  a: {kind: ptest-gen}
`, []string{"a.tags=[x, y]"}, []string{"test.yaml", "stage a", "field --set a.tags", "wrong type", "YAML scalars"}},
		{"validate", `
stages:
  a: {kind: ptest-gen}
  b: {kind: ptest-sum, needs: [a], with: {offset: -1}}
`, nil, []string{"test.yaml", "stage b", "offset must be >= 0"}},
		{"params on a kind without params", `
stages:
  a: {kind: ptest-noparams, with: {x: 1}}
`, nil, []string{"test.yaml:3", "stage a", "field with.x", "takes no params"}},
		{"unknown stage field", `
stages:
  a: {kind: ptest-gen, need: [b]}
`, nil, []string{"test.yaml:3", "stage a", "field need", "unknown stage field"}},
		{"gather with matrix ref", `
matrix: {x: [1, 2]}
stages:
  a: {kind: ptest-gen, with: {n: "${matrix.x}"}}
  b: {kind: ptest-sum, needs: [a], gather: true, with: {note: "${matrix.x}"}}
`, nil, []string{"test.yaml", "stage b", "field with.note", "gather"}},
		{"bad yaml", "stages: [a\n", nil, []string{"test.yaml", "invalid YAML"}},
		{"duplicate need", `
stages:
  a: {kind: ptest-gen}
  b: {kind: ptest-sum, needs: [a, a]}
`, nil, []string{"test.yaml:4", "stage b", "field needs", `"a" is listed twice`}},
		{"var referencing a var", `
vars: {A: 1, B: "${A}"}
stages:
  a: {kind: ptest-gen}
`, nil, []string{"test.yaml:2", "field vars.B", "cannot reference"}},
		{"unknown top-level field", `
stage:
  a: {kind: ptest-gen}
`, nil, []string{"test.yaml:2", "field stage", "unknown top-level field"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := compileErr(c.src, c.sets...)
			if err == nil {
				t.Fatal("no error")
			}
			if !IsInvalid(err) {
				t.Errorf("error %v is not a validation *Error", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A params error shared by every matrix instance of a stage is reported once, and an error
// from Validate (which names no single param) is on field "with".
func TestValidationErrorOncePerStage(t *testing.T) {
	_, err := compileErr(`
matrix: {x: [1, 2, 3]}
stages:
  a: {kind: ptest-gen, with: {n: "${matrix.x}"}}
  b: {kind: ptest-sum, needs: [a], with: {offset: -1}}
`)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if n := strings.Count(msg, "offset must be >= 0"); n != 1 {
		t.Errorf("the error is reported %d times, want once:\n%s", n, msg)
	}
	if !strings.Contains(msg, "field with: offset must be >= 0") {
		t.Errorf("error %q does not name field with", msg)
	}
}

// A panicking stage fails as an error (its dependents are skipped) and logs its stack.
func TestPanicIsAnErrorWithAStack(t *testing.T) {
	var log bytes.Buffer
	res, err := run(t, memStore(t), compile(t, `
stages:
  a: {kind: ptest-panic}
  b: {kind: ptest-sum, needs: [a]}
`), func(o *Options) { o.Log = &log })
	if !errors.Is(err, ErrStageFailed) || res["a"].Status != Failed || res["b"].Status != Skipped {
		t.Fatalf("err %v, a %s, b %s; want a failed and b skipped", err, res["a"].Status, res["b"].Status)
	}
	if !strings.Contains(res["a"].Err.Error(), "panic: boom") {
		t.Errorf("a's error %q does not say panic: boom", res["a"].Err)
	}
	if !strings.Contains(log.String(), "a: panic: boom") || !strings.Contains(log.String(), "runStage") {
		t.Errorf("the log does not hold the panic's stack:\n%s", log.String())
	}
}

// TestDeclaredTablesEnforced checks that an instance fails, naming the tables, when its kind
// writes a table it does not declare or opens an input table it does not declare.
func TestDeclaredTablesEnforced(t *testing.T) {
	res, err := run(t, memStore(t), compile(t, `
name: t
stages:
  a: {kind: ptest-liar}
`))
	if !errors.Is(err, ErrStageFailed) || res["a"].Status != Failed {
		t.Fatalf("err %v, a %s; want a failed", err, res["a"].Status)
	}
	if msg := res["a"].Err.Error(); !strings.Contains(msg, "missing values") || !strings.Contains(msg, "undeclared other") {
		t.Errorf("a's error %q does not name the missing and the undeclared table", msg)
	}
	res, err = run(t, memStore(t), compile(t, `
name: t
stages:
  a: {kind: ptest-gen}
  b: {kind: ptest-liar, needs: [a], with: {fail: true}}
`))
	if !errors.Is(err, ErrStageFailed) || res["b"].Status != Failed {
		t.Fatalf("err %v, b %s; want b failed", err, res["b"].Status)
	}
	if msg := res["b"].Err.Error(); !strings.Contains(msg, `reads table "values" from input a but does not declare it`) {
		t.Errorf("b's error %q does not name the undeclared input table", msg)
	}
}

// TestNeedsCheckedAgainstDeclaredInputs checks that Compile rejects a stage whose needs do not
// make a table its kind requires, or make a table it reads twice, at the needs line.
func TestNeedsCheckedAgainstDeclaredInputs(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"missing", `
name: t
stages:
  a: {kind: ptest-sum}
  b:
    kind: ptest-need
    needs: [a]
`, `test.yaml:7: stage b: field needs: kind ptest-need reads table "values", which no stage in needs makes (needs: a); add a stage of kind ptest-ext or ptest-gen or ptest-liar or ptest-noparams or ptest-panic to needs`},
		{"no needs", `
name: t
stages:
  b: {kind: ptest-need}
`, `test.yaml:4: stage b: field needs: kind ptest-need reads table "values", which no stage in needs makes (needs: none)`},
		{"twice", `
name: t
stages:
  a: {kind: ptest-gen}
  c: {kind: ptest-ext}
  b:
    kind: ptest-need
    needs: [a, c]
`, `test.yaml:8: stage b: field needs: stages a and c all make table "values", which kind ptest-need reads from one input`},
	}
	for _, c := range cases {
		_, err := compileErr(c.src)
		if !IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v\nwant an *Error containing %s", c.name, err, c.want)
		}
	}
	// A gather stage may read one table from many instances; a need that makes it is enough.
	compile(t, `
name: t
matrix: {x: [1, 2]}
stages:
  a: {kind: ptest-gen, with: {n: "${matrix.x}"}}
  b: {kind: ptest-need, needs: [a], gather: true}
`)
}

func TestParseSet(t *testing.T) {
	cases := []struct {
		in   string
		name string
		val  any
	}{
		{"T=5", "T", 5},
		{"lr=0.5", "lr", 0.5},
		{"train.head=dra", "train.head", "dra"},
		{"x=true", "x", true},
		{"s=a b", "s", "a b"},
		{"e=", "e", ""},
		{"l=[1,2]", "l", "[1,2]"},
	}
	for _, c := range cases {
		s, err := ParseSet(c.in)
		if err != nil || s.Name != c.name || s.Value != c.val {
			t.Errorf("ParseSet(%q) = %+v, %v; want %s=%v", c.in, s, err, c.name, c.val)
		}
	}
	if _, err := ParseSet("novalue"); err == nil {
		t.Error("ParseSet without = should fail")
	}
}

// corruptStore reports every manifest as corrupt, as the Badger store does for one that does
// not parse.
type corruptStore struct{ artifacts.Store }

func (c corruptStore) Manifest(ctx context.Context, key string) (artifacts.Manifest, error) {
	if _, err := c.Store.Manifest(ctx, key); err != nil {
		return artifacts.Manifest{}, err
	}
	return artifacts.Manifest{}, fmt.Errorf("artifacts: manifest %s is corrupt (bad json), treating it as a miss: %w (%w)", key, artifacts.ErrCorrupt, artifacts.ErrNotFound)
}

func TestCorruptManifestIsAReportedMiss(t *testing.T) {
	s := memStore(t)
	if _, err := run(t, s, compile(t, chainDAG)); err != nil {
		t.Fatal(err)
	}
	takeCounts()
	res, err := run(t, corruptStore{s}, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	if got := takeCounts(); len(got) != 3 {
		t.Errorf("executed %v, want all three stages rerun", got)
	}
	for id, r := range res {
		if r.Status != Ran || r.Reason != "cached manifest corrupt, treated as a miss" {
			t.Errorf("%s: %s (%s)", id, r.Status, r.Reason)
		}
	}
}

// BenchmarkCachedRun measures the engine alone on a cached 8-stage DAG (in-memory store):
// the per-run overhead of `pipe run` beyond process start and store open.
func BenchmarkCachedRun(b *testing.B) {
	src := `
name: bench
stages:
  ingest:   {kind: ptest-gen, with: {n: 1000}}
  features: {kind: ptest-sum, needs: [ingest]}
  augment:  {kind: ptest-sum, needs: [ingest, features]}
  clusters: {kind: ptest-sum, needs: [features]}
  tasks:    {kind: ptest-sum, needs: [features, clusters, augment]}
  train:    {kind: ptest-sum, needs: [tasks, features, augment]}
  score:    {kind: ptest-sum, needs: [train, features]}
  evaluate: {kind: ptest-sum, needs: [score]}
`
	s, err := artifacts.Open("", artifacts.InMemory())
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	}()
	p, err := compileErr(src)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Run(ctx, p, Options{Store: s}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, err := compileErr(src)
		if err != nil {
			b.Fatal(err)
		}
		rep, err := Run(ctx, p, Options{Store: s})
		if err != nil || rep.Results[7].Status != Cached {
			b.Fatalf("rerun: %v", err)
		}
	}
}

// Matrix instances with the same kind and params read the outside world once per run.
func TestFingerprintOncePerRun(t *testing.T) {
	s := memStore(t)
	path := filepath.Join(t.TempDir(), "data.txt")
	if err := os.WriteFile(path, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "matrix: {x: [1, 2, 3]}\nstages:\n  in: {kind: ptest-ext, seed: \"${matrix.x}\", with: {path: " + strconv.Quote(path) + "}}\n"
	for i, wantRuns := range []int{1, 0} {
		before := fingerprints.Load()
		res, err := run(t, s, compile(t, src))
		if err != nil {
			t.Fatal(err)
		}
		if n := fingerprints.Load() - before; n != 1 {
			t.Errorf("run %d: %d Fingerprint calls for 3 instances with the same params, want 1", i, n)
		}
		if len(res) != 3 {
			t.Fatalf("run %d: %d results, want 3", i, len(res))
		}
		got := takeCounts()
		for _, x := range []string{"1", "2", "3"} {
			if got["in[x="+x+"]"] != wantRuns {
				t.Errorf("run %d: in[x=%s] executed %d times, want %d", i, x, got["in[x="+x+"]"], wantRuns)
			}
		}
	}
}

func TestExternalFingerprint(t *testing.T) {
	s := memStore(t)
	path := filepath.Join(t.TempDir(), "data.txt")
	if err := os.WriteFile(path, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := "stages:\n  in: {kind: ptest-ext, with: {path: " + strconv.Quote(path) + "}}\n  sum: {kind: ptest-sum, needs: [in]}\n"
	if _, err := run(t, s, compile(t, src)); err != nil {
		t.Fatal(err)
	}
	takeCounts()
	if err := os.WriteFile(path, []byte("abd"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := run(t, s, compile(t, src))
	if err != nil {
		t.Fatal(err)
	}
	// Same length, so the same output bytes: sum stays cached.
	if got, want := takeCounts(), map[string]int{"in": 1}; !maps.Equal(got, want) {
		t.Errorf("executed %v, want %v", got, want)
	}
	if res["in"].Reason != "external files changed" || res["sum"].Status != Cached {
		t.Errorf("in: %q, sum: %s", res["in"].Reason, res["sum"].Status)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	st, err := Status(context.Background(), compile(t, src), Options{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	if st[0].State != Errored || !strings.Contains(st[0].Reason, "data.txt") || st[1].State != Stale {
		t.Errorf("status after removing the file: %+v %+v", st[0], st[1])
	}
}
