//go:build integration

package slurm

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/cluster"
	"github.com/pipe-ahl/pipe/cluster/slurm/slurmtest"
)

// wait polls until every job is final, or fails the test after a minute.
func wait(t *testing.T, e *Executor, ids ...string) map[string]cluster.State {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := e.States(context.Background(), ids)
		if err != nil {
			t.Fatal(err)
		}
		final := len(st) == len(ids)
		for _, s := range st {
			final = final && s.Phase.Final()
		}
		if final {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs %v not final after a minute: %+v", ids, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// On the real cluster: a job runs its command with a scratch folder and writes its log; a
// failed job cancels the job after it (and that one's dependents); Cancel stops a running job.
func TestRealSlurm(t *testing.T) {
	slurmtest.Require(t)
	ctx := context.Background()
	dir := t.TempDir()
	e := &Executor{JobStore: filepath.Join(dir, "node")}
	job := func(name, script string, after ...string) cluster.Job {
		return cluster.Job{Name: "pipe:test:" + name, Argv: []string{"/bin/sh", "-c", script, "sh"}, ScratchFlag: "--store",
			Dir: dir, LogDir: dir, LogName: name, After: after, Resources: cluster.Resources{CPUs: 1, MemMB: 100, Time: time.Minute}}
	}
	ok, err := e.Submit(ctx, job("ok", `echo "args: $*"; mkdir -p "$2" && test -d "$2" && echo "it's fine"`))
	if err != nil {
		t.Fatal(err)
	}
	after, err := e.Submit(ctx, job("after", "echo after", ok))
	if err != nil {
		t.Fatal(err)
	}
	bad, err := e.Submit(ctx, job("bad", "echo broken; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	dep1, _ := e.Submit(ctx, job("dep1", "echo never", bad))
	dep2, err := e.Submit(ctx, job("dep2", "echo never", dep1))
	if err != nil {
		t.Fatal(err)
	}
	st := wait(t, e, ok, after, bad, dep1, dep2)
	if st[ok].Phase != cluster.Done || st[after].Phase != cluster.Done {
		t.Errorf("ok, after: %+v, %+v; want done", st[ok], st[after])
	}
	if s := st[bad]; s.Phase != cluster.Failed || s.ExitCode != "3:0" || s.Raw != "FAILED" {
		t.Errorf("bad: %+v, want failed with exit 3:0", s)
	}
	for _, id := range []string{dep1, dep2} {
		if s := st[id]; s.Phase != cluster.Cancelled || s.Reason != "DependencyNeverSatisfied" {
			t.Errorf("dependent of a failed job: %+v, want cancelled (DependencyNeverSatisfied)", s)
		}
	}
	log, err := os.ReadFile(job("ok", "").LogFile(ok))
	scratch := filepath.Join(dir, "node", "pipe-job-"+ok)
	if err != nil || string(log) != "args: --store "+scratch+"\nit's fine\n" {
		t.Errorf("log of ok: %q, %v", log, err)
	}
	if _, err := os.Stat(scratch); !os.IsNotExist(err) {
		t.Errorf("scratch folder left behind: %v", err)
	}

	sleeper, err := e.Submit(ctx, job("sleeper", "sleep 60"))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st, err := e.States(ctx, []string{sleeper})
		if err != nil {
			t.Fatal(err)
		}
		if st[sleeper].Phase == cluster.Running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleeper not running after 30 s: %+v", st)
		}
	}
	if err := e.Cancel(ctx, []string{sleeper}); err != nil {
		t.Fatal(err)
	}
	if s := wait(t, e, sleeper)[sleeper]; s.Phase != cluster.Cancelled {
		t.Errorf("cancelled sleeper: %+v", s)
	}
	if st, err := e.States(ctx, []string{"999999999"}); err != nil || len(st) != 0 {
		t.Errorf("an unknown job: %v, %v; want no state, no error", st, err)
	}
}
