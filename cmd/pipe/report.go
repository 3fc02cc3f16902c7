package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
}

// AddFlags registers the options' flags.
func (o *ReportOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.Format, "format", "table", "output format: table, csv or json")
	f.StringVar(&o.Plots, "plots", "", "write PNG plots (ROC curves per method, CDL weights and query loss per epoch) into this folder")
	f.StringVar(&o.Stage, "stage", "", "name of the report stage (default: the DAG's only stage of kind report)")
}

// newReportCommand returns `pipe report DAG`: the results of the DAG's report stage as a
// table like the paper's (rows setting x class, columns method, mean ± std over seeds).
func newReportCommand() *cobra.Command {
	var o ReportOptions
	cmd := &cobra.Command{
		Use:   "report DAG",
		Short: "Print the results of a DAG's report stage (AUROC and AUPRC, mean ± std over seeds)",
		Long: `Report reads the latest results of the DAG's report stage from the store (run the DAG
first) and prints them: --format table (rows setting x class, one column per method,
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
	st, err := artifacts.Open(reportStoreDir(cmd, o), artifacts.ReadOnly())
	if err != nil {
		return err
	}
	defer func() { _ = st.Close() }() // opened read-only: nothing to flush
	rep, err := stages.LoadReport(ctx, st, f.Name, stage)
	if err != nil {
		return err
	}
	switch o.Format {
	case "table":
		fmt.Fprintf(stdout, "%s: results of stage %s (made %s)\n", f.Name, stage, rep.Manifest.Created.UTC().Format("2006-01-02 15:04 UTC"))
		err = writeResultsTable(stdout, rep.Results)
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
	if len(files) == 0 {
		return nil, fmt.Errorf("--plots: the report holds no ROC points or training logs to plot")
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
