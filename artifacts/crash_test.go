package artifacts

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashDirEnv tells a re-executed test binary to run crashWriter on that folder.
const crashDirEnv = "PIPE_ARTIFACTS_CRASH_DIR"

// TestCrashWriterHelper is the child process of TestSIGKILLRecovery; on its own it does nothing.
func TestCrashWriterHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		return
	}
	if err := crashWriter(dir, os.Getenv(crashDirEnv+"_SEED")); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
}

// crashWriter writes blobs, manifests and runs forever, printing "committed KEY" after each
// manifest commit, until it is killed.
func crashWriter(dir, seed string) error {
	ctx := context.Background()
	// One chunk per transaction: most blobs take several commits, so kills also land
	// between the commits of one blob and leave incomplete blobs behind.
	s, err := Open(dir, func(c *config) { c.txnBytes = ChunkSize })
	if err != nil {
		return err
	}
	var sd uint64
	if _, err := fmt.Sscan(seed, &sd); err != nil {
		return fmt.Errorf("%s_SEED=%q: want a number: %w", crashDirEnv, seed, err)
	}
	r := rand.New(rand.NewPCG(sd, 2))
	for i := 0; ; i++ {
		key := fmt.Sprintf("k%d-%d", sd, i)
		m := testManifest(key, "crash", fmt.Sprintf("s%d", i%5), "", nil, nil)
		for _, out := range []string{"a", "b"} {
			d, err := s.PutBlob(ctx, randomBytes(1+r.IntN(3*ChunkSize), r.Uint64()))
			if err != nil {
				return err
			}
			m.Outputs[out] = Output{Digest: d}
		}
		if err := s.PutManifest(ctx, m.Manifest, m.Head); err != nil {
			return err
		}
		fmt.Println("committed", key)
		if i%3 == 0 {
			id, _ := NewRunID()
			if err := s.PutRun(ctx, Run{ID: id, DAG: "crash", Keys: []string{key}, Status: "ok"}); err != nil {
				return err
			}
		}
	}
}

// TestSIGKILLRecovery runs two writing processes on one store at once and kills each at its
// own seeded random moment; then the store must reopen at once, verify clean, and hold every
// manifest a writer reported as committed, with readable outputs.
func TestSIGKILLRecovery(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(11, 3))
	var committed []string
	incomplete, kills := 0, 0
	for round := range 4 {
		type writer struct {
			cmd   *exec.Cmd
			lines chan string
		}
		var ws []writer
		for w := range 2 {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashWriterHelper$", "-test.count=1")
			cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, fmt.Sprintf("%s_SEED=%d", crashDirEnv, 2*round+w))
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan string, 1024)
			go func() {
				sc := bufio.NewScanner(out)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			ws = append(ws, writer{cmd, lines})
		}
		// Wait for each writer's first commit, then kill it after a random delay (0-300
		// ms), which lands anywhere in blob writes, manifest commits, run records and
		// waits for the other writer's lock.
		for _, w := range ws {
			first, ok := <-w.lines
			if !ok || !strings.HasPrefix(first, "committed ") {
				_ = w.cmd.Process.Kill() // it may have exited already
				_ = w.cmd.Wait()         // killed: its exit status says so
				t.Fatalf("round %d: writer did not commit: %q", round, first)
			}
			committed = append(committed, strings.TrimPrefix(first, "committed "))
		}
		for _, w := range ws {
			time.Sleep(time.Duration(r.IntN(300)) * time.Millisecond)
			if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			kills++
		}
		for _, w := range ws {
			for l := range w.lines {
				if k, ok := strings.CutPrefix(l, "committed "); ok {
					committed = append(committed, k)
				} else if strings.HasPrefix(l, "error:") {
					t.Fatalf("round %d: writer failed: %s", round, l)
				}
			}
			_ = w.cmd.Wait() // killed with SIGKILL above: its exit status says so
		}

		s, err := Open(dir)
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		rep, err := Verify(ctx, s)
		if err != nil || !rep.OK() {
			closeOK(t, s)
			t.Fatalf("round %d: verify after SIGKILL: %v %q", round, err, rep.Problems())
		}
		for _, k := range committed {
			m, err := s.Manifest(ctx, k)
			if err != nil {
				closeOK(t, s)
				t.Fatalf("round %d: committed manifest %s lost: %v", round, k, err)
			}
			for _, o := range m.Outputs {
				if b, err := s.Blob(ctx, o.Digest); err != nil || DigestOf(b) != o.Digest {
					closeOK(t, s)
					t.Fatalf("round %d: output %s of %s unreadable: %v", round, o.Digest, k, err)
				}
			}
		}
		incomplete += len(rep.Incomplete)
		t.Logf("round %d: %d manifests committed so far, %d blobs, %d incomplete", round, len(committed), rep.Blobs, len(rep.Incomplete))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d kills of two concurrent writers survived; %d incomplete blobs seen after them", kills, incomplete)
	// gc removes any blob an interrupted write left behind.
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	if _, err := GC(ctx, s, false); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(ctx, s)
	if err != nil || !rep.OK() || len(rep.Incomplete) != 0 {
		t.Fatalf("verify after gc: %+v, %v", rep, err)
	}
}

// cancelAfter is a context whose Err turns to Canceled after n calls.
type cancelAfter struct {
	context.Context
	n *int
}

func (c cancelAfter) Err() error {
	*c.n--
	if *c.n < 0 {
		return context.Canceled
	}
	return nil
}

// TestInterruptedPutBlob stops a blob write between its transactions: the chunks already
// committed are an incomplete blob, which is not visible, does not make verify fail, and
// goes at the next gc.
func TestInterruptedPutBlob(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := Open(dir, func(c *config) { c.txnBytes = ChunkSize })
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(3*ChunkSize, 1)
	n := 2 // PutBlob checks the context before each chunk: two chunks get through
	if _, err := s.PutBlob(cancelAfter{ctx, &n}, data); err == nil {
		t.Fatal("PutBlob ignored its cancelled context")
	}
	d := DigestOf(data)
	if ok, _ := s.HasBlob(ctx, d); ok {
		t.Fatal("an interrupted blob is visible")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer closeOK(t, s)
	rep, err := Verify(ctx, s)
	if err != nil || !rep.OK() || len(rep.Incomplete) != 1 || rep.Incomplete[0] != d {
		t.Fatalf("verify: %+v, %v; want OK with %s incomplete", rep, err, d)
	}
	g, err := GC(ctx, s, false)
	if err != nil || g.BlobsDeleted != 1 || g.Blobs[0].Complete {
		t.Fatalf("gc: %+v, %v", g, err)
	}
	if n := countKeys(t, s, blobKeyPrefix(d)); n != 0 {
		t.Fatalf("%d keys of the interrupted blob left after gc", n)
	}
	// Writing it again completes it.
	if _, err := s.PutBlob(ctx, data); err != nil {
		t.Fatal(err)
	}
	if b, err := s.Blob(ctx, d); err != nil || DigestOf(b) != d {
		t.Fatalf("rewritten blob: %v", err)
	}
}

// TestOpenAfterKillDuringMemtableCreation reproduces what a SIGKILL between Badger creating a
// memtable's write-ahead log and writing its header leaves behind: an empty *.mem file. The
// store must open with its data intact.
func TestOpenAfterKillDuringMemtableCreation(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d, err := s.PutBlob(ctx, []byte("survives"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "00007.mem")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir)
	if err != nil {
		t.Fatalf("open after an empty memtable file: %v", err)
	}
	defer closeOK(t, s)
	got, err := s.Blob(ctx, d)
	if err != nil || string(got) != "survives" {
		t.Fatalf("blob after reopen: %q, %v", got, err)
	}
	if _, err := os.Stat(empty); !os.IsNotExist(err) {
		t.Fatalf("the empty memtable file should be gone: %v", err)
	}
}
