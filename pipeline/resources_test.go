package pipeline

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestResourcesParsed(t *testing.T) {
	src := strings.Replace(chainDAG, `b: {kind: ptest-sum, needs: [a], with: {note: hello}}`,
		`b: {kind: ptest-sum, needs: [a], with: {note: hello}, resources: {cpus: 4, mem: 8G, gpus: 1, time: "1-02:03:04"}}`, 1)
	p := compile(t, src)
	for _, in := range p.Instances {
		switch in.Stage {
		case "b":
			want := Resources{CPUs: 4, MemMB: 8192, GPUs: 1, Time: 26*time.Hour + 3*time.Minute + 4*time.Second}
			if in.Resources == nil || *in.Resources != want {
				t.Errorf("b: resources %+v, want %+v", in.Resources, want)
			}
		default:
			if in.Resources != nil {
				t.Errorf("%s: resources %+v, want none", in.Stage, in.Resources)
			}
		}
	}
}

// A resources block says where an instance runs, not what it computes: keys stay the same,
// so results computed locally are cached for a cluster run and the other way round.
func TestResourcesLeaveKeysUnchanged(t *testing.T) {
	s := memStore(t)
	res, err := run(t, s, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	with := strings.Replace(chainDAG, `c: {kind: ptest-sum, needs: [b], with: {offset: "${OFF}"}}`,
		`c: {kind: ptest-sum, needs: [b], with: {offset: "${OFF}"}, resources: {cpus: 2, mem: 512, time: 30}}`, 1)
	with = strings.Replace(with, `a: {kind: ptest-gen, with: {n: "${N}"}}`, `a: {kind: ptest-gen, with: {n: "${N}"}, resources: {gpus: 2}}`, 1)
	if with == chainDAG {
		t.Fatal("the test DAG did not change")
	}
	takeCounts()
	res2, err := run(t, s, compile(t, with))
	if err != nil {
		t.Fatal(err)
	}
	if n := takeCounts(); len(n) != 0 {
		t.Errorf("adding resources reran %v", n)
	}
	for id, r := range res2 {
		if r.Status != Cached || r.Key != res[id].Key {
			t.Errorf("%s: %s with key %s, want cached with key %s", id, r.Status, r.Key, res[id].Key)
		}
	}
	st, err := Status(context.Background(), compile(t, with), Options{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range st {
		if x.State != Fresh {
			t.Errorf("%s: %s (%s), want fresh", x.Instance.ID(), x.State, x.Reason)
		}
	}
}

func TestResourcesValues(t *testing.T) {
	for _, c := range []struct {
		field, value string
		want         any
	}{
		{"mem", "512", int64(512)}, {"mem", "512M", int64(512)}, {"mem", "2g", int64(2048)},
		{"mem", "1T", int64(1 << 20)}, {"mem", "1500K", int64(2)}, {"mem", "4GB", int64(4096)},
		{"time", "30", 30 * time.Minute}, {"time", "05:30", 5*time.Minute + 30*time.Second},
		{"time", "2:00:00", 2 * time.Hour}, {"time", "1-12", 36 * time.Hour},
		{"time", "2-00:30", 48*time.Hour + 30*time.Minute}, {"time", "90m", 90 * time.Minute},
		{"cpus", "16", 16}, {"gpus", "8", 8},
	} {
		src := "stages:\n  a:\n    kind: ptest-gen\n    resources: {" + c.field + ": \"" + c.value + "\"}\n"
		f, err := Parse("test.yaml", []byte(src))
		if err != nil {
			t.Errorf("%s: %s: %v", c.field, c.value, err)
			continue
		}
		r := f.Stages[0].Resources
		got := map[string]any{"mem": r.MemMB, "time": r.Time, "cpus": r.CPUs, "gpus": r.GPUs}[c.field]
		if got != c.want {
			t.Errorf("%s: %s = %v, want %v", c.field, c.value, got, c.want)
		}
	}
}

func TestResourcesErrors(t *testing.T) {
	for _, c := range []struct {
		block string
		want  []string
	}{
		{`{cpu: 4}`, []string{"test.yaml:5", "stage a", "field resources.cpu", "unknown resource (want cpus, mem, gpus, time)"}},
		{`{cpus: 0}`, []string{"test.yaml:5", "stage a", "field resources.cpus", `want a positive integer, got "0"`}},
		{`{cpus: 2.5}`, []string{"field resources.cpus", `"2.5"`}},
		{`{gpus: -1}`, []string{"field resources.gpus", `"-1"`}},
		{`{mem: 8X}`, []string{"field resources.mem", "512M, 8G", `"8X"`}},
		{`{mem: 0}`, []string{"field resources.mem", `"0"`}},
		{`{mem: 99999999T}`, []string{"field resources.mem", "more memory than any machine"}},
		{`{time: soon}`, []string{"field resources.time", `"soon"`}},
		{`{time: 0}`, []string{"field resources.time", "between 1 s and a year"}},
		{`{time: "1:2:3:4"}`, []string{"field resources.time", `"1:2:3:4"`}},
		{`{mem: [1]}`, []string{"field resources.mem", "want a value, got a list"}},
		{`{mem: }`, []string{"field resources.mem", "want a value, got nothing"}},
		{`[4]`, []string{"test.yaml:5", "field resources", "want a mapping {cpus, mem, gpus, time}"}},
	} {
		src := "stages:\n  a:\n    kind: ptest-gen\n    with: {n: 2}\n    resources: " + c.block + "\n"
		_, err := Parse("test.yaml", []byte(src))
		if err == nil {
			t.Errorf("%s: no error", c.block)
			continue
		}
		if !IsInvalid(err) {
			t.Errorf("%s: %v is not a validation error", c.block, err)
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.block, err, w)
			}
		}
	}
}
