package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/artifacts/remote"
	"github.com/pipe-ahl/pipe/pipeline"
)

// remoteFlagUsage is the help of the persistent --remote flag.
const remoteFlagUsage = "shared remote cache behind the store: `URL` file:///abs/dir or s3://bucket/prefix?region=R[&endpoint=URL] (env PIPE_REMOTE; credentials from the AWS SDK's environment and files)"

// openRemote opens the remote cache named by --remote (or PIPE_REMOTE); nil when none is
// given. An unusable remote is an error wrapping artifacts.ErrUnreadable (exit 4).
func (g *GlobalOptions) openRemote(ctx context.Context) (*remote.Remote, error) {
	if g.Remote == "" {
		return nil, nil
	}
	return remote.Open(ctx, g.Remote)
}

// pipelineRemote returns r as a pipeline.Remote, nil (not a typed nil) when r is nil.
func pipelineRemote(r *remote.Remote) pipeline.Remote {
	if r == nil {
		return nil
	}
	return r
}

// openStoreReadThrough opens the store for a command that only reads, and with --remote
// reads what the store lacks from the remote (a machine whose store is absent sees the
// remote alone). done closes both.
func (g *GlobalOptions) openStoreReadThrough(ctx context.Context) (artifacts.Store, func(), error) {
	return openReadThrough(ctx, g.Store, g.Remote)
}

func openReadThrough(ctx context.Context, dir, url string) (artifacts.Store, func(), error) {
	var local artifacts.Store
	b, err := artifacts.Open(dir, artifacts.ReadOnly())
	switch {
	case err == nil:
		local = b
	case url != "" && errors.Is(err, artifacts.ErrStoreMissing):
		if local, err = artifacts.Open("", artifacts.InMemory()); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, err
	}
	closeLocal := func() { _ = local.Close() } // read-only or in memory: nothing to flush
	if url == "" {
		return local, closeLocal, nil
	}
	r, err := remote.Open(ctx, url)
	if err != nil {
		closeLocal()
		return nil, nil, err
	}
	return remote.ReadThrough(local, r), func() { _ = r.Close(); closeLocal() }, nil
}

// openStatusStore opens the store for `pipe status`: read-only, or an empty one in memory
// when it is absent and a remote is given (a machine that has run nothing yet).
func (g *GlobalOptions) openStatusStore() (artifacts.Store, error) {
	s, err := g.openStoreRead()
	if err != nil && g.Remote != "" && errors.Is(err, artifacts.ErrStoreMissing) {
		return artifacts.Open("", artifacts.InMemory())
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// transferLine says what a remote moved since before, for run, push and pull:
//
//	remote URL: pulled 9 instances (14 blobs, 1.2 MiB, 0.31s), pushed 1 instance (1 blob, 3 KiB, 0.01s)
//
// Each part's seconds are the time spent pulling or pushing (summed over instances moved at
// once); when nothing moved, "nothing moved".
func transferLine(w io.Writer, r *remote.Remote, before remote.Stats) {
	s := r.Stats()
	var parts []string
	if n := s.ManifestsPulled - before.ManifestsPulled; n > 0 {
		b := s.BlobsPulled - before.BlobsPulled
		parts = append(parts, fmt.Sprintf("pulled %d %s (%d %s, %s, %.2fs)", n, plural(int(n), "instance", "instances"),
			b, plural(int(b), "blob", "blobs"), humanBytes(s.BytesPulled-before.BytesPulled), s.PullSeconds-before.PullSeconds))
	}
	if n := s.ManifestsPushed - before.ManifestsPushed; n > 0 {
		b := s.BlobsPushed - before.BlobsPushed
		parts = append(parts, fmt.Sprintf("pushed %d %s (%d %s, %s, %.2fs)", n, plural(int(n), "instance", "instances"),
			b, plural(int(b), "blob", "blobs"), humanBytes(s.BytesPushed-before.BytesPushed), s.PushSeconds-before.PushSeconds))
	}
	if len(parts) == 0 {
		parts = append(parts, "nothing moved")
	}
	fmt.Fprintf(w, "remote %s: %s\n", r.URL(), strings.Join(parts, ", "))
}

// TransferOptions holds the flags of `pipe push` and `pipe pull`.
type TransferOptions struct {
	Sets []string
}

func newPushCommand(g *GlobalOptions) *cobra.Command {
	var opts TransferOptions
	cmd := &cobra.Command{
		Use:   "push DAG",
		Short: "Push the DAG's current results (found by cache key, as report finds them) to the --remote cache",
		Long: `Push sends every instance of the DAG file's plan (with --set) whose result the local store
holds for that setting to the remote cache: its blobs the remote lacks, then its manifest, then
its head. It prints what it moved. Instances without a local result are named, and the exit
code is then 1.`,
		Example: `  pipe push dags/demo.yaml --remote file:///shared/pipe-cache
  pipe push dags/mvtec_hard.yaml --set T=5 --remote 's3://bucket/pipe?region=us-east-1'`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTransfer(cmd.Context(), g, opts, args[0], true)
		},
	}
	addSetFlag(cmd, &opts.Sets)
	return cmd
}

func newPullCommand(g *GlobalOptions) *cobra.Command {
	var opts TransferOptions
	cmd := &cobra.Command{
		Use:   "pull DAG",
		Short: "Pull the DAG's results (for its setting, by cache key) from the --remote cache into the store",
		Long: `Pull copies every instance of the DAG file's plan (with --set) that the local store lacks and
the remote cache holds into the local store, each blob checked against its digest, and points
the DAG's heads at them. It prints what it moved. Instances that the remote lacks too are
named, and the exit code is then 1.`,
		Example: `  pipe pull dags/demo.yaml --remote file:///shared/pipe-cache`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runTransfer(cmd.Context(), g, opts, args[0], false)
		},
	}
	addSetFlag(cmd, &opts.Sets)
	return cmd
}

// runTransfer is `pipe push` (push) or `pipe pull`.
func runTransfer(ctx context.Context, g *GlobalOptions, opts TransferOptions, dag string, push bool) (err error) {
	verb := "pull"
	if push {
		verb = "push"
	}
	if g.Remote == "" {
		return usagef("%s: no remote: give --remote URL or set PIPE_REMOTE", verb)
	}
	plan, err := loadPlan(dag, opts.Sets)
	if err != nil {
		return err
	}
	r, err := g.openRemote(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = r.Close() }() // a bucket handle: every write was closed already
	var store artifacts.Store
	if push {
		b, err := g.openStoreRead()
		if err != nil {
			return err
		}
		store = b
		defer func() { _ = b.Close() }() // opened read-only: nothing to flush
	} else {
		b, err := g.openStore()
		if err != nil {
			return err
		}
		store = b
		defer closeStore(b, &err) // the pull wrote manifests and blobs
	}
	start, before := time.Now(), r.Stats()
	opt := pipeline.Options{Store: store}
	if !push {
		opt.Remote = r
	}
	sts, err := pipeline.Status(ctx, plan, opt)
	if err != nil {
		return err
	}
	var lacking []string
	already := 0
	for _, s := range sts {
		head := artifacts.Head{DAG: plan.DAG, Stage: s.Instance.Stage, Instance: s.Instance.Label, Key: s.Key}
		switch {
		case s.State != pipeline.Fresh:
			lacking = append(lacking, s.Instance.ID()+" ("+s.State+")")
		case push:
			m, err := store.Manifest(ctx, s.Key)
			if err != nil {
				return err
			}
			n := r.Stats().ManifestsPushed
			if err := r.Push(ctx, store, m, head); err != nil {
				return fmt.Errorf("push %s: %w", s.Instance.ID(), err)
			}
			if r.Stats().ManifestsPushed == n {
				already++
			}
		case s.Remote:
			m, err := r.Manifest(ctx, s.Key)
			if err != nil {
				return fmt.Errorf("pull %s: %w", s.Instance.ID(), err)
			}
			if err := r.Pull(ctx, store, m, head); err != nil {
				return fmt.Errorf("pull %s: %w", s.Instance.ID(), err)
			}
		default:
			already++
			if h, err := store.Head(ctx, head.DAG, head.Stage, head.Instance); err != nil || h.Key != head.Key {
				if err := store.PutHead(ctx, head); err != nil {
					return err
				}
			}
		}
	}
	transferLine(g.Stderr, r, before)
	fmt.Fprintf(g.Stderr, "%s %s: done in %.2fs\n", verb, plan.DAG, time.Since(start).Seconds())
	if already > 0 {
		where := "local"
		if push {
			where = "in the remote"
		}
		fmt.Fprintf(g.Stderr, "%d %s already %s\n", already, plural(already, "instance was", "instances were"), where)
	}
	if len(lacking) > 0 {
		where := "the remote (nor the local store)"
		if push {
			where = "the local store for this setting (run it first)"
		}
		return exitCodeError{exitFailed, fmt.Errorf("%s %s: %d of %d instances are not in %s: %s", verb, plan.DAG,
			len(lacking), len(sts), where, strings.Join(lacking, ", "))}
	}
	return nil
}

// remoteFromEnv is the default of --remote.
func remoteFromEnv() string { return os.Getenv("PIPE_REMOTE") }
