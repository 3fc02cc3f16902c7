//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/cluster/slurm/slurmtest"
)

var (
	slurmBinOnce sync.Once
	slurmBin     string
	slurmBinErr  error
)

// pipeBinary builds pipe (with the test kinds) once: the jobs run this binary, so it must be
// pipe itself, not the test binary.
func pipeBinary(t *testing.T) string {
	t.Helper()
	slurmBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "pipe-slurm-bin")
		if err != nil {
			slurmBinErr = err
			return
		}
		slurmBin = filepath.Join(dir, "pipe")
		out, err := exec.Command("go", "build", "-tags", "pipetestkinds", "-o", slurmBin, ".").CombinedOutput()
		if err != nil {
			slurmBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if slurmBinErr != nil {
		t.Fatal(slurmBinErr)
	}
	return slurmBin
}

// pipeCmd runs the pipe binary and returns its exit code, stdout and stderr.
func pipeCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(pipeBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// submittedJobs reads "submitted N jobs to slurm (slurm jobs A..B)" and returns A..B.
func submittedJobs(t *testing.T, stderr string) []string {
	t.Helper()
	m := regexp.MustCompile(`submitted (\d+) jobs? to slurm \(slurm jobs? (\d+)(?:\.\.(\d+))?\)`).FindStringSubmatch(stderr)
	if m == nil {
		return nil
	}
	first, _ := strconv.Atoi(m[2])
	last := first
	if m[3] != "" {
		last, _ = strconv.Atoi(m[3])
	}
	var ids []string
	for id := first; id <= last; id++ {
		ids = append(ids, strconv.Itoa(id))
	}
	if n, _ := strconv.Atoi(m[1]); n != len(ids) {
		t.Fatalf("submitted %d jobs but IDs %s..%s", n, m[2], m[3])
	}
	return ids
}

// jobNames returns name -> {id, state} of the jobs ids.
func jobStates(t *testing.T, ids []string) map[string][2]string {
	t.Helper()
	out, err := exec.Command("squeue", "--noheader", "--states=all", "--jobs="+strings.Join(ids, ","), "--Format=JobID:|,Name:|,State:|").Output()
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][2]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Split(strings.TrimSpace(line), "|")
		if len(f) >= 3 {
			m[strings.TrimSpace(f[1])] = [2]string{strings.TrimSpace(f[0]), strings.TrimSpace(f[2])}
		}
	}
	return m
}

// outputsByInstance reads `pipe run --json`: instance ID -> output name -> digest.
func outputsByInstance(t *testing.T, stdout string) map[string]map[string]string {
	t.Helper()
	var rj runJSON
	if err := json.Unmarshal([]byte(stdout), &rj); err != nil {
		t.Fatalf("run --json: %v\n%s", err, stdout)
	}
	m := map[string]map[string]string{}
	for _, s := range rj.Stages {
		id := s.Name
		if s.Instance != "" {
			id += "[" + s.Instance + "]"
		}
		m[id] = s.Outputs
	}
	return m
}

// ranLines returns the instance IDs of the "ran" lines of a run's stderr.
func ranLines(stderr string) []string {
	var ids []string
	for _, m := range regexp.MustCompile(`(?m)^ran +(\S+) `).FindAllStringSubmatch(stderr, -1) {
		ids = append(ids, m[1])
	}
	slices.Sort(ids)
	return ids
}

// TestSlurmDemo runs the demo DAG through the real Slurm cluster with a file:// remote: the
// results are byte for byte a local run's (every output of every instance, the metrics
// included); a second submission submits nothing; --set T=5 submits exactly what a local
// status says would rerun.
func TestSlurmDemo(t *testing.T) {
	slurmtest.Require(t)
	dir := t.TempDir()
	dag, err := filepath.Abs(filepath.Join("..", "..", "dags", "demo.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	remote := "file://" + filepath.Join(dir, "remote")
	local, onSlurm, fresh := filepath.Join(dir, "local"), filepath.Join(dir, "submitter"), filepath.Join(dir, "fresh")
	logs := filepath.Join(dir, "logs")

	start := time.Now()
	code, stdout, stderr := pipeCmd(t, "run", dag, "--store", local, "--json")
	if code != 0 {
		t.Fatalf("local run: exit %d\n%s", code, stderr)
	}
	t.Logf("local run: %s", time.Since(start).Round(time.Millisecond))
	want := outputsByInstance(t, stdout)

	start = time.Now()
	code, _, stderr = pipeCmd(t, "run", dag, "--executor", "slurm", "--remote", remote, "--store", onSlurm, "--slurm-log-dir", logs)
	if code != 0 {
		t.Fatalf("slurm run: exit %d\n%s", code, stderr)
	}
	t.Logf("slurm run: %s", time.Since(start).Round(time.Millisecond))
	ids := submittedJobs(t, stderr)
	if len(ids) != len(want) || !strings.Contains(stderr, fmt.Sprintf("ok demo: %d ran, 0 cached", len(want))) {
		t.Fatalf("slurm run: %d jobs submitted, want %d, all ran\n%s", len(ids), len(want), stderr)
	}

	// Another machine's view: a fresh store with the same remote pulls everything, runs nothing.
	start = time.Now()
	code, stdout, stderr = pipeCmd(t, "run", dag, "--store", fresh, "--remote", remote, "--json")
	if code != 0 || !strings.Contains(stderr, fmt.Sprintf("ok demo: 0 ran, %d cached (%d from the remote)", len(want), len(want))) {
		t.Fatalf("fresh store with the remote: exit %d\n%s", code, stderr)
	}
	t.Logf("fresh store, everything pulled: %s", time.Since(start).Round(time.Millisecond))
	got := outputsByInstance(t, stdout)
	for id, outs := range want {
		for name, d := range outs {
			if got[id][name] != d {
				t.Errorf("%s/%s: %s through Slurm, %s locally", id, name, got[id][name], d)
			}
		}
	}
	if !strings.Contains(strings.Join(slices.Collect(mapsKeys(got)), " "), "evaluate[") || got["report"]["results"] == "" && len(got["report"]) == 0 {
		t.Errorf("no evaluate or report outputs compared: %v", got["report"])
	}

	// A second submission submits nothing.
	code, _, stderr = pipeCmd(t, "run", dag, "--executor", "slurm", "--remote", remote, "--store", onSlurm, "--slurm-log-dir", logs)
	if code != 0 || strings.Contains(stderr, "submitted") || !strings.Contains(stderr, fmt.Sprintf("ok demo: 0 ran, %d cached", len(want))) {
		t.Fatalf("second submission: exit %d, want nothing submitted\n%s", code, stderr)
	}

	// --set T=5 submits exactly what a local status says would rerun.
	code, stdout, stderr = pipeCmd(t, "status", dag, "--set", "T=5", "--store", local, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s", code, stderr)
	}
	var st []statusJSON
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatal(err)
	}
	var stale []string
	for _, s := range st {
		if s.State != "fresh" {
			id := s.Name
			if s.Instance != "" {
				id += "[" + s.Instance + "]"
			}
			stale = append(stale, id)
		}
	}
	slices.Sort(stale)
	start = time.Now()
	code, _, stderr = pipeCmd(t, "run", dag, "--set", "T=5", "--executor", "slurm", "--remote", remote, "--store", onSlurm, "--slurm-log-dir", logs)
	if code != 0 {
		t.Fatalf("slurm run --set T=5: exit %d\n%s", code, stderr)
	}
	t.Logf("slurm run --set T=5: %s", time.Since(start).Round(time.Millisecond))
	var submitted []string
	for name := range jobStates(t, submittedJobs(t, stderr)) {
		submitted = append(submitted, strings.TrimPrefix(name, "pipe:demo:"))
	}
	slices.Sort(submitted)
	if !slices.Equal(submitted, stale) {
		t.Errorf("--set T=5 submitted %v; local status says %d stale: %v\n%s", submitted, len(stale), stale, stderr)
	}
	// A job may find its instance cached after all: an input that reran gave the same bytes
	// (devnet's train does not read T), so its dependents' keys did not change. Locally the
	// same happens; each submitted instance is reported ran or cached, none failed.
	if n := len(ranLines(stderr)) + strings.Count(stderr, "\ncached"); n < len(stale) || strings.Contains(stderr, "\nfailed") {
		t.Errorf("--set T=5: %d instances reported ran or cached of %d submitted\n%s", n, len(stale), stderr)
	}
	if len(stale) == 0 || len(stale) == len(want) {
		t.Errorf("T=5 makes %d of %d instances stale: the test checks nothing", len(stale), len(want))
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

const slurmKillDAG = `name: slurmkill
stages:
  a: {kind: tcount, with: {n: 3}}
  b: {kind: tcount, needs: [a], with: {sleep_ms: 8000}}
  c: {kind: tcount, needs: [b]}
  d: {kind: tcount, needs: [a], with: {offset: 1}}
`

// waitJob waits until the job named name among ids is in state want.
func waitJob(t *testing.T, ids []string, name, want string) string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		j, ok := jobStates(t, ids)[name]
		if ok && j[1] == want {
			return j[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s not %s after 60 s: %v", name, want, jobStates(t, ids))
		}
	}
}

// startPipe starts pipe; its stderr is collected, and submitted returns the job IDs once
// the "submitted" line has appeared.
func startPipe(t *testing.T, stdin io.Reader, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	cmd := exec.Command(pipeBinary(t), args...)
	errb := &syncBuffer{}
	cmd.Stdout, cmd.Stderr, cmd.Stdin = io.Discard, errb, stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd, errb
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func waitSubmitted(t *testing.T, errb *syncBuffer) []string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if ids := submittedJobs(t, errb.String()); ids != nil {
			return ids
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing submitted after 60 s:\n%s", errb.String())
		}
	}
}

func exitOf(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

// A job killed with scancel while it runs fails its instance and skips its dependents, as a
// local failure does (exit 1); submitting again completes from the cache.
func TestSlurmKilledJob(t *testing.T) {
	slurmtest.Require(t)
	dir := t.TempDir()
	dag := filepath.Join(dir, "slurmkill.yaml")
	if err := os.WriteFile(dag, []byte(slurmKillDAG), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", dag, "--executor", "slurm", "--remote", "file://" + filepath.Join(dir, "remote"),
		"--store", filepath.Join(dir, "store"), "--slurm-log-dir", filepath.Join(dir, "logs")}
	cmd, errb := startPipe(t, nil, args...)
	ids := waitSubmitted(t, errb)
	b := waitJob(t, ids, "pipe:slurmkill:b", "RUNNING")
	if out, err := exec.Command("scancel", b).CombinedOutput(); err != nil {
		t.Fatalf("scancel %s: %v %s", b, err, out)
	}
	if code := exitOf(t, cmd); code != 1 {
		t.Fatalf("exit %d after scancel, want 1\n%s", code, errb)
	}
	mustMatch(t, "stderr", errb.String(),
		`(?m)^ran +a `, `(?m)^ran +d `,
		`(?m)^failed +b .*slurm job `+b+` CANCELLED`,
		`(?m)^skipped +1 instance: upstream b failed in 1 instance$`,
		`(?m)^failed slurmkill: 2 ran, 0 cached, 1 failed, 1 skipped `)

	code, _, stderr := pipeCmd(t, args...)
	if code != 0 {
		t.Fatalf("resubmission: exit %d\n%s", code, stderr)
	}
	if ids := submittedJobs(t, stderr); len(ids) != 2 {
		t.Errorf("resubmission submitted %v, want b and c only\n%s", ids, stderr)
	}
	mustMatch(t, "stderr", stderr, `(?m)^cached \(remote\) +a `, `(?m)^cached \(remote\) +d `, `(?m)^ran +b `, `(?m)^ran +c `,
		`(?m)^ok slurmkill: 2 ran, 2 cached `)
}

// Ctrl-C while following asks whether to cancel the open jobs; y cancels them; exit 130.
func TestSlurmInterrupt(t *testing.T) {
	slurmtest.Require(t)
	dir := t.TempDir()
	dag := filepath.Join(dir, "slurmint.yaml")
	if err := os.WriteFile(dag, []byte("name: slurmint\nstages:\n  a: {kind: tcount, with: {sleep_ms: 30000}}\n  b: {kind: tcount, needs: [a]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	stdin, answer := io.Pipe()
	cmd, errb := startPipe(t, stdin, "run", dag, "--executor", "slurm", "--remote", "file://"+filepath.Join(dir, "remote"),
		"--store", filepath.Join(dir, "store"), "--slurm-log-dir", filepath.Join(dir, "logs"))
	ids := waitSubmitted(t, errb)
	waitJob(t, ids, "pipe:slurmint:a", "RUNNING")
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(errb.String(), "[y/N]"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no question after Ctrl-C:\n%s", errb)
		}
	}
	if _, err := io.WriteString(answer, "y\n"); err != nil {
		t.Fatal(err)
	}
	_ = answer.Close() // pipe reads one line; Wait waits for the copy to its stdin to end
	if code := exitOf(t, cmd); code != exitInterrupted {
		t.Fatalf("exit %d, want 130\n%s", code, errb)
	}
	mustMatch(t, "stderr", errb.String(), `interrupted; 2 submitted jobs are still pending or running:`, `cancel 2 submitted jobs\? \[y/N\] cancelled 2 jobs`)
	waitJob(t, ids, "pipe:slurmint:a", "CANCELLED")
	waitJob(t, ids, "pipe:slurmint:b", "CANCELLED")
}
