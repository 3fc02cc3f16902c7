package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/pipeline"
)

func memStore(t *testing.T) *artifacts.Badger {
	t.Helper()
	s, err := artifacts.Open("", artifacts.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// putOutput stores a one-column table and returns its Output.
func putOutput(t *testing.T, s artifacts.Store, v ...float64) artifacts.Output {
	t.Helper()
	rec, err := artifacts.NewTable(artifacts.Float64s("value", v))
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Release()
	_, o, err := artifacts.Put(context.Background(), s, rec)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestResolveRef(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	a, b1, b2 := putOutput(t, s, 1), putOutput(t, s, 2), putOutput(t, s, 3)
	now := time.Now()
	for _, m := range []struct {
		artifacts.Manifest
		head artifacts.Head
	}{
		{artifacts.Manifest{Key: "k1", Outputs: map[string]artifacts.Output{"out": a, "aux": b2}, Created: now}, artifacts.Head{DAG: "d", Stage: "a", Key: "k1"}},
		{artifacts.Manifest{Key: "k2", Outputs: map[string]artifacts.Output{"out": b1}, Created: now}, artifacts.Head{DAG: "d", Stage: "b", Instance: "x=1", Key: "k2"}},
		{artifacts.Manifest{Key: "k3", Outputs: map[string]artifacts.Output{"out": b2}, Created: now}, artifacts.Head{DAG: "d", Stage: "b", Instance: "x=2", Key: "k3"}},
	} {
		if err := s.PutManifest(ctx, m.Manifest, m.head); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		ref, key, names, err string
	}{
		{ref: string(a.Digest[:8]), key: "k1", names: "out"},
		{ref: strings.ToUpper(string(b1.Digest[:10])), key: "k2", names: "out"},
		{ref: "d:a", key: "k1", names: "aux,out"},
		{ref: "d:a/aux", key: "k1", names: "aux"},
		{ref: "d:b[x=2]/out", key: "k3", names: "out"},
		{ref: "d:b", err: "stage b has 2 instances; name one: b[x=1], b[x=2]"},
		{ref: "d:a/nope", err: `no output "nope" (outputs: aux, out)`},
		{ref: "d:c", err: "DAG d has no stored run of stage c"},
		{ref: "abc", err: "at least 4 hex digits"},
		{ref: "ffffffffffff", err: "no stored artifact"},
	}
	for _, c := range cases {
		m, names, _, err := resolveRef(ctx, s, c.ref, nil)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || exitCode(err) != exitUsage {
				t.Errorf("%s: err %v (exit %d), want %q (exit 2)", c.ref, err, exitCode(err), c.err)
			}
			continue
		}
		if err != nil || m.Key != c.key || strings.Join(names, ",") != c.names {
			t.Errorf("%s: got %s %v %v, want %s %s", c.ref, m.Key, names, err, c.key, c.names)
		}
	}
	// b2's bytes are both a/aux and b[x=2]/out: a prefix names the bytes, the latest producer.
	if _, names, _, err := resolveRef(ctx, s, string(b2.Digest[:6]), nil); err != nil || len(names) != 1 {
		t.Errorf("shared digest: %v %v", names, err)
	}
}

func TestRunJSONMetrics(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	rec, err := artifacts.NewTable(artifacts.Strings("metric", []string{"auroc", "auprc"}),
		artifacts.Strings("class", []string{"all", "all"}), artifacts.Float64s("value", []float64{0.9, 0.5}))
	if err != nil {
		t.Fatal(err)
	}
	_, o, err := artifacts.Put(ctx, s, rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	def, _ := kind.Lookup("tcount")
	ev := &pipeline.Instance{Stage: "evaluate", Kind: "evaluate", Label: "seed=1", Def: def}
	other := &pipeline.Instance{Stage: "score", Kind: "score", Def: def}
	rep := &pipeline.Report{Results: []*pipeline.Result{
		{Instance: other, Status: pipeline.Ran, Outputs: map[string]artifacts.Output{"metrics": o}},
		{Instance: ev, Status: pipeline.Cached, Outputs: map[string]artifacts.Output{"metrics": o}},
	}}
	got, err := json.Marshal(metrics(ctx, s, rep))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"evaluate[seed=1]":[{"class":"all","metric":"auroc","value":0.9},{"class":"all","metric":"auprc","value":0.5}]}`
	if string(got) != want {
		t.Errorf("metrics %s, want %s", got, want)
	}
}

func TestProgressLinesWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	h := newHumanOutput(&buf, nil)
	if h.terminal {
		t.Fatal("a buffer is not a terminal")
	}
	in := &pipeline.Instance{Stage: "train", Label: "seed=1"}
	f := h.progress(in)
	f(1, 10) // too early: short stages print nothing
	if buf.Len() != 0 {
		t.Errorf("early progress printed %q", buf.String())
	}
	f(10, 10) // a stage that finished within progressEvery prints nothing either
	if buf.Len() != 0 {
		t.Errorf("short stage printed %q", buf.String())
	}
	saved := progressEvery
	progressEvery = time.Millisecond
	defer func() { progressEvery = saved }()
	f = h.progress(in)
	time.Sleep(2 * time.Millisecond)
	f(3, 10)
	f(4, 10) // within progressEvery of the last line: skipped
	time.Sleep(2 * time.Millisecond)
	f(10, 10)
	got := buf.String()
	if !strings.Contains(got, "progress train[seed=1] 3/10 (30%)") || !strings.Contains(got, "progress train[seed=1] 10/10 (100%)") ||
		strings.Contains(got, "4/10") {
		t.Errorf("progress lines %q", got)
	}
}

// TestKillAtRandomMoments kills `pipe run` with SIGKILL at seeded random moments (while
// stages run and while their blobs and manifests are written). After each kill the store must
// open and verify clean; finally a run completes, and every instance that was fresh before it
// is cached in it.
func TestKillAtRandomMoments(t *testing.T) {
	bin, err := exec.LookPath("pipe")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dag := filepath.Join(dir, "k.yaml")
	src := `name: k
stages:
  a: {kind: tcount, with: {n: 200000, sleep_ms: 40}}
  b: {kind: tcount, needs: [a], with: {n: 100000, sleep_ms: 40}}
  c: {kind: tcount, with: {n: 300000, sleep_ms: 40}}
  d: {kind: tcount, needs: [b, c], with: {sleep_ms: 40}}
  e: {kind: tcount, needs: [c], with: {n: 5, sleep_ms: 40}}
  f: {kind: tcount, needs: [d, e], with: {sleep_ms: 40}}
`
	if err := os.WriteFile(dag, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	pipe := func(args ...string) (string, int) {
		cmd := exec.Command(bin, append([]string{"--store", store}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return out.String() + errOut.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), 0
	}
	// Two runs share the store: this DAG and, through --set, a variant whose c, d, e and f
	// have other keys (a and b are shared). Each is killed at its own random moment.
	rng := rand.New(rand.NewPCG(7, 1))
	kills := 0
	for i := 0; i < 6; i++ {
		var cmds []*exec.Cmd
		for _, extra := range [][]string{nil, {"--set", "c.n=300001"}} {
			cmd := exec.Command(bin, append([]string{"--store", store, "run", "--jobs", "2", dag}, extra...)...)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
		}
		for _, cmd := range cmds {
			time.Sleep(time.Duration(rng.IntN(250)) * time.Millisecond)
			_ = cmd.Process.Kill() // it may have finished already
			_ = cmd.Wait()         // killed: its exit status says so; verify below checks the store
			kills++
		}
		out, code := pipe("artifacts", "verify")
		if code == 4 && strings.Contains(out, "no store") && i == 0 {
			continue // killed before the store was made
		}
		if code != 0 {
			t.Fatalf("kill %d: verify exit %d:\n%s", i, code, out)
		}
	}
	t.Logf("%d kills of two concurrent runs, store verified clean after each round", kills)
	out, code := pipe("status", "--json", dag)
	if code != 0 {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	var st []statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status json: %v\n%s", err, out)
	}
	out, code = pipe("run", "--json", dag)
	if code != 0 {
		t.Fatalf("final run: exit %d\n%s", code, out)
	}
	var rj runJSON
	if err := json.Unmarshal([]byte(out), &rj); err != nil {
		t.Fatalf("run json: %v\n%s", err, out)
	}
	status := map[string]string{}
	for _, s := range rj.Stages {
		status[s.Name] = s.Status
	}
	fresh := 0
	for _, s := range st {
		if s.State == pipeline.Fresh {
			fresh++
			if status[s.Name] != pipeline.Cached {
				t.Errorf("%s was fresh after the kills but %s in the next run", s.Name, status[s.Name])
			}
		}
	}
	t.Logf("%d of %d stages had finished before the final run", fresh, len(st))
	if out, code := pipe("artifacts", "verify"); code != 0 {
		t.Fatalf("final verify exit %d:\n%s", code, out)
	}
}
