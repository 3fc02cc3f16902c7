// Package cluster is what pipe needs from a batch scheduler that runs one stage instance per
// job: submit a job that starts after other jobs succeeded, read jobs' states, cancel jobs.
// Slurm implements it (package cluster/slurm); a Kubernetes or Argo executor would too
// (docs/design.md, "Executors"). The package knows no pipeline: a job is a command line,
// its resources and the jobs it waits for.
package cluster

import (
	"context"
	"path/filepath"
	"time"
)

// Executor submits, follows and cancels jobs on a scheduler.
type Executor interface {
	// Name is the executor's name in messages ("slurm").
	Name() string
	// Submit queues job and returns the scheduler's ID for it. The job starts once every
	// job in job.After has succeeded; when one of them fails, the scheduler cancels it.
	Submit(ctx context.Context, job Job) (string, error)
	// States returns the current state of each job in ids that the scheduler still knows;
	// a job it has forgotten is absent from the map.
	States(ctx context.Context, ids []string) (map[string]State, error)
	// Cancel cancels the jobs in ids (pending or running); finished jobs are left as they are.
	Cancel(ctx context.Context, ids []string) error
	// CancelCommand is the shell command a person runs to cancel ids later.
	CancelCommand(ids []string) string
}

// Job is one job: a command and what it needs.
type Job struct {
	// Name names the job in the scheduler's listings: "pipe:<dag>:<instance ID>".
	Name string
	// Argv is the command the job runs, program first (an absolute path the nodes can run).
	Argv []string
	// ScratchFlag, when set, is appended to Argv with a fresh folder on the node's local
	// disk that is removed when the job ends ("--store": each job's node-local store).
	ScratchFlag string
	// Dir is the working folder of the job (on the shared filesystem).
	Dir string
	// LogDir and LogName name the job's log (stdout and stderr): see LogFile.
	LogDir, LogName string
	// After lists the IDs of the jobs that must succeed before this one starts.
	After []string
	// Resources is what the job asks for; zero fields take the scheduler's defaults.
	Resources Resources
	// Extra lists extra scheduler flags, passed as they are (sbatch flags for Slurm).
	Extra []string
}

// LogFile is where the job with the given ID writes its output: LogDir/LogName.<id>.log.
func (j Job) LogFile(id string) string {
	return filepath.Join(j.LogDir, j.LogName+"."+id+".log")
}

// Resources is what one job asks for.
type Resources struct {
	CPUs  int
	MemMB int64
	GPUs  int
	Time  time.Duration
}

// Phase is where a job is in its life.
type Phase int

// The phases of a job. Done, Failed and Cancelled are final.
const (
	Pending Phase = iota
	Running
	Done      // it ran and exited 0
	Failed    // it ran and failed: a non-zero exit, a signal, a time or memory limit, a node failure
	Cancelled // cancelled before or while running: by a person, or because a job it waits for failed
)

// Final reports whether a job in phase p will not change any more.
func (p Phase) Final() bool { return p >= Done }

func (p Phase) String() string {
	return [...]string{"pending", "running", "done", "failed", "cancelled"}[p]
}

// State is a job's state as the scheduler reports it.
type State struct {
	Phase Phase
	// Raw is the scheduler's own word for it (Slurm: PENDING, COMPLETED, OUT_OF_MEMORY, ...).
	Raw string
	// Reason is the scheduler's reason, when it gives one (Slurm: Dependency,
	// NonZeroExitCode, DependencyNeverSatisfied).
	Reason string
	// ExitCode is the job's exit status as the scheduler writes it ("1:0"), once final.
	ExitCode string
	// Elapsed is how long the job has run (so far, or in all).
	Elapsed time.Duration
}
