// Package stages holds pipe's stage kinds: thin adapters that turn input artifacts and
// params into output artifacts by calling ahl/. Each kind registers a Definition.
package stages

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
)

// Definition describes one stage kind.
type Definition struct {
	// Kind is the name used in DAG files (`kind: hadg`).
	Kind string
	// Version is the stage's code version; bump it when its output changes meaning. It is
	// part of the cache key.
	Version int
	// Params returns a pointer to a new params struct filled with defaults. The pipeline
	// decodes the DAG's `with:` map into it (unknown fields are errors, names follow the
	// struct's `json` tags) and then calls Validate when the struct implements Validator.
	Params func() any
	// Run computes the stage's outputs from env.Inputs and env.Params and hands each
	// output table to env.Output. It must honour ctx cancellation.
	Run func(ctx context.Context, env *Env) error
}

// Validator is implemented by params structs that check their own values.
type Validator interface {
	Validate() error
}

// Fingerprinter is implemented by the params struct of a stage that reads the outside world
// (ingest's dataset, features' resnet18 weights file, augment's source folder). Fingerprint
// returns a short digest of what the stage will read (for example each file's relative path,
// size and modification time); the pipeline adds it to the cache key as the pseudo-input
// "external", so changed files make the stage stale.
type Fingerprinter interface {
	Fingerprint(ctx context.Context) (string, error)
}

// Env is what one stage instance sees while it runs.
type Env struct {
	DAG      string
	Stage    string // the stage's name in the DAG
	Instance string // matrix instance label, "" for a shared instance
	Params   any    // the resolved params struct returned by Definition.Params
	Seed     uint64 // derived from the DAG seed, the stage name and the matrix values
	// Inputs holds one entry per upstream stage instance, in `needs` order; a gather
	// stage receives every instance of its inputs.
	Inputs []Input
	// Log receives human-readable progress lines (stderr).
	Log io.Writer
	// Progress reports progress of long stages; done <= total. Never nil.
	Progress func(done, total int)

	mu      sync.Mutex
	outputs map[string]arrow.RecordBatch
}

// Input is one upstream stage instance whose output tables a stage may read.
type Input struct {
	Stage    string
	Instance string
	Matrix   map[string]string
	// Outputs lists the upstream's output names.
	Outputs []string
	// Open reads one output table. The caller releases the record.
	Open func(ctx context.Context, output string) (arrow.RecordBatch, error)
}

// Input returns the single instance of the upstream stage named stage.
func (e *Env) Input(stage string) (*Input, error) {
	var found *Input
	for i := range e.Inputs {
		if e.Inputs[i].Stage == stage {
			if found != nil {
				return nil, fmt.Errorf("stage %s: input %q has several instances; use Gather", e.Stage, stage)
			}
			found = &e.Inputs[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("stage %s: missing input %q (add it to needs)", e.Stage, stage)
	}
	return found, nil
}

// Gather returns every instance of the upstream stage named stage.
func (e *Env) Gather(stage string) []Input {
	var out []Input
	for _, in := range e.Inputs {
		if in.Stage == stage {
			out = append(out, in)
		}
	}
	return out
}

// Table opens output `output` of the single instance of upstream stage `stage`.
func (e *Env) Table(ctx context.Context, stage, output string) (arrow.RecordBatch, error) {
	in, err := e.Input(stage)
	if err != nil {
		return nil, err
	}
	return in.Open(ctx, output)
}

// Output hands an output table to the pipeline, which takes ownership of rec.
func (e *Env) Output(name string, rec arrow.RecordBatch) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.outputs == nil {
		e.outputs = map[string]arrow.RecordBatch{}
	}
	if old, ok := e.outputs[name]; ok {
		old.Release()
	}
	e.outputs[name] = rec
}

// Outputs returns the tables handed to Output, by name.
func (e *Env) Outputs() map[string]arrow.RecordBatch {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.outputs
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Definition{}
)

// Register adds a stage kind. It panics on a duplicate kind: registration happens in init.
func Register(d Definition) {
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[d.Kind]; dup {
		panic("stages: duplicate kind " + d.Kind)
	}
	registry[d.Kind] = d
}

// Lookup returns the definition of a kind.
func Lookup(kind string) (Definition, bool) {
	registryMu.RLock()
	defer registryMu.RUnlock()
	d, ok := registry[kind]
	return d, ok
}

// Kinds lists the registered kinds, sorted.
func Kinds() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var ks []string
	for k := range registry {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
