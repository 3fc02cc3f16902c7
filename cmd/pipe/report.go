package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/pipeline"
	"github.com/pipe-ahl/pipe/stages"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// ReportOptions are the flags of `pipe report`.
type ReportOptions struct {
	Format string // table, csv or json
	Plots  string // folder for PNG plots; "" for none
	Stage  string // the report stage's name; "" for the DAG's only stage of kind report
	Store  string // store folder (tests); "" for the root command's --store, PIPE_STORE or .pipe/store
	Sets   []string
}

// AddFlags registers the options' flags.
func (o *ReportOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Format, "format", "table", "output format: table, csv or json")
	f.StringVar(&o.Plots, "plots", "", "write PNG plots (ROC curves per method, CDL weights and query loss per epoch) into this folder")
	f.StringVar(&o.Stage, "stage", "", "name of the report stage (default: the DAG's only stage of kind report)")
	f.StringArrayVar(&o.Sets, "set", nil, "report the results of this setting, as `pipe run --set` runs it (NAME=V, STAGE.PARAM=V, matrix.x=[a,b]); repeatable")
}

// newReportCommand returns `pipe report DAG`: the results of the DAG's report stage as a
// table like the paper's (rows setting x class, columns method, mean ± std over seeds).
func newReportCommand() *cobra.Command {
	var o ReportOptions
	cmd := &cobra.Command{
		Use:   "report DAG",
		Short: "Print the results of a DAG's report stage (AUROC and AUPRC, mean ± std over seeds)",
		Long: `Report reads the results of the DAG's report stage for the DAG file's setting (or the one
--set gives, as run takes it) from the store, found by cache key, and prints them; a setting
that has not run is an error (exit 1) saying which run makes it. Formats: --format table (rows setting x class, one column per method,
mean ± std over the seeds), csv, or json (a list of {setting, method, class, metric,
mean, std, n}). --plots DIR also writes PNG plots: ROC curves per setting with one colour
per method, and for AHL the per-epoch importance weights w_i and query losses of its tasks.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runReportCommand(cmd.Context(), cmd, o, args[0], cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	o.AddFlags(cmd)
	return cmd
}

// reportStoreDir resolves the store folder: the --store flag (the report command's own, or
// an inherited one), then PIPE_STORE, then .pipe/store.
func reportStoreDir(cmd *cobra.Command, o ReportOptions) string {
	if o.Store != "" {
		return o.Store
	}
	if f := cmd.Flags().Lookup("store"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	if f := cmd.InheritedFlags().Lookup("store"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	if s := os.Getenv("PIPE_STORE"); s != "" {
		return s
	}
	return filepath.Join(".pipe", "store")
}

// reportRemote resolves the remote cache's URL: the root command's --remote, then
// PIPE_REMOTE; "" for none.
func reportRemote(cmd *cobra.Command) string {
	if cmd != nil {
		if f := cmd.InheritedFlags().Lookup("remote"); f != nil && f.Changed {
			return f.Value.String()
		}
	}
	return remoteFromEnv()
}

func runReportCommand(ctx context.Context, cmd *cobra.Command, o ReportOptions, dagPath string, stdout, stderr io.Writer) error {
	if ctx == nil {
		ctx = context.Background()
	}
	switch o.Format {
	case "table", "csv", "json":
	default:
		return usagef("--format %q: want table, csv or json", o.Format)
	}
	f, err := pipeline.ReadFile(dagPath)
	if err != nil {
		return err
	}
	stage := o.Stage
	if stage == "" {
		var found []string
		for _, s := range f.Stages {
			if s.Kind == "report" {
				found = append(found, s.Name)
			}
		}
		if len(found) != 1 {
			return fmt.Errorf("%s: want exactly one stage of kind report, found %d (%s); name one with --stage", dagPath, len(found), strings.Join(found, ", "))
		}
		stage = found[0]
	}
	st, done, err := openReadThrough(ctx, reportStoreDir(cmd, o), reportRemote(cmd))
	if err != nil {
		return err
	}
	defer done()
	rep, err := loadReportByKey(ctx, st, dagPath, f.Name, stage, o.Sets)
	if err != nil {
		return err
	}
	return printReport(o, f.Name, stage, rep, stdout, stderr)
}

// printReport prints the report tables in o.Format and writes o.Plots.
func printReport(o ReportOptions, dag, stage string, rep *stages.ReportTables, stdout, stderr io.Writer) error {
	var err error
	switch o.Format {
	case "table":
		fmt.Fprintf(stdout, "%s: results of stage %s (made %s)\n", dag, stage, rep.Manifest.Created.UTC().Format("2006-01-02 15:04 UTC"))
		main, sweeps := splitSweepRows(rep.Results)
		err = writeResultsTable(stdout, main)
		if err == nil {
			err = writeSweepTables(stdout, sweeps)
		}
	case "csv":
		err = writeResultsCSV(stdout, rep.Results)
	case "json":
		err = writeResultsJSON(stdout, rep.Results)
	}
	if err != nil {
		return err
	}
	for _, w := range stages.ValidationWarnings(rep.Results) {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	if o.Plots != "" {
		files, err := writeReportPlots(o.Plots, rep)
		if err != nil {
			return err
		}
		for _, p := range files {
			fmt.Fprintf(stderr, "wrote %s\n", p)
		}
	}
	return nil
}

// loadReportByKey finds the report stage's results for the DAG file's setting with the
// overrides sets: it compiles the plan as `pipe run` would, walks it as `pipe status` does
// (stored manifests give each instance's output digests, hence the next one's key), and
// reads the report instance's manifest by key. Heads are not used: they name the latest
// run, which may have had other settings.
func loadReportByKey(ctx context.Context, st artifacts.Store, dagPath, dag, stage string, sets []string) (*stages.ReportTables, error) {
	plan, err := loadPlan(dagPath, sets)
	if err != nil {
		return nil, err
	}
	sts, err := pipeline.Status(ctx, plan, pipeline.Options{Store: st})
	if err != nil {
		return nil, err
	}
	runCmd := withSets("pipe run "+dagPath, sets)
	var firstErr string
	for _, s := range sts {
		if s.State == pipeline.Errored && firstErr == "" {
			firstErr = s.Instance.ID() + ": " + s.Reason
		}
		if s.Instance.Stage != stage {
			continue
		}
		if s.State != pipeline.Fresh {
			why := s.Reason
			if firstErr != "" {
				why = firstErr
			}
			return nil, exitCodeError{exitFailed, fmt.Errorf("%s: stage %s not run for this setting (%s %s): run `%s`", dag, stage, s.State, why, runCmd)}
		}
		m, err := st.Manifest(ctx, s.Key)
		if err != nil {
			return nil, fmt.Errorf("DAG %s stage %s: manifest %s: %w", dag, stage, s.Key, err)
		}
		return stages.LoadReportManifest(ctx, st, dag, stage, m)
	}
	return nil, fmt.Errorf("%s: no instance of stage %s in the plan", dagPath, stage)
}

// splitSweepRows separates the report's sweep rows (setting "... sweep=T T=5 C=mean") from
// the others, grouping them by swept key in order of appearance.
func splitSweepRows(rows []stages.ReportResult) (main []stages.ReportResult, sweeps map[string][]stages.ReportResult) {
	sweeps = map[string][]stages.ReportResult{}
	for _, r := range rows {
		v := sweepKey(r.Setting)
		if v == "" {
			main = append(main, r)
			continue
		}
		sweeps[v] = append(sweeps[v], r)
	}
	return main, sweeps
}

// sweepKey returns the swept key of a sweep row's setting ("T" for "sweep=T T=5 C=mean"),
// or "".
func sweepKey(setting string) string {
	for _, w := range strings.Fields(setting) {
		if v, ok := strings.CutPrefix(w, stages.SettingSweep); ok {
			return v
		}
	}
	return ""
}

// sweepValue returns the value of key in a sweep row's setting and the setting's other
// words (without the sweep marker and the "X=mean" words), which name the rest of the setting.
func sweepValue(setting, key string) (value, rest string) {
	var others []string
	for _, w := range strings.Fields(setting) {
		name, x, ok := strings.Cut(w, "=")
		switch {
		case strings.HasPrefix(w, stages.SettingSweep):
		case ok && name == key:
			value = x
		case ok && x == "mean":
		default:
			others = append(others, w)
		}
	}
	return value, strings.Join(others, " ")
}

// lessValue orders matrix values numerically when both are numbers, else as strings.
func lessValue(a, b string) bool {
	x, errA := strconv.ParseFloat(a, 64)
	y, errB := strconv.ParseFloat(b, 64)
	if errA == nil && errB == nil {
		return x < y
	}
	return a < b
}

// writeSweepTables prints, per swept key and metric, a table of its values (rows) by method
// (columns), each cell the mean ± std over the other swept keys' values (seeds averaged
// first): the paper's sensitivity figure as numbers.
func writeSweepTables(w io.Writer, sweeps map[string][]stages.ReportResult) error {
	for _, key := range reportSortedSet(boolSet(sweeps)) {
		rows := sweeps[key]
		metrics, methods := map[string]bool{}, map[string]bool{}
		others := map[string]bool{}
		for _, r := range rows {
			metrics[r.Metric], methods[r.Method] = true, true
			for _, wd := range strings.Fields(r.Setting) {
				if name, x, ok := strings.Cut(wd, "="); ok && x == "mean" {
					others[name] = true
				}
			}
		}
		meths := reportSortedSet(methods)
		over := append(reportSortedSet(others), "seeds")
		for _, met := range reportSortedSet(metrics) {
			type rk struct{ rest, value string }
			cells := map[rk]map[string]stages.ReportResult{}
			var keys []rk
			for _, r := range rows {
				if r.Metric != met {
					continue
				}
				v, rest := sweepValue(r.Setting, key)
				k := rk{rest, v}
				if cells[k] == nil {
					cells[k] = map[string]stages.ReportResult{}
					keys = append(keys, k)
				}
				cells[k][r.Method] = r
			}
			sort.SliceStable(keys, func(i, j int) bool {
				if keys[i].rest != keys[j].rest {
					return keys[i].rest < keys[j].rest
				}
				return lessValue(keys[i].value, keys[j].value)
			})
			fmt.Fprintf(w, "\n%s by %s (mean ± std over %s)\n", strings.ToUpper(met), key, strings.Join(over, ", "))
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "setting\t%s\t%s\n", key, strings.Join(meths, "\t"))
			for _, k := range keys {
				var cols []string
				for _, m := range meths {
					if r, ok := cells[k][m]; ok {
						cols = append(cols, fmt.Sprintf("%.3f ± %.3f", r.Mean, r.Std))
					} else {
						cols = append(cols, "-")
					}
				}
				rest := k.rest
				if rest == "" {
					rest = "-"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", rest, k.value, strings.Join(cols, "\t"))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

func boolSet[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// settingMean is the pseudo setting of the report stage's mean-over-seen-classes rows.
const settingMean = stages.SettingMean

// writeResultsTable prints one block per metric: rows setting x class, one column per
// method, cells "mean ± std" (n runs in the header when all cells agree, else per cell).
func writeResultsTable(w io.Writer, rows []stages.ReportResult) error {
	metrics := map[string]bool{}
	methods := map[string]bool{}
	for _, r := range rows {
		metrics[r.Metric] = true
		methods[r.Method] = true
	}
	mets := reportSortedSet(metrics)
	meths := reportSortedSet(methods)
	type rk struct{ setting, class string }
	for bi, met := range mets {
		cells := map[rk]map[string]stages.ReportResult{}
		var keys []rk
		ns := map[int64]bool{}
		for _, r := range rows {
			if r.Metric != met {
				continue
			}
			k := rk{r.Setting, r.Class}
			if cells[k] == nil {
				cells[k] = map[string]stages.ReportResult{}
				keys = append(keys, k)
			}
			cells[k][r.Method] = r
			if !strings.HasSuffix(r.Setting, settingMean) {
				ns[r.N] = true
			}
		}
		sort.SliceStable(keys, func(i, j int) bool {
			a, b := keys[i], keys[j]
			am, bm := strings.HasSuffix(a.setting, settingMean), strings.HasSuffix(b.setting, settingMean)
			if am != bm {
				return !am
			}
			if a.setting != b.setting {
				return a.setting < b.setting
			}
			if (a.class == "all") != (b.class == "all") {
				return a.class == "all"
			}
			return a.class < b.class
		})
		if bi > 0 {
			fmt.Fprintln(w)
		}
		runs := "mean ± std over seeds"
		if len(ns) == 1 {
			for n := range ns {
				runs = fmt.Sprintf("mean ± std over %d seed(s)", n)
			}
		}
		fmt.Fprintf(w, "%s (%s)\n", strings.ToUpper(met), runs)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "setting\tclass\t%s\n", strings.Join(meths, "\t"))
		for _, k := range keys {
			var cols []string
			for _, m := range meths {
				r, ok := cells[k][m]
				switch {
				case !ok:
					cols = append(cols, "-")
				case len(ns) == 1 || strings.HasSuffix(k.setting, settingMean):
					cols = append(cols, fmt.Sprintf("%.3f ± %.3f", r.Mean, r.Std))
				default:
					cols = append(cols, fmt.Sprintf("%.3f ± %.3f (n=%d)", r.Mean, r.Std, r.N))
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.setting, k.class, strings.Join(cols, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func reportSortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// writeResultsCSV writes the results table as CSV with a header row.
func writeResultsCSV(w io.Writer, rows []stages.ReportResult) error {
	cw := csv.NewWriter(w)
	if err := cw.Write([]string{"setting", "method", "class", "metric", "mean", "std", "n"}); err != nil {
		return err
	}
	for _, r := range rows {
		rec := []string{r.Setting, r.Method, r.Class, r.Metric,
			strconv.FormatFloat(r.Mean, 'g', -1, 64), strconv.FormatFloat(r.Std, 'g', -1, 64), strconv.FormatInt(r.N, 10)}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// writeResultsJSON writes the results as a JSON list of {setting, method, class, metric,
// mean, std, n}.
func writeResultsJSON(w io.Writer, rows []stages.ReportResult) error {
	if rows == nil {
		rows = []stages.ReportResult{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

// reportPlotName turns a setting (and a suffix) into a file name: letters, digits, '-', '_', '.'.
func reportPlotName(parts ...string) string {
	s := strings.Join(parts, "_")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '.':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String() + ".png"
}

// writeReportPlots writes, into dir, one ROC plot per setting (class all; one colour per
// method, one line per seed) and, per setting and method whose log holds per-task weights
// (AHL's CDL), one plot of the weights w_i and one of the query losses per epoch (first
// replicate). It returns the files written.
func writeReportPlots(dir string, rep *stages.ReportTables) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var files []string
	if len(rep.ROC) > 0 {
		fs, err := writeROCPlots(dir, rep.ROC)
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
	}
	if len(rep.Log) > 0 {
		fs, err := writeLogPlots(dir, rep.Log)
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
	}
	if _, sweeps := splitSweepRows(rep.Results); len(sweeps) > 0 {
		fs, err := writeSweepPlots(dir, sweeps)
		if err != nil {
			return nil, err
		}
		files = append(files, fs...)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("--plots: the report holds no ROC points or training logs to plot")
	}
	return files, nil
}

// writeSweepPlots writes, per swept key and setting rest, the AUROC (mean over the other
// swept keys) against the key's values, one line per method: the paper's sensitivity
// figure. Non-numeric values are placed at 0, 1, 2, ... in order.
func writeSweepPlots(dir string, sweeps map[string][]stages.ReportResult) ([]string, error) {
	var files []string
	for _, key := range reportSortedSet(boolSet(sweeps)) {
		type line struct{ rest, method string }
		pts := map[line][][2]string{}
		var lines []line
		values := map[string]bool{}
		for _, r := range sweeps[key] {
			if r.Metric != "auroc" {
				continue
			}
			v, rest := sweepValue(r.Setting, key)
			l := line{rest, r.Method}
			if _, ok := pts[l]; !ok {
				lines = append(lines, l)
			}
			pts[l] = append(pts[l], [2]string{v, strconv.FormatFloat(r.Mean, 'g', -1, 64)})
			values[v] = true
		}
		if len(lines) == 0 {
			continue
		}
		vals := reportSortedSet(values)
		sort.SliceStable(vals, func(i, j int) bool { return lessValue(vals[i], vals[j]) })
		numeric := true
		for _, v := range vals {
			if _, err := strconv.ParseFloat(v, 64); err != nil {
				numeric = false
			}
		}
		x := func(v string) float64 {
			if numeric {
				f, _ := strconv.ParseFloat(v, 64)
				return f
			}
			return float64(slices.Index(vals, v))
		}
		sort.SliceStable(lines, func(i, j int) bool {
			if lines[i].rest != lines[j].rest {
				return lines[i].rest < lines[j].rest
			}
			return lines[i].method < lines[j].method
		})
		p := plot.New()
		p.Title.Text = "AUROC by " + key
		p.X.Label.Text = key
		p.Y.Label.Text = "AUROC (mean over the other swept values and seeds)"
		p.Legend.Top = false
		p.Legend.Left = false
		for i, l := range lines {
			var xy plotter.XYs
			for _, pt := range pts[l] {
				y, _ := strconv.ParseFloat(pt[1], 64)
				xy = append(xy, plotter.XY{X: x(pt[0]), Y: y})
			}
			sort.Slice(xy, func(a, b int) bool { return xy[a].X < xy[b].X })
			lp, sc, err := plotter.NewLinePoints(xy)
			if err != nil {
				return nil, err
			}
			lp.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
			lp.Width = vg.Points(1.2)
			p.Add(lp, sc)
			label := l.method
			if l.rest != "" {
				label = l.rest + " " + l.method
			}
			p.Legend.Add(label, lp, sc)
		}
		name := filepath.Join(dir, reportPlotName("sweep", key))
		if err := p.Save(5*vg.Inch, 4*vg.Inch, name); err != nil {
			return nil, err
		}
		files = append(files, name)
	}
	return files, nil
}

func writeROCPlots(dir string, roc []tables.ReportROC) ([]string, error) {
	type curve struct{ method, rep string }
	bySetting := map[string]map[curve]plotter.XYs{}
	methods := map[string]bool{}
	for _, r := range roc {
		if r.Class != "all" {
			continue
		}
		if bySetting[r.Setting] == nil {
			bySetting[r.Setting] = map[curve]plotter.XYs{}
		}
		c := curve{r.Method, r.Replicate}
		bySetting[r.Setting][c] = append(bySetting[r.Setting][c], plotter.XY{X: r.FPR, Y: r.TPR})
		methods[r.Method] = true
	}
	meths := reportSortedSet(methods)
	var files []string
	for _, s := range reportSortedKeys(bySetting) {
		p := plot.New()
		p.Title.Text = "ROC, " + s
		p.X.Label.Text = "false positive rate"
		p.Y.Label.Text = "true positive rate"
		p.X.Min, p.X.Max, p.Y.Min, p.Y.Max = 0, 1, 0, 1
		p.Legend.Top = false
		p.Legend.Left = false
		var curves []curve
		for c := range bySetting[s] {
			curves = append(curves, c)
		}
		sort.Slice(curves, func(i, j int) bool {
			if curves[i].method != curves[j].method {
				return curves[i].method < curves[j].method
			}
			return curves[i].rep < curves[j].rep
		})
		legend := map[string]bool{}
		for _, c := range curves {
			l, err := plotter.NewLine(bySetting[s][c])
			if err != nil {
				return nil, err
			}
			mi := reportIndexOf(meths, c.method)
			l.Color = plotutil.Color(mi)
			l.Width = vg.Points(1.2)
			p.Add(l)
			if !legend[c.method] {
				p.Legend.Add(c.method, l)
				legend[c.method] = true
			}
		}
		diag, _ := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: 1, Y: 1}})
		diag.Dashes = plotutil.Dashes(1)
		diag.Width = vg.Points(0.5)
		p.Add(diag)
		name := filepath.Join(dir, reportPlotName("roc", s))
		if err := p.Save(5*vg.Inch, 5*vg.Inch, name); err != nil {
			return nil, err
		}
		files = append(files, name)
	}
	return files, nil
}

func writeLogPlots(dir string, lg []tables.ReportLog) ([]string, error) {
	type run struct{ setting, method string }
	first := map[run]string{} // the first replicate of each run, in sorted order
	for _, l := range lg {
		r := run{l.Setting, l.Method}
		if f, ok := first[r]; !ok || l.Replicate < f {
			first[r] = l.Replicate
		}
	}
	var runs []run
	for r := range first {
		runs = append(runs, r)
	}
	sort.Slice(runs, func(i, j int) bool {
		if runs[i].setting != runs[j].setting {
			return runs[i].setting < runs[j].setting
		}
		return runs[i].method < runs[j].method
	})
	var files []string
	for _, r := range runs {
		weights := map[int64]plotter.XYs{}
		losses := map[int64]plotter.XYs{}
		for _, l := range lg {
			if l.Setting != r.setting || l.Method != r.method || l.Replicate != first[r] || l.Task < 0 {
				continue
			}
			weights[l.Task] = append(weights[l.Task], plotter.XY{X: float64(l.Epoch), Y: l.Weight})
			losses[l.Task] = append(losses[l.Task], plotter.XY{X: float64(l.Epoch), Y: l.QueryLoss})
		}
		if len(weights) < 2 {
			continue // one task (a method without CDL): nothing to compare
		}
		title := fmt.Sprintf("%s, %s (%s)", r.method, r.setting, first[r])
		for _, what := range []struct {
			name, ylabel string
			data         map[int64]plotter.XYs
		}{{"weights", "importance weight w_i", weights}, {"query_loss", "query loss", losses}} {
			p := plot.New()
			p.Title.Text = title
			p.X.Label.Text = "epoch"
			p.Y.Label.Text = what.ylabel
			var tasks []int64
			for t := range what.data {
				tasks = append(tasks, t)
			}
			sort.Slice(tasks, func(i, j int) bool { return tasks[i] < tasks[j] })
			for _, t := range tasks {
				xy := what.data[t]
				sort.Slice(xy, func(i, j int) bool { return xy[i].X < xy[j].X })
				l, err := plotter.NewLine(xy)
				if err != nil {
					return nil, err
				}
				l.Color = plotutil.Color(int(t))
				l.Width = vg.Points(1.2)
				p.Add(l)
				label := fmt.Sprintf("task %d", t)
				if t == 0 {
					label += " (holistic)"
				}
				p.Legend.Add(label, l)
			}
			p.Legend.Top = true
			name := filepath.Join(dir, reportPlotName(what.name, r.setting, r.method))
			if err := p.Save(6*vg.Inch, 4*vg.Inch, name); err != nil {
				return nil, err
			}
			files = append(files, name)
		}
	}
	return files, nil
}

func reportSortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func reportIndexOf(xs []string, x string) int {
	for i, v := range xs {
		if v == x {
			return i
		}
	}
	return 0
}
