package pipeline

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pipe-ahl/pipe/artifacts"
)

// Remote is a shared cache behind the local store (package artifacts/remote implements it
// on a bucket; cmd/pipe opens it). The engine knows it only through this interface.
type Remote interface {
	// Manifest returns the manifest stored under key: an error wrapping
	// artifacts.ErrNotFound when absent.
	Manifest(ctx context.Context, key string) (artifacts.Manifest, error)
	// Pull copies m's blobs that into lacks, verified by digest, then stores m in into and
	// points heads at it. A remote blob that is absent wraps artifacts.ErrNotFound; one that
	// fails its digest wraps artifacts.ErrCorrupt.
	Pull(ctx context.Context, into artifacts.Store, m artifacts.Manifest, heads ...artifacts.Head) error
	// Push copies m's blobs that the remote lacks from from, then m (never before all its
	// blobs are there), then points heads at it.
	Push(ctx context.Context, from artifacts.Store, m artifacts.Manifest, heads ...artifacts.Head) error
}

// ErrNotCached is wrapped by Run's error when an input instance of an Only plan is cached
// neither in the local store nor in the remote (exit code 1, as a failed dependency).
var ErrNotCached = errors.New("not cached locally or in the remote")

// minTransfers is the least number of pulls and pushes a run lets overlap (more with
// --jobs): enough to hide a remote's latency, few enough that the blobs held in memory stay
// bounded.
const minTransfers = 4

// transfer waits for a transfer slot; release gives it back. It fails only when ctx ends.
func (r *runner) transfer(ctx context.Context) (release func(), err error) {
	select {
	case r.xfer <- struct{}{}:
		return func() { <-r.xfer }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pull looks res.Key up in the remote. It returns done when res is final: Cached (pulled,
// or in a dry run found), or Failed on a remote error. Otherwise why, when not "", says why
// the remote copy could not be used (it was damaged or incomplete), and the instance runs.
func (r *runner) pull(ctx context.Context, in *Instance, res *Result) (done bool, why string) {
	m, err := r.opts.Remote.Manifest(ctx, res.Key)
	switch {
	case errors.Is(err, artifacts.ErrNotFound):
		if errors.Is(err, artifacts.ErrCorrupt) {
			return false, "remote manifest corrupt, treated as a miss"
		}
		return false, ""
	case err != nil:
		res.Status, res.Reason, res.Err = Failed, "remote error", err
		return true, ""
	}
	made := fmt.Sprintf("made %s, took %s", m.Created.Local().Format("2006-01-02 15:04"), fmtSeconds(m.Seconds))
	if r.opts.DryRun {
		res.Status, res.Outputs, res.Remote = Cached, m.Outputs, true
		res.Reason = "in the remote (" + made + "), not pulled"
		return true, ""
	}
	release, err := r.transfer(ctx)
	if err != nil {
		res.Status, res.Reason = Skipped, "interrupted"
		return true, ""
	}
	err = r.opts.Remote.Pull(ctx, r.opts.Store, m, r.head(in, m.Key))
	release()
	switch {
	case err == nil:
		res.Status, res.Outputs, res.Remote = Cached, m.Outputs, true
		res.Reason = "pulled from the remote (" + made + ")"
		return true, ""
	case errors.Is(err, artifacts.ErrCorrupt) || errors.Is(err, artifacts.ErrNotFound):
		return false, "remote copy unusable (" + err.Error() + ")"
	}
	res.Status, res.Reason, res.Err = Failed, "remote error", fmt.Errorf("pull from the remote: %w", err)
	return true, ""
}

// push sends a finished or locally cached instance to the remote (when there is one, and
// not in a dry run): a job on another machine may need it. A push cut short by an interrupt
// is not an error: the result is stored locally, and the next run with the remote pushes
// it.
func (r *runner) push(ctx context.Context, in *Instance, m artifacts.Manifest) error {
	if r.opts.Remote == nil || r.opts.DryRun {
		return nil
	}
	release, err := r.transfer(ctx)
	if err != nil {
		return nil // interrupted: the result is local, and the next run with the remote pushes it
	}
	defer release()
	err = r.opts.Remote.Push(ctx, r.opts.Store, m, r.head(in, m.Key))
	if ctx.Err() != nil {
		return nil // as above; a manifest is never pushed before its blobs
	}
	return err
}

// notCached is the error of an input instance of an Only plan found nowhere; reason says
// what the local store (or remote) had instead, when anything.
func (r *runner) notCached(reason string) error {
	where := ErrNotCached.Error()
	if r.opts.Remote == nil {
		where = "not cached locally (and no remote is given)"
	}
	if reason != "" {
		where += "; " + reason
	}
	return fmt.Errorf("%s (run it first, or name it with --only too): %w", where, ErrNotCached)
}

// notCachedError returns Run's error when input instances of an Only plan were cached
// nowhere: it names each of them. Nil when there are none.
func notCachedError(rep *Report) error {
	var ids []string
	for _, res := range rep.Results {
		if res.Status == Failed && errors.Is(res.Err, ErrNotCached) {
			ids = append(ids, res.Instance.ID())
		}
	}
	if len(ids) == 0 {
		return nil
	}
	what := "input instance " + ids[0] + " is"
	if len(ids) > 1 {
		what = fmt.Sprintf("%d input instances are", len(ids))
	}
	return fmt.Errorf("%w: %s %s (run them first, or name them with --only too): %s: %w",
		ErrStageFailed, what, ErrNotCached.Error(), strings.Join(ids, ", "), ErrNotCached)
}

// InputOnly reports whether the instance is in an Only plan only as an input of a selected
// instance: it is never run, and must be cached locally or in the remote.
func (in *Instance) InputOnly() bool { return in.inputOnly }

// UnknownInstanceError is Only's error for an ID that names no instance of the plan. It is
// a usage error (IsInvalid, exit code 2).
type UnknownInstanceError struct {
	ID    string
	DAG   string
	Known []string // the IDs of the stage's instances, or the stage names when the stage is unknown
	Stage bool     // the stage exists (Known lists its instances)
}

func (e *UnknownInstanceError) Error() string {
	if e.Stage {
		return fmt.Sprintf("--only %s: no such instance in %s; its instances are: %s", e.ID, e.DAG, strings.Join(e.Known, ", "))
	}
	return fmt.Sprintf("--only %s: no stage of that name in %s; its stages are: %s", e.ID, e.DAG, strings.Join(e.Known, ", "))
}

// Only returns the plan restricted to the instances named by ids and the instances they
// depend on (transitively), in plan order. An ID is an instance ID as `pipe status` prints
// it ("train[seed=0,method=ahl]", its matrix values in any order) or a bare stage name (all
// of its instances). The named instances run as in Run; the others are inputs only
// (Instance.InputOnly): never run, they must be cached locally or in the remote, and Run
// fails them with ErrNotCached otherwise. Instances neither named nor needed are not in the
// returned plan, so nothing of theirs is looked at.
func (p *Plan) Only(ids []string) (*Plan, error) {
	selected := map[*Instance]bool{}
	for _, id := range ids {
		found, err := p.match(id)
		if err != nil {
			return nil, err
		}
		for _, in := range found {
			selected[in] = true
		}
	}
	needed := map[*Instance]bool{}
	var mark func(in *Instance)
	mark = func(in *Instance) {
		if needed[in] {
			return
		}
		needed[in] = true
		for _, d := range in.Deps {
			mark(d)
		}
	}
	for in := range selected {
		mark(in)
	}
	out := &Plan{DAG: p.DAG, File: p.File, Seed: p.Seed}
	copies := map[*Instance]*Instance{}
	for _, in := range p.Instances { // plan order is topological: deps are copied first
		if !needed[in] {
			continue
		}
		c := *in
		c.index = len(out.Instances)
		c.inputOnly = !selected[in]
		c.Deps = make([]*Instance, len(in.Deps))
		for i, d := range in.Deps {
			c.Deps[i] = copies[d]
		}
		copies[in] = &c
		out.Instances = append(out.Instances, &c)
	}
	return out, nil
}

// match returns the instances that id names.
func (p *Plan) match(id string) ([]*Instance, error) {
	stage, label, hasLabel := strings.Cut(id, "[")
	var ofStage []*Instance
	var stages []string
	seen := map[string]bool{}
	for _, in := range p.Instances {
		if !seen[in.Stage] {
			seen[in.Stage] = true
			stages = append(stages, in.Stage)
		}
		if in.Stage == stage {
			ofStage = append(ofStage, in)
		}
	}
	if len(ofStage) == 0 {
		return nil, &UnknownInstanceError{ID: id, DAG: p.DAG, Known: stages}
	}
	if !hasLabel {
		return ofStage, nil
	}
	label, closed := strings.CutSuffix(label, "]")
	want := map[string]string{}
	ok := closed
	for kv := range strings.SplitSeq(label, ",") {
		k, v, found := strings.Cut(kv, "=")
		if !found {
			ok = false
			break
		}
		want[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	for _, in := range ofStage {
		if in.Label == label && closed || ok && sameMatrix(in.Matrix, want) {
			return []*Instance{in}, nil
		}
	}
	known := make([]string, len(ofStage))
	for i, in := range ofStage {
		known[i] = in.ID()
	}
	return nil, &UnknownInstanceError{ID: id, DAG: p.DAG, Known: known, Stage: true}
}

func sameMatrix(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
