package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/artifacts/remote"
	"github.com/pipe-ahl/pipe/pipeline"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// RunOptions holds the flags of `pipe run`.
type RunOptions struct {
	Sets   []string
	JSON   bool
	DryRun bool
	Force  []string
	Jobs   int
	Pin    bool
	Only   []string
	// Cluster holds the --executor flags (cluster.go).
	Cluster ClusterOptions
}

// AddFlags adds the run flags to cmd.
func (o *RunOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringArrayVar(&o.Sets, "set", nil, "override a DAG var (`NAME=V`), a stage param (STAGE.PARAM=V) or matrix values (matrix.x=[a,b]); repeatable")
	f.BoolVar(&o.JSON, "json", false, "print the run as one JSON object on stdout")
	f.BoolVar(&o.DryRun, "dry-run", false, "report what would run; run and store nothing")
	f.StringArrayVar(&o.Force, "force", nil, "run every instance of `STAGE` even when cached; repeatable")
	f.IntVarP(&o.Jobs, "jobs", "j", defaultJobs, "run up to `N` independent stage instances at once")
	f.BoolVar(&o.Pin, "pin", false, "pin this run: gc keeps its artifacts even after heads move on")
	f.StringArrayVar(&o.Only, "only", nil, "run only instance `ID` (as pipe status prints it, e.g. 'train[seed=0,method=ahl]', or a stage name for all its instances); its inputs must be cached locally or in the --remote; repeatable")
	o.Cluster.AddFlags(cmd)
}

func newRunCommand(g *GlobalOptions) *cobra.Command {
	var opts RunOptions
	cmd := &cobra.Command{
		Use:   "run DAG",
		Short: "Run a DAG: every stage instance whose cache key is stored is reused, the rest run",
		Example: `  pipe run dags/demo.yaml
  pipe run dags/mvtec_hard.yaml --set T=5 --jobs 2
  pipe run dags/demo.yaml --set train.epochs=10 --json
  pipe run dags/demo.yaml --remote file:///shared/pipe-cache --only 'train[seed=1]'
  pipe run dags/demo.yaml --executor slurm --remote file:///shared/pipe-cache`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkClusterFlags(cmd, opts, g.Remote); err != nil {
				return err
			}
			if !cmd.Flags().Changed("jobs") && os.Getenv(stageMemEnv) != "" {
				opts.Jobs = 1 // the profile measures one instance at a time
			}
			return runRun(cmd.Context(), g, opts, args[0])
		},
	}
	opts.AddFlags(cmd)
	return cmd
}

// runJSON is the object `pipe run --json` prints.
type runJSON struct {
	RunID   string         `json:"run_id"`
	DAG     string         `json:"dag"`
	Status  string         `json:"status"`
	Stages  []stageJSON    `json:"stages"`
	Metrics map[string]any `json:"metrics"`
}

type stageJSON struct {
	Name     string            `json:"name"`
	Instance string            `json:"instance"`
	Kind     string            `json:"kind"`
	Status   string            `json:"status"`
	Reason   string            `json:"reason"`
	Key      string            `json:"key"`
	Seconds  float64           `json:"seconds"`
	Outputs  map[string]string `json:"outputs"`
	Error    string            `json:"error,omitempty"`
	// Remote is set on a cached instance that came from the remote (pulled; in a dry run,
	// found there). Human output prints its status as "cached (remote)".
	Remote bool `json:"remote,omitempty"`
}

func runRun(ctx context.Context, g *GlobalOptions, opts RunOptions, dag string) (err error) {
	if opts.Jobs < 1 {
		return usagef("--jobs must be at least 1, got %d", opts.Jobs)
	}
	plan, err := loadPlan(dag, opts.Sets)
	if err != nil {
		return err
	}
	stageNames := map[string]bool{}
	for _, in := range plan.Instances {
		stageNames[in.Stage] = true
	}
	for _, f := range opts.Force {
		if !stageNames[f] {
			return usagef("--force %s: no stage named %q in %s", f, f, dag)
		}
	}
	// --force names stages of the whole DAG; --only then cuts the plan to what it needs.
	if len(opts.Only) > 0 {
		if plan, err = plan.Only(opts.Only); err != nil {
			return err
		}
	}
	// Only the outside inputs of what runs (or must be found cached) are checked.
	if err := pipeline.Preflight(plan); err != nil {
		return err
	}
	if opts.Cluster.Executor != "" {
		rep, err := clusterDryRun(ctx, g, plan)
		if err != nil {
			return err
		}
		return runCluster(ctx, g, opts, plan, rep, g.Remote)
	}
	store, err := g.openStore()
	if err != nil {
		return err
	}
	defer closeStore(store, &err) // the run wrote its outputs
	rem, err := g.openRemote(ctx)
	if err != nil {
		return err
	}
	if rem != nil {
		defer func() { _ = rem.Close() }() // a bucket handle: every write was closed already
	}

	limitMemory(opts.Jobs)
	h := newHumanOutput(g.Stderr, plan)
	if rem != nil {
		h.statusWidth = len(remoteCached)
	}
	popts := pipeline.Options{
		Store: store, Jobs: opts.Jobs, Force: opts.Force, DryRun: opts.DryRun, Pin: opts.Pin,
		Log: h, OnResult: h.result, Progress: h.progress, Remote: pipelineRemote(rem),
	}
	finishProfile, err := profileStages(&popts) // $PIPE_STAGE_MEM, for benchmarks
	if err != nil {
		return err
	}
	rep, runErr := pipeline.Run(ctx, plan, popts)
	if err := finishProfile(); err != nil {
		return err
	}
	if rep == nil {
		return runErr
	}
	h.summary(rep)
	if rem != nil && !opts.DryRun {
		transferLine(g.Stderr, rem, remote.Stats{})
	}
	if opts.JSON {
		out := runJSON{RunID: rep.RunID, DAG: rep.DAG, Status: rep.Status, Metrics: metrics(context.WithoutCancel(ctx), store, rep)}
		if opts.DryRun {
			out.RunID = ""
		}
		for _, r := range rep.Results {
			s := stageJSON{Name: r.Instance.Stage, Instance: r.Instance.Label, Kind: r.Instance.Kind, Status: r.Status,
				Reason: r.Reason, Key: r.Key, Seconds: r.Seconds, Outputs: map[string]string{}, Remote: r.Remote}
			for name, o := range r.Outputs {
				s.Outputs[name] = string(o.Digest)
			}
			if r.Err != nil {
				s.Error = r.Err.Error()
			}
			out.Stages = append(out.Stages, s)
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "%s\n", b)
	}
	if errors.Is(runErr, pipeline.ErrStageFailed) {
		// Each failure was reported on its own line already; say it once more, briefly.
		// A stage that failed because the store is full or locked gives the store's code.
		code := exitFailed
		if c := exitCode(runErr); c == exitStore || c == exitLocked {
			code = c
		}
		return exitCodeError{code, runErr}
	}
	return runErr
}

// metrics collects the metrics table of every evaluate instance that ran or was cached,
// keyed by instance ID: {"evaluate[seed=1]": [{"metric":"auroc","class":"all","value":0.9}]}.
func metrics(ctx context.Context, store artifacts.Store, rep *pipeline.Report) map[string]any {
	out := map[string]any{}
	for _, r := range rep.Results {
		o, ok := r.Outputs["metrics"]
		if r.Instance.Kind != "evaluate" || !ok || !slices.Contains([]string{pipeline.Ran, pipeline.Cached}, r.Status) {
			continue
		}
		ms, err := tables.LoadMetrics(ctx, store, o.Digest)
		if err != nil {
			continue
		}
		rows := make([]map[string]any, len(ms))
		for i, m := range ms {
			rows[i] = map[string]any{"metric": m.Metric, "class": m.Class, "value": m.Value}
		}
		out[r.Instance.ID()] = rows
	}
	return out
}
