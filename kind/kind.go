// Package kind is the contract between pipe's engine (package pipeline) and its stage kinds
// (package stages): what a kind declares (Definition), what one running instance sees (Env,
// Input), and the registry the engine looks kinds up in. It imports neither the engine nor
// any kind, so the engine builds and tests without the science behind the kinds.
//
// A kind reads and writes Arrow tables by name (stages/TABLES.md lists them). It declares
// the tables it reads (Inputs) and writes (Outputs): the engine checks a DAG's `needs`
// against the inputs before anything runs, opens only declared tables for a running
// instance, and fails an instance whose outputs differ from the declared ones.
package kind

import (
	"context"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
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
	// Nil for a kind without params.
	Params func() any
	// Inputs are the tables the kind reads from the stages in its `needs`.
	Inputs Inputs
	// Outputs are the names of the tables Run hands to Env.Output: every one, and no other.
	Outputs []string
	// Run computes the stage's outputs from env's inputs and params and hands each output
	// table to env.Output. It must honour ctx cancellation. Its errors need not name the
	// stage: the pipeline prefixes them with the instance's name.
	Run func(ctx context.Context, env *Env) error
}

// Inputs names the tables a kind reads, by output name (`images`, `features`, ...).
type Inputs struct {
	// Required tables must be an output of some stage in `needs`; a DAG that lacks one is a
	// validation error.
	Required []string
	// Optional tables are read when a stage in `needs` has them.
	Optional []string
	// Each says that the kind reads its tables from every input instance that has them (the
	// report, the test kinds that sum their inputs). Otherwise it reads each table from one
	// input (Env.With), and a DAG in which several needs make it is invalid.
	Each bool
}

// Reads reports whether the kind declares table (required or optional).
func (in Inputs) Reads(table string) bool {
	return slices.Contains(in.Required, table) || slices.Contains(in.Optional, table)
}

// Requirer is implemented by params structs whose values make more tables required than
// Definition.Inputs.Required says (train's method ahl needs the tasks table, devnet does
// not). Every table it names must also be declared in Definition.Inputs.
type Requirer interface {
	RequiredInputs() []string
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

// ExternalPath is one file or folder outside the store that a stage instance reads.
type ExternalPath struct {
	// Param is the params field (its `json` name) that holds the path, e.g. "root".
	Param string
	// Path is the path as the params hold it (relative paths are relative to the working
	// directory).
	Path string
	// Dir says that the path must be a folder; otherwise it must be a regular file.
	Dir bool
}

// Externals is implemented by the params struct of a stage that reads the outside world.
// ExternalPaths lists the files and folders the instance will read with these params (none
// when, say, ingest reads the embedded set). The pipeline checks every listed path before
// anything runs (`pipe run`, `pipe status`) and reports all missing ones in one error.
type Externals interface {
	ExternalPaths() []ExternalPath
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
	// Log receives human-readable progress lines (stderr). The pipeline prefixes each line
	// with the instance ID ("features[seen_class=bag]: "), so a kind writes no prefix of its
	// own.
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
	// OpenTable opens one output table for reading by column and by row range, without
	// loading the rest of it (large tables: features, pseudo, images). The caller closes
	// it. It is nil where the input is not backed by a store (tests); readers then use Open.
	OpenTable func(ctx context.Context, output string) (*artifacts.TableReader, error)
}

// ID names the input instance as the pipeline does: "stage" or "stage[label]".
func (in *Input) ID() string {
	if in.Instance == "" {
		return in.Stage
	}
	return in.Stage + "[" + in.Instance + "]"
}

// Has reports whether the input instance has the named output table.
func (in *Input) Has(table string) bool { return slices.Contains(in.Outputs, table) }

// With returns the one upstream instance that has the output table, so a stage does not
// depend on how its inputs are named in the DAG. It is an error when none or several have it.
func (e *Env) With(table string) (*Input, error) {
	var found *Input
	for i := range e.Inputs {
		if e.Inputs[i].Has(table) {
			if found != nil {
				return nil, fmt.Errorf("inputs %s and %s both have a %q output; want one", found.ID(), e.Inputs[i].ID(), table)
			}
			found = &e.Inputs[i]
		}
	}
	if found == nil {
		var have []string
		for _, in := range e.Inputs {
			have = append(have, fmt.Sprintf("%s (%s)", in.ID(), strings.Join(in.Outputs, ", ")))
		}
		return nil, fmt.Errorf("no input has a %q output (inputs: %s); add the stage that makes it to needs", table, strings.Join(have, "; "))
	}
	return found, nil
}

// Has reports whether some upstream instance has the output table.
func (e *Env) Has(table string) bool {
	for i := range e.Inputs {
		if e.Inputs[i].Has(table) {
			return true
		}
	}
	return false
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

// CheckOutputs compares the tables a run handed to Output with the declared outputs; the
// error names what is missing and what is extra.
func (d *Definition) CheckOutputs(got []string) error {
	var missing, extra []string
	for _, o := range d.Outputs {
		if !slices.Contains(got, o) {
			missing = append(missing, o)
		}
	}
	for _, o := range got {
		if !slices.Contains(d.Outputs, o) {
			extra = append(extra, o)
		}
	}
	if len(missing) == 0 && len(extra) == 0 {
		return nil
	}
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing "+strings.Join(missing, ", "))
	}
	if len(extra) > 0 {
		parts = append(parts, "undeclared "+strings.Join(extra, ", "))
	}
	return fmt.Errorf("kind %s wrote tables that differ from its declared outputs [%s]: %s",
		d.Kind, strings.Join(d.Outputs, ", "), strings.Join(parts, "; "))
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Definition{}
)

// Register adds a stage kind. It panics on a duplicate or malformed kind (no name, no Run,
// no outputs): registration happens in init, so this is a programming error.
func Register(d Definition) {
	registryMu.Lock()
	defer registryMu.Unlock()
	switch {
	case d.Kind == "":
		panic("kind: Register: empty kind name")
	case d.Run == nil:
		panic("kind: Register: kind " + d.Kind + " has no Run")
	case len(d.Outputs) == 0:
		panic("kind: Register: kind " + d.Kind + " declares no outputs")
	}
	if _, dup := registry[d.Kind]; dup {
		panic("kind: duplicate kind " + d.Kind)
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

// Providers lists the registered kinds that declare table among their outputs, sorted.
func Providers(table string) []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	var ks []string
	for k, d := range registry {
		if slices.Contains(d.Outputs, table) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	return ks
}
