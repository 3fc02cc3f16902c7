// Command pipe runs AHL anomaly-detection pipelines as cached, content-addressed DAGs.
// See README.md and DESIGN.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/pipeline"
	"github.com/pipe-ahl/pipe/stages"
)

// Exit codes (DESIGN.md, "CLI").
const (
	exitOK          = 0
	exitFailed      = 1 // a stage failed (or verify found damage)
	exitUsage       = 2 // bad usage or an invalid DAG
	exitLocked      = 3 // another pipe process holds the store
	exitInterrupted = 130
)

// GlobalOptions are the flags every command shares.
type GlobalOptions struct {
	Store string
	// Stdout and Stderr are where data and human messages go.
	Stdout, Stderr io.Writer
}

// usageError marks an error as bad usage (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

func main() {
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
	g := &GlobalOptions{Stdout: stdout, Stderr: stderr}
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
	case errors.Is(err, artifacts.ErrLocked):
		return exitLocked
	case errors.As(err, &ue), pipeline.IsInvalid(err):
		return exitUsage
	case strings.HasPrefix(err.Error(), "unknown command "), strings.HasPrefix(err.Error(), "accepts "),
		strings.HasPrefix(err.Error(), "requires at least "):
		return exitUsage // cobra's own usage errors
	case errors.Is(err, context.Canceled):
		return exitInterrupted
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

Exit codes: 0 ok, 1 a stage failed (or verify found damage), 2 bad usage or invalid
DAG, 3 store locked, 130 interrupted.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	def := os.Getenv("PIPE_STORE")
	if def == "" {
		def = ".pipe/store"
	}
	cmd.PersistentFlags().StringVar(&g.Store, "store", def, "store folder (env PIPE_STORE)")
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

// openStore opens the store named by --store.
func (g *GlobalOptions) openStore() (*artifacts.Badger, error) {
	return artifacts.Open(g.Store)
}
