// Command pipe runs AHL anomaly-detection pipelines as cached, content-addressed DAGs.
// See README.md and docs/ (architecture.md, design.md, algorithm.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/pipeline"
	"github.com/pipe-ahl/pipe/stages"
)

// Exit codes, one meaning each (docs/architecture.md, "Errors and exit codes").
const (
	exitOK          = 0
	exitFailed      = 1 // a stage failed (or verify found damage, or status lists an error)
	exitUsage       = 2 // bad usage or an invalid DAG
	exitLocked      = 3 // another pipe process held the store beyond the lock wait
	exitStore       = 4 // the store is unusable: full, unreadable, damaged beyond a miss, or missing
	exitInterrupted = 130
)

// GlobalOptions are the flags every command shares.
type GlobalOptions struct {
	Store string
	// Remote is the URL of the shared remote cache (--remote, PIPE_REMOTE); "" for none.
	Remote string
	// Stdout and Stderr are where data and human messages go.
	Stdout, Stderr io.Writer
	// Stdin is where a question's answer is read (run --executor's "cancel the jobs?").
	Stdin io.Reader
}

// usageError marks an error as bad usage (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func main() {
	if os.Getenv("PIPE_DEBUG") != "" {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// Main runs pipe with args and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	stages.Register()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()
	g := &GlobalOptions{Stdout: stdout, Stderr: stderr, Stdin: os.Stdin}
	root := newRootCommand(g)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if !errors.Is(err, errSilent) {
		fmt.Fprintf(stderr, "pipe: %v\n", err)
	}
	return code
}

// errSilent is returned by commands that already told the user what went wrong.
var errSilent = errors.New("")

// exitCode maps an error to pipe's exit code.
func exitCode(err error) int {
	var ue usageError
	var ec exitCodeError
	switch {
	case errors.As(err, &ec):
		return ec.code
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.Is(err, artifacts.ErrLocked):
		return exitLocked
	case artifacts.Unusable(err):
		return exitStore
	case errors.As(err, &ue), pipeline.IsInvalid(err):
		return exitUsage
	case strings.HasPrefix(err.Error(), "unknown command "), strings.HasPrefix(err.Error(), "accepts "),
		strings.HasPrefix(err.Error(), "requires at least "):
		return exitUsage // cobra's own usage errors
	}
	return exitFailed
}

// exitCodeError carries an explicit exit code.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string { return e.err.Error() }
func (e exitCodeError) Unwrap() error { return e.err }

func newRootCommand(g *GlobalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pipe",
		Short: "Run AHL anomaly-detection pipelines as cached, content-addressed DAGs",
		Long: `pipe runs YAML DAGs of stages (ingest, features, augment, kmeans, hadg, train, score,
evaluate, report). Each stage's outputs are Arrow tables in a content-addressed store; a
stage reruns only when its kind's code version, its params, its seed or its inputs' bytes
changed.

Exit codes:
  0    ok
  1    a stage failed, verify found damage, status lists an instance in state error,
       run --only found an input instance cached neither locally nor in the remote, or
       push/pull found instances that the source lacks
  2    bad usage or an invalid DAG
  3    the store stayed locked by another pipe process beyond the lock wait (30 s)
  4    the store is unusable: no space left, unreadable, or missing (read commands
       never create a store), or the --remote cache cannot be opened or reached
  130  interrupted

Set PIPE_DEBUG=1 to see the store's debug log (Badger's own messages) on stderr.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := os.Getenv("PIPE_STORE")
	if def == "" {
		def = ".pipe/store"
	}
	cmd.PersistentFlags().StringVar(&g.Store, "store", def, "store folder (env PIPE_STORE)")
	cmd.PersistentFlags().StringVar(&g.Remote, "remote", remoteFromEnv(), remoteFlagUsage)
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageError{fmt.Errorf("%w\n%s", err, c.UsageString())}
	})
	for _, sub := range commands(g) {
		cmd.AddCommand(sub)
	}
	return cmd
}

// commands lists the subcommands.
func commands(g *GlobalOptions) []*cobra.Command {
	return []*cobra.Command{
		newRunCommand(g),
		newStatusCommand(g),
		newArtifactsCommand(g),
		newGCCommand(g),
		newPushCommand(g),
		newPullCommand(g),
		newReportCommand(),
		newVersionCommand(g),
	}
}

// exactArgs is cobra.ExactArgs as a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
		}
		return nil
	}
}

// openStore opens the store named by --store for a command that writes (run), creating it
// when absent.
func (g *GlobalOptions) openStore() (*artifacts.Badger, error) {
	return artifacts.Open(g.Store)
}

// openStoreRead opens the store named by --store for a command that only reads: it must
// exist, and Badger is opened read-only (beside a running pipe, or on a read-only mount).
func (g *GlobalOptions) openStoreRead() (*artifacts.Badger, error) {
	return artifacts.Open(g.Store, artifacts.ReadOnly())
}

// openStoreMaintenance opens the existing store named by --store for gc or verify --repair,
// which may release the store's reserve file on a full disk.
func (g *GlobalOptions) openStoreMaintenance() (*artifacts.Badger, error) {
	if probe, err := artifacts.Open(g.Store, artifacts.ReadOnly()); err == nil {
		_ = probe.Close() // opened read-only to check the store exists: nothing to flush
	} else if errors.Is(err, artifacts.ErrStoreMissing) {
		return nil, err
	}
	return artifacts.Open(g.Store, artifacts.Maintenance())
}

// closeStore closes a store that a command wrote to when the command returns: a failed
// close (Badger could not flush its memtable or release the folder) becomes the command's
// error unless it already has one.
func closeStore(store artifacts.Store, err *error) {
	if cerr := store.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}
