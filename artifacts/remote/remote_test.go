package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/artifacts"
)

// memStore opens an empty in-memory local store.
func memStore(t *testing.T) *artifacts.Badger {
	t.Helper()
	s, err := artifacts.Open(t.TempDir(), artifacts.InMemory())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func openRemote(t *testing.T, dir string) *Remote {
	t.Helper()
	r, err := Open(context.Background(), "file://"+filepath.ToSlash(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// randomBytes returns n reproducible pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// fixture stores two blobs in s (one larger than a store chunk, so that a push streams
// several chunks) and returns a manifest naming them, with its bytes by output.
func fixture(t *testing.T, s artifacts.Store, key string) (artifacts.Manifest, map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	data := map[string][]byte{
		"big":   randomBytes(1, 2*artifacts.ChunkSize+12345),
		"small": []byte("a small table"),
	}
	m := artifacts.Manifest{Key: key, Kind: "test", Version: 1, Params: map[string]any{"x": 1.0},
		Inputs: map[string]artifacts.Digest{}, Outputs: map[string]artifacts.Output{}, Seconds: 1.5,
		Created: time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)}
	for name, b := range data {
		d, err := s.PutBlob(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		m.Outputs[name] = artifacts.Output{Digest: d, Rows: 1, Bytes: int64(len(b))}
	}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	return m, data
}

const testKey = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestPushPullRoundTrip(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := openRemote(t, dir)
	a := memStore(t)
	m, data := fixture(t, a, testKey)
	head := artifacts.Head{DAG: "demo", Stage: "train", Instance: "seed=0,method=ahl", Key: testKey}
	shared := artifacts.Head{DAG: "demo", Stage: "ingest", Key: testKey}

	if _, err := r.Manifest(ctx, testKey); !errors.Is(err, artifacts.ErrNotFound) {
		t.Fatalf("Manifest before push: got %v, want ErrNotFound", err)
	}
	if err := r.Push(ctx, a, m, head, shared); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if st.BlobsPushed != 2 || st.ManifestsPushed != 1 || st.BytesPushed != int64(len(data["big"])+len(data["small"])) {
		t.Fatalf("stats after push: %+v", st)
	}
	for _, o := range m.Outputs {
		fi, err := os.Stat(filepath.Join(dir, "blobs", string(o.Digest)))
		if err != nil || fi.Size() != o.Bytes {
			t.Fatalf("blob %s in the remote folder: %v (size %v, want %d)", o.Digest, err, fi, o.Bytes)
		}
	}
	// A second push of the same manifest moves nothing.
	if err := r.Push(ctx, a, m, head); err != nil {
		t.Fatal(err)
	}
	if st2 := r.Stats(); st2.BlobsPushed != st.BlobsPushed || st2.ManifestsPushed != st.ManifestsPushed || st2.BytesPushed != st.BytesPushed {
		t.Fatalf("a repeated push moved something: %+v, before %+v", st2, st)
	}

	// A second machine: a fresh store with the same remote.
	r2 := openRemote(t, dir)
	b := memStore(t)
	got, err := r2.Manifest(ctx, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if err := r2.Pull(ctx, b, got, head); err != nil {
		t.Fatal(err)
	}
	for name, o := range m.Outputs {
		v, err := b.Blob(ctx, o.Digest)
		if err != nil || !bytes.Equal(v, data[name]) {
			t.Fatalf("pulled %s: err %v, equal %v", name, err, bytes.Equal(v, data[name]))
		}
	}
	lm, err := b.Manifest(ctx, testKey)
	if err != nil || !lm.Created.Equal(m.Created) || lm.Outputs["big"] != m.Outputs["big"] {
		t.Fatalf("pulled manifest: %+v, %v", lm, err)
	}
	if h, err := b.Head(ctx, "demo", "train", "seed=0,method=ahl"); err != nil || h.Key != testKey {
		t.Fatalf("pulled head: %+v, %v", h, err)
	}
	if st := r2.Stats(); st.BlobsPulled != 2 || st.ManifestsPulled != 1 {
		t.Fatalf("stats after pull: %+v", st)
	}
	// Pulling again moves no blob: the local store has them.
	if err := r2.Pull(ctx, b, got); err != nil {
		t.Fatal(err)
	}
	if st := r2.Stats(); st.BlobsPulled != 2 {
		t.Fatalf("a repeated pull moved blobs: %+v", st)
	}

	heads, err := r.Heads(ctx, "demo")
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 2 || heads[0] != shared || heads[1] != head {
		t.Fatalf("Heads(demo) = %+v", heads)
	}
	if h, err := r.Head(ctx, "demo", "ingest", ""); err != nil || h != shared {
		t.Fatalf("Head(shared) = %+v, %v", h, err)
	}
	if hs, err := r.Heads(ctx, "other"); err != nil || len(hs) != 0 {
		t.Fatalf("Heads(other) = %+v, %v", hs, err)
	}
}

func TestPullRejectsTamperedBlob(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := openRemote(t, dir)
	a := memStore(t)
	m, data := fixture(t, a, testKey)
	if err := r.Push(ctx, a, m); err != nil {
		t.Fatal(err)
	}
	// Flip one byte of the big blob in the remote, keeping its size.
	p := filepath.Join(dir, "blobs", string(m.Outputs["big"].Digest))
	bad := bytes.Clone(data["big"])
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(p, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	b := memStore(t)
	err := r.Pull(ctx, b, m)
	if !errors.Is(err, artifacts.ErrCorrupt) || !strings.Contains(err.Error(), "does not match its digest") {
		t.Fatalf("pull of a tampered blob: got %v, want ErrCorrupt naming the digest", err)
	}
	if _, err := b.Manifest(ctx, testKey); !errors.Is(err, artifacts.ErrNotFound) {
		t.Fatalf("a failed pull stored the manifest: %v", err)
	}
	if ok, _ := b.HasBlob(ctx, m.Outputs["big"].Digest); ok {
		t.Fatal("a failed pull stored the tampered blob")
	}
	// A truncated blob is caught by its size before it is read.
	if err := os.WriteFile(p, bad[:100], 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Pull(ctx, b, m); !errors.Is(err, artifacts.ErrCorrupt) {
		t.Fatalf("pull of a truncated blob: got %v, want ErrCorrupt", err)
	}
	// A missing blob is ErrNotFound.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := r.Pull(ctx, b, m); !errors.Is(err, artifacts.ErrNotFound) {
		t.Fatalf("pull of a missing blob: got %v, want ErrNotFound", err)
	}
}

// TestKilledPushLeavesNoManifest simulates a push killed after its first blob: the manifest
// is not visible, and the next push completes it without writing that blob again.
func TestKilledPushLeavesNoManifest(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := openRemote(t, dir)
	a := memStore(t)
	m, _ := fixture(t, a, testKey)
	if err := r.pushBlob(ctx, a, m.Outputs["big"]); err != nil {
		t.Fatal(err)
	}
	// A push cancelled while writing the small blob: nothing of it becomes visible.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := r.Push(cctx, a, m); err == nil {
		t.Fatal("a cancelled push succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "blobs", string(m.Outputs["small"].Digest))); !os.IsNotExist(err) {
		t.Fatalf("a cancelled blob write is visible: %v", err)
	}
	r2 := openRemote(t, dir)
	if _, err := r2.Manifest(ctx, testKey); !errors.Is(err, artifacts.ErrNotFound) {
		t.Fatalf("manifest of a half-finished push: got %v, want ErrNotFound", err)
	}
	if ok, err := r2.HasManifest(ctx, testKey); ok || err != nil {
		t.Fatalf("HasManifest of a half-finished push: %v, %v", ok, err)
	}
	before := r.Stats()
	if err := r.Push(ctx, a, m); err != nil {
		t.Fatal(err)
	}
	after := r.Stats()
	if after.BlobsPushed-before.BlobsPushed != 1 || after.BytesPushed-before.BytesPushed != m.Outputs["small"].Bytes {
		t.Fatalf("the resumed push moved %+v (before %+v), want only the small blob", after, before)
	}
	if _, err := r2.Manifest(ctx, testKey); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentPushesGoroutines(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		s := memStore(t)
		m, _ := fixture(t, s, testKey)
		r := openRemote(t, dir)
		wg.Go(func() {
			head := artifacts.Head{DAG: "demo", Stage: "s", Instance: fmt.Sprintf("i=%d", i), Key: testKey}
			errs[i] = r.Push(ctx, s, m, head)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pusher %d: %v", i, err)
		}
	}
	checkPulls(t, dir)
	if hs, err := openRemote(t, dir).Heads(ctx, "demo"); err != nil || len(hs) != n {
		t.Fatalf("heads after %d pushers: %+v, %v", n, hs, err)
	}
}

// checkPulls pulls testKey from the remote at dir into a fresh store and checks the bytes.
func checkPulls(t *testing.T, dir string) {
	t.Helper()
	ctx := context.Background()
	r := openRemote(t, dir)
	m, err := r.Manifest(ctx, testKey)
	if err != nil {
		t.Fatal(err)
	}
	b := memStore(t)
	if err := r.Pull(ctx, b, m); err != nil {
		t.Fatal(err)
	}
	v, err := b.Blob(ctx, m.Outputs["big"].Digest)
	if err != nil || !bytes.Equal(v, randomBytes(1, 2*artifacts.ChunkSize+12345)) {
		t.Fatalf("pulled big blob: %v", err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("remote blobs/ holds %v, want the 2 blobs and no temporary file", names)
	}
}

// TestConcurrentPushesProcesses pushes the same key from two processes at once (this test
// binary, run again as TestHelperPush).
func TestConcurrentPushesProcesses(t *testing.T) {
	dir := t.TempDir()
	var cmds []*exec.Cmd
	var outs []*bytes.Buffer
	for i := range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperPush$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PIPE_REMOTE_HELPER="+dir, fmt.Sprintf("PIPE_REMOTE_HELPER_ID=%d", i))
		out := &bytes.Buffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds, outs = append(cmds, cmd), append(outs, out)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("pusher process %d: %v\n%s", i, err, outs[i])
		}
	}
	checkPulls(t, dir)
}

// TestHelperPush is run by TestConcurrentPushesProcesses in a child process.
func TestHelperPush(t *testing.T) {
	dir := os.Getenv("PIPE_REMOTE_HELPER")
	if dir == "" {
		t.Skip("run by TestConcurrentPushesProcesses")
	}
	s := memStore(t)
	m, _ := fixture(t, s, testKey)
	r := openRemote(t, dir)
	h := artifacts.Head{DAG: "demo", Stage: "s", Instance: "p=" + os.Getenv("PIPE_REMOTE_HELPER_ID"), Key: testKey}
	if err := r.Push(context.Background(), s, m, h); err != nil {
		t.Fatal(err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ url, want string }{
		{"ftp://host/x", `scheme "ftp" is not supported`},
		{"file://relative/dir", `file URL with host "relative"`},
		{"file:///tmp/x?create=1", "file URLs take no query parameters"},
		{"s3:///prefix?region=us-east-1", "no bucket"},
		{"s3://bucket/a?prefix=b&region=us-east-1", "a prefix both in the path and as prefix="},
		{"s3://AKIASECRET:hunter2@bucket?region=us-east-1&bogus=1", `unknown query parameter "bogus"`},
	} {
		_, err := Open(ctx, tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q): got %v, want an error containing %q", tc.url, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "AKIASECRET") {
			t.Errorf("Open(%q): the error shows the credentials: %v", tc.url, err)
		}
		if !errors.Is(err, artifacts.ErrUnreadable) {
			t.Errorf("Open(%q): %v does not count as an unusable store", tc.url, err)
		}
	}
	// A file remote that cannot be created.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, "file://"+f+"/sub"); err == nil || !strings.Contains(err.Error(), "file://"+f+"/sub") {
		t.Errorf("Open below a file: got %v, want an error naming the URL", err)
	}
}

func TestManifestCorruptIsMiss(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := openRemote(t, dir)
	if err := os.MkdirAll(filepath.Join(dir, "manifests"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifests", testKey+".json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := r.Manifest(ctx, testKey)
	if !errors.Is(err, artifacts.ErrNotFound) || !errors.Is(err, artifacts.ErrCorrupt) {
		t.Fatalf("corrupt remote manifest: got %v, want ErrNotFound and ErrCorrupt", err)
	}
	if _, err := r.Manifest(ctx, "../x"); err == nil {
		t.Fatal("a key with a path separator was accepted")
	}
}

// TestConcurrentPullsShareABlob pulls two manifests that share a blob at once: the blob is
// read from the remote once.
func TestConcurrentPullsShareABlob(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := memStore(t)
	m, _ := fixture(t, a, testKey)
	m2 := m
	m2.Key = strings.Repeat("b", 64)
	m2.Outputs = map[string]artifacts.Output{"same": m.Outputs["big"]}
	r := openRemote(t, dir)
	for _, mm := range []artifacts.Manifest{m, m2} {
		if err := r.Push(ctx, a, mm); err != nil {
			t.Fatal(err)
		}
	}
	b := memStore(t)
	r2 := openRemote(t, dir)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, mm := range []artifacts.Manifest{m, m2} {
		wg.Go(func() { errs[i] = r2.Pull(ctx, b, mm) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	if st := r2.Stats(); st.BlobsPulled != 2 || st.ManifestsPulled != 2 {
		t.Fatalf("stats %+v: want 2 manifests and 2 distinct blobs pulled", st)
	}
}

// BenchmarkPushPullFeatureTable pushes and pulls a 10,000 x 512 float32 feature table (the
// size of a large features output, about 20 MB of Arrow IPC) through a remote: a temporary
// file:// folder, or the URL in PIPE_REMOTE_BENCH (for example an S3 server's).
func BenchmarkPushPullFeatureTable(b *testing.B) {
	ctx := context.Background()
	rows := make([][]float32, 10000)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range rows {
		rows[i] = make([]float32, 512)
		for j := range rows[i] {
			rows[i][j] = rng.Float32()
		}
	}
	rec, err := artifacts.NewTable(artifacts.Float32Lists("features", rows))
	if err != nil {
		b.Fatal(err)
	}
	src, err := artifacts.Open("", artifacts.InMemory())
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = src.Close() }()
	_, o, err := artifacts.Put(ctx, src, rec)
	rec.Release()
	if err != nil {
		b.Fatal(err)
	}
	url := os.Getenv("PIPE_REMOTE_BENCH")
	b.SetBytes(o.Bytes)
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		u := url
		if u == "" {
			u = "file://" + filepath.ToSlash(b.TempDir())
		}
		// A fresh prefix per iteration, so that every push writes the blob.
		r, err := Open(ctx, withPrefix(u, fmt.Sprintf("bench-%d-%d", time.Now().UnixNano(), i)))
		if err != nil {
			b.Fatal(err)
		}
		m := artifacts.Manifest{Key: strings.Repeat("c", 64), Outputs: map[string]artifacts.Output{"features": o}}
		dst, err := artifacts.Open("", artifacts.InMemory())
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		if err := r.Push(ctx, src, m); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := r.Pull(ctx, dst, m); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		b.StopTimer()
		mb := float64(o.Bytes) / 1e6
		b.ReportMetric(mb/t1.Sub(t0).Seconds(), "push-MB/s")
		b.ReportMetric(mb/t2.Sub(t1).Seconds(), "pull-MB/s")
		_ = dst.Close()
		_ = r.Close()
	}
}

// withPrefix adds a prefix below u: a subfolder of a file:// URL, or prefix= on an s3:// URL
// (a path prefix is kept in front).
func withPrefix(u, p string) string {
	if strings.HasPrefix(u, "file://") {
		return u + "/" + p
	}
	base, query, _ := strings.Cut(u, "?")
	if query != "" {
		query = "?" + query
	}
	return strings.TrimSuffix(base, "/") + "/" + p + query
}

// cancelOnRead is a local store that cancels the push's context when blob d is read, as if
// the pushing process were stopped while writing it.
type cancelOnRead struct {
	artifacts.Store
	d      artifacts.Digest
	cancel context.CancelFunc
}

func (s cancelOnRead) Blob(ctx context.Context, d artifacts.Digest) ([]byte, error) {
	b, err := s.Store.Blob(ctx, d)
	if d == s.d {
		s.cancel()
	}
	return b, err
}

// TestPushStoppedMidBlob stops a push while it writes its second blob: that blob is not
// visible (no partial object, no temporary file left), nor is the manifest.
func TestPushStoppedMidBlob(t *testing.T) {
	dir := t.TempDir()
	r := openRemote(t, dir)
	a := memStore(t)
	m, _ := fixture(t, a, testKey)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := r.Push(ctx, cancelOnRead{a, m.Outputs["small"].Digest, cancel}, m)
	if err == nil {
		t.Fatal("a push stopped mid-blob succeeded")
	}
	entries, err := os.ReadDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != string(m.Outputs["big"].Digest) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("blobs/ after a stopped push: %v, want only the first blob", names)
	}
	if _, err := r.Manifest(context.Background(), testKey); !errors.Is(err, artifacts.ErrNotFound) {
		t.Fatalf("manifest after a stopped push: %v", err)
	}
}
