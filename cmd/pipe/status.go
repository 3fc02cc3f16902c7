package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/pipeline"
)

// StatusOptions holds the flags of `pipe status`.
type StatusOptions struct {
	Sets []string
	JSON bool
}

// AddFlags adds the status flags to cmd.
func (o *StatusOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringArrayVar(&o.Sets, "set", nil, "override a DAG var (`NAME=V`), a stage param (STAGE.PARAM=V) or matrix values (matrix.x=[a,b]); repeatable")
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print a JSON list on stdout")
}

func newStatusCommand(g *GlobalOptions) *cobra.Command {
	var opts StatusOptions
	cmd := &cobra.Command{
		Use:   "status DAG",
		Short: "Say per stage instance whether it is fresh, stale (and why) or missing",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runStatus(cmd.Context(), g, opts, args[0])
		},
	}
	opts.AddFlags(cmd)
	return cmd
}

type statusJSON struct {
	Name     string `json:"name"`
	Instance string `json:"instance"`
	Kind     string `json:"kind"`
	State    string `json:"state"`
	Reason   string `json:"reason"`
	Key      string `json:"key"`
	// Remote is set on a fresh instance whose result only the remote holds.
	Remote bool `json:"remote,omitempty"`
}

func runStatus(ctx context.Context, g *GlobalOptions, opts StatusOptions, dag string) error {
	plan, err := loadPlan(dag, opts.Sets)
	if err != nil {
		return err
	}
	if err := pipeline.Preflight(plan); err != nil {
		return err
	}
	store, err := g.openStatusStore()
	if err != nil {
		return err
	}
	defer func() { _ = store.Close() }() // opened read-only: nothing to flush
	rem, err := g.openRemote(ctx)
	if err != nil {
		return err
	}
	if rem != nil {
		defer func() { _ = rem.Close() }() // nothing was written
	}
	st, err := pipeline.Status(ctx, plan, pipeline.Options{Store: store, Remote: pipelineRemote(rem)})
	if err != nil {
		return err
	}
	if opts.JSON {
		out := []statusJSON{}
		for _, s := range st {
			out = append(out, statusJSON{s.Instance.Stage, s.Instance.Label, s.Instance.Kind, s.State, s.Reason, s.Key, s.Remote})
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "%s\n", b)
		return statusErr(st)
	}
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tKIND\tSTATE\tWHY")
	counts := map[string]int{}
	remote := 0
	for _, s := range st {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Instance.ID(), s.Instance.Kind, s.State, s.Reason)
		counts[s.State]++
		if s.Remote {
			remote++
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(g.Stderr, "%s: %d fresh", plan.DAG, counts[pipeline.Fresh])
	if remote > 0 {
		fmt.Fprintf(g.Stderr, " (%d in the remote only)", remote)
	}
	fmt.Fprintf(g.Stderr, ", %d stale, %d missing", counts[pipeline.Stale], counts[pipeline.Missing])
	if n := counts[pipeline.Errored]; n > 0 {
		fmt.Fprintf(g.Stderr, ", %d error", n)
	}
	fmt.Fprintln(g.Stderr)
	return statusErr(st)
}

// statusErr makes status exit 1 when some instance is in state error (its key could not be
// computed), having printed why.
func statusErr(st []pipeline.InstanceStatus) error {
	for _, s := range st {
		if s.State == pipeline.Errored {
			return exitCodeError{exitFailed, errSilent}
		}
	}
	return nil
}
