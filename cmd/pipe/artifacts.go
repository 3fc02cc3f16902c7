package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/spf13/cobra"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/pipeline"
)

func newArtifactsCommand(g *GlobalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "artifacts",
		Short: "List, show, export and verify stored artifacts",
		Long: `An artifact is one output table of one stage instance, stored as Arrow IPC bytes and
named by their sha256 digest. REF is a digest prefix (at least 4 hex digits) or
DAG:stage[/output] for the latest run of a stage; DAG is a DAG name or a DAG file, and a
matrix instance is named in brackets: demo:train[seed=1]/model.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newArtifactsLsCommand(g), newArtifactsShowCommand(g), newArtifactsExportCommand(g),
		newArtifactsVerifyCommand(g))
	return cmd
}

// ArtifactsLsOptions holds the flags of `pipe artifacts ls`.
type ArtifactsLsOptions struct {
	DAG  string
	JSON bool
	Sets []string
}

// AddFlags adds the ls flags to cmd.
func (o *ArtifactsLsOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.DAG, "dag", "", "only artifacts of this DAG: a name (its latest results) or a DAG file (the results of its setting, by key)")
	cmd.Flags().BoolVar(&o.JSON, "json", false, "print a JSON list on stdout")
	addSetFlag(cmd, &o.Sets)
}

// addSetFlag adds --set to a read command: it selects the setting whose results a DAG file
// names, as `pipe run --set` runs it.
func addSetFlag(cmd *cobra.Command, sets *[]string) {
	cmd.Flags().StringArrayVar(sets, "set", nil, "with a DAG file: the results of this setting, as `pipe run --set` makes them (NAME=V, STAGE.PARAM=V, matrix.x=[a,b]); repeatable")
}

func newArtifactsLsCommand(g *GlobalOptions) *cobra.Command {
	var opts ArtifactsLsOptions
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List stored artifacts (every output of the latest result of every DAG stage instance)",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runArtifactsLs(cmd.Context(), g, opts)
		},
	}
	opts.AddFlags(cmd)
	return cmd
}

type artifactJSON struct {
	Digest   string    `json:"digest"`
	DAG      string    `json:"dag"`
	Stage    string    `json:"stage"`
	Instance string    `json:"instance"`
	Name     string    `json:"name"`
	Rows     int64     `json:"rows"`
	Bytes    int64     `json:"bytes"`
	Created  time.Time `json:"created"`
}

func runArtifactsLs(ctx context.Context, g *GlobalOptions, opts ArtifactsLsOptions) error {
	dag := ""
	if len(opts.Sets) > 0 && !isDAGFile(opts.DAG) {
		return usagef("artifacts ls: --set needs --dag with a DAG file, got --dag %q", opts.DAG)
	}
	if isDAGFile(opts.DAG) {
		return runArtifactsLsByKey(ctx, g, opts)
	}
	if opts.DAG != "" {
		var err error
		if dag, err = dagName(opts.DAG); err != nil {
			return err
		}
	}
	store, done, err := g.openStoreReadThrough(ctx)
	if err != nil {
		return err
	}
	defer done()
	// Heads carry the names; the manifests they point at carry the content. Several heads
	// (of several DAGs) may share one manifest: each lists it under its own name.
	heads, err := store.Heads(ctx, dag)
	if err != nil {
		return err
	}
	out := []artifactJSON{}
	for _, h := range heads {
		m, err := store.Manifest(ctx, h.Key)
		if errors.Is(err, artifacts.ErrNotFound) {
			fmt.Fprintf(g.Stderr, "pipe: %s:%s%s: %v (run pipe artifacts verify --repair)\n", h.DAG, h.Stage, bracket(h.Instance), err)
			continue
		}
		if err != nil {
			return err
		}
		for name, o := range m.Outputs {
			out = append(out, artifactJSON{string(o.Digest), h.DAG, h.Stage, h.Instance, name, o.Rows, o.Bytes, m.Created})
		}
	}
	return printArtifacts(g, opts, out)
}

// runArtifactsLsByKey lists the outputs of every instance of a DAG file's plan (with
// --set) that has a stored result for that setting, found by key; the others are counted
// on stderr.
func runArtifactsLsByKey(ctx context.Context, g *GlobalOptions, opts ArtifactsLsOptions) error {
	store, done, err := g.openStoreReadThrough(ctx)
	if err != nil {
		return err
	}
	defer done()
	plan, sts, err := planStatus(ctx, store, opts.DAG, opts.Sets)
	if err != nil {
		return err
	}
	out := []artifactJSON{}
	notRun := 0
	for _, st := range sts {
		if st.State != pipeline.Fresh {
			notRun++
			continue
		}
		m, err := store.Manifest(ctx, st.Key)
		if err != nil {
			return err
		}
		for name, o := range m.Outputs {
			out = append(out, artifactJSON{string(o.Digest), plan.DAG, st.Instance.Stage, st.Instance.Label, name, o.Rows, o.Bytes, m.Created})
		}
	}
	if notRun > 0 {
		fmt.Fprintf(g.Stderr, "pipe: %d of %d instances not run for this setting (`%s` lists them)\n", notRun, len(sts), withSets("pipe status "+opts.DAG, opts.Sets))
	}
	return printArtifacts(g, opts, out)
}

// printArtifacts prints ls's rows, sorted, as a table or JSON.
func printArtifacts(g *GlobalOptions, opts ArtifactsLsOptions, out []artifactJSON) error {
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.DAG != b.DAG {
			return a.DAG < b.DAG
		}
		if a.Stage != b.Stage {
			return a.Stage < b.Stage
		}
		if a.Instance != b.Instance {
			return a.Instance < b.Instance
		}
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Created.Before(b.Created)
	})
	if opts.JSON {
		return writeJSON(g.Stdout, out)
	}
	tw := tabwriter.NewWriter(g.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tDAG\tSTAGE\tOUTPUT\tROWS\tBYTES\tCREATED")
	for _, a := range out {
		id := a.Stage + bracket(a.Instance)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", a.Digest[:12], a.DAG, id, a.Name, a.Rows, humanBytes(a.Bytes),
			a.Created.Local().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

// ArtifactsShowOptions holds the flags of `pipe artifacts show`.
type ArtifactsShowOptions struct {
	Rows int
	Sets []string
}

func newArtifactsShowCommand(g *GlobalOptions) *cobra.Command {
	var opts ArtifactsShowOptions
	cmd := &cobra.Command{
		Use:   "show REF",
		Short: "Show an artifact's schema, first rows and lineage (params, inputs, key parts)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runArtifactsShow(cmd.Context(), g, opts, args[0])
		},
	}
	cmd.Flags().IntVar(&opts.Rows, "rows", 10, "print the first `N` rows")
	addSetFlag(cmd, &opts.Sets)
	return cmd
}

func runArtifactsShow(ctx context.Context, g *GlobalOptions, opts ArtifactsShowOptions, ref string) error {
	store, done, err := g.openStoreReadThrough(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, names, heads, err := resolveRef(ctx, store, ref, opts.Sets)
	if err != nil {
		return err
	}
	w := g.Stdout
	for _, name := range names {
		o := m.Outputs[name]
		fmt.Fprintf(w, "artifact %s\n", o.Digest)
		if len(heads) == 0 {
			fmt.Fprintf(w, "  %s (no DAG's latest result), %d rows, %s\n", name, o.Rows, humanBytes(o.Bytes))
		}
		for _, h := range heads {
			fmt.Fprintf(w, "  %s:%s%s/%s, %d rows, %s\n", h.DAG, h.Stage, bracket(h.Instance), name, o.Rows, humanBytes(o.Bytes))
		}
		rec, err := artifacts.Get(ctx, store, o.Digest)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, "schema:")
		for _, f := range rec.Schema().Fields() {
			fmt.Fprintf(w, "  %s: %s\n", f.Name, f.Type)
		}
		err = printRows(w, rec, opts.Rows)
		rec.Release()
		if err != nil {
			return err
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "lineage:")
	fmt.Fprintf(w, "  key      %s\n", m.Key)
	fmt.Fprintf(w, "  kind     %s (code version %d)\n", m.Kind, m.Version)
	params, _ := json.Marshal(m.Params)
	fmt.Fprintf(w, "  params   %s\n", params)
	fmt.Fprintf(w, "  seed     %d\n", m.Seed)
	fmt.Fprintf(w, "  ran      %s in %.2fs\n", m.Created.Local().Format(time.RFC3339), m.Seconds)
	for _, k := range slices.Sorted(maps.Keys(m.Inputs)) {
		fmt.Fprintf(w, "  input    %s %s\n", k, m.Inputs[k])
	}
	fmt.Fprintln(w, "  key lines:")
	for _, l := range pipeline.PartsOf(m).Lines() {
		fmt.Fprintf(w, "    %s\n", l)
	}
	return nil
}

// printRows prints the first n rows of rec as a table, long cells shortened.
func printRows(w io.Writer, rec arrow.RecordBatch, n int) error {
	if n <= 0 {
		return nil
	}
	rows := int(rec.NumRows())
	if n > rows {
		n = rows
	}
	fmt.Fprintf(w, "first %d of %d rows:\n", n, rows)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var head []string
	for _, f := range rec.Schema().Fields() {
		head = append(head, f.Name)
	}
	fmt.Fprintf(tw, "  %s\n", strings.Join(head, "\t"))
	for i := 0; i < n; i++ {
		var cells []string
		for c := 0; c < int(rec.NumCols()); c++ {
			s := rec.Column(c).ValueStr(i)
			if len(s) > 40 {
				s = s[:37] + "..."
			}
			cells = append(cells, s)
		}
		fmt.Fprintf(tw, "  %s\n", strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// ArtifactsExportOptions holds the flags of `pipe artifacts export`.
type ArtifactsExportOptions struct {
	Output string
	Sets   []string
}

func newArtifactsExportCommand(g *GlobalOptions) *cobra.Command {
	var opts ArtifactsExportOptions
	cmd := &cobra.Command{
		Use:   "export REF -o FILE",
		Short: "Write an artifact as an Arrow IPC file (.arrow) or CSV (.csv)",
		Args:  exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runArtifactsExport(cmd.Context(), g, opts, args[0])
		},
	}
	cmd.Flags().StringVarP(&opts.Output, "output", "o", "", "the `FILE` to write: .arrow (Arrow IPC file) or .csv")
	addSetFlag(cmd, &opts.Sets)
	return cmd
}

func runArtifactsExport(ctx context.Context, g *GlobalOptions, opts ArtifactsExportOptions, ref string) error {
	ext := strings.ToLower(filepath.Ext(opts.Output))
	if opts.Output == "" || (ext != ".arrow" && ext != ".csv") {
		return usagef("artifacts export: -o FILE must end in .arrow or .csv, got %q", opts.Output)
	}
	store, done, err := g.openStoreReadThrough(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, names, _, err := resolveRef(ctx, store, ref, opts.Sets)
	if err != nil {
		return err
	}
	if len(names) != 1 {
		return usagef("artifacts export: %s has several outputs (%s); name one, as %s/%s", ref, strings.Join(names, ", "), ref, names[0])
	}
	rec, err := artifacts.Get(ctx, store, m.Outputs[names[0]].Digest)
	if err != nil {
		return err
	}
	defer rec.Release()
	f, err := os.Create(opts.Output)
	if err != nil {
		return err
	}
	if ext == ".arrow" {
		err = artifacts.ExportIPCFile(rec, f)
	} else {
		err = artifacts.ExportCSV(rec, f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(opts.Output) // best effort: the export error is the one to report
		return fmt.Errorf("export %s: %w", opts.Output, err)
	}
	fmt.Fprintf(g.Stderr, "wrote %s (%d rows)\n", opts.Output, rec.NumRows())
	return nil
}

// ArtifactsVerifyOptions holds the flags of `pipe artifacts verify`.
type ArtifactsVerifyOptions struct {
	JSON   bool
	Repair bool
}

func newArtifactsVerifyCommand(g *GlobalOptions) *cobra.Command {
	var opts ArtifactsVerifyOptions
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every blob and check every manifest and head (exit 1 on damage); --repair drops what is damaged",
		Args:  exactArgs(0),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runArtifactsVerify(cmd.Context(), g, opts)
		},
	}
	cmd.Flags().BoolVar(&opts.JSON, "json", false, "print the report as JSON on stdout")
	cmd.Flags().BoolVar(&opts.Repair, "repair", false, "drop damaged blobs and the manifests and heads that name them, so that their stages rerun")
	return cmd
}

func runArtifactsVerify(ctx context.Context, g *GlobalOptions, opts ArtifactsVerifyOptions) (err error) {
	open := g.openStoreRead
	if opts.Repair {
		open = g.openStoreMaintenance
	}
	store, err := open()
	if err != nil {
		return err
	}
	defer closeStore(store, &err) // --repair writes
	var rep artifacts.VerifyReport
	var rr artifacts.RepairReport
	if opts.Repair {
		rep, rr, err = artifacts.Repair(ctx, store)
	} else {
		rep, err = artifacts.Verify(ctx, store)
	}
	if err != nil {
		return err
	}
	if opts.JSON {
		v := any(rep)
		if opts.Repair {
			v = struct {
				artifacts.VerifyReport
				Repaired artifacts.RepairReport `json:"repaired"`
			}{rep, rr}
		}
		if err := writeJSON(g.Stdout, v); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Problems() {
			fmt.Fprintln(g.Stdout, p)
		}
	}
	fmt.Fprintf(g.Stderr, "verify: %d blobs (%s), %d manifests, %d heads", rep.Blobs, humanBytes(rep.Bytes), rep.Manifests, rep.Heads)
	if len(rep.Incomplete) > 0 {
		fmt.Fprintf(g.Stderr, ", %d incomplete writes (harmless; gc removes them)", len(rep.Incomplete))
	}
	switch {
	case rep.OK():
		fmt.Fprintln(g.Stderr, ": clean")
		return nil
	case opts.Repair:
		fmt.Fprintf(g.Stderr, ": %d problems; repaired: dropped %d blobs, %d manifests, %d heads (their stages rerun on the next pipe run)\n",
			len(rep.Problems()), len(rr.Blobs), len(rr.Manifests), len(rr.Heads)+len(rr.HeadKeys))
		return nil
	}
	fmt.Fprintf(g.Stderr, ": %d problems (pipe artifacts verify --repair drops them, so that their stages rerun)\n", len(rep.Problems()))
	return exitCodeError{exitFailed, errSilent}
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// dagName turns a DAG argument (a name, or a DAG file) into the DAG's name.
func dagName(arg string) (string, error) {
	if isDAGFile(arg) {
		f, err := pipeline.ReadFile(arg)
		if err != nil {
			return "", err
		}
		return f.Name, nil
	}
	return arg, nil
}

// resolveRef finds the manifest a REF names, the output names it selects and the heads that
// name that manifest (the REF's own head first, for a DAG:stage REF).
//
// A DAG:stage REF whose DAG is a DAG file names the result of the file's setting (with the
// overrides sets), found by cache key as `pipe status` finds it; one whose DAG is a name
// names that DAG's latest result (its head).
func resolveRef(ctx context.Context, store artifacts.Store, ref string, sets []string) (artifacts.Manifest, []string, []artifacts.Head, error) {
	var m artifacts.Manifest
	var names []string
	var first *artifacts.Head
	var err error
	if i := strings.Index(ref, ":"); i > 0 { // DAG names hold no colon; matrix values may
		var h artifacts.Head
		m, names, h, err = resolveStageRef(ctx, store, ref, ref[:i], ref[i+1:], sets)
		first = &h
	} else {
		if len(sets) > 0 {
			return m, nil, nil, usagef("REF %q: --set needs a DAG:stage REF whose DAG is a DAG file", ref)
		}
		m, names, err = resolveDigestRef(ctx, store, ref)
	}
	if err != nil {
		return m, nil, nil, err
	}
	all, err := store.Heads(ctx, "")
	if err != nil {
		return m, nil, nil, err
	}
	var heads []artifacts.Head
	if first != nil {
		heads = append(heads, *first)
	}
	for _, h := range all {
		if h.Key == m.Key && (first == nil || h != *first) {
			heads = append(heads, h)
		}
	}
	return m, names, heads, nil
}

// resolveDigestRef finds the manifest whose output has a digest starting with ref.
func resolveDigestRef(ctx context.Context, store artifacts.Store, ref string) (artifacts.Manifest, []string, error) {
	prefix := strings.ToLower(ref)
	if len(prefix) < 4 || strings.Trim(prefix, "0123456789abcdef") != "" {
		return artifacts.Manifest{}, nil, usagef("REF %q: want a digest prefix of at least 4 hex digits or DAG:stage[/output]", ref)
	}
	ms, err := store.Manifests(ctx)
	if err != nil {
		return artifacts.Manifest{}, nil, err
	}
	var found []artifacts.Manifest
	var names []string
	digests := map[artifacts.Digest]bool{}
	for _, m := range ms {
		for name, o := range m.Outputs {
			if strings.HasPrefix(string(o.Digest), prefix) {
				found, names = append(found, m), append(names, name)
				digests[o.Digest] = true
			}
		}
	}
	switch {
	case len(digests) == 0:
		return artifacts.Manifest{}, nil, usagef("REF %q: no stored artifact has a digest starting with %s", ref, prefix)
	case len(digests) > 1:
		return artifacts.Manifest{}, nil, usagef("REF %q: %d artifacts have digests starting with %s; give more digits", ref, len(digests), prefix)
	}
	best := 0 // the latest manifest that produced these bytes
	for i := range found {
		if found[i].Created.After(found[best].Created) {
			best = i
		}
	}
	return found[best], names[best : best+1], nil
}

func resolveStageRef(ctx context.Context, store artifacts.Store, ref, dagArg, rest string, sets []string) (artifacts.Manifest, []string, artifacts.Head, error) {
	if len(sets) > 0 && !isDAGFile(dagArg) {
		return artifacts.Manifest{}, nil, artifacts.Head{}, usagef("REF %q: --set needs a DAG file before the colon, got %q", ref, dagArg)
	}
	dag, err := dagName(dagArg)
	if err != nil {
		return artifacts.Manifest{}, nil, artifacts.Head{}, err
	}
	stage, output := rest, ""
	if i := strings.LastIndex(rest, "/"); i > strings.LastIndex(rest, "]") {
		stage, output = rest[:i], rest[i+1:]
	}
	instance, hasInstance := "", false
	if i := strings.Index(stage, "["); i > 0 && strings.HasSuffix(stage, "]") {
		stage, instance, hasInstance = stage[:i], stage[i+1:len(stage)-1], true
	}
	if stage == "" {
		return artifacts.Manifest{}, nil, artifacts.Head{}, usagef("REF %q: want DAG:stage[/output]", ref)
	}
	var head artifacts.Head
	if isDAGFile(dagArg) {
		head, err = headByKey(ctx, store, ref, dagArg, stage, instance, hasInstance, sets)
		if err != nil {
			return artifacts.Manifest{}, nil, artifacts.Head{}, err
		}
	} else if hasInstance {
		head, err = store.Head(ctx, dag, stage, instance)
	} else {
		heads, herr := store.Heads(ctx, dag)
		if herr != nil {
			return artifacts.Manifest{}, nil, artifacts.Head{}, herr
		}
		var matches []artifacts.Head
		for _, h := range heads {
			if h.Stage == stage {
				matches = append(matches, h)
			}
		}
		switch len(matches) {
		case 0:
			err = artifacts.ErrNotFound
		case 1:
			head = matches[0]
		default:
			var labels []string
			for _, h := range matches {
				labels = append(labels, stage+bracket(h.Instance))
			}
			return artifacts.Manifest{}, nil, artifacts.Head{}, usagef("REF %q: stage %s has %d instances; name one: %s", ref, stage, len(matches), strings.Join(labels, ", "))
		}
	}
	if err != nil {
		return artifacts.Manifest{}, nil, artifacts.Head{}, usagef("REF %q: DAG %s has no stored run of stage %s: %v", ref, dag, stage+bracket(instance), err)
	}
	m, err := store.Manifest(ctx, head.Key)
	if err != nil {
		return artifacts.Manifest{}, nil, artifacts.Head{}, err
	}
	var names []string
	for name := range m.Outputs {
		names = append(names, name)
	}
	sort.Strings(names)
	if output != "" {
		if _, ok := m.Outputs[output]; !ok {
			return artifacts.Manifest{}, nil, artifacts.Head{}, usagef("REF %q: stage %s has no output %q (outputs: %s)", ref, stage, output, strings.Join(names, ", "))
		}
		names = []string{output}
	}
	return m, names, head, nil
}

// isDAGFile reports whether a DAG argument names a DAG file rather than a DAG's name.
func isDAGFile(arg string) bool {
	ext := filepath.Ext(arg)
	return ext == ".yaml" || ext == ".yml" || strings.ContainsRune(arg, filepath.Separator)
}

// planStatus compiles a DAG file with the overrides sets and walks it as `pipe status`
// does, giving each instance's key for that setting and whether a result is stored.
func planStatus(ctx context.Context, store artifacts.Store, dagPath string, sets []string) (*pipeline.Plan, []pipeline.InstanceStatus, error) {
	plan, err := loadPlan(dagPath, sets)
	if err != nil {
		return nil, nil, err
	}
	sts, err := pipeline.Status(ctx, plan, pipeline.Options{Store: store})
	if err != nil {
		return nil, nil, err
	}
	return plan, sts, nil
}

// headByKey finds the stored result of one instance of a DAG file's plan (with sets) by its
// key, as a Head naming it; an instance without a result for this setting is an error
// (exit 1) that names the run that makes it.
func headByKey(ctx context.Context, store artifacts.Store, ref, dagPath, stage, instance string, hasInstance bool, sets []string) (artifacts.Head, error) {
	plan, sts, err := planStatus(ctx, store, dagPath, sets)
	if err != nil {
		return artifacts.Head{}, err
	}
	var matches []pipeline.InstanceStatus
	var labels []string
	for _, st := range sts {
		if st.Instance.Stage == stage && (!hasInstance || st.Instance.Label == instance) {
			matches = append(matches, st)
			labels = append(labels, st.Instance.ID())
		}
	}
	switch {
	case len(matches) == 0:
		return artifacts.Head{}, usagef("REF %q: the plan of %s has no instance %s", ref, dagPath, stage+bracket(instance))
	case len(matches) > 1:
		return artifacts.Head{}, usagef("REF %q: stage %s has %d instances; name one: %s", ref, stage, len(matches), strings.Join(labels, ", "))
	}
	st := matches[0]
	if st.State != pipeline.Fresh {
		return artifacts.Head{}, exitCodeError{exitFailed, fmt.Errorf("REF %q: %s not run for this setting (%s %s): run `%s`", ref, st.Instance.ID(), st.State, st.Reason, withSets("pipe run "+dagPath, sets))}
	}
	return artifacts.Head{DAG: plan.DAG, Stage: stage, Instance: st.Instance.Label, Key: st.Key}, nil
}

// withSets appends the --set flags to a command line for a message.
func withSets(cmd string, sets []string) string {
	for _, s := range sets {
		cmd += " --set " + s
	}
	return cmd
}

// bracket returns "[s]", or "" for an empty s (a stage without matrix instances).
func bracket(s string) string {
	if s == "" {
		return ""
	}
	return "[" + s + "]"
}
