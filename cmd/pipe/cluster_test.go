package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/cluster"
)

// fakeExecutor is a scheduler in memory: each States call moves every job one step
// (pending, running, then done or failed), a job starts only after the jobs it waits for
// are done, and a job waiting for one that failed is cancelled (as Slurm's
// --kill-on-invalid-dep=yes does). It runs nothing: the test checks what pipe submits and
// how it reports what the scheduler says.
type fakeExecutor struct {
	mu        sync.Mutex
	jobs      []cluster.Job
	states    []cluster.State
	fail      map[string]bool // by instance ID: the job fails
	hold      bool            // no job ever starts
	refuse    string          // the instance ID whose submission fails
	cancelled []string
	onStates  func() // called at each States call
}

func (f *fakeExecutor) Name() string { return "fake" }

func (f *fakeExecutor) Submit(_ context.Context, j cluster.Job) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if j.Name == "pipe:ct:"+f.refuse {
		return "", fmt.Errorf("submit %s: sbatch: error: invalid partition", j.Name)
	}
	f.jobs = append(f.jobs, j)
	f.states = append(f.states, cluster.State{Phase: cluster.Pending, Raw: "PENDING"})
	id := fmt.Sprint(len(f.jobs))
	if err := os.WriteFile(j.LogFile(id), []byte("line 1\nline 2\nError: the stage broke\n"), 0o644); err != nil {
		return "", err
	}
	return id, nil
}

func (f *fakeExecutor) States(_ context.Context, ids []string) (map[string]cluster.State, error) {
	if f.onStates != nil {
		f.onStates()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, j := range f.jobs {
		st := &f.states[i]
		switch {
		case f.hold || st.Phase.Final():
		case st.Phase == cluster.Running && f.fail[strings.TrimPrefix(j.Name, "pipe:ct:")]:
			*st = cluster.State{Phase: cluster.Failed, Raw: "FAILED", Reason: "NonZeroExitCode", ExitCode: "1:0", Elapsed: 2 * time.Second}
		case st.Phase == cluster.Running:
			*st = cluster.State{Phase: cluster.Done, Raw: "COMPLETED", ExitCode: "0:0", Elapsed: 3 * time.Second}
		default:
			ready := true
			for _, a := range j.After {
				n, _ := strconv.Atoi(a) // the fake's own IDs
				switch f.states[n-1].Phase {
				case cluster.Done:
				case cluster.Failed, cluster.Cancelled:
					*st = cluster.State{Phase: cluster.Cancelled, Raw: "CANCELLED", Reason: "DependencyNeverSatisfied"}
					ready = false
				default:
					ready = false
				}
			}
			if ready {
				*st = cluster.State{Phase: cluster.Running, Raw: "RUNNING"}
			}
		}
	}
	out := map[string]cluster.State{}
	for _, id := range ids {
		n, err := strconv.Atoi(id)
		if err != nil || n < 1 || n > len(f.states) {
			continue // a job this scheduler never had
		}
		out[id] = f.states[n-1]
	}
	return out, nil
}

func (f *fakeExecutor) Cancel(_ context.Context, ids []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancelled = append(f.cancelled, ids...)
	return nil
}

func (f *fakeExecutor) CancelCommand(ids []string) string {
	return "fakecancel " + strings.Join(ids, " ")
}

const clusterDAG = `name: ct
stages:
  a: {kind: tcount, with: {n: 3}, resources: {cpus: 2, mem: 1G, time: 90}}
  b: {kind: tcount, needs: [a]}
  c: {kind: tcount, needs: [b]}
  d: {kind: tcount, needs: [a], with: {offset: 1}}
`

// clusterTest runs pipe commands in a folder with the DAG above, a store, and fake as the
// executor.
type clusterTest struct {
	t    *testing.T
	dir  string
	dag  string
	fake *fakeExecutor
}

func newClusterTest(t *testing.T) *clusterTest {
	dir := t.TempDir()
	dag := filepath.Join(dir, "ct.yaml")
	if err := os.WriteFile(dag, []byte(clusterDAG), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &clusterTest{t: t, dir: dir, dag: dag, fake: &fakeExecutor{fail: map[string]bool{}}}
	old := newExecutor
	newExecutor = func(o ClusterOptions) (cluster.Executor, error) {
		if o.Executor != "fake" {
			return old(o)
		}
		return c.fake, nil
	}
	oldPoll := clusterPoll
	clusterPoll = 10 * time.Millisecond
	t.Cleanup(func() { newExecutor, clusterPoll = old, oldPoll })
	t.Setenv("PIPE_REMOTE", "file://"+filepath.Join(dir, "remote"))
	t.Setenv("PIPE_TEST_LOG", "")
	return c
}

// pipe runs pipe with args (and --store), stdin as its input; ctx may be cancelled.
func (c *clusterTest) pipe(ctx context.Context, stdin string, args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	g := &GlobalOptions{Stdout: &out, Stderr: &errb, Stdin: strings.NewReader(stdin)}
	root := newRootCommand(g)
	root.SetArgs(append(args, "--store", filepath.Join(c.dir, "store")))
	root.SetOut(&out)
	root.SetErr(&errb)
	if err := root.ExecuteContext(ctx); err != nil {
		if !strings.Contains(err.Error(), errSilent.Error()) || err.Error() != "" {
			fmt.Fprintf(&errb, "pipe: %v\n", err)
		}
		return exitCode(err), out.String(), errb.String()
	}
	return 0, out.String(), errb.String()
}

func (c *clusterTest) run(args ...string) (int, string, string) {
	return c.pipe(context.Background(), "", append([]string{"run", c.dag, "--executor", "fake"}, args...)...)
}

func mustMatch(t *testing.T, what, text string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(text) {
			t.Errorf("%s does not match %q:\n%s", what, p, text)
		}
	}
}

func TestClusterRunSubmitsInPlanOrderWithDependencies(t *testing.T) {
	c := newClusterTest(t)
	code, _, stderr := c.run("--set", "a.n=3", "--slurm-arg=--partition=x", "--job-store", "/local")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	jobs := c.fake.jobs
	if len(jobs) != 4 {
		t.Fatalf("%d jobs submitted, want 4", len(jobs))
	}
	exe, _ := os.Executable()
	remote := "file://" + filepath.Join(c.dir, "remote")
	logDir := filepath.Join(c.dir, "slurm-logs", "ct")
	for i, want := range []struct {
		id    string
		after []string
	}{{"a", nil}, {"b", []string{"1"}}, {"c", []string{"2"}}, {"d", []string{"1"}}} {
		j := jobs[i]
		if j.Name != "pipe:ct:"+want.id || !slices.Equal(j.After, want.after) {
			t.Errorf("job %d: %s after %v, want pipe:ct:%s after %v", i+1, j.Name, j.After, want.id, want.after)
		}
		argv := []string{exe, "run", c.dag, "--only", want.id, "--remote", remote, "--set", "a.n=3"}
		if !slices.Equal(j.Argv, argv) || j.ScratchFlag != "--store" {
			t.Errorf("job %d runs %q (+%s), want %q (+--store)", i+1, j.Argv, j.ScratchFlag, argv)
		}
		if j.LogDir != logDir || j.LogName != want.id || !slices.Equal(j.Extra, []string{"--partition=x"}) {
			t.Errorf("job %d: log %s/%s, extra %q", i+1, j.LogDir, j.LogName, j.Extra)
		}
	}
	if r := jobs[0].Resources; r != (cluster.Resources{CPUs: 2, MemMB: 1024, Time: 90 * time.Minute}) {
		t.Errorf("a's resources %+v", r)
	}
	if r := jobs[1].Resources; r != (cluster.Resources{}) {
		t.Errorf("b's resources %+v, want none", r)
	}
	mustMatch(t, "stderr", stderr,
		`submitted 4 jobs to fake \(fake jobs 1\.\.4\); logs in `+regexp.QuoteMeta(logDir),
		`(?m)^ran +a +3\.00s  never ran \(fake job 1\)$`,
		`(?m)^ran +c +3\.00s  after a \(fake job 3\)$`,
		`(?m)^ok ct: 4 ran, 0 cached \(run fake jobs 1\.\.4, `)
}

// A failed job fails the instance, with its log's tail; its dependents are skipped as in a
// local run; the exit code is 1. Instances cached locally are not submitted.
func TestClusterRunFailureAndCache(t *testing.T) {
	c := newClusterTest(t)
	if code, _, stderr := c.pipe(context.Background(), "", "run", c.dag); code != 0 {
		t.Fatalf("local run: exit %d\n%s", code, stderr)
	}
	code, _, stderr := c.run()
	if code != 0 || len(c.fake.jobs) != 0 {
		t.Fatalf("everything cached: exit %d, %d jobs\n%s", code, len(c.fake.jobs), stderr)
	}
	mustMatch(t, "stderr", stderr, `(?m)^cached +a `, `(?m)^ok ct: 0 ran, 4 cached \(run fake, no jobs`)
	// What is cached only here is pushed: jobs on other nodes read their inputs from the remote.
	if ms, err := os.ReadDir(filepath.Join(c.dir, "remote", "manifests")); err != nil || len(ms) != 4 {
		t.Errorf("the remote holds %d manifests (%v), want the 4 cached locally", len(ms), err)
	}

	c.fake.fail["b"] = true
	code, _, stderr = c.run("--set", "a.n=4")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, stderr)
	}
	logFile := filepath.Join(c.dir, "slurm-logs", "ct", "b.2.log")
	mustMatch(t, "stderr", stderr,
		`(?m)^ran +a +3\.00s  param n: 3 -> 4 \(fake job 1\)$`,
		`(?m)^failed +b +2\.00s  fake job 2 FAILED \(exit 1:0, NonZeroExitCode\); last lines of `+regexp.QuoteMeta(logFile)+`:\n    line 1\n    line 2\n    Error: the stage broke$`,
		`(?m)^ran +d `,
		`(?m)^skipped +1 instance: upstream b failed in 1 instance$`,
		`(?m)^failed ct: 2 ran, 0 cached, 1 failed, 1 skipped \(run fake jobs 1\.\.4`,
		`(?m)^pipe: stage failed: b$`)
}

func TestClusterRunDetach(t *testing.T) {
	c := newClusterTest(t)
	code, stdout, stderr := c.run("--detach")
	if code != 0 || stdout != "1\ta\n2\tb\n3\tc\n4\td\n" {
		t.Fatalf("exit %d, stdout %q, want the job IDs\n%s", code, stdout, stderr)
	}
	mustMatch(t, "stderr", stderr, "detached: `pipe status "+regexp.QuoteMeta(c.dag)+" --remote file://", "`fakecancel 1 2 3 4` cancels the jobs")
}

func TestClusterRunUsage(t *testing.T) {
	c := newClusterTest(t)
	for _, args := range [][]string{{"--json"}, {"--force", "a"}, {"--jobs", "2"}, {"--dry-run"}} {
		if code, _, stderr := c.run(args...); code != exitUsage || !strings.Contains(stderr, "does not work with --executor") {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, stderr)
		}
	}
	if code, _, stderr := c.pipe(context.Background(), "", "run", c.dag, "--detach"); code != exitUsage || !strings.Contains(stderr, "--detach is for --executor slurm") {
		t.Errorf("--detach alone: exit %d\n%s", code, stderr)
	}
	if code, _, stderr := c.pipe(context.Background(), "", "run", c.dag, "--executor", "pbs"); code != exitUsage || !strings.Contains(stderr, "--executor pbs: unknown executor (want slurm)") {
		t.Errorf("unknown executor: exit %d\n%s", code, stderr)
	}
	t.Setenv("PIPE_REMOTE", "")
	code, _, stderr := c.run()
	if code != exitUsage || !strings.Contains(stderr, "--executor fake needs --remote URL") || !strings.Contains(stderr, "only through the remote") {
		t.Errorf("no remote: exit %d, want 2 saying why\n%s", code, stderr)
	}
	if len(c.fake.jobs) != 0 {
		t.Errorf("%d jobs submitted on bad usage", len(c.fake.jobs))
	}
}

// Ctrl-C while following lists the open jobs and asks; y cancels them, anything else leaves
// them and prints the command that would. Exit 130 either way.
func TestClusterRunInterrupt(t *testing.T) {
	for _, answer := range []string{"y\n", "n\n", ""} {
		c := newClusterTest(t)
		c.fake.hold = true
		ctx, cancel := context.WithCancel(context.Background())
		c.fake.onStates = cancel
		code, _, stderr := c.pipe(ctx, answer, "run", c.dag, "--executor", "fake")
		cancel()
		if code != exitInterrupted {
			t.Errorf("answer %q: exit %d, want 130\n%s", answer, code, stderr)
		}
		mustMatch(t, "stderr", stderr, `interrupted; 4 submitted jobs are still pending or running:\n  1  pending +a\n`, `cancel 4 submitted jobs\? \[y/N\] `)
		if answer == "y\n" {
			if !slices.Equal(c.fake.cancelled, []string{"1", "2", "3", "4"}) {
				t.Errorf("y cancelled %v, want 1 2 3 4", c.fake.cancelled)
			}
			mustMatch(t, "stderr", stderr, `\[y/N\] cancelled 4 jobs\n`)
			continue
		}
		if len(c.fake.cancelled) != 0 {
			t.Errorf("answer %q cancelled %v", answer, c.fake.cancelled)
		}
		mustMatch(t, "stderr", stderr, `(?m)left them; to cancel them later: fakecancel 1 2 3 4$`)
	}
}

func TestJobLine(t *testing.T) {
	log := "train[seed=0]: epoch 1\n" +
		"ran      train[seed=0]                26.43s  param T: 7 -> 5\n" +
		"cached (remote) ingest               unchanged since 2026-11-30 20:00 (took 2.00s)\n" +
		"cached   features                    unchanged since 2026-11-30 20:01 (took 3.00s)\n" +
		"ok demo: 1 ran, 2 cached\n"
	for _, c := range []struct {
		id, status string
		secs       float64
		why        string
		ok         bool
	}{
		{"train[seed=0]", "ran", 26.43, "param T: 7 -> 5", true},
		{"ingest", "cached (remote)", 0, "unchanged since 2026-11-30 20:00 (took 2.00s)", true},
		{"features", "cached", 0, "unchanged since 2026-11-30 20:01 (took 3.00s)", true},
		{"train", "", 0, "", false},
		{"score", "", 0, "", false},
	} {
		st, secs, why, ok := jobLine(log, c.id)
		if st != c.status || secs != c.secs || why != c.why || ok != c.ok {
			t.Errorf("%s: %q %v %q %v, want %q %v %q %v", c.id, st, secs, why, ok, c.status, c.secs, c.why, c.ok)
		}
	}
}

// A refused submission cancels the jobs submitted before it, and says so.
func TestClusterRunRefusedSubmission(t *testing.T) {
	c := newClusterTest(t)
	c.fake.refuse = "c"
	code, _, stderr := c.run()
	if code != exitFailed || !slices.Equal(c.fake.cancelled, []string{"1", "2"}) {
		t.Fatalf("exit %d, cancelled %v; want 1 and the 2 jobs before c cancelled\n%s", code, c.fake.cancelled, stderr)
	}
	mustMatch(t, "stderr", stderr, `pipe: submit pipe:ct:c: sbatch: error: invalid partition \(the 2 jobs submitted before it were cancelled\)`)
}
