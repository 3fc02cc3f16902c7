package slurm

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/cluster"
)

func testJob() cluster.Job {
	return cluster.Job{
		Name:        "pipe:demo:train[seed=0,method=ahl]",
		Argv:        []string{"/opt/pipe bin/pipe", "run", "/shared/dags/demo.yaml", "--only", "train[seed=0,method=ahl]", "--set", "note=it's"},
		ScratchFlag: "--store",
		Dir:         "/shared/work",
		LogDir:      "/shared/logs/100%",
		LogName:     "train[seed=0,method=ahl]",
		After:       []string{"12", "13"},
		Resources:   cluster.Resources{CPUs: 4, MemMB: 8192, GPUs: 1, Time: 26*time.Hour + 3*time.Minute + 4*time.Second},
		Extra:       []string{"--partition=gpu", "--account=lab"},
	}
}

func TestSbatchArgs(t *testing.T) {
	got := SbatchArgs(testJob())
	want := []string{"--parsable", "--job-name=pipe:demo:train[seed=0,method=ahl]",
		"--output=/shared/logs/100%%/train[seed=0,method=ahl].%j.log", "--chdir=/shared/work",
		"--dependency=afterok:12:13", "--kill-on-invalid-dep=yes",
		"--cpus-per-task=4", "--mem=8192M", "--gres=gpu:1", "--time=1-02:03:04",
		"--partition=gpu", "--account=lab"}
	if !slices.Equal(got, want) {
		t.Errorf("sbatch args\n got %q\nwant %q", got, want)
	}
	// No inputs, no resources: no dependency and no resource flags.
	j := cluster.Job{Name: "pipe:demo:ingest", LogDir: "/l", LogName: "ingest"}
	if got, want := SbatchArgs(j), []string{"--parsable", "--job-name=pipe:demo:ingest", "--output=/l/ingest.%j.log"}; !slices.Equal(got, want) {
		t.Errorf("sbatch args\n got %q\nwant %q", got, want)
	}
	if got := slurmDuration(90*time.Second + time.Millisecond); got != "0-00:01:31" {
		t.Errorf("slurmDuration = %s, want 0-00:01:31 (rounded up)", got)
	}
}

// The script's command line, run by a real shell, hands every argument over unchanged,
// quotes and spaces included, plus the scratch folder; the folder is removed after, and the
// command's exit status is the script's.
func TestScriptQuotingAndScratch(t *testing.T) {
	dir := t.TempDir()
	prog := filepath.Join(dir, "pipe it's")
	argsFile := filepath.Join(dir, "args")
	if err := os.WriteFile(prog, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '"+argsFile+"'\nmkdir -p \"$6\" && touch \"$6/x\"\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	args := []string{"run", "a b", `it's "q" $HOME`, "--set", "x=[1, 2]"}
	job := cluster.Job{Argv: append([]string{prog}, args...), ScratchFlag: "--store"}
	jobStore := filepath.Join(dir, "node local")
	script := Script(job, jobStore)
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Env = append(os.Environ(), "SLURM_JOB_ID=42")
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("script exit %v, want 7\n%s", err, script)
	}
	b, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	scratch := filepath.Join(jobStore, "pipe-job-42")
	want := append(append([]string{}, args...), "--store", scratch)
	if got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n"); !slices.Equal(got, want) {
		t.Errorf("the command got %q, want %q", got, want)
	}
	if _, err := os.Stat(scratch); !os.IsNotExist(err) {
		t.Errorf("scratch folder %s left behind (%v)", scratch, err)
	}
	if !strings.Contains(Script(job, ""), `scratch="${TMPDIR:-/tmp}"/pipe-job-"${SLURM_JOB_ID:-$$}"`) {
		t.Errorf("without a job store the scratch folder is not under $TMPDIR:\n%s", Script(job, ""))
	}
}

func TestParseSqueue(t *testing.T) {
	out := "7|COMPLETED|0:05|None|0|\n8|FAILED|1:02:03|NonZeroExitCode|768|\n9|CANCELLED|0:00|DependencyNeverSatisfied|0|\n" +
		"10|PENDING|0:00|Dependency|0|\n11|RUNNING|1-00:00:01|None|0|\n12|OUT_OF_MEMORY|0:09|OutOfMemory|9|\n"
	got, err := ParseSqueue([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]cluster.State{
		"7":  {Phase: cluster.Done, Raw: "COMPLETED", ExitCode: "0:0", Elapsed: 5 * time.Second},
		"8":  {Phase: cluster.Failed, Raw: "FAILED", Reason: "NonZeroExitCode", ExitCode: "3:0", Elapsed: time.Hour + 2*time.Minute + 3*time.Second},
		"9":  {Phase: cluster.Cancelled, Raw: "CANCELLED", Reason: "DependencyNeverSatisfied", ExitCode: "0:0"},
		"10": {Phase: cluster.Pending, Raw: "PENDING", Reason: "Dependency"},
		"11": {Phase: cluster.Running, Raw: "RUNNING", Elapsed: 24*time.Hour + time.Second},
		"12": {Phase: cluster.Failed, Raw: "OUT_OF_MEMORY", Reason: "OutOfMemory", ExitCode: "0:9", Elapsed: 9 * time.Second},
	}
	if len(got) != len(want) {
		t.Errorf("got %d states, want %d", len(got), len(want))
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("job %s: %+v, want %+v", id, got[id], w)
		}
	}
	if _, err := ParseSqueue([]byte("7|COMPLETED\n")); err == nil {
		t.Error("a short line is not an error")
	}
}

// fakeSlurm writes sbatch, squeue and scancel scripts into a folder: each records its
// arguments (and sbatch its stdin) and prints what the test says.
func fakeSlurm(t *testing.T, outputs map[string]string) (bin string, record func(name string) string) {
	bin = t.TempDir()
	for _, name := range []string{"sbatch", "squeue", "scancel"} {
		src := "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$0.args\"\n"
		if name == "sbatch" {
			src += "cat > \"$0.stdin\"\n"
		}
		src += outputs[name] + "\n"
		if err := os.WriteFile(filepath.Join(bin, name), []byte(src), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return bin, func(name string) string {
		b, _ := os.ReadFile(filepath.Join(bin, name))
		return string(b)
	}
}

func TestExecutorCommands(t *testing.T) {
	ctx := context.Background()
	bin, rec := fakeSlurm(t, map[string]string{
		"sbatch": "echo '4242;pipelocal'",
		"squeue": "echo '4242|RUNNING|0:03|None|0|'",
	})
	e := &Executor{Bin: bin}
	id, err := e.Submit(ctx, testJob())
	if err != nil || id != "4242" {
		t.Fatalf("Submit = %q, %v; want 4242", id, err)
	}
	if got, want := rec("sbatch.args"), strings.Join(SbatchArgs(testJob()), "\n")+"\n"; got != want {
		t.Errorf("sbatch args %q, want %q", got, want)
	}
	if got := rec("sbatch.stdin"); got != Script(testJob(), "") {
		t.Errorf("sbatch stdin %q, want the script", got)
	}
	st, err := e.States(ctx, []string{"4242", "4243"})
	if err != nil || st["4242"].Phase != cluster.Running || len(st) != 1 {
		t.Errorf("States = %+v, %v; want 4242 running only", st, err)
	}
	if got := rec("squeue.args"); !strings.Contains(got, "--jobs=4242,4243\n") || !strings.Contains(got, "--states=all\n") {
		t.Errorf("squeue args %q", got)
	}
	if err := e.Cancel(ctx, []string{"1", "2"}); err != nil {
		t.Fatal(err)
	}
	if got := rec("scancel.args"); got != "1\n2\n" {
		t.Errorf("scancel args %q, want 1 2", got)
	}
	if got := e.CancelCommand([]string{"1", "2"}); got != "scancel 1 2" {
		t.Errorf("CancelCommand = %q", got)
	}
}

func TestExecutorErrors(t *testing.T) {
	ctx := context.Background()
	bin, _ := fakeSlurm(t, map[string]string{
		"sbatch": "echo 'sbatch: error: invalid partition specified: nosuch' >&2; exit 1",
		"squeue": "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1",
	})
	e := &Executor{Bin: bin}
	_, err := e.Submit(ctx, testJob())
	if err == nil || !strings.Contains(err.Error(), "invalid partition specified: nosuch") || !strings.Contains(err.Error(), "pipe:demo:train[seed=0,method=ahl]") {
		t.Errorf("a refused submission: %v; want sbatch's message and the job's name", err)
	}
	if st, err := e.States(ctx, []string{"1"}); err != nil || len(st) != 0 {
		t.Errorf("forgotten jobs: States = %v, %v; want none, no error", st, err)
	}
	bin2, _ := fakeSlurm(t, map[string]string{"sbatch": "echo 'Submitted batch job 5'"})
	if _, err := (&Executor{Bin: bin2}).Submit(ctx, testJob()); err == nil || !strings.Contains(err.Error(), "want a job ID") {
		t.Errorf("unparsable sbatch output: %v", err)
	}
	if _, err := (&Executor{Bin: t.TempDir()}).Submit(ctx, testJob()); err == nil || !strings.Contains(err.Error(), "sbatch") {
		t.Errorf("no sbatch: %v", err)
	}
}
