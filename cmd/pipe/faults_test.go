package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/artifacts"
)

// The fault catalogue: each case damages a store the way disks and users do, then checks the
// exact outcome of the commands a user would run next (exit code and message). Blobs under
// Badger's value threshold live inside .sst files, larger ones in .vlog files; the DAG has
// one of each.
const faultDAG = `name: f
stages:
  small: {kind: tcount, with: {n: 100}}
  big: {kind: tcount, with: {n: 200000}}
  sum: {kind: tcount, needs: [small, big]}
`

// faultStore is a store made by one run of faultDAG, and the pipe binary to run on it.
type faultStore struct {
	t       *testing.T
	bin     string
	dir     string // holds the DAG file
	dag     string
	store   string
	digests map[string]artifacts.Digest // stage -> digest of its output "out"
}

func newFaultStore(t *testing.T, store string) *faultStore {
	t.Helper()
	bin, err := exec.LookPath("pipe")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if store == "" {
		store = filepath.Join(dir, "store")
	}
	f := &faultStore{t: t, bin: bin, dir: dir, dag: filepath.Join(dir, "f.yaml"), store: store, digests: map[string]artifacts.Digest{}}
	if err := os.WriteFile(f.dag, []byte(faultDAG), 0o644); err != nil {
		t.Fatal(err)
	}
	out := f.expect(0, "run", "--json", f.dag)
	var rj runJSON
	if i := strings.Index(out, "{\n"); i >= 0 {
		out = out[i:] // stderr's lines come first
	}
	if err := json.Unmarshal([]byte(out), &rj); err != nil {
		t.Fatalf("run json: %v\n%s", err, out)
	}
	for _, s := range rj.Stages {
		f.digests[s.Name] = artifacts.Digest(s.Outputs["out"])
	}
	return f
}

// pipe runs pipe on the store and returns its stdout and stderr together, and its exit code.
// commandLimit bounds one pipe command of a fault test; each takes well under a second, and
// the longest wait in the store is its 30 s lock wait.
const commandLimit = 2 * time.Minute

func (f *faultStore) pipe(args ...string) (string, int) {
	f.t.Helper()
	cmd := exec.Command(f.bin, append([]string{"--store", f.store}, args...)...)
	cmd.Dir = f.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		f.t.Fatal(err)
	}
	// A command that hangs is a bug to diagnose, not a test to wait out: after commandLimit,
	// SIGQUIT makes the Go runtime print every goroutine's stack into out and exit 2.
	hung := time.AfterFunc(commandLimit, func() { _ = cmd.Process.Signal(syscall.SIGQUIT) })
	err := cmd.Wait()
	if !hung.Stop() {
		f.t.Fatalf("pipe %s hung for %v; its goroutines:\n%s", strings.Join(args, " "), commandLimit, out.String())
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), ee.ExitCode()
	} else if err != nil {
		f.t.Fatal(err)
	}
	return out.String(), 0
}

// expect runs pipe, checks its exit code and that its output matches every pattern.
func (f *faultStore) expect(code int, args ...string) string {
	f.t.Helper()
	return f.expectMatch(code, args, nil)
}

func (f *faultStore) expectMatch(code int, args []string, patterns []string) string {
	f.t.Helper()
	out, got := f.pipe(args...)
	if got != code {
		f.t.Fatalf("pipe %s: exit %d, want %d\n%s", strings.Join(args, " "), got, code, out)
	}
	for _, p := range patterns {
		if !regexp.MustCompile("(?m)" + p).MatchString(out) {
			f.t.Fatalf("pipe %s: output does not match %q:\n%s", strings.Join(args, " "), p, out)
		}
	}
	return out
}

// blobBytes reads a blob's bytes through the store.
func (f *faultStore) blobBytes(d artifacts.Digest) []byte {
	f.t.Helper()
	s, err := artifacts.Open(f.store, artifacts.ReadOnly())
	if err != nil {
		f.t.Fatal(err)
	}
	defer func() { _ = s.Close() }() // opened read-only: nothing to flush
	b, err := s.Blob(context.Background(), d)
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// flip flips one byte in the middle of blob d where it lies in a file with extension ext,
// and returns that file.
func (f *faultStore) flip(d artifacts.Digest, ext string) string {
	f.t.Helper()
	b := f.blobBytes(d)
	mid := len(b) / 2
	needle := b[mid : mid+32]
	files, _ := filepath.Glob(filepath.Join(f.store, "*"+ext))
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.t.Fatal(err)
		}
		if i := bytes.Index(data, needle); i >= 0 {
			data[i+7] ^= 0x55
			if err := os.WriteFile(p, data, 0o644); err != nil {
				f.t.Fatal(err)
			}
			return p
		}
	}
	f.t.Fatalf("blob %s not found in any %s file of %v", d[:12], ext, files)
	return ""
}

// TestFaultFlippedBytes: a byte flipped inside a stored table, in an .sst (small table) or a
// .vlog (large one). Reads refuse it (exit 1, naming the blob and the fix), status says the
// producer is stale because its output is damaged, and the next run recomputes and rewrites
// it; the dependent stage stays cached (same bytes), and the store verifies clean again.
func TestFaultFlippedBytes(t *testing.T) {
	for _, c := range []struct{ stage, ext string }{{"small", ".sst"}, {"big", ".vlog"}} {
		t.Run(c.ext, func(t *testing.T) {
			f := newFaultStore(t, "")
			d := f.digests[c.stage]
			f.flip(d, c.ext)
			f.expectMatch(1, []string{"artifacts", "export", "f:" + c.stage, "-o", filepath.Join(f.dir, "x.csv")},
				[]string{"blob " + string(d) + " is damaged on disk", "pipe artifacts verify --repair"})
			f.expectMatch(1, []string{"artifacts", "verify"}, []string{"^blob " + string(d) + ": ", "^manifest .* points to blob " + string(d), ": 2 problems"})
			f.expectMatch(0, []string{"status", f.dag}, []string{"^" + c.stage + " +tcount +stale +output out damaged", "^sum +tcount +stale"})
			f.expectMatch(0, []string{"run", f.dag}, []string{"^ran +" + c.stage + " .*output out damaged", "^cached +sum "})
			f.expect(0, "artifacts", "verify")
			if got := f.blobBytes(d); artifacts.DigestOf(got) != d {
				t.Fatalf("rewritten blob hashes to %s", artifacts.DigestOf(got))
			}
		})
	}
}

// TestFaultRepair: verify --repair drops a damaged blob and the manifest and head that name
// it; nothing else. The stage then reads as never run, and the next run recomputes it.
func TestFaultRepair(t *testing.T) {
	f := newFaultStore(t, "")
	f.flip(f.digests["small"], ".sst")
	f.expectMatch(0, []string{"artifacts", "verify", "--repair"}, []string{"repaired: dropped 1 blobs, 1 manifests, 1 heads"})
	f.expectMatch(0, []string{"artifacts", "verify"}, []string{": clean"})
	f.expectMatch(0, []string{"status", f.dag}, []string{"^small +tcount +missing +never ran", "^big +tcount +fresh"})
	f.expectMatch(0, []string{"run", f.dag}, []string{"^ran +small ", "^cached +big ", "^cached +sum "})
}

// TestFaultTruncated: a value-log file cut short (lost tail) makes the blobs in the lost part
// damaged, not a crash; an .sst cut short makes the store unreadable: exit 4, naming it.
func TestFaultTruncated(t *testing.T) {
	t.Run(".vlog", func(t *testing.T) {
		f := newFaultStore(t, "")
		p := f.flip(f.digests["big"], ".vlog") // find the file, then cut it inside the blob
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		f.expectMatch(1, []string{"artifacts", "verify"}, []string{"^blob " + string(f.digests["big"])})
		f.expectMatch(0, []string{"status", f.dag}, []string{"^big +tcount +stale +output out (damaged|missing)"})
		f.expectMatch(0, []string{"run", f.dag}, []string{"^ran +big "})
		f.expect(0, "artifacts", "verify")
	})
	t.Run(".sst", func(t *testing.T) {
		f := newFaultStore(t, "")
		files, _ := filepath.Glob(filepath.Join(f.store, "*.sst"))
		if len(files) == 0 {
			t.Fatal("no .sst file")
		}
		for _, p := range files {
			if err := os.Truncate(p, 100); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{{"artifacts", "ls"}, {"status", f.dag}, {"artifacts", "verify"}, {"run", f.dag}} {
			f.expectMatch(4, args, []string{"store .*store: store is unreadable"})
		}
	})
}

// mountOrSkip mounts a file system (tmpfs or a bind mount) or skips the test: mounting needs
// root (and a kernel that allows it here).
func mountOrSkip(t *testing.T, args ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipped: mounting a test file system needs root")
	}
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot mount (%v): %s", err, out)
	}
	target := args[len(args)-1]
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", target).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", target, err, out)
		}
	})
}

// TestFaultFullDisk: a store on a small tmpfs that fills up. A write that does not fit fails
// its stage with "no space left on <store>" and exit 4 (never SIGBUS); after the disk is
// filled to the last byte, ls, status and verify still work (read-only), and gc runs by
// releasing the store's reserve file.
func TestFaultFullDisk(t *testing.T) {
	mnt := t.TempDir()
	mountOrSkip(t, "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt)
	f := newFaultStore(t, filepath.Join(mnt, "store"))
	big := filepath.Join(f.dir, "big.yaml")
	if err := os.WriteFile(big, []byte("name: g\nstages:\n  huge: {kind: tcount, with: {n: 2000000}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f.expectMatch(4, []string{"run", big}, []string{"^failed +huge .*no space left on .*store: need .* MiB, have .*"})
	fill, err := os.Create(filepath.Join(mnt, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := fill.Write(make([]byte, 64<<10)); err != nil {
			break
		}
	}
	_ = fill.Close() // the disk is full: its last write failed on purpose, and Close may too
	var st syscall.Statfs_t
	if err := syscall.Statfs(mnt, &st); err != nil || st.Bavail > 16 {
		t.Fatalf("the tmpfs is not full: %d blocks free, %v", st.Bavail, err)
	}
	f.expectMatch(0, []string{"artifacts", "ls"}, []string{" f +small +out "})
	f.expectMatch(0, []string{"status", f.dag}, []string{"^small +tcount +fresh"})
	f.expectMatch(0, []string{"artifacts", "verify"}, []string{": clean"})
	f.expectMatch(4, []string{"run", big}, []string{"no space left on "})
	f.expectMatch(0, []string{"gc"}, []string{"^gc: deleted "})
	f.expectMatch(0, []string{"artifacts", "verify"}, []string{": clean"})
}

// TestFaultReadOnlyMount: a store on a read-only mount (an archived result) can be listed,
// shown, exported, verified and reported on; a run that needs to write exits 4 naming it.
func TestFaultReadOnlyMount(t *testing.T) {
	f := newFaultStore(t, "")
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	mountOrSkip(t, "--bind", f.store, ro)
	if out, err := exec.Command("mount", "-o", "remount,bind,ro", ro).CombinedOutput(); err != nil {
		t.Skipf("skipped: cannot remount read-only (%v): %s", err, out)
	}
	f.store = ro
	f.expectMatch(0, []string{"artifacts", "ls", "--dag", "f"}, []string{" f +big +out "})
	f.expectMatch(0, []string{"artifacts", "show", "f:sum"}, []string{"^  f:sum/out, 1 rows"})
	f.expect(0, "artifacts", "export", "f:small", "-o", filepath.Join(f.dir, "small.csv"))
	f.expectMatch(0, []string{"status", f.dag}, []string{"^sum +tcount +fresh"})
	f.expectMatch(0, []string{"artifacts", "verify"}, []string{": clean"})
	f.expectMatch(4, []string{"run", f.dag, "--force", "small"}, []string{"store is unreadable.*read-only file system"})
}

// TestFaultReadDuringRun: while a run computes, read commands answer within 2 s.
func TestFaultReadDuringRun(t *testing.T) {
	f := newFaultStore(t, "")
	slow := filepath.Join(f.dir, "slow.yaml")
	if err := os.WriteFile(slow, []byte("name: s\nstages:\n  a: {kind: tcount}\n  b: {kind: tcount, needs: [a], with: {sleep_ms: 60000}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(f.dir, "exec.log")
	cmd := exec.Command(f.bin, "--store", f.store, "run", slow)
	cmd.Env = append(os.Environ(), "PIPE_TEST_LOG="+log)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill() // the run sleeps for a minute: it is still running
		_ = cmd.Wait()         // killed: its exit status says so
	}()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(log + ".started.b"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow stage did not start")
		}
	}
	for _, args := range [][]string{{"status", slow}, {"artifacts", "ls"}, {"artifacts", "show", "s:a"}, {"artifacts", "verify"}} {
		start := time.Now()
		f.expect(0, args...)
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("pipe %s during a run took %v, want under 2 s", strings.Join(args, " "), took)
		}
	}
}
