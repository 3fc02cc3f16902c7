package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
)

// GCOptions holds the flags of `pipe gc`.
type GCOptions struct {
	DryRun bool
	JSON   bool
}

// AddFlags adds the gc flags to cmd.
func (o *GCOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&o.DryRun, "dry-run", false, "list what would be deleted; delete nothing")
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print the gc report as JSON on stdout")
}

func newGCCommand(g *GlobalOptions) *cobra.Command {
	var opts GCOptions
	cmd := &cobra.Command{
		Use:   "gc",
		Short: "Delete blobs and manifests that no head and no pinned run reaches",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGC(cmd.Context(), g, opts)
		},
	}
	opts.AddFlags(cmd)
	return cmd
}

func runGC(ctx context.Context, g *GlobalOptions, opts GCOptions) (err error) {
	open := g.openStoreMaintenance
	if opts.DryRun {
		open = g.openStoreRead
	}
	store, err := open()
	if err != nil {
		return err
	}
	defer closeStore(store, &err) // gc deletes
	rep, err := artifacts.GC(ctx, store, opts.DryRun)
	if err != nil {
		return err
	}
	if opts.JSON {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(g.Stdout, "%s\n", b)
		return nil
	}
	verb := "deleted"
	if opts.DryRun {
		verb = "would delete"
	}
	for _, b := range rep.Blobs {
		state := ""
		if !b.Complete {
			state = " (incomplete write)"
		}
		fmt.Fprintf(g.Stdout, "%s blob %s %s%s\n", verb, b.Digest, humanBytes(b.Bytes), state)
	}
	for _, m := range rep.Manifests {
		fmt.Fprintf(g.Stdout, "%s manifest %s\n", verb, m)
	}
	fmt.Fprintf(g.Stderr, "gc: %s %d blobs (%s) and %d manifests; kept %d blobs (%s) and %d manifests; disk %s -> %s\n",
		verb, rep.BlobsDeleted, humanBytes(rep.BytesDeleted), rep.ManifestsDeleted,
		rep.BlobsKept, humanBytes(rep.BytesKept), rep.ManifestsKept, humanBytes(rep.DiskBefore), humanBytes(rep.DiskAfter))
	if rep.BlobsRecent > 0 {
		fmt.Fprintf(g.Stderr, "gc: kept %d blobs that no manifest names yet but were stored in the last hour (a run may be about to name them); a later gc deletes them\n", rep.BlobsRecent)
	}
	return nil
}

// humanBytes formats a byte count with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
