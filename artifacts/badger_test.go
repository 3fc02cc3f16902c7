package artifacts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/dgraph-io/badger/v4"
)

// openTemp opens a store in a fresh folder; gc deletes unnamed blobs at once (no other
// process shares it).
// closeOK closes s and fails the test if that fails (Close reports a failed flush).
func closeOK(t testing.TB, s Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

func openTemp(t testing.TB) *Badger {
	t.Helper()
	s, err := Open(t.TempDir(), WithGCGrace(0))
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

// randomBytes returns n bytes from a seeded PCG.
func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for k := range 8 {
			b[i+k] = byte(v >> (8 * k))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// rawSet writes a key directly into Badger, bypassing the store's checks.
func rawSet(t testing.TB, s *Badger, key, val []byte) {
	t.Helper()
	if err := testDB(t, s, "Update").Update(func(txn *badger.Txn) error { return txn.Set(key, val) }); err != nil {
		t.Fatal(err)
	}
}

func rawGet(t testing.TB, s *Badger, key []byte) []byte {
	t.Helper()
	var v []byte
	err := testDB(t, s, "View").View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatalf("raw get %s: %v", key, err)
	}
	return v
}

func countKeys(t testing.TB, s *Badger, prefix []byte) int {
	t.Helper()
	n := 0
	err := testDB(t, s, "View").View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = prefix
		opt.PrefetchValues = false
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLargeArtifactRoundTrip stores a 200 MB Arrow table (50 M float32 in one list column)
// through Put and Get: the blob spans 48 chunks and several transactions.
func TestLargeArtifactRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	const n = 50_000_000
	r := rand.New(rand.NewPCG(7, 1))
	lb := array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	vb := lb.ValueBuilder().(*array.Float32Builder)
	vb.Reserve(n)
	for i := range n {
		if i%(n/4) == 0 {
			lb.Append(true)
		}
		vb.UnsafeAppend(r.Float32())
	}
	lists := lb.NewArray()
	lb.Release()
	rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "values", Type: lists.DataType()}}, nil), []arrow.Array{lists}, 4)
	lists.Release()
	defer rec.Release()

	d, out, err := Put(ctx, s, rec)
	if err != nil {
		t.Fatal(err)
	}
	if out.Rows != 4 || out.Bytes < 4*n || out.Digest != d {
		t.Fatalf("output %+v, want 4 rows, >= %d bytes, digest %s", out, 4*n, d)
	}
	wantChunks := int((out.Bytes + ChunkSize - 1) / ChunkSize)
	if got := countKeys(t, s, blobKeyPrefix(d)); got != wantChunks+1 {
		t.Fatalf("blob has %d keys, want %d chunks + meta", got, wantChunks)
	}
	// Storing the same bytes again is a cheap no-op with the same digest.
	d2, _, err := Put(ctx, s, rec)
	if err != nil || d2 != d {
		t.Fatalf("second put: %s, %v; want %s", d2, err, d)
	}
	got, err := Get(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	cols, err := Float32ListCol(got, "values")
	if err != nil {
		t.Fatal(err)
	}
	r = rand.New(rand.NewPCG(7, 1)) // the same draws again
	k := 0
	for _, c := range cols {
		for _, v := range c {
			if want := r.Float32(); v != want {
				t.Fatalf("value %d: got %v want %v", k, v, want)
			}
			k++
		}
	}
	if k != n {
		t.Fatalf("read %d values, want %d", k, n)
	}
	rep, err := Verify(ctx, s)
	if err != nil || !rep.OK() || rep.Blobs != 1 || rep.Bytes != out.Bytes {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}

func TestBlobEdgeSizes(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	for _, n := range []int{0, 1, valueThreshold - 1, ChunkSize, ChunkSize + 1, 2*ChunkSize - 1} {
		data := randomBytes(n, uint64(n))
		d, err := s.PutBlob(ctx, data)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if d != DigestOf(data) {
			t.Fatalf("size %d: digest %s, want %s", n, d, DigestOf(data))
		}
		got, err := s.Blob(ctx, d)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("size %d: bytes differ", n)
		}
		if size, err := s.BlobSize(ctx, d); err != nil || size != int64(n) {
			t.Fatalf("size %d: BlobSize %d, %v", n, size, err)
		}
	}
	missing := DigestOf([]byte("never stored"))
	if ok, err := s.HasBlob(ctx, missing); ok || err != nil {
		t.Fatalf("HasBlob(missing) = %v, %v", ok, err)
	}
	if _, err := s.Blob(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Blob(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Blob(ctx, "../etc"); err == nil || !strings.Contains(err.Error(), "not a digest") {
		t.Fatalf("Blob(bad digest) = %v", err)
	}
}

// TestSharedStore checks the lock protocol: two Opens of one folder share it, a writer that
// holds Badger's lock makes another process's operation wait (and fail with ErrLocked after
// the lock wait, naming the folder), and the lock is free again a moment after the writer's
// last operation.
func TestSharedStore(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	s2, err := Open(dir, ReadOnly(), WithLockWait(300*time.Millisecond))
	if err != nil {
		t.Fatalf("second Open of a store: %v", err)
	}
	defer closeOK(t, s2)
	d, err := s.PutBlob(ctx, []byte("shared"))
	if err != nil {
		t.Fatal(err)
	}
	// While s holds the writer's lock, s2 waits, then fails.
	_, release, err := s.acquire(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s2.Blob(ctx, d)
	took := time.Since(start)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "another pipe process") {
		t.Fatalf("read while another opener writes: %v, want ErrLocked naming %s", err, dir)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("ErrLocked after %v, want after the 300ms lock wait", took)
	}
	release()
	// The writer's handle closes after its linger; the reader then gets in, and sees the
	// writer's blob.
	got, err := s2.Blob(ctx, d)
	if err != nil || string(got) != "shared" {
		t.Fatalf("read after the writer let go: %q, %v", got, err)
	}
	// And a write waits for the reader's linger, not failing.
	if _, err := s.PutBlob(ctx, []byte("second")); err != nil {
		t.Fatalf("write after a read: %v", err)
	}
}

// named is a manifest and the head that names it.
type named struct {
	Manifest
	Head Head
}

func (n named) put(ctx context.Context, s Store) error { return s.PutManifest(ctx, n.Manifest, n.Head) }

// testDB gives tests raw transactions on the store's Badger database (opened read-write
// for Update, read-only for View) for the duration of each call.
func testDB(t testing.TB, s *Badger, _ string) rawDB { return rawDB{t, s} }

type rawDB struct {
	t testing.TB
	s *Badger
}

func (r rawDB) Update(fn func(txn *badger.Txn) error) error { return r.run(true, fn) }
func (r rawDB) View(fn func(txn *badger.Txn) error) error   { return r.run(false, fn) }

func (r rawDB) run(write bool, fn func(txn *badger.Txn) error) error {
	db, release, err := r.s.acquire(context.Background(), write)
	if err != nil {
		r.t.Fatal(err)
	}
	defer release()
	if write {
		return db.Update(fn)
	}
	return db.View(fn)
}

func testManifest(key, dag, stage, inst string, outs map[string]Digest, ins map[string]Digest) named {
	m := Manifest{Key: key, Kind: stage, Version: 1,
		Params: map[string]any{"T": 7.0}, Seed: 42, Inputs: ins, Outputs: map[string]Output{},
		Seconds: 1.5, Created: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
	for name, d := range outs {
		m.Outputs[name] = Output{Digest: d, Rows: 3, Bytes: 10}
	}
	return named{m, Head{DAG: dag, Stage: stage, Instance: inst, Key: key}}
}

func TestManifestsHeadsRuns(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	d, err := s.PutBlob(ctx, []byte("table bytes"))
	if err != nil {
		t.Fatal(err)
	}
	// A manifest whose output blob is absent is refused (blobs first).
	bad := testManifest("k0", "demo", "train", "", map[string]Digest{"model": DigestOf([]byte("absent"))}, nil)
	if err := s.PutManifest(ctx, bad.Manifest, bad.Head); err == nil || !strings.Contains(err.Error(), "not stored") {
		t.Fatalf("PutManifest with a missing blob: %v", err)
	}
	if _, err := s.Manifest(ctx, "k0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused manifest was stored: %v", err)
	}

	m1 := testManifest("k1", "demo", "train", "T=7", map[string]Digest{"model": d}, map[string]Digest{"tasks[T=7]/tasks": d})
	m2 := testManifest("k2", "demo", "train", "T=7", map[string]Digest{"model": d}, nil)
	m3 := testManifest("k3", "other", "a/b", "c", map[string]Digest{"x": d}, nil)
	m4 := testManifest("k4", "other", "a", "b/c", map[string]Digest{"x": d}, nil)
	for _, m := range []named{m1, m2, m3, m4} {
		if err := s.PutManifest(ctx, m.Manifest, m.Head); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Manifest(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Key != "k1" || got.Params["T"] != 7.0 || got.Inputs["tasks[T=7]/tasks"] != d || got.Outputs["model"].Digest != d || !got.Created.Equal(m1.Created) {
		t.Fatalf("manifest round trip: %+v", got)
	}
	h, err := s.Head(ctx, "demo", "train", "T=7")
	if err != nil || h.Key != "k2" {
		t.Fatalf("head after two manifests: %+v, %v; want k2", h, err)
	}
	if _, err := s.Head(ctx, "demo", "train", "T=5"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("absent head: %v", err)
	}
	// "a/b" + "c" and "a" + "b/c" must be distinct heads.
	hs, err := s.Heads(ctx, "other")
	if err != nil || len(hs) != 2 {
		t.Fatalf("heads of other: %+v, %v", hs, err)
	}
	all, err := s.Heads(ctx, "")
	if err != nil || len(all) != 3 {
		t.Fatalf("all heads: %+v, %v", all, err)
	}
	ms, err := s.Manifests(ctx)
	if err != nil || len(ms) != 4 {
		t.Fatalf("manifests: %d, %v", len(ms), err)
	}

	var ids []string
	for i := range 3 {
		id, err := NewRunID()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		r := Run{ID: id, DAG: "demo", Started: time.Unix(int64(i), 0).UTC(), Keys: []string{"k1"}, Pinned: i == 1, Status: "ok"}
		if err := s.PutRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	runs, err := s.Runs(ctx)
	if err != nil || len(runs) != 3 {
		t.Fatalf("runs: %+v, %v", runs, err)
	}
	for i, r := range runs {
		if r.ID != ids[i] || r.Pinned != (i == 1) || r.Keys[0] != "k1" {
			t.Fatalf("run %d: %+v, want id %s in creation order", i, r, ids[i])
		}
	}
	r, err := s.Run(ctx, ids[1])
	if err != nil || !r.Pinned {
		t.Fatalf("Run: %+v, %v", r, err)
	}
	if err := s.PutRun(ctx, Run{ID: "run-1"}); err == nil {
		t.Fatal("PutRun accepted a non-UUID id")
	}
}

func TestCorruptManifestIsAMiss(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	d, err := s.PutBlob(ctx, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"good", "trunc", "wrongkey"} {
		if err := testManifest(k, "demo", k, "", map[string]Digest{"o": d}, nil).put(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	good := rawGet(t, s, manifestKey("good"))
	rawSet(t, s, manifestKey("trunc"), good[:len(good)/2])
	rawSet(t, s, manifestKey("wrongkey"), good)
	for _, k := range []string{"trunc", "wrongkey"} {
		_, err := s.Manifest(ctx, k)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), k) {
			t.Fatalf("Manifest(%s) = %v, want a corrupt-manifest error wrapping ErrNotFound", k, err)
		}
	}
	ms, err := s.Manifests(ctx)
	if err != nil || len(ms) != 1 || ms[0].Key != "good" {
		t.Fatalf("Manifests should list only the good one: %+v, %v", ms, err)
	}
	rep, err := Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.CorruptManifests) != 2 {
		t.Fatalf("verify should report 2 corrupt manifests: %+v", rep)
	}
	// Their heads now point at unusable manifests.
	if len(rep.Dangling) != 2 {
		t.Fatalf("verify should report 2 dangling heads: %+v", rep.Dangling)
	}
}

func TestInMemoryStore(t *testing.T) {
	ctx := context.Background()
	s, err := Open("", InMemory(), WithGCGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	d, err := s.PutBlob(ctx, randomBytes(ChunkSize+3, 1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Blob(ctx, d)
	if err != nil || DigestOf(b) != d {
		t.Fatalf("in-memory blob: %v", err)
	}
	rep, err := GC(ctx, s, false)
	if err != nil || rep.BlobsDeleted != 1 {
		t.Fatalf("in-memory gc: %+v, %v", rep, err)
	}
	if ok, _ := s.HasBlob(ctx, d); ok {
		t.Fatal("in-memory gc kept an unreachable blob")
	}
	if _, err := Open(""); err == nil {
		t.Fatal("Open with no folder succeeded")
	}
}

type badgerTxn = badger.Txn

// putRawManifest stores a manifest and its head without PutManifest's checks.
func putRawManifest(t testing.TB, s *Badger, m named) {
	t.Helper()
	b, err := json.Marshal(m.Manifest)
	if err != nil {
		t.Fatal(err)
	}
	rawSet(t, s, manifestKey(m.Key), b)
	hb, err := json.Marshal(m.Head)
	if err != nil {
		t.Fatal(err)
	}
	rawSet(t, s, headKey(m.Head.DAG, m.Head.Stage, m.Head.Instance), hb)
}

// TestConcurrentWriters stores overlapping blobs and manifests from several goroutines
// (run with -race).
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			// Goroutines g and g+4 write the same bytes.
			data := randomBytes(ChunkSize+g%4, uint64(g%4))
			d, err := s.PutBlob(ctx, data)
			if err == nil {
				err = testManifest(fmt.Sprintf("k%d", g), "demo", "s", fmt.Sprint(g%4), map[string]Digest{"o": d}, nil).put(ctx, s)
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rep, err := Verify(ctx, s)
	if err != nil || !rep.OK() || rep.Blobs != 4 || rep.Manifests != 8 || rep.Heads != 4 {
		t.Fatalf("verify: %+v, %v", rep, err)
	}
}
