package pipeline

import (
	"context"
	"strings"
	"testing"
)

// TestTwoDAGsShareAManifest: DAG b hits the cache keys DAG a stored. Each DAG gets its own
// heads on the shared manifests, a's heads still name a, and the manifests (content only)
// are not rewritten with b's names.
func TestTwoDAGsShareAManifest(t *testing.T) {
	ctx := context.Background()
	s := memStore(t)
	if _, err := run(t, s, compile(t, chainDAG)); err != nil {
		t.Fatal(err)
	}
	before, err := s.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	other := strings.Replace(chainDAG, "name: chain", "name: other", 1)
	res, err := run(t, s, compile(t, other))
	if err != nil {
		t.Fatal(err)
	}
	for id, r := range res {
		if r.Status != Cached {
			t.Errorf("%s in DAG other: %s (%s), want cached from DAG chain's results", id, r.Status, r.Reason)
		}
	}
	after, err := s.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("%d manifests after the second DAG, want the same %d", len(after), len(before))
	}
	for i := range before {
		if !after[i].Created.Equal(before[i].Created) || after[i].Key != before[i].Key {
			t.Errorf("manifest %s was rewritten", before[i].Key)
		}
	}
	for _, dag := range []string{"chain", "other"} {
		heads, err := s.Heads(ctx, dag)
		if err != nil {
			t.Fatal(err)
		}
		if len(heads) != len(before) {
			t.Errorf("DAG %s has %d heads, want %d", dag, len(heads), len(before))
		}
		for _, h := range heads {
			if h.DAG != dag {
				t.Errorf("head %+v listed under DAG %s", h, dag)
			}
			if _, err := s.Manifest(ctx, h.Key); err != nil {
				t.Errorf("head %s/%s points at %s: %v", dag, h.Stage, h.Key, err)
			}
		}
	}
	// Both DAGs' heads point at the same manifests.
	a, _ := s.Head(ctx, "chain", "c", "")
	b, _ := s.Head(ctx, "other", "c", "")
	if a.Key == "" || a.Key != b.Key {
		t.Errorf("heads of c: chain %q, other %q; want the same key", a.Key, b.Key)
	}
}
