// Package slurm runs pipe's jobs on a Slurm cluster through its commands (sbatch, squeue,
// scontrol, scancel), as a person would: no Slurm library, no REST daemon. Jobs are followed
// with squeue --states=all, which lists finished jobs for the controller's MinJobAge (300 s
// by default): no accounting database (slurmdbd, sacct) is needed.
package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pipe-ahl/pipe/cluster"
)

// Executor is a cluster.Executor for Slurm.
type Executor struct {
	// Bin is the folder of sbatch, squeue and scancel; "" finds them on PATH.
	Bin string
	// JobStore is the folder, on each node, under which a job makes its scratch folder
	// (Job.ScratchFlag); "" means $TMPDIR on the node, else /tmp.
	JobStore string
}

var _ cluster.Executor = (*Executor)(nil)

// Name returns "slurm".
func (e *Executor) Name() string { return "slurm" }

func (e *Executor) command(ctx context.Context, stdin, name string, args ...string) ([]byte, error) {
	path := name
	if e.Bin != "" {
		path = filepath.Join(e.Bin, name)
	}
	cmd := exec.CommandContext(ctx, path, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			msg = "not found: is this a Slurm login node? (scripts/slurm-local up brings up a test cluster)"
		}
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return stdout.Bytes(), nil
}

// Submit runs sbatch with the job's script on stdin and returns the job ID.
func (e *Executor) Submit(ctx context.Context, job cluster.Job) (string, error) {
	out, err := e.command(ctx, Script(job, e.JobStore), "sbatch", SbatchArgs(job)...)
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", job.Name, err)
	}
	// --parsable prints "ID" or "ID;cluster".
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), ";")
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", fmt.Errorf("submit %s: sbatch printed %q, want a job ID", job.Name, out)
	}
	return id, nil
}

// SbatchArgs returns sbatch's flags for job; its script goes on stdin (Script).
func SbatchArgs(job cluster.Job) []string {
	args := []string{"--parsable", "--job-name=" + job.Name,
		// %j is the job ID; a '%' of the folder or name itself is escaped as %%.
		"--output=" + strings.ReplaceAll(filepath.Join(job.LogDir, job.LogName), "%", "%%") + ".%j.log"}
	if job.Dir != "" {
		args = append(args, "--chdir="+job.Dir)
	}
	if len(job.After) > 0 {
		args = append(args, "--dependency=afterok:"+strings.Join(job.After, ":"), "--kill-on-invalid-dep=yes")
	}
	r := job.Resources
	if r.CPUs > 0 {
		args = append(args, "--cpus-per-task="+strconv.Itoa(r.CPUs))
	}
	if r.MemMB > 0 {
		args = append(args, "--mem="+strconv.FormatInt(r.MemMB, 10)+"M")
	}
	if r.GPUs > 0 {
		args = append(args, "--gres=gpu:"+strconv.Itoa(r.GPUs))
	}
	if r.Time > 0 {
		args = append(args, "--time="+slurmDuration(r.Time))
	}
	return append(args, job.Extra...)
}

// slurmDuration writes d as Slurm's D-HH:MM:SS, rounded up to a whole second.
func slurmDuration(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return fmt.Sprintf("%d-%02d:%02d:%02d", s/86400, s/3600%24, s/60%60, s%60)
}

// Script returns the batch script of job: it makes the scratch folder's name (under
// jobStore, else $TMPDIR, else /tmp; one per job ID, so that jobs sharing a node never share
// a store), runs the command with it, removes it, and exits with the command's status.
func Script(job cluster.Job, jobStore string) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	fmt.Fprintf(&b, "# %s: written by pipe (README.md, \"Running on a cluster\").\n", strings.ReplaceAll(job.Name, "\n", " "))
	words := make([]string, len(job.Argv))
	for i, a := range job.Argv {
		words[i] = Quote(a)
	}
	if job.ScratchFlag != "" {
		parent := `"${TMPDIR:-/tmp}"`
		if jobStore != "" {
			parent = Quote(jobStore)
		}
		fmt.Fprintf(&b, "scratch=%s/pipe-job-\"${SLURM_JOB_ID:-$$}\"\n", parent)
		b.WriteString("trap 'rm -rf \"$scratch\"' EXIT\ntrap 'exit 143' TERM INT\n")
		words = append(words, Quote(job.ScratchFlag), `"$scratch"`)
	}
	b.WriteString(strings.Join(words, " ") + "\n")
	return b.String()
}

// Quote wraps s in single quotes for a POSIX shell; a single quote inside becomes a closing
// quote, a backslash-escaped quote and an opening quote.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// States reads the jobs' states with squeue --states=all, which lists pending, running and
// finished jobs (until MinJobAge has passed). Jobs squeue no longer knows are absent.
func (e *Executor) States(ctx context.Context, ids []string) (map[string]cluster.State, error) {
	states := map[string]cluster.State{}
	if len(ids) == 0 {
		return states, nil
	}
	out, err := e.command(ctx, "", "squeue", "--noheader", "--states=all", "--jobs="+strings.Join(ids, ","),
		"--Format=JobID:|,State:|,TimeUsed:|,Reason:|,exit_code:|")
	if err != nil {
		if strings.Contains(err.Error(), "Invalid job id specified") {
			return states, nil // every one of them is forgotten
		}
		return nil, err
	}
	return ParseSqueue(out)
}

// ParseSqueue reads squeue's `--Format=JobID:|,State:|,TimeUsed:|,Reason:|,exit_code:|` lines.
func ParseSqueue(out []byte) (map[string]cluster.State, error) {
	states := map[string]cluster.State{}
	for line := range strings.Lines(string(out)) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) < 5 {
			return nil, fmt.Errorf("squeue: unexpected line %q (want ID|STATE|TIME|REASON|EXIT)", line)
		}
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		st := cluster.State{Phase: phase(f[1]), Raw: f[1], Reason: f[3]}
		if st.Reason == "None" {
			st.Reason = ""
		}
		if d, err := parseElapsed(f[2]); err == nil {
			st.Elapsed = d
		}
		if st.Phase.Final() {
			if n, err := strconv.Atoi(f[4]); err == nil {
				// A wait status: exit code in the high byte, signal in the low 7 bits.
				st.ExitCode = fmt.Sprintf("%d:%d", n>>8&0xff, n&0x7f)
			}
		}
		states[f[0]] = st
	}
	return states, nil
}

// phase maps Slurm's job states (squeue(1), "JOB STATE CODES") to phases.
func phase(s string) cluster.Phase {
	switch s {
	case "PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESV_DEL_HOLD", "SPECIAL_EXIT", "CONFIGURING", "POWER_UP_NODE":
		return cluster.Pending
	case "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESIZING":
		return cluster.Running
	case "COMPLETED":
		return cluster.Done
	case "CANCELLED", "REVOKED":
		return cluster.Cancelled
	}
	// FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL, DEADLINE, PREEMPTED, and any
	// state this version does not know: final, and not a success.
	return cluster.Failed
}

// parseElapsed reads squeue's time used: M:SS, H:MM:SS or D-H:MM:SS.
func parseElapsed(s string) (time.Duration, error) {
	days := 0
	if d, rest, ok := strings.Cut(s, "-"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return 0, err
		}
		days, s = n, rest
	}
	var total int
	for p := range strings.SplitSeq(s, ":") {
		n, err := strconv.Atoi(p)
		if err != nil {
			return 0, fmt.Errorf("time used %q: %w", s, err)
		}
		total = total*60 + n
	}
	return time.Duration(days*86400+total) * time.Second, nil
}

// Cancel runs scancel on ids.
func (e *Executor) Cancel(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := e.command(ctx, "", "scancel", ids...)
	return err
}

// CancelCommand returns "scancel ID...".
func (e *Executor) CancelCommand(ids []string) string {
	return "scancel " + strings.Join(ids, " ")
}
