package artifacts

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestVerifyFindsDamage(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	good, err := s.PutBlob(ctx, randomBytes(ChunkSize+100, 1))
	if err != nil {
		t.Fatal(err)
	}
	flipped, err := s.PutBlob(ctx, randomBytes(2*ChunkSize+7, 2))
	if err != nil {
		t.Fatal(err)
	}
	holed, err := s.PutBlob(ctx, randomBytes(3*ChunkSize, 3))
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := Verify(ctx, s); err != nil || !rep.OK() || rep.Blobs != 3 {
		t.Fatalf("clean store: %+v, %v", rep, err)
	}

	// Flip one byte in the middle of the second chunk, through a raw Badger write.
	chunk := rawGet(t, s, chunkKey(flipped, 1))
	chunk[len(chunk)/2] ^= 0x40
	rawSet(t, s, chunkKey(flipped, 1), chunk)
	// Remove the middle chunk of another blob.
	if err := testDB(t, s, "Update").Update(func(txn *badgerTxn) error { return txn.Delete(chunkKey(holed, 1)) }); err != nil {
		t.Fatal(err)
	}
	// A manifest (written raw, since PutManifest refuses it) whose output blob is missing.
	missing := DigestOf([]byte("gone"))
	putRawManifest(t, s, testManifest("k1", "demo", "score", "", map[string]Digest{"scores": missing}, nil))

	rep, err := Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() {
		t.Fatal("verify reported a damaged store as OK")
	}
	if len(rep.Mismatched) != 1 || rep.Mismatched[0].Digest != flipped {
		t.Fatalf("mismatched = %+v, want only %s", rep.Mismatched, flipped)
	}
	if len(rep.MissingChunks) != 1 || rep.MissingChunks[0].Digest != holed || !strings.Contains(rep.MissingChunks[0].Detail, "2 of 3") {
		t.Fatalf("missing chunks = %+v, want %s with 2 of 3 chunks", rep.MissingChunks, holed)
	}
	if len(rep.Dangling) != 1 || !strings.Contains(rep.Dangling[0].Detail, string(missing)) {
		t.Fatalf("dangling = %+v, want k1 -> %s", rep.Dangling, missing)
	}
	if len(rep.Problems()) != 3 {
		t.Fatalf("problems: %q", rep.Problems())
	}
	if _, err := s.Blob(ctx, holed); err == nil || !strings.Contains(err.Error(), "chunk 1 of 3 is missing") {
		t.Fatalf("Blob of a holed blob: %v", err)
	}
	if b, err := s.Blob(ctx, good); err != nil || DigestOf(b) != good {
		t.Fatalf("good blob: %v", err)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	blob := func(i int, n int) Digest {
		d, err := s.PutBlob(ctx, randomBytes(n, uint64(100+i)))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d1, d2, d3, d4, d5, d6, d7, d8 := blob(1, 1000), blob(2, ChunkSize+5), blob(3, 2000), blob(4, 3000), blob(5, 4000), blob(6, ChunkSize+9), blob(7, 6000), blob(8, 7000)
	put := func(m named) {
		if err := s.PutManifest(ctx, m.Manifest, m.Head); err != nil {
			t.Fatal(err)
		}
	}
	// ingest: one manifest, head. features: M2 then M3 (head). train: M4 (from d2) then
	// M5 (head, from d3); a pinned run keeps M4 and through its input d2 the producer M2.
	// score: M6 then M7 (head); only an unpinned run names M6, so M6 and d6 go.
	put(testManifest("M1", "demo", "ingest", "", map[string]Digest{"images": d1}, nil))
	put(testManifest("M2", "demo", "features", "", map[string]Digest{"features": d2}, map[string]Digest{"ingest/images": d1}))
	put(testManifest("M3", "demo", "features", "", map[string]Digest{"features": d3}, map[string]Digest{"ingest/images": d1}))
	put(testManifest("M4", "demo", "train", "", map[string]Digest{"model": d4}, map[string]Digest{"features/features": d2}))
	put(testManifest("M5", "demo", "train", "", map[string]Digest{"model": d5}, map[string]Digest{"features/features": d3}))
	put(testManifest("M6", "demo", "score", "", map[string]Digest{"scores": d6}, nil))
	put(testManifest("M7", "demo", "score", "", map[string]Digest{"scores": d7}, nil))
	pinned, _ := NewRunID()
	unpinned, _ := NewRunID()
	if err := s.PutRun(ctx, Run{ID: pinned, DAG: "demo", Keys: []string{"M4"}, Pinned: true, Status: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRun(ctx, Run{ID: unpinned, DAG: "demo", Keys: []string{"M6"}, Status: "ok"}); err != nil {
		t.Fatal(err)
	}
	// d8 is named by nothing; "incomplete" is chunks of an interrupted write, without meta.
	incomplete := DigestOf([]byte("interrupted"))
	rawSet(t, s, chunkKey(incomplete, 0), randomBytes(500, 9))

	wantBlobs := []Digest{d6, d8, incomplete}
	slices.Sort(wantBlobs)
	wantBytes := int64(ChunkSize + 9 + 7000 + 500)
	check := func(rep GCReport) {
		t.Helper()
		var got []Digest
		var bytes int64
		for _, b := range rep.Blobs {
			got = append(got, b.Digest)
			bytes += b.Bytes
			if b.Complete != (b.Digest != incomplete) {
				t.Errorf("blob %s: complete = %v", b.Digest, b.Complete)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, wantBlobs) || rep.BlobsDeleted != 3 || rep.BlobsKept != 6 {
			t.Fatalf("gc blobs: deleted %v (%d), kept %d; want %v and 6 kept", got, rep.BlobsDeleted, rep.BlobsKept, wantBlobs)
		}
		// The incomplete blob's size is approximate (key and value sizes), so compare the rest exactly.
		if bytes < wantBytes || bytes > wantBytes+200 || rep.BytesDeleted != bytes {
			t.Fatalf("gc bytes deleted %d (sum %d), want about %d", rep.BytesDeleted, bytes, wantBytes)
		}
		if !slices.Equal(rep.Manifests, []string{"M6"}) || rep.ManifestsKept != 6 {
			t.Fatalf("gc manifests: deleted %v, kept %d; want [M6] and 6 kept", rep.Manifests, rep.ManifestsKept)
		}
	}

	dry, err := GC(ctx, s, true)
	if err != nil {
		t.Fatal(err)
	}
	check(dry)
	for _, d := range []Digest{d1, d2, d3, d4, d5, d6, d7, d8} {
		if ok, _ := s.HasBlob(ctx, d); !ok {
			t.Fatalf("dry run deleted blob %s", d)
		}
	}
	if countKeys(t, s, blobKeyPrefix(incomplete)) != 1 {
		t.Fatal("dry run deleted the incomplete blob")
	}
	if _, err := s.Manifest(ctx, "M6"); err != nil {
		t.Fatalf("dry run deleted M6: %v", err)
	}

	rep, err := GC(ctx, s, false)
	if err != nil {
		t.Fatal(err)
	}
	check(rep)
	for _, d := range []Digest{d1, d2, d3, d4, d5, d7} {
		if b, err := s.Blob(ctx, d); err != nil || DigestOf(b) != d {
			t.Fatalf("gc lost reachable blob %s: %v", d, err)
		}
	}
	for _, d := range []Digest{d6, d8, incomplete} {
		if n := countKeys(t, s, blobKeyPrefix(d)); n != 0 {
			t.Fatalf("gc left %d keys of blob %s", n, d)
		}
	}
	if _, err := s.Manifest(ctx, "M6"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("M6 after gc: %v", err)
	}
	for _, k := range []string{"M1", "M2", "M3", "M4", "M5", "M7"} {
		if _, err := s.Manifest(ctx, k); err != nil {
			t.Fatalf("gc lost reachable manifest %s: %v", k, err)
		}
	}
	if v, err := Verify(ctx, s); err != nil || !v.OK() || v.Blobs != 6 || len(v.Incomplete) != 0 {
		t.Fatalf("verify after gc: %+v, %v", v, err)
	}
	// A second gc finds nothing.
	again, err := GC(ctx, s, false)
	if err != nil || again.BlobsDeleted != 0 || again.ManifestsDeleted != 0 {
		t.Fatalf("second gc: %+v, %v", again, err)
	}
}

// TestGCReclaimsValueLog fills a value-log file with a blob nothing reaches and checks that
// gc gives the disk space back. The store uses 16 MiB value-log files instead of 256 MiB,
// so a 40 MiB blob (one transaction, hence one file) fills a file that then rotates.
func TestGCReclaimsValueLog(t *testing.T) {
	ctx := context.Background()
	s, err := Open(t.TempDir(), func(c *config) { c.vlogFileSize = 16 << 20 }, WithGCGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	const size = 40 << 20
	if _, err := s.PutBlob(ctx, randomBytes(size, 3)); err != nil {
		t.Fatal(err)
	}
	keep, err := s.PutBlob(ctx, []byte("kept"))
	if err != nil {
		t.Fatal(err)
	}
	if err := testManifest("K", "demo", "s", "", map[string]Digest{"o": keep}, nil).put(ctx, s); err != nil {
		t.Fatal(err)
	}
	rep, err := GC(ctx, s, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %d blobs, %d bytes deleted; disk %d -> %d; %d value-log rewrites", rep.BlobsDeleted, rep.BytesDeleted, rep.DiskBefore, rep.DiskAfter, rep.ValueLogRewrites)
	if rep.BlobsDeleted != 1 || rep.BytesDeleted != size {
		t.Fatalf("gc deleted %d blobs, %d bytes; want 1 and %d", rep.BlobsDeleted, rep.BytesDeleted, size)
	}
	if rep.DiskBefore < size || rep.DiskAfter > rep.DiskBefore-size*3/4 {
		t.Fatalf("disk %d -> %d: gc should give back the blob's value-log file", rep.DiskBefore, rep.DiskAfter)
	}
	if b, err := s.Blob(ctx, keep); err != nil || string(b) != "kept" {
		t.Fatalf("kept blob: %q, %v", b, err)
	}
}

// TestDiskCorruptionIsDetected flips one byte of a blob inside Badger's value-log file on
// disk: reading the blob fails (value-log checksum) and verify reports it.
func TestDiskCorruptionIsDetected(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(1<<20, 5)
	d, err := s.PutBlob(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	vlogs, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	flipped := false
	for _, p := range vlogs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, data[:64]); i >= 0 {
			b[i+500_000] ^= 1
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			flipped = true
		}
	}
	if !flipped {
		t.Fatal("blob bytes not found in any value-log file")
	}
	s, err = Open(dir, WithLogger(slog.New(slog.DiscardHandler))) // Badger logs the bad read
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	// The damaged entry is in the value-log file Badger was writing, which it checks on
	// a read-write open and cuts at the first bad entry (as after a torn write); otherwise
	// the chunk's CRC-32C catches it on read. Either way the blob must not load.
	if _, err := s.Blob(ctx, d); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), string(d)) || !strings.Contains(err.Error(), "verify --repair") {
		t.Fatalf("a blob damaged on disk: %v", err)
	}
	rep, err := Verify(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Mismatched) != 1 || rep.Mismatched[0].Digest != d {
		t.Fatalf("verify: %+v", rep)
	}
}

// TestGCSparesRecentUnnamedBlobs: a blob no manifest names yet may belong to a run in another
// process that is about to write its manifest; gc keeps it during the grace period.
func TestGCSparesRecentUnnamedBlobs(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.PutBlob(ctx, []byte("a run's output, its manifest not written yet"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err := GC(ctx, s, false)
	if err != nil || rep.BlobsDeleted != 0 || rep.BlobsRecent != 1 {
		t.Fatalf("gc within the grace period: %+v, %v; want the blob kept as recent", rep, err)
	}
	if ok, err := s.HasBlob(ctx, d); !ok || err != nil {
		t.Fatalf("the recent blob is gone: %v", err)
	}
	closeOK(t, s)
	s, err = Open(dir, WithGCGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	if rep, err := GC(ctx, s, false); err != nil || rep.BlobsDeleted != 1 {
		t.Fatalf("gc after the grace period: %+v, %v; want the blob deleted", rep, err)
	}
}
