package artifacts

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
)

// rssFileKiB returns this process's resident file-backed memory (RssFile) in KiB.
func rssFileKiB(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "RssFile:" {
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("/proc/self/status has no RssFile line")
	return 0
}

// TestReadsLeaveNoMappedPages: verifying, copying and range-reading a 64 MiB blob while the
// store's Badger handle stays open (as in a burst of reads) leaves almost none of its
// value-log pages resident, and the bytes read back intact every time.
func TestReadsLeaveNoMappedPages(t *testing.T) {
	const size = 64 << 20
	ctx := context.Background()
	dir := t.TempDir()
	w, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(size, 7)
	d, err := w.PutBlob(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	closeOK(t, w) // unmaps the pages the write touched
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	// Hold a read handle so that every read below shares one open value log.
	_, release, err := s.acquire(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	before := rssFileKiB(t)
	if err := s.VerifyBlob(ctx, d); err != nil {
		t.Fatal(err)
	}
	if grew := rssFileKiB(t) - before; grew > 8<<10 {
		t.Errorf("VerifyBlob of a %d MiB blob left %d MiB of file-backed pages resident, want < 8 MiB", size>>20, grew>>10)
	}
	for round := range 2 {
		got, err := s.Blob(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("round %d: Blob's bytes differ from those stored", round)
		}
		r, err := OpenBlob(ctx, s, d)
		if err != nil {
			t.Fatal(err)
		}
		part := make([]byte, 3*ChunkSize+17)
		if err := r.ReadAt(ctx, part, ChunkSize-5); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if !bytes.Equal(part, data[ChunkSize-5:ChunkSize-5+len(part)]) {
			t.Fatalf("round %d: ReadAt's bytes differ from those stored", round)
		}
	}
	if grew := rssFileKiB(t) - before; grew > 8<<10 {
		t.Errorf("two Blob and ReadAt rounds left %d MiB of file-backed pages resident, want < 8 MiB", grew>>10)
	}
}
