package pipeline

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Test-only stage kinds. They count their executions so tests can assert exactly which
// instances ran (BuildKit style).

var (
	countMu sync.Mutex
	counts  = map[string]int{} // "stage" or "stage[label]" -> executions
)

func countRun(env *kind.Env) {
	countMu.Lock()
	defer countMu.Unlock()
	id := env.Stage
	if env.Instance != "" {
		id += "[" + env.Instance + "]"
	}
	counts[id]++
}

// takeCounts returns the executions since the last call and resets them.
func takeCounts() map[string]int {
	countMu.Lock()
	defer countMu.Unlock()
	out := counts
	counts = map[string]int{}
	return out
}

type genParams struct {
	N     int      `json:"n"`
	Scale float64  `json:"scale"`
	Label string   `json:"label"`
	Tags  []string `json:"tags"`
}

type sumParams struct {
	Offset int64  `json:"offset"`
	Note   string `json:"note"` // ignored by the stage: changes the key, not the bytes
	Fail   bool   `json:"fail"`
	Block  bool   `json:"block"` // wait for cancellation
}

func (p *sumParams) Validate() error {
	if p.Offset < 0 {
		return fmt.Errorf("offset must be >= 0, got %d", p.Offset)
	}
	return nil
}

// extParams read a file from outside the store, like ingest.
type extParams struct {
	Path string `json:"path"`
}

// fingerprints counts extParams.Fingerprint calls.
var fingerprints atomic.Int64

// Fingerprint hashes the file's bytes.
func (p *extParams) Fingerprint(ctx context.Context) (string, error) {
	fingerprints.Add(1)
	b, err := os.ReadFile(p.Path)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}

func init() {
	kind.Register(kind.Definition{
		Kind: "ptest-gen", Version: 1,
		Params:  func() any { return &genParams{N: 3, Scale: 1} },
		Outputs: []string{"values"},
		Run: func(ctx context.Context, env *kind.Env) error {
			countRun(env)
			p := env.Params.(*genParams)
			v := make([]float64, p.N)
			for i := range v {
				v[i] = float64(i) * p.Scale
			}
			rec, err := artifacts.NewTable(artifacts.Float64s("value", v))
			if err != nil {
				return err
			}
			env.Output("values", rec)
			return nil
		},
	})
	kind.Register(kind.Definition{
		Kind: "ptest-sum", Version: 1,
		Params:  func() any { return &sumParams{} },
		Inputs:  kind.Inputs{Optional: []string{"values", "sum"}, Each: true},
		Outputs: []string{"sum"},
		Run: func(ctx context.Context, env *kind.Env) error {
			countRun(env)
			p := env.Params.(*sumParams)
			if p.Fail {
				return errors.New("asked to fail")
			}
			if p.Block {
				<-ctx.Done()
				return ctx.Err()
			}
			total := float64(p.Offset)
			for _, in := range env.Inputs {
				rec, err := in.Open(ctx, in.Outputs[0])
				if err != nil {
					return err
				}
				col, err := artifacts.Float64Col(rec, "value")
				if err != nil {
					rec.Release()
					return err
				}
				for _, x := range col { // col aliases rec's memory: sum before releasing it
					total += x
				}
				rec.Release()
			}
			rec, err := artifacts.NewTable(artifacts.Float64s("value", []float64{total}))
			if err != nil {
				return err
			}
			env.Output("sum", rec)
			return nil
		},
	})
	kind.Register(kind.Definition{
		Kind: "ptest-ext", Version: 1,
		Params:  func() any { return &extParams{} },
		Outputs: []string{"values"},
		Run: func(ctx context.Context, env *kind.Env) error {
			countRun(env)
			b, err := os.ReadFile(env.Params.(*extParams).Path)
			if err != nil {
				return err
			}
			rec, err := artifacts.NewTable(artifacts.Float64s("value", []float64{float64(len(b))}))
			if err != nil {
				return err
			}
			env.Output("values", rec)
			return nil
		},
	})
	// ptest-liar writes a table it does not declare, and reads one it does not declare
	// when its params say so.
	kind.Register(kind.Definition{Kind: "ptest-liar", Version: 1, Outputs: []string{"values"},
		Params: func() any { return &sumParams{} },
		Run: func(ctx context.Context, env *kind.Env) error {
			if env.Params.(*sumParams).Fail {
				rec, err := env.Inputs[0].Open(ctx, "values")
				if err != nil {
					return err
				}
				rec.Release()
			}
			rec, err := artifacts.NewTable(artifacts.Float64s("value", []float64{1}))
			if err != nil {
				return err
			}
			env.Output("other", rec)
			return nil
		}})
	// ptest-need requires a values table (ptest-gen and ptest-ext make one).
	kind.Register(kind.Definition{Kind: "ptest-need", Version: 1, Outputs: []string{"sum"},
		Inputs: kind.Inputs{Required: []string{"values"}},
		Run:    func(ctx context.Context, env *kind.Env) error { return errors.New("not run in tests") }})
	kind.Register(kind.Definition{Kind: "ptest-panic", Version: 1, Outputs: []string{"values"},
		Run: func(ctx context.Context, env *kind.Env) error { panic("boom") }})
	kind.Register(kind.Definition{Kind: "ptest-noparams", Version: 1, Outputs: []string{"values"},
		Run: func(ctx context.Context, env *kind.Env) error { return errors.New("not run in tests") }})
}

// memStore opens an in-memory Badger store for one test.
func memStore(t *testing.T) artifacts.Store {
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

// compile parses and compiles DAG YAML named test.yaml.
func compile(t *testing.T, src string, sets ...string) *Plan {
	t.Helper()
	p, err := compileErr(src, sets...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func compileErr(src string, sets ...string) (*Plan, error) {
	f, err := Parse("test.yaml", []byte(src))
	if err != nil {
		return nil, err
	}
	var ss []Set
	for _, s := range sets {
		st, err := ParseSet(s)
		if err != nil {
			return nil, err
		}
		ss = append(ss, st)
	}
	return Compile(f, ss)
}

// run executes a plan and returns status by instance ID.
func run(t *testing.T, s artifacts.Store, p *Plan, opts ...func(*Options)) (map[string]*Result, error) {
	t.Helper()
	o := Options{Store: s, Jobs: 2}
	for _, f := range opts {
		f(&o)
	}
	rep, err := Run(context.Background(), p, o)
	if rep == nil {
		t.Fatalf("no report: %v", err)
	}
	out := map[string]*Result{}
	for _, r := range rep.Results {
		out[r.Instance.ID()] = r
	}
	return out, err
}
