package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/pipeline"
)

// VersionOptions holds the flags of `pipe version`.
type VersionOptions struct{}

func newVersionCommand(g *GlobalOptions) *cobra.Command {
	var opts VersionOptions
	return &cobra.Command{
		Use:   "version",
		Short: "Print pipe's version and the code version of every stage kind",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runVersion(g, opts)
		},
	}
}

func runVersion(g *GlobalOptions, _ VersionOptions) error {
	version, goVersion := "(devel)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				version += " " + s.Value[:12]
			}
		}
	}
	fmt.Fprintf(g.Stdout, "pipe %s %s, cache key schema %d\n", version, goVersion, pipeline.SchemaVersion)
	for _, k := range kind.Kinds() {
		d, _ := kind.Lookup(k)
		fmt.Fprintf(g.Stdout, "  %-12s v%d\n", k, d.Version)
	}
	return nil
}
