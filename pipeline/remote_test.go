package pipeline

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"github.com/pipe-ahl/pipe/artifacts"
)

// storeRemote is a Remote backed by a second store (artifacts/remote is tested on a bucket in
// its own package; the engine may not import it). It counts pulls and pushes, and fails
// pushes while failPush is set.
type storeRemote struct {
	s        artifacts.Store
	mu       sync.Mutex
	pulls    []string // keys
	pushes   []string // keys whose manifest was new to the remote
	failPush error
}

func (r *storeRemote) Manifest(ctx context.Context, key string) (artifacts.Manifest, error) {
	return r.s.Manifest(ctx, key)
}

func copyBlobs(ctx context.Context, from, to artifacts.Store, m artifacts.Manifest) error {
	for _, o := range m.Outputs {
		b, err := from.Blob(ctx, o.Digest)
		if err != nil {
			return err
		}
		if _, err := to.PutBlob(ctx, b); err != nil {
			return err
		}
	}
	return nil
}

func (r *storeRemote) Pull(ctx context.Context, into artifacts.Store, m artifacts.Manifest, heads ...artifacts.Head) error {
	if err := copyBlobs(ctx, r.s, into, m); err != nil {
		return err
	}
	r.mu.Lock()
	r.pulls = append(r.pulls, m.Key)
	r.mu.Unlock()
	return into.PutManifest(ctx, m, heads...)
}

func (r *storeRemote) Push(ctx context.Context, from artifacts.Store, m artifacts.Manifest, heads ...artifacts.Head) error {
	if r.failPush != nil {
		return r.failPush
	}
	if _, err := r.s.Manifest(ctx, m.Key); err == nil {
		for _, h := range heads {
			if err := r.s.PutHead(ctx, h); err != nil {
				return err
			}
		}
		return nil
	}
	if err := copyBlobs(ctx, from, r.s, m); err != nil {
		return err
	}
	r.mu.Lock()
	r.pushes = append(r.pushes, m.Key)
	r.mu.Unlock()
	return r.s.PutManifest(ctx, m, heads...)
}

func withRemote(r Remote) func(*Options) { return func(o *Options) { o.Remote = r } }

func TestRemoteHitIsPulledNotRerun(t *testing.T) {
	rem := &storeRemote{s: memStore(t)}
	a := memStore(t)
	takeCounts()
	if _, err := run(t, a, compile(t, chainDAG), withRemote(rem)); err != nil {
		t.Fatal(err)
	}
	if len(rem.pushes) != 3 {
		t.Fatalf("first run pushed %d manifests, want 3 (every instance that ran)", len(rem.pushes))
	}
	if h, err := rem.s.Head(context.Background(), "chain", "c", ""); err != nil || h.Key == "" {
		t.Fatalf("the remote has no head for c: %v", err)
	}
	takeCounts()

	// Another machine: a fresh store, the same remote. A dry run (status) finds every
	// instance in the remote without pulling it.
	b := memStore(t)
	st, err := Status(context.Background(), compile(t, chainDAG), Options{Store: b, Remote: rem})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.State != Fresh || !s.Remote || !strings.HasPrefix(s.Reason, "in the remote") {
			t.Errorf("status %s: %s remote=%v (%s), want fresh in the remote", s.Instance.ID(), s.State, s.Remote, s.Reason)
		}
	}
	if len(rem.pulls) != 0 {
		t.Fatalf("status pulled %v", rem.pulls)
	}
	if _, err := b.Manifest(context.Background(), st[0].Key); !errors.Is(err, artifacts.ErrNotFound) {
		t.Fatalf("status stored a manifest locally: %v", err)
	}

	res, err := run(t, b, compile(t, chainDAG), withRemote(rem))
	if err != nil {
		t.Fatal(err)
	}
	if got := takeCounts(); len(got) != 0 {
		t.Fatalf("the second machine ran %v, want nothing", got)
	}
	for id, r := range res {
		if r.Status != Cached || !r.Remote || !strings.HasPrefix(r.Reason, "pulled from the remote") {
			t.Errorf("%s: %s remote=%v (%s), want cached (remote)", id, r.Status, r.Remote, r.Reason)
		}
	}
	if len(rem.pulls) != 3 || len(rem.pushes) != 3 {
		t.Fatalf("pulls %v pushes %v, want 3 pulls and no new push", rem.pulls, rem.pushes)
	}
	// Now local: a third run neither pulls nor runs.
	res, err = run(t, b, compile(t, chainDAG), withRemote(rem))
	if err != nil {
		t.Fatal(err)
	}
	for id, r := range res {
		if r.Status != Cached || r.Remote {
			t.Errorf("third run %s: %s remote=%v, want cached locally", id, r.Status, r.Remote)
		}
	}
	if len(rem.pulls) != 3 {
		t.Fatalf("a local hit pulled: %v", rem.pulls)
	}
}

func TestLocalCacheIsPushedWhenRemoteLacksIt(t *testing.T) {
	a := memStore(t)
	if _, err := run(t, a, compile(t, chainDAG)); err != nil {
		t.Fatal(err)
	}
	rem := &storeRemote{s: memStore(t)}
	takeCounts()
	res, err := run(t, a, compile(t, chainDAG), withRemote(rem))
	if err != nil {
		t.Fatal(err)
	}
	if got := takeCounts(); len(got) != 0 {
		t.Fatalf("ran %v", got)
	}
	if len(rem.pushes) != 3 {
		t.Fatalf("pushed %v, want the 3 locally cached instances", rem.pushes)
	}
	for id, r := range res {
		if r.Status != Cached || r.Remote {
			t.Errorf("%s: %s remote=%v", id, r.Status, r.Remote)
		}
	}
}

func TestFailedPushFailsTheInstance(t *testing.T) {
	rem := &storeRemote{s: memStore(t), failPush: errors.New("bucket is read-only")}
	a := memStore(t)
	res, err := run(t, a, compile(t, chainDAG), withRemote(rem))
	if !errors.Is(err, ErrStageFailed) {
		t.Fatalf("got %v, want ErrStageFailed", err)
	}
	r := res["a"]
	if r.Status != Failed || !strings.Contains(r.Err.Error(), "the stage ran and its results are stored locally, but the push to the remote failed: bucket is read-only") {
		t.Fatalf("a: %s %v", r.Status, r.Err)
	}
	if res["b"].Status != Skipped {
		t.Errorf("b: %s, want skipped after a's failed push", res["b"].Status)
	}
	// The results are local: without the remote, a is cached.
	res, err = run(t, a, compile(t, chainDAG))
	if err != nil {
		t.Fatal(err)
	}
	if res["a"].Status != Cached {
		t.Errorf("a after the failed push: %s, want cached locally", res["a"].Status)
	}
}

const onlyDAG = `
name: only
seed: 3
matrix: {x: [1, 2], y: [a, b]}
stages:
  shared: {kind: ptest-gen, with: {n: 3}}
  perx: {kind: ptest-gen, with: {n: "${matrix.x}"}}
  sum: {kind: ptest-sum, needs: [shared, perx], with: {note: "${matrix.y}"}}
  other: {kind: ptest-gen, with: {n: 5}}
`

func TestOnlySelection(t *testing.T) {
	p := compile(t, onlyDAG)
	sub, err := p.Only([]string{"sum[y=b,x=2]"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, in := range sub.Instances {
		ids = append(ids, in.ID())
		if in.InputOnly() != (in.Stage != "sum") {
			t.Errorf("%s: InputOnly %v", in.ID(), in.InputOnly())
		}
	}
	if want := "shared perx[x=2] sum[x=2,y=b]"; strings.Join(ids, " ") != want {
		t.Fatalf("Only(sum[y=b,x=2]) = %q, want %q", ids, want)
	}
	// Inputs not cached anywhere: a clear error naming each, nothing runs.
	s := memStore(t)
	takeCounts()
	res, err := run(t, s, sub, withRemote(&storeRemote{s: memStore(t)}))
	if !errors.Is(err, ErrNotCached) || !errors.Is(err, ErrStageFailed) ||
		!strings.Contains(err.Error(), "2 input instances are not cached locally or in the remote") ||
		!strings.Contains(err.Error(), ": shared, perx[x=2]") {
		t.Fatalf("got %v, want ErrNotCached naming shared and perx[x=2]", err)
	}
	if got := takeCounts(); len(got) != 0 {
		t.Fatalf("ran %v", got)
	}
	if res["sum[x=2,y=b]"].Status != Skipped {
		t.Errorf("the selected instance: %s, want skipped", res["sum[x=2,y=b]"].Status)
	}

	// With the inputs in the remote (run elsewhere), only the selected instance runs.
	rem := &storeRemote{s: memStore(t)}
	inputs, err := p.Only([]string{"shared", "perx"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := run(t, memStore(t), inputs, withRemote(rem)); err != nil {
		t.Fatal(err)
	}
	if got, want := takeCounts(), map[string]int{"shared": 1, "perx[x=1]": 1, "perx[x=2]": 1}; !maps.Equal(got, want) {
		t.Fatalf("Only(shared, perx) ran %v, want %v", got, want)
	}
	res, err = run(t, s, sub, withRemote(rem))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := takeCounts(), map[string]int{"sum[x=2,y=b]": 1}; !maps.Equal(got, want) {
		t.Fatalf("Only(sum[x=2,y=b]) ran %v, want %v", got, want)
	}
	if r := res["perx[x=2]"]; r.Status != Cached || !r.Remote {
		t.Errorf("input perx[x=2]: %s remote=%v, want cached (remote)", r.Status, r.Remote)
	}
	if r := res["sum[x=2,y=b]"]; r.Status != Ran {
		t.Errorf("selected: %s", r.Status)
	}
	if len(res) != 3 {
		t.Errorf("results for %d instances, want 3 (other and the rest untouched)", len(res))
	}
	// The selected instance's result is in the remote for the next job.
	if _, err := rem.s.Manifest(context.Background(), res["sum[x=2,y=b]"].Key); err != nil {
		t.Errorf("the selected instance was not pushed: %v", err)
	}
	// Without a remote, a missing input says so.
	_, err = run(t, memStore(t), sub)
	if err == nil || !strings.Contains(err.Error(), "not cached locally or in the remote") {
		t.Fatalf("no remote: got %v", err)
	}
}

func TestOnlyUnknownIDs(t *testing.T) {
	p := compile(t, onlyDAG)
	for _, tc := range []struct{ id, want string }{
		{"nosuch", "--only nosuch: no stage of that name in only; its stages are: shared, perx, sum, other"},
		{"sum[x=3,y=a]", "--only sum[x=3,y=a]: no such instance in only; its instances are: sum[x=1,y=a], sum[x=1,y=b], sum[x=2,y=a], sum[x=2,y=b]"},
		{"sum[x=1]", "no such instance"},
		{"perx[x=1", "no such instance"},
	} {
		_, err := p.Only([]string{tc.id})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !IsInvalid(err) {
			t.Errorf("Only(%q): got %v, want a usage error containing %q", tc.id, err, tc.want)
		}
	}
	// A bare stage name selects all its instances; the same instance twice is one.
	sub, err := p.Only([]string{"perx", "perx[x=1]"})
	if err != nil || len(sub.Instances) != 2 {
		t.Fatalf("Only(perx, perx[x=1]) = %v, %v", sub, err)
	}
}

type corruptRemote struct{ *storeRemote }

func (r corruptRemote) Pull(ctx context.Context, into artifacts.Store, m artifacts.Manifest, heads ...artifacts.Head) error {
	return fmt.Errorf("remote x: blob blobs/%s does not match its digest: %w", "ab", artifacts.ErrCorrupt)
}

func TestDamagedRemoteCopyRunsLocally(t *testing.T) {
	rem := &storeRemote{s: memStore(t)}
	if _, err := run(t, memStore(t), compile(t, chainDAG), withRemote(rem)); err != nil {
		t.Fatal(err)
	}
	takeCounts()
	res, err := run(t, memStore(t), compile(t, chainDAG), withRemote(corruptRemote{rem}))
	if err != nil {
		t.Fatal(err)
	}
	if got := takeCounts(); len(got) != 3 {
		t.Fatalf("ran %v, want every instance (the remote copies are damaged)", got)
	}
	if r := res["a"]; r.Status != Ran || !strings.HasPrefix(r.Reason, "remote copy unusable (remote x: blob blobs/ab does not match its digest") {
		t.Fatalf("a: %s (%s)", r.Status, r.Reason)
	}
}
