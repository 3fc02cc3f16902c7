// Package testkinds registers TEST-ONLY stage kinds for pipe's end-to-end tests and
// benchmarks. They count their executions so that a script can assert exactly which stage
// instances ran: each execution appends "stage" or "stage[instance]" to the file named by
// $PIPE_TEST_LOG, and creates "$PIPE_TEST_LOG.started.<stage>" as it starts, so a script can
// wait for a stage to be running before it kills the process.
//
// The pipe binary registers them only in its test binary and in builds with the
// pipetestkinds tag (the benchmark's).
package testkinds

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Params are the params of kind tcount.
type Params struct {
	// N is how many values a stage without inputs emits (0, 1, ..., N-1).
	N int `json:"n"`
	// Offset is added to the stage's output value(s).
	Offset float64 `json:"offset"`
	// Note changes the cache key but not the output bytes.
	Note string `json:"note"`
	// SleepMS makes the stage take this long (it honours cancellation), reporting progress.
	SleepMS int `json:"sleep_ms"`
	// Fail makes the stage fail.
	Fail bool `json:"fail"`
	// Input names a file the stage reads (an outside input, checked by preflight); its size
	// is added to the output values. Omitted from the key when empty.
	Input string `json:"input,omitempty"`
}

// ExternalPaths implements kind.Externals.
func (p *Params) ExternalPaths() []kind.ExternalPath {
	if p.Input == "" {
		return nil
	}
	return []kind.ExternalPath{{Param: "input", Path: p.Input}}
}

// Validate checks the params.
func (p *Params) Validate() error {
	if p.N < 0 || p.SleepMS < 0 {
		return fmt.Errorf("n and sleep_ms must be >= 0 (n %d, sleep_ms %d)", p.N, p.SleepMS)
	}
	return nil
}

func init() {
	kind.Register(kind.Definition{
		Kind:    "tcount",
		Version: 1,
		Params:  func() any { return &Params{N: 3} },
		Inputs:  kind.Inputs{Optional: []string{"out"}, Each: true},
		Outputs: []string{"out"},
		Run:     run,
	})
}

func run(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*Params)
	id := env.Stage
	if env.Instance != "" {
		id += "[" + env.Instance + "]"
	}
	if log := os.Getenv("PIPE_TEST_LOG"); log != "" {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		fmt.Fprintln(f, id)
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.WriteFile(log+".started."+env.Stage, nil, 0o644); err != nil {
			return err
		}
	}
	if p.SleepMS > 0 {
		const steps = 20
		for i := 0; i < steps; i++ {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(p.SleepMS) * time.Millisecond / steps):
			}
			env.Progress(i+1, steps)
		}
	}
	if p.Fail {
		return errors.New("failing as asked (fail: true)")
	}
	offset := p.Offset
	if p.Input != "" {
		st, err := os.Stat(p.Input)
		if err != nil {
			return err
		}
		offset += float64(st.Size())
	}
	var values []float64
	if len(env.Inputs) == 0 {
		for i := 0; i < p.N; i++ {
			values = append(values, float64(i)+offset)
		}
	} else {
		total := offset
		for _, in := range env.Inputs {
			rec, err := in.Open(ctx, "out")
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
		values = []float64{total}
	}
	rec, err := artifacts.NewTable(artifacts.Float64s("value", values))
	if err != nil {
		return err
	}
	env.Output("out", rec)
	fmt.Fprintf(env.Log, "wrote %d values\n", len(values))
	return nil
}
