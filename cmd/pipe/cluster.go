package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/cluster"
	"github.com/pipe-ahl/pipe/cluster/slurm"
	"github.com/pipe-ahl/pipe/pipeline"
)

// ClusterOptions holds the flags of `pipe run --executor`: where the instances run when not
// in this process.
type ClusterOptions struct {
	Executor  string
	SlurmArgs []string
	LogDir    string
	JobStore  string
	Detach    bool
}

// clusterPoll is how often the jobs' states are read: often enough that a person sees each
// finish promptly, rarely enough not to load the controller. A variable for tests.
var clusterPoll = time.Second

// AddFlags adds the executor flags to cmd.
func (o *ClusterOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Executor, "executor", "", "run each stage instance as a job on a cluster: `slurm` (needs --remote)")
	f.StringArrayVar(&o.SlurmArgs, "slurm-arg", nil, "extra sbatch flag for every job (`--partition=gpu`); repeatable")
	f.StringVar(&o.LogDir, "slurm-log-dir", "", "`DIR` on the shared filesystem for the jobs' logs (default: slurm-logs/DAG beside --store)")
	f.StringVar(&o.JobStore, "job-store", "", "`DIR` on each node under which a job keeps its own store (default: $TMPDIR there, else /tmp)")
	f.BoolVar(&o.Detach, "detach", false, "with --executor: print the job IDs and return after submitting")
}

// newExecutor returns the executor named by --executor; tests replace it.
var newExecutor = func(o ClusterOptions) (cluster.Executor, error) {
	switch o.Executor {
	case "slurm":
		return &slurm.Executor{JobStore: o.JobStore}, nil
	}
	return nil, usagef("--executor %s: unknown executor (want slurm)", o.Executor)
}

// checkClusterFlags rejects flags that mean nothing with --executor, or without it.
func checkClusterFlags(cmd *cobra.Command, opts RunOptions, remote string) error {
	c := opts.Cluster
	if c.Executor == "" {
		for _, name := range []string{"slurm-arg", "slurm-log-dir", "job-store", "detach"} {
			if cmd.Flags().Changed(name) {
				return usagef("--%s is for --executor slurm", name)
			}
		}
		return nil
	}
	if remote == "" {
		return usagef("--executor %s needs --remote URL (or PIPE_REMOTE): each job runs on its own node with its own store, so jobs hand their results to each other, and back to this command, only through the remote", c.Executor)
	}
	for _, name := range []string{"json", "dry-run", "force", "pin", "jobs", "only"} {
		if cmd.Flags().Changed(name) {
			return usagef("--%s does not work with --executor (yet): run the dry run without --executor", name)
		}
	}
	return nil
}

// clusterRun is one `pipe run --executor`: the plan, its dry run, and the jobs.
type clusterRun struct {
	g      *GlobalOptions
	opts   RunOptions
	exec   cluster.Executor
	plan   *pipeline.Plan
	remote string
	h      *humanOutput
	index  map[*pipeline.Instance]int
	// results holds each instance's result, in plan order: the dry run's, replaced by the
	// job's outcome as it is known; reported marks those printed.
	results  []*pipeline.Result
	reported []bool
	jobs     map[int]*submitted
}

// submitted is one submitted job.
type submitted struct {
	id    string
	job   cluster.Job
	state cluster.State
	// missing counts the polls in a row that did not find the job.
	missing int
}

// runCluster plans the DAG here (a dry run against the local store and the remote), submits
// one job per instance that would run, and follows them (or returns, with --detach).
// dryRun is the report of that dry run.
func runCluster(ctx context.Context, g *GlobalOptions, opts RunOptions, plan *pipeline.Plan, dryRun *pipeline.Report, remote string) error {
	ex, err := newExecutor(opts.Cluster)
	if err != nil {
		return err
	}
	c := &clusterRun{g: g, opts: opts, exec: ex, plan: plan, remote: remote, h: newHumanOutput(g.Stderr, plan),
		index: map[*pipeline.Instance]int{}, results: dryRun.Results, reported: make([]bool, len(plan.Instances)), jobs: map[int]*submitted{}}
	for i, in := range plan.Instances {
		c.index[in] = i
	}
	start := time.Now()
	if err := c.submit(ctx); err != nil {
		return err
	}
	if len(c.jobs) > 0 && opts.Cluster.Detach {
		for i := range c.results {
			if s := c.jobs[i]; s != nil {
				fmt.Fprintf(g.Stdout, "%s\t%s\n", s.id, plan.Instances[i].ID())
			}
		}
		fmt.Fprintf(g.Stderr, "detached: `pipe status %s --remote %s` shows what has finished; `%s` cancels the jobs\n",
			plan.File, remote, ex.CancelCommand(c.ids(func(*submitted) bool { return true })))
		return nil
	}
	if err := c.follow(ctx); err != nil {
		return err
	}
	rep := &pipeline.Report{RunID: c.runName(), DAG: plan.DAG, Started: start, Results: c.results, Status: "ok"}
	var failed []*pipeline.Result
	for _, r := range c.results {
		if r.Status == pipeline.Failed {
			failed = append(failed, r)
		}
	}
	if len(failed) > 0 {
		rep.Status = "failed"
	}
	c.h.summary(rep)
	switch len(failed) {
	case 0:
		return nil
	case 1:
		return exitCodeError{exitFailed, fmt.Errorf("%w: %s", pipeline.ErrStageFailed, failed[0].Instance.ID())}
	}
	return exitCodeError{exitFailed, fmt.Errorf("%w: %d stage instances failed, first %s", pipeline.ErrStageFailed, len(failed), failed[0].Instance.ID())}
}

// runName names the run in the summary line: the executor and its job IDs.
func (c *clusterRun) runName() string {
	ids := c.ids(func(*submitted) bool { return true })
	switch len(ids) {
	case 0:
		return c.exec.Name() + ", no jobs"
	case 1:
		return c.exec.Name() + " job " + ids[0]
	}
	return fmt.Sprintf("%s jobs %s..%s", c.exec.Name(), ids[0], ids[len(ids)-1])
}

// ids returns the IDs of the submitted jobs that keep says, in plan order.
func (c *clusterRun) ids(keep func(*submitted) bool) []string {
	var ids []string
	for i := range c.results {
		if s := c.jobs[i]; s != nil && keep(s) {
			ids = append(ids, s.id)
		}
	}
	return ids
}

// submit prints the instances the dry run settled (cached, or failed and skipped before
// anything ran) and submits one job per instance that would run, in plan order, each after
// its inputs' jobs. When a submission fails, the jobs already submitted are cancelled.
func (c *clusterRun) submit(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("--executor: the path of this pipe binary, which the jobs run: %w", err)
	}
	dag, err := filepath.Abs(c.plan.File)
	if err != nil {
		return err
	}
	logDir := c.opts.Cluster.LogDir
	if logDir == "" {
		logDir = filepath.Join(filepath.Dir(filepath.Clean(c.g.Store)), "slurm-logs", c.plan.DAG)
	}
	if logDir, err = filepath.Abs(logDir); err != nil {
		return err
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	for i, r := range c.results {
		switch r.Status {
		case pipeline.WouldRun, pipeline.Unknown:
		default:
			c.report(i, r) // cached, or failed (and skipped) in the dry run itself
			continue
		}
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return fmt.Errorf("--slurm-log-dir: %w", err)
		}
		in := c.plan.Instances[i]
		job := cluster.Job{
			Name:        "pipe:" + c.plan.DAG + ":" + in.ID(),
			Argv:        []string{exe, "run", dag, "--only", in.ID(), "--remote", c.remote},
			ScratchFlag: "--store",
			Dir:         wd,
			LogDir:      logDir,
			LogName:     logName(in.ID()),
			Extra:       c.opts.Cluster.SlurmArgs,
		}
		for _, s := range c.opts.Sets {
			job.Argv = append(job.Argv, "--set", s)
		}
		if rs := in.Resources; rs != nil {
			job.Resources = cluster.Resources{CPUs: rs.CPUs, MemMB: rs.MemMB, GPUs: rs.GPUs, Time: rs.Time}
		}
		for _, d := range in.Deps {
			if s := c.jobs[c.index[d]]; s != nil && !slices.Contains(job.After, s.id) {
				job.After = append(job.After, s.id)
			}
		}
		id, err := c.exec.Submit(ctx, job)
		if err == nil && ctx.Err() != nil {
			c.jobs[i] = &submitted{id: id, job: job}
		}
		if err != nil || ctx.Err() != nil {
			if ctx.Err() != nil {
				err = fmt.Errorf("interrupted while submitting: %w", ctx.Err()) // exit 130
			}
			if ids := c.ids(func(*submitted) bool { return true }); len(ids) > 0 {
				if cerr := c.exec.Cancel(context.WithoutCancel(ctx), ids); cerr != nil {
					return fmt.Errorf("%w; cancelling the %d jobs submitted before it failed too (%w): `%s`", err, len(ids), cerr, c.exec.CancelCommand(ids))
				}
				return fmt.Errorf("%w (the %d jobs submitted before it were cancelled)", err, len(ids))
			}
			return err
		}
		c.jobs[i] = &submitted{id: id, job: job, state: cluster.State{Phase: cluster.Pending}}
	}
	if n := len(c.jobs); n > 0 {
		fmt.Fprintf(c.g.Stderr, "submitted %d %s to %s (%s); logs in %s\n", n, plural(n, "job", "jobs"), c.exec.Name(), c.runName(), logDir)
	}
	return nil
}

// logName turns an instance ID into a file name: train[seed=0,method=ahl] stays as it is;
// characters a shell or Slurm would read specially become '_'.
func logName(id string) string {
	return strings.Map(func(r rune) rune {
		if isASCIIAlnum(r) || strings.ContainsRune("[]=,._-+", r) {
			return r
		}
		return '_'
	}, id)
}

func isASCIIAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// report prints instance i's result once.
func (c *clusterRun) report(i int, r *pipeline.Result) {
	if c.reported[i] {
		return
	}
	c.reported[i] = true
	c.results[i] = r
	c.h.result(r)
}

// follow polls the jobs' states until every instance's outcome is known, printing each as
// it is: ran, failed (with the tail of its log), or skipped because an upstream failed.
func (c *clusterRun) follow(ctx context.Context) error {
	errorsInARow := 0
	for {
		active := c.ids(func(s *submitted) bool { return !s.state.Phase.Final() })
		if len(active) == 0 && c.allReported() {
			return nil
		}
		states, err := c.exec.States(ctx, active)
		switch {
		case ctx.Err() != nil:
			return c.interrupted(ctx)
		case err != nil:
			// The controller may be busy or restarting: retry, and give up after a minute.
			if errorsInARow++; errorsInARow*int(clusterPoll) > int(time.Minute) {
				return fmt.Errorf("following the jobs: %w (they were left as they are: `%s` cancels them)", err, c.exec.CancelCommand(active))
			}
		default:
			errorsInARow = 0
			c.update(ctx, states)
		}
		if c.allReported() {
			return nil
		}
		select {
		case <-ctx.Done():
			return c.interrupted(ctx)
		case <-time.After(clusterPoll):
		}
	}
}

func (c *clusterRun) allReported() bool { return !slices.Contains(c.reported, false) }

// update applies one poll's states, then reports, in plan order (inputs before their
// dependents), every instance whose outcome is now known.
func (c *clusterRun) update(ctx context.Context, states map[string]cluster.State) {
	for _, s := range c.jobs {
		if s.state.Phase.Final() {
			continue
		}
		if st, ok := states[s.id]; ok {
			s.state, s.missing = st, 0
		} else {
			s.missing++
		}
	}
	var orphans []string // pending jobs whose input failed, should Slurm not cancel them itself
	for i, in := range c.plan.Instances {
		s := c.jobs[i]
		if c.reported[i] || s == nil {
			continue
		}
		if up := c.failedInput(in); up != nil {
			r := &pipeline.Result{Instance: in, Status: pipeline.Skipped, Reason: "upstream " + up.Instance.ID() + " failed"}
			if up.Status == pipeline.Skipped {
				r.Reason = up.Reason
			}
			if !s.state.Phase.Final() {
				orphans = append(orphans, s.id)
			}
			c.report(i, r)
			continue
		}
		switch {
		case s.missing >= 5:
			c.report(i, &pipeline.Result{Instance: in, Status: pipeline.Failed,
				Err: fmt.Errorf("%s job %s: the scheduler no longer knows it (its outcome is unknown; log %s)", c.exec.Name(), s.id, s.job.LogFile(s.id))})
		case s.state.Phase == cluster.Done:
			c.report(i, c.doneResult(i, s))
		case s.state.Phase.Final():
			c.report(i, &pipeline.Result{Instance: in, Status: pipeline.Failed, Seconds: s.state.Elapsed.Seconds(), Err: c.jobError(s)})
		}
	}
	if len(orphans) > 0 {
		_ = c.exec.Cancel(context.WithoutCancel(ctx), orphans) // best effort: they are reported skipped either way
	}
}

// failedInput returns the result of an input of in that failed or was skipped, or nil.
func (c *clusterRun) failedInput(in *pipeline.Instance) *pipeline.Result {
	for _, d := range in.Deps {
		j := c.index[d]
		if r := c.results[j]; c.reported[j] && (r.Status == pipeline.Failed || r.Status == pipeline.Skipped) {
			return r
		}
	}
	return nil
}

// doneResult is the result of instance i, whose job s succeeded. The job's pipe printed
// its own line into the job's log (ran, how long to the hundredth, why; or cached when
// another run had pushed it meanwhile): that line is used when found, else Slurm's
// whole-second run time.
func (c *clusterRun) doneResult(i int, s *submitted) *pipeline.Result {
	in := c.plan.Instances[i]
	r := &pipeline.Result{Instance: in, Status: pipeline.Ran, Reason: c.ranReason(i), Seconds: s.state.Elapsed.Seconds()}
	b, err := os.ReadFile(s.job.LogFile(s.id))
	if err != nil {
		return r
	}
	if st, secs, why, ok := jobLine(string(b), in.ID()); ok {
		r.Status, r.Remote = pipeline.Cached, st == remoteCached
		if st == pipeline.Ran {
			r.Status, r.Seconds = pipeline.Ran, secs
		}
		r.Reason = fmt.Sprintf("%s (%s job %s)", why, c.exec.Name(), s.id)
	}
	return r
}

// jobLine finds the last line pipe printed for instance id in a job's log: "ran", "cached"
// or "cached (remote)", the seconds (ran only) and the reason.
func jobLine(log, id string) (status string, secs float64, why string, ok bool) {
	lines := strings.Split(log, "\n")
	for _, line := range slices.Backward(lines) {
		for _, st := range []string{pipeline.Ran, remoteCached, pipeline.Cached} {
			rest, found := strings.CutPrefix(line, st+" ")
			if !found {
				continue
			}
			if rest, found = strings.CutPrefix(strings.TrimLeft(rest, " "), id+" "); !found {
				continue
			}
			rest = strings.TrimLeft(rest, " ")
			if st == pipeline.Ran {
				tok, after, _ := strings.Cut(rest, " ")
				v, err := strconv.ParseFloat(strings.TrimSuffix(tok, "s"), 64)
				if err != nil {
					continue
				}
				secs, rest = v, strings.TrimLeft(after, " ")
			}
			return st, secs, strings.TrimSpace(rest), true
		}
	}
	return "", 0, "", false
}

// ranReason says why an instance that ran did: the dry run's reason, or for an instance
// downstream of one that ran, that.
func (c *clusterRun) ranReason(i int) string {
	r := c.results[i]
	why := r.Reason
	if r.Status == pipeline.Unknown {
		why = "after " + strings.TrimSuffix(strings.TrimPrefix(r.Reason, "upstream "), " would run")
	}
	return fmt.Sprintf("%s (%s job %s)", why, c.exec.Name(), c.jobs[i].id)
}

// logTail is how many lines of a failed job's log are printed.
const logTail = 10

// jobError describes a failed job: its state, exit code, reason, and its log's last lines.
func (c *clusterRun) jobError(s *submitted) error {
	st := s.state
	msg := fmt.Sprintf("%s job %s %s", c.exec.Name(), s.id, st.Raw)
	var details []string
	if st.ExitCode != "" && st.ExitCode != "0:0" {
		details = append(details, "exit "+st.ExitCode)
	}
	if st.Reason != "" {
		details = append(details, st.Reason)
	}
	if len(details) > 0 {
		msg += " (" + strings.Join(details, ", ") + ")"
	}
	log := s.job.LogFile(s.id)
	b, err := os.ReadFile(log)
	if err != nil {
		return fmt.Errorf("%s; no log: %w", msg, err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > logTail {
		lines = lines[len(lines)-logTail:]
	}
	return fmt.Errorf("%s; last lines of %s:\n    %s", msg, log, strings.Join(lines, "\n    "))
}

// interrupted runs after Ctrl-C: it lists the submitted jobs that are still pending or
// running and asks whether to cancel them (one line from stdin; anything but y leaves them).
func (c *clusterRun) interrupted(ctx context.Context) error {
	open := c.ids(func(s *submitted) bool { return !s.state.Phase.Final() })
	if len(open) == 0 {
		return fmt.Errorf("interrupted (every job had finished): %w", ctx.Err())
	}
	w := c.g.Stderr
	fmt.Fprintf(w, "\ninterrupted; %d submitted %s still pending or running:\n", len(open), plural(len(open), "job is", "jobs are"))
	for i := range c.results {
		if s := c.jobs[i]; s != nil && !s.state.Phase.Final() {
			fmt.Fprintf(w, "  %s  %-8s %s\n", s.id, s.state.Phase, c.plan.Instances[i].ID())
		}
	}
	fmt.Fprintf(w, "cancel %d submitted %s? [y/N] ", len(open), plural(len(open), "job", "jobs"))
	answer := ""
	if c.g.Stdin != nil {
		answer, _ = bufio.NewReader(c.g.Stdin).ReadString('\n') // EOF: no answer, which is no
	}
	if a := strings.ToLower(strings.TrimSpace(answer)); a == "y" || a == "yes" {
		if err := c.exec.Cancel(context.WithoutCancel(ctx), open); err != nil {
			return exitCodeError{exitInterrupted, fmt.Errorf("interrupted; cancelling the jobs failed: %w (`%s`)", err, c.exec.CancelCommand(open))}
		}
		fmt.Fprintf(w, "cancelled %d %s\n", len(open), plural(len(open), "job", "jobs"))
		return exitCodeError{exitInterrupted, errSilent}
	}
	if answer == "" {
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "left them; to cancel them later: %s\n", c.exec.CancelCommand(open))
	return exitCodeError{exitInterrupted, errSilent}
}

// clusterDryRun plans the run: a dry run against the local store and the remote, which says
// what is cached (locally or in the remote), what would run, and what is unknown (downstream
// of what would run). What is cached only locally is pushed, as a local run with a remote
// does: the jobs, on other nodes, read their inputs from the remote. The store is closed
// again before the jobs are followed, so that other pipe commands can use it meanwhile.
func clusterDryRun(ctx context.Context, g *GlobalOptions, plan *pipeline.Plan) (rep *pipeline.Report, err error) {
	rem, err := g.openRemote(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rem.Close() }() // a dry run wrote nothing to it
	store, err := g.openStore()
	if err != nil {
		return nil, err
	}
	defer closeStore(store, &err)
	rep, err = pipeline.Run(ctx, plan, pipeline.Options{Store: store, Remote: rem, DryRun: true})
	if rep == nil {
		return nil, err
	}
	if err != nil && !errors.Is(err, pipeline.ErrStageFailed) {
		return nil, err
	}
	for _, r := range rep.Results {
		if r.Status != pipeline.Cached || r.Remote {
			continue
		}
		m, err := store.Manifest(ctx, r.Key)
		if err != nil {
			return nil, fmt.Errorf("push %s to the remote for the jobs: %w", r.Instance.ID(), err)
		}
		h := artifacts.Head{DAG: plan.DAG, Stage: r.Instance.Stage, Instance: r.Instance.Label, Key: r.Key}
		if err := rem.Push(ctx, store, m, h); err != nil {
			return nil, fmt.Errorf("push %s to the remote for the jobs: %w", r.Instance.ID(), err)
		}
	}
	return rep, nil
}
