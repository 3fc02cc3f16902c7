package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/google/uuid"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Status values of a Result.
const (
	Ran      = "ran"       // the stage ran and its manifest was committed
	Cached   = "cached"    // a manifest with the same key was found
	Failed   = "failed"    // the stage returned an error
	Skipped  = "skipped"   // an upstream instance failed, or the run was interrupted
	WouldRun = "would-run" // dry run: the stage would run
	Unknown  = "unknown"   // dry run: an upstream stage would run, so the key is not known yet
)

// ErrStageFailed is wrapped by Run's error when a stage instance failed (exit code 1).
var ErrStageFailed = errors.New("stage failed")

// Options configure Run.
type Options struct {
	Store artifacts.Store
	// Jobs is how many instances may run at once (at least 1).
	Jobs int
	// Force lists stage names whose instances run even when cached.
	Force []string
	// DryRun reports what would run without running or writing anything.
	DryRun bool
	// Pin marks the run record pinned: gc keeps everything the run produced or reused,
	// even after heads move on.
	Pin bool
	// Log receives the stages' own log lines, prefixed with the instance ID. Nil discards.
	Log io.Writer
	// OnStart, when set, is called as an instance starts running (not when cached).
	OnStart func(in *Instance)
	// OnResult, when set, is called once per instance as soon as its outcome is known.
	OnResult func(r *Result)
	// Progress, when set, returns the progress callback of a running instance.
	Progress func(in *Instance) func(done, total int)
	// Remote, when set, is a shared cache behind Store: an instance whose key Store lacks
	// but Remote holds is pulled into Store and reported Cached with Result.Remote set (in a
	// dry run it is reported so without pulling); every instance that ran, or was cached
	// locally, is pushed to Remote (its blobs, manifest and head).
	Remote Remote
}

// Result is the outcome of one stage instance.
type Result struct {
	Instance *Instance
	Status   string
	// Reason says why the instance ran (or would run, or failed, or was skipped).
	Reason  string
	Key     string
	Parts   KeyParts
	Seconds float64
	Outputs map[string]artifacts.Output
	Err     error
	// Remote is set on a Cached result that came from Options.Remote: pulled into the local
	// store (in a dry run: found there, not pulled). Printed as "cached (remote)".
	Remote bool
}

// Report is the outcome of one Run.
type Report struct {
	RunID   string
	DAG     string
	Started time.Time
	// Results holds one result per plan instance, in plan order.
	Results []*Result
	Status  string // ok | failed | interrupted | dry-run
}

// Run executes the plan: every instance whose key has a manifest is cached, the others run
// (at most opts.Jobs at once) once their inputs are ready, and each finished instance's
// outputs are stored (blobs, then manifest and head). A failed instance fails its dependents
// without repeating its error. When ctx is cancelled, Run returns promptly without committing
// anything more; the error then wraps ctx.Err(). A run record is stored unless DryRun.
func Run(ctx context.Context, p *Plan, opts Options) (*Report, error) {
	if opts.Jobs < 1 {
		opts.Jobs = 1
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	force := map[string]bool{}
	for _, f := range opts.Force {
		force[f] = true
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("run id: %w", err)
	}
	rep := &Report{RunID: id.String(), DAG: p.DAG, Started: time.Now().UTC(), Results: make([]*Result, len(p.Instances))}
	r := &runner{plan: p, opts: opts, force: force, rep: rep, sem: make(chan struct{}, opts.Jobs), xfer: make(chan struct{}, max(opts.Jobs, minTransfers)),
		done: make([]chan struct{}, len(p.Instances)), logMu: &sync.Mutex{}}
	for i := range r.done {
		r.done[i] = make(chan struct{})
	}
	var wg sync.WaitGroup
	for _, in := range p.Instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := r.instance(ctx, in)
			r.resMu.Lock()
			if r.closed { // abandoned after an interrupt; Run has returned
				r.resMu.Unlock()
				return
			}
			rep.Results[in.index] = res
			r.resMu.Unlock()
			close(r.done[in.index])
			r.report(res)
		}()
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctx.Done():
		// Give running stages a moment to notice the cancellation; a stage that ignores it
		// is abandoned (its outputs are never committed: commit checks ctx first).
		select {
		case <-finished:
		case <-time.After(2 * time.Second):
		}
	}

	rep.Status = "ok"
	var firstFail *Result
	r.resMu.Lock()
	for i, res := range rep.Results {
		if res == nil {
			rep.Results[i] = &Result{Instance: p.Instances[i], Status: Skipped, Reason: "interrupted"}
			continue
		}
		if res.Status == Failed && firstFail == nil {
			firstFail = res
		}
	}
	r.closed = true
	r.resMu.Unlock()
	for _, res := range rep.Results {
		r.report(res) // the interrupted ones, and any held back behind them
	}
	switch {
	case opts.DryRun:
		rep.Status = "dry-run"
	case ctx.Err() != nil:
		rep.Status = "interrupted"
	case firstFail != nil:
		rep.Status = "failed"
	}
	if !opts.DryRun {
		rec := artifacts.Run{ID: rep.RunID, DAG: p.DAG, Started: rep.Started, Finished: time.Now().UTC(), Status: rep.Status, Pinned: opts.Pin}
		for _, res := range rep.Results {
			if res.Status == Ran || res.Status == Cached {
				rec.Keys = append(rec.Keys, res.Key)
			}
		}
		if err := opts.Store.PutRun(context.WithoutCancel(ctx), rec); err != nil && ctx.Err() == nil {
			return rep, fmt.Errorf("store run record: %w", err)
		}
	}
	if ctx.Err() != nil {
		return rep, fmt.Errorf("run interrupted (finished stages are stored and will be cached): %w", ctx.Err())
	}
	if firstFail != nil {
		if err := notCachedError(rep); err != nil {
			return rep, err
		}
		n := 0
		for _, res := range rep.Results {
			if res.Status == Failed {
				n++
			}
		}
		if n == 1 {
			return rep, fmt.Errorf("%w: %s: %w", ErrStageFailed, firstFail.Instance.ID(), firstFail.Err)
		}
		return rep, fmt.Errorf("%w: %d stage instances failed, first %s: %w", ErrStageFailed, n, firstFail.Instance.ID(), firstFail.Err)
	}
	return rep, nil
}

type runner struct {
	plan       *Plan
	opts       Options
	force      map[string]bool
	rep        *Report
	sem        chan struct{}
	xfer       chan struct{} // bounds the pulls and pushes in flight (each may hold a blob)
	done       []chan struct{}
	resMu      sync.Mutex
	closed     bool // under resMu: Run has collected the results
	callbackMu sync.Mutex
	logMu      *sync.Mutex

	// Ordered delivery of results (report), under callbackMu.
	reported []bool
	held     map[int]*Result
	next     int

	fpMu sync.Mutex
	fps  map[string]*fingerprintOnce // by kind and canonical params, under fpMu
}

// fingerprintOnce is one external fingerprint, computed by the first instance that needs it.
type fingerprintOnce struct {
	once sync.Once
	v    string
	err  error
}

// fingerprint returns fp.Fingerprint for instance in, computed once per run for each kind
// and canonical params: the matrix instances of a stage that share them (every seed of one
// dataset folder or weights file) read the outside world once, not once each.
func (r *runner) fingerprint(ctx context.Context, in *Instance, fp kind.Fingerprinter) (string, error) {
	k := in.Kind + " " + jsonString(in.CanonParams)
	r.fpMu.Lock()
	if r.fps == nil {
		r.fps = map[string]*fingerprintOnce{}
	}
	e, ok := r.fps[k]
	if !ok {
		e = &fingerprintOnce{}
		r.fps[k] = e
	}
	r.fpMu.Unlock()
	e.once.Do(func() { e.v, e.err = fp.Fingerprint(ctx) })
	return e.v, e.err
}

// report hands a result to OnResult. Results that say a stage ran or failed go out at once;
// the others (cached, skipped, dry-run) are held until every earlier instance in plan order
// has gone out, so that a rerun's lines come in plan order.
func (r *runner) report(res *Result) {
	if r.opts.OnResult == nil {
		return
	}
	r.callbackMu.Lock()
	defer r.callbackMu.Unlock()
	if r.reported == nil {
		r.reported = make([]bool, len(r.plan.Instances))
		r.held = map[int]*Result{}
	}
	i := res.Instance.index
	if r.reported[i] {
		return
	}
	if res.Status == Ran || res.Status == Failed {
		r.reported[i] = true
		r.opts.OnResult(res)
	} else {
		r.held[i] = res
	}
	for r.next < len(r.reported) {
		if h, ok := r.held[r.next]; ok {
			delete(r.held, r.next)
			r.reported[r.next] = true
			r.opts.OnResult(h)
		} else if !r.reported[r.next] {
			break
		}
		r.next++
	}
}

// result reads the finished result of an upstream instance.
func (r *runner) result(in *Instance) *Result {
	r.resMu.Lock()
	defer r.resMu.Unlock()
	return r.rep.Results[in.index]
}

func (r *runner) instance(ctx context.Context, in *Instance) *Result {
	res := &Result{Instance: in}
	// Wait for the inputs.
	for _, d := range in.Deps {
		select {
		case <-r.done[d.index]:
		case <-ctx.Done():
			res.Status, res.Reason = Skipped, "interrupted"
			return res
		}
	}
	parts := KeyParts{Kind: in.Kind, Version: in.Def.Version, Params: in.CanonParams, Seed: in.Seed, Inputs: map[string]artifacts.Digest{}}
	for _, d := range in.Deps {
		dr := r.result(d)
		switch dr.Status {
		case Failed:
			res.Status, res.Reason = Skipped, "upstream "+d.ID()+" failed"
			return res
		case Skipped:
			res.Status, res.Reason = Skipped, dr.Reason
			return res
		case WouldRun, Unknown:
			res.Status, res.Reason = Unknown, "upstream "+d.ID()+" would run"
			if dr.Status == Unknown {
				res.Reason = dr.Reason
			}
			return res
		}
		for name, o := range dr.Outputs {
			parts.Inputs[inputName(d.Stage, d.Label, name)] = o.Digest
		}
	}
	if fp, ok := in.Params.(kind.Fingerprinter); ok {
		v, err := r.fingerprint(ctx, in, fp)
		if err != nil {
			res.Status, res.Reason, res.Err = Failed, "fingerprint failed", err
			return res
		}
		parts.Inputs[ExternalInput] = artifacts.Digest(v)
	}
	res.Parts, res.Key = parts, parts.Key()
	store := r.opts.Store

	reason := ""
	if r.force[in.Stage] && !in.inputOnly {
		reason = "forced"
	} else {
		m, err := store.Manifest(ctx, res.Key)
		switch {
		case err == nil:
			name, cause, serr := unusableOutput(ctx, store, m)
			if serr != nil {
				res.Status, res.Reason, res.Err = Failed, "store error", serr
				return res
			}
			if name == "" {
				res.Status, res.Outputs, res.Seconds = Cached, m.Outputs, 0
				res.Reason = fmt.Sprintf("unchanged since %s (took %s)", m.Created.Local().Format("2006-01-02 15:04"), fmtSeconds(m.Seconds))
				if err := r.pointHead(ctx, in, m); err != nil {
					res.Status, res.Reason, res.Err = Failed, "store error", err
					return res
				}
				if err := r.push(ctx, in, m); err != nil {
					res.Status, res.Reason, res.Err = Failed, "push failed",
						fmt.Errorf("cached locally, but the push to the remote failed: %w", err)
				}
				return res
			}
			reason = "output " + name + " " + cause
		case errors.Is(err, artifacts.ErrCorrupt):
			reason = "cached manifest corrupt, treated as a miss"
		case !errors.Is(err, artifacts.ErrNotFound):
			res.Status, res.Reason, res.Err = Failed, "store error", err
			return res
		}
		if r.opts.Remote != nil {
			done, why := r.pull(ctx, in, res)
			if done {
				return res
			}
			if why != "" {
				reason = why
			}
		}
		if in.inputOnly {
			res.Status, res.Reason, res.Err = Failed, "not cached", r.notCached(reason)
			return res
		}
		if reason == "" {
			reason = r.staleReason(ctx, in, parts)
		}
	}
	res.Reason = reason
	if r.opts.DryRun {
		res.Status = WouldRun
		return res
	}

	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		res.Status, res.Reason = Skipped, "interrupted"
		return res
	}
	defer func() { <-r.sem }()
	if r.opts.OnStart != nil {
		r.callbackMu.Lock()
		r.opts.OnStart(in)
		r.callbackMu.Unlock()
	}
	start := time.Now()
	outs, err := r.exec(ctx, in)
	res.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil {
		res.Status, res.Reason = Skipped, "interrupted"
		return res
	}
	if err != nil {
		res.Status, res.Err = Failed, err
		return res
	}
	res.Outputs = outs
	m := artifacts.Manifest{Key: res.Key, Kind: in.Kind,
		Version: in.Def.Version, Params: in.CanonParams, Seed: in.Seed, Inputs: parts.Inputs, Outputs: outs,
		Seconds: res.Seconds, Created: time.Now().UTC()}
	if ctx.Err() != nil {
		res.Status, res.Reason = Skipped, "interrupted"
		return res
	}
	if err := store.PutManifest(ctx, m, r.head(in, m.Key)); err != nil {
		res.Status, res.Err = Failed, err
		return res
	}
	if err := r.push(ctx, in, m); err != nil {
		res.Status, res.Reason = Failed, "push failed"
		res.Err = fmt.Errorf("the stage ran and its results are stored locally, but the push to the remote failed: %w", err)
		return res
	}
	res.Status = Ran
	return res
}

// exec runs the stage and stores its output blobs.
func (r *runner) exec(ctx context.Context, in *Instance) (map[string]artifacts.Output, error) {
	store := r.opts.Store
	env := &kind.Env{DAG: r.plan.DAG, Stage: in.Stage, Instance: in.Label, Params: in.Params, Seed: in.Seed,
		Log: &prefixWriter{mu: r.logMu, w: r.opts.Log, prefix: in.ID() + ": "}, Progress: func(int, int) {}}
	if r.opts.Progress != nil {
		if f := r.opts.Progress(in); f != nil {
			env.Progress = f
		}
	}
	for _, d := range in.Deps {
		dr := r.result(d)
		outs := dr.Outputs
		locate := func(output string) (artifacts.Output, error) {
			if !in.Def.Inputs.Reads(output) {
				return artifacts.Output{}, fmt.Errorf("kind %s reads table %q from input %s but does not declare it among its inputs", in.Kind, output, d.ID())
			}
			o, ok := outs[output]
			if !ok {
				return artifacts.Output{}, fmt.Errorf("input %s has no output %q (outputs: %s)", d.ID(), output, strings.Join(sortedKeys(outs), ", "))
			}
			return o, nil
		}
		env.Inputs = append(env.Inputs, kind.Input{Stage: d.Stage, Instance: d.Label, Matrix: d.Matrix,
			Outputs: sortedKeys(outs),
			Open: func(ctx context.Context, output string) (arrow.RecordBatch, error) {
				o, err := locate(output)
				if err != nil {
					return nil, err
				}
				rec, err := artifacts.Get(ctx, store, o.Digest)
				if err != nil {
					return nil, fmt.Errorf("input %s/%s (the output of stage instance %s): %w", d.ID(), output, d.ID(), err)
				}
				return rec, nil
			},
			OpenTable: func(ctx context.Context, output string) (*artifacts.TableReader, error) {
				o, err := locate(output)
				if err != nil {
					return nil, err
				}
				t, err := artifacts.OpenTable(ctx, store, o.Digest)
				if err != nil {
					return nil, fmt.Errorf("input %s/%s (the output of stage instance %s): %w", d.ID(), output, d.ID(), err)
				}
				return t, nil
			}})
	}
	err := runStage(ctx, in, env)
	recs := env.Outputs()
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	if err != nil {
		return nil, err
	}
	if err := in.Def.CheckOutputs(sortedKeys(recs)); err != nil {
		return nil, err
	}
	outs := map[string]artifacts.Output{}
	for _, name := range sortedKeys(recs) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		_, o, err := artifacts.Put(ctx, store, recs[name])
		if err != nil {
			return nil, fmt.Errorf("store output %q: %w", name, err)
		}
		outs[name] = o
	}
	return outs, nil
}

// runStage calls the stage, turning a panic into an error so one bad stage cannot take the
// whole run (and its committed work) down with it. The panic's stack goes to the stage's log,
// so that the bug can be found.
func runStage(ctx context.Context, in *Instance, env *kind.Env) (err error) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(env.Log, "panic: %v\n%s", p, debug.Stack())
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return in.Def.Run(ctx, env)
}

// head names instance in of this run's DAG as the result stored under key.
func (r *runner) head(in *Instance, key string) artifacts.Head {
	return artifacts.Head{DAG: r.plan.DAG, Stage: in.Stage, Instance: in.Label, Key: key}
}

// pointHead makes the head of this DAG's instance name the cached manifest m, which may have
// been made by another DAG, another instance, or an earlier run with other params (a head
// always names the latest result, which report and artifacts REFs read). Manifests are
// content only, so m itself is not touched: another DAG's head on it keeps its names.
func (r *runner) pointHead(ctx context.Context, in *Instance, m artifacts.Manifest) error {
	if r.opts.DryRun {
		return nil
	}
	store := r.opts.Store
	if h, err := store.Head(ctx, r.plan.DAG, in.Stage, in.Label); err == nil && h.Key == m.Key {
		return nil
	}
	return store.PutHead(ctx, r.head(in, m.Key))
}

// staleReason explains a miss by comparing with the manifest the head points at.
func (r *runner) staleReason(ctx context.Context, in *Instance, parts KeyParts) string {
	return staleReason(ctx, r.opts.Store, r.plan.DAG, in, parts)
}

func staleReason(ctx context.Context, store artifacts.Store, dag string, in *Instance, parts KeyParts) string {
	h, err := store.Head(ctx, dag, in.Stage, in.Label)
	if err != nil {
		return "never ran"
	}
	old, err := store.Manifest(ctx, h.Key)
	if err != nil {
		return "previous manifest unreadable"
	}
	return Explain(PartsOf(old), parts)
}

// unusableOutput returns the name of an output of m whose blob is missing or damaged, and
// which ("missing" or "damaged"), or "" when every output reads back intact. Each blob is
// read and checked (at memory speed: CRC-32C per chunk), so that a cached stage never hands
// on bytes it cannot vouch for. Other store errors are returned.
func unusableOutput(ctx context.Context, store artifacts.Store, m artifacts.Manifest) (name, cause string, err error) {
	for _, name := range sortedKeys(m.Outputs) {
		err := store.VerifyBlob(ctx, m.Outputs[name].Digest)
		switch {
		case err == nil:
		case errors.Is(err, artifacts.ErrCorrupt):
			return name, "damaged", nil
		case errors.Is(err, artifacts.ErrNotFound):
			return name, "missing", nil
		default:
			return "", "", err
		}
	}
	return "", "", nil
}

func fmtSeconds(s float64) string {
	switch {
	case s < 10:
		return fmt.Sprintf("%.2fs", s)
	case s < 600:
		return fmt.Sprintf("%.0fs", s)
	}
	return (time.Duration(s) * time.Second).Round(time.Second).String()
}

// prefixWriter writes whole lines to w, each prefixed; concurrent instances share mu.
type prefixWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := bytes.IndexByte(p.buf, '\n')
		if i < 0 {
			break
		}
		if _, err := fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i]); err != nil {
			return 0, err
		}
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
