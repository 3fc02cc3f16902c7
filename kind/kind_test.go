package kind

import (
	"strings"
	"testing"
)

func TestCheckOutputs(t *testing.T) {
	d := Definition{Kind: "k", Outputs: []string{"a", "b"}}
	if err := d.CheckOutputs([]string{"b", "a"}); err != nil {
		t.Fatalf("declared outputs in another order: %v", err)
	}
	err := d.CheckOutputs([]string{"a", "c"})
	if err == nil || !strings.Contains(err.Error(), "missing b") || !strings.Contains(err.Error(), "undeclared c") {
		t.Fatalf("got %v, want an error naming missing b and undeclared c", err)
	}
}

func TestWith(t *testing.T) {
	env := &Env{Inputs: []Input{
		{Stage: "ingest", Outputs: []string{"images"}},
		{Stage: "features", Instance: "seed=1", Outputs: []string{"backbone", "features"}},
		{Stage: "other", Outputs: []string{"features"}},
	}}
	in, err := env.With("images")
	if err != nil || in.Stage != "ingest" {
		t.Fatalf("With(images) = %v, %v; want ingest", in, err)
	}
	if _, err := env.With("features"); err == nil || !strings.Contains(err.Error(), "features[seed=1] and other") {
		t.Fatalf("With(features) over two inputs: got %v", err)
	}
	if _, err := env.With("tasks"); err == nil || !strings.Contains(err.Error(), `no input has a "tasks" output`) {
		t.Fatalf("With(tasks): got %v", err)
	}
	if !env.Has("backbone") || env.Has("tasks") {
		t.Fatal("Has disagrees with the inputs' outputs")
	}
}

func TestRegisterRejectsMalformedKinds(t *testing.T) {
	for name, d := range map[string]Definition{
		"no name":    {Outputs: []string{"x"}},
		"no run":     {Kind: "kind-test-norun", Outputs: []string{"x"}},
		"no outputs": {Kind: "kind-test-noout"},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Register did not panic", name)
				}
			}()
			Register(d)
		}()
	}
}
