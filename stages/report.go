package stages

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/pipe-ahl/pipe/ahl/metrics"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// reportVersion is the report stage's code version (part of its cache key). Bump it when the
// results table changes meaning. 2: the results hold the mean-over-seen-classes rows. 3: the
// results hold the train instances' validation AUROC (metric val_auroc). 4: the
// mean-over-seen-classes rows include val_auroc's classes real and pseudo.
const reportVersion = 4

// ReportParams configures the report stage, which gathers every evaluate instance (and, when
// the DAG lists it in needs, every train instance) of a DAG into one table.
type ReportParams struct {
	// Replicates are the matrix keys whose values are repetitions of one experiment; the
	// report averages over them. Default ["seed"].
	Replicates []string `json:"replicates"`
	// MethodKey is the matrix key that names the method (a column of the report, not part of
	// the setting). Default "method". When an instance has no such key, the method comes
	// from the evaluated model's metadata (see modelMethodKey).
	MethodKey string `json:"method_key"`
	// Setting is a label put in front of every instance's setting, for what the matrix does
	// not say (e.g. "general M=${M}" when the protocol and M are DAG vars).
	Setting string `json:"setting"`
	// Sweep names matrix keys swept to show their effect (the paper's sensitivity figure:
	// ["T", "C"]). For each, the results get, per value, method and metric (class all), the
	// mean over every other swept key's values, under the setting "<rest> sweep=T T=5 C=mean"; std
	// is over those settings' means and n their number. Omitted from the key when empty.
	Sweep []string `json:"sweep,omitempty"`
}

// Validate checks the report params.
func (p *ReportParams) Validate() error {
	if p.MethodKey == "" {
		return fmt.Errorf("method_key: must not be empty")
	}
	for _, r := range p.Replicates {
		if r == "" {
			return fmt.Errorf("replicates: empty key")
		}
		if r == p.MethodKey {
			return fmt.Errorf("replicates: %q is also method_key", r)
		}
	}
	for _, k := range p.Sweep {
		if k == "" || k == p.MethodKey || slices.Contains(p.Replicates, k) {
			return fmt.Errorf("sweep: %q must be a matrix key other than the method and the replicates", k)
		}
	}
	return nil
}

func init() {
	register(kind.Definition{
		Kind:    "report",
		Version: reportVersion,
		Params: func() any {
			return &ReportParams{Replicates: []string{"seed"}, MethodKey: "method"}
		},
		Inputs:  kind.Inputs{Required: []string{"metrics"}, Optional: []string{"roc", "log", "validation"}, Each: true},
		Outputs: []string{"results", "roc", "log"},
		Run:     runReport,
	})
}

// ReportResult is one row of the report stage's results table (tables.Result).
type ReportResult = tables.Result

// reportLabels splits an instance's matrix values into its setting (every key but the
// replicates and the method, as sorted "k=v" pairs), its method and its replicate label.
func reportLabels(p *ReportParams, matrix map[string]string) (setting, method, replicate string) {
	var set, rep []string
	keys := make([]string, 0, len(matrix))
	for k := range matrix {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kv := k + "=" + matrix[k]
		switch {
		case k == p.MethodKey:
			method = matrix[k]
		case slices.Contains(p.Replicates, k):
			rep = append(rep, kv)
		default:
			set = append(set, kv)
		}
	}
	setting = strings.Join(set, " ")
	if setting == "" {
		setting = "default"
	}
	return setting, method, strings.Join(rep, " ")
}

func runReport(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*ReportParams)
	type key struct{ setting, method, class, metric string }
	values := map[key][]float64{}
	var roc []tables.ReportROC
	var logs []tables.ReportLog
	nEval := 0
	for i := range env.Inputs {
		in := &env.Inputs[i]
		if err := ctx.Err(); err != nil {
			return err
		}
		setting, method, rep := reportLabels(p, in.Matrix)
		if p.Setting != "" {
			if setting == "default" {
				setting = p.Setting
			} else {
				setting = p.Setting + " " + setting
			}
		}
		switch {
		case in.Has("metrics"):
			nEval++
			rows, meta, err := tables.ReadMetrics(ctx, in)
			if err != nil {
				return err
			}
			if method == "" {
				method = meta.MethodLabel()
			}
			for _, r := range rows {
				k := key{setting, method, r.Class, r.Metric}
				values[k] = append(values[k], r.Value)
			}
			if in.Has("roc") {
				points, err := tables.ReadROC(ctx, in)
				if err != nil {
					return err
				}
				for _, pt := range points {
					roc = append(roc, tables.ReportROC{Setting: setting, Method: method, Replicate: rep, Class: pt.Class, FPR: pt.FPR, TPR: pt.TPR})
				}
			}
		case in.Has("log"):
			rows, meta, err := tables.ReadTrainLog(ctx, in)
			if err != nil {
				return err
			}
			if method == "" {
				method = meta.MethodLabel()
			}
			for _, r := range rows {
				logs = append(logs, tables.ReportLog{Setting: setting, Method: method, Replicate: rep, LogRow: r})
			}
			if in.Has("validation") {
				val, _, err := tables.ReadValidation(ctx, in)
				if err != nil {
					return err
				}
				for _, r := range val {
					k := key{setting, method, r.Class, ValidationPrefix + r.Metric}
					values[k] = append(values[k], r.Value)
				}
			}
		default:
			return fmt.Errorf("input %s has neither a metrics nor a log output (outputs %v); needs evaluate (and optionally train) stages", in.ID(), in.Outputs)
		}
	}
	if nEval == 0 {
		return errors.New("no evaluate instance among the inputs (needs an evaluate stage and gather: true)")
	}

	keys := make([]key, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		if a.setting != b.setting {
			return a.setting < b.setting
		}
		if a.class != b.class {
			return classLess(a.class, b.class)
		}
		if a.method != b.method {
			return a.method < b.method
		}
		return a.metric < b.metric
	})
	rows := make([]ReportResult, len(keys))
	for i, k := range keys {
		// Mean and sample standard deviation (divisor n - 1; 0 for a single run).
		sum, err := metrics.Summarize(values[k])
		if err != nil {
			return fmt.Errorf("%s %s %s %s: %w", k.setting, k.method, k.class, k.metric, err)
		}
		rows[i] = ReportResult{Setting: k.setting, Method: k.method, Class: k.class, Metric: k.metric, Mean: sum.Mean, Std: sum.Std, N: int64(sum.N)}
	}
	if err := tables.WriteResults(env, SweepMeans(SeenClassMeans(rows), p.Sweep)); err != nil {
		return err
	}
	if err := tables.WriteReportROC(env, roc); err != nil {
		return err
	}
	return tables.WriteReportLog(env, logs)
}

// ValidationPrefix starts the metric of the results rows that hold a train instance's metric
// on the validation split (val_auroc), not on the test set.
const ValidationPrefix = "val_"

// ValidationWarnings returns one line per setting and supervised method whose mean
// validation AUROC is below 0.6 or below knn's in the same setting: a sign that the method
// does worse than the features alone, found without the test labels. The AUROC judged is
// that on the held-out labelled anomalies (class real: real defects) when the setting has
// it; otherwise (M = 1 holds out no labelled anomaly) that of class all, which then holds
// pseudo anomalies only, and the warning says so: a head can separate pseudo anomalies well
// and real defects badly. Such a setting also gets one line saying that its validation saw
// pseudo anomalies only, whatever its figures.
func ValidationWarnings(rows []ReportResult) []string {
	const floor = 0.6
	type sm struct{ setting, method string }
	real := map[sm]bool{}
	for _, r := range rows {
		if r.Metric == ValidationPrefix+"auroc" && r.Class == ValidationReal {
			real[sm{r.Setting, r.Method}] = true
		}
	}
	// judged says whether r is the row that judges its setting and method.
	judged := func(r ReportResult) bool {
		if r.Metric != ValidationPrefix+"auroc" {
			return false
		}
		if real[sm{r.Setting, r.Method}] {
			return r.Class == ValidationReal
		}
		return r.Class == "all"
	}
	knn := map[string]ReportResult{}
	for _, r := range rows {
		if judged(r) && r.Method == MethodKNN {
			knn[r.Setting] = r
		}
	}
	var out []string
	noted := map[string]bool{}
	for _, r := range rows {
		if !judged(r) || real[sm{r.Setting, r.Method}] || noted[r.Setting] {
			continue
		}
		noted[r.Setting] = true
		out = append(out, fmt.Sprintf("%s: the validation split holds no labelled anomaly (M = 1 keeps its one for training), so its AUROC is on pseudo anomalies only and says little about real defects",
			r.Setting))
	}
	for _, r := range rows {
		if !judged(r) || r.Method == MethodKNN {
			continue
		}
		var why []string
		if r.Mean < floor {
			why = append(why, fmt.Sprintf("below %.1f", floor))
		}
		if k, ok := knn[r.Setting]; ok && k.Class == r.Class && r.Mean < k.Mean {
			why = append(why, fmt.Sprintf("below knn's %.3f", k.Mean))
		}
		if len(why) == 0 {
			continue
		}
		on := "on the held-out labelled anomalies (class real)"
		if r.Class != ValidationReal {
			on = "on pseudo anomalies only (no labelled anomaly in the validation split)"
		}
		out = append(out, fmt.Sprintf("%s, method %s: validation AUROC %.3f %s is %s; the supervised method does worse than knn on the same features",
			r.Setting, r.Method, r.Mean, on, strings.Join(why, " and ")))
	}
	for _, r := range rows {
		// A seen_class=mean row averages settings, not runs; its settings have their own lines.
		if r.Metric != ValidationPrefix+MetricHeadWeight || r.Class != ClassFusion || (r.Mean != 0 && r.Std == 0) ||
			strings.HasSuffix(r.Setting, SettingMean) {
			continue
		}
		some := "some"
		if r.Mean == 0 {
			some = "every"
		}
		out = append(out, fmt.Sprintf("%s, method %s: the head's share of the fused score is %.2f ± %.2f over %d run(s): in %s run the head alone ranked the held-out labelled anomalies below chance and was dropped, so that run scores as knn alone",
			r.Setting, r.Method, r.Mean, r.Std, r.N, some))
	}
	return out
}

// SettingMean ends the setting of the rows that average over seen classes.
const SettingMean = "seen_class=mean"

// SeenClassMeans returns rows followed by, for every group of settings that differ only in
// their seen_class (two or more of them), one row per method and metric of class all (and,
// for the validation metrics, of classes real and pseudo too, which every seen class has)
// with the mean over those settings, under the setting "<the rest> seen_class=mean": the
// hard protocol's headline figure is the mean over seen classes. Its std is the sample standard
// deviation of the per-setting means and n the number of settings. The new rows follow the
// order in which their groups first appear in rows.
func SeenClassMeans(rows []ReportResult) []ReportResult {
	type key struct{ rest, method, class, metric string }
	groups := map[key][]float64{}
	var order []key
	for _, r := range rows {
		var rest []string
		has := false
		for _, kv := range strings.Fields(r.Setting) {
			if strings.HasPrefix(kv, "seen_class=") {
				has = true
				continue
			}
			rest = append(rest, kv)
		}
		if !has || (r.Class != "all" && !strings.HasPrefix(r.Metric, ValidationPrefix)) {
			continue
		}
		k := key{strings.Join(rest, " "), r.Method, r.Class, r.Metric}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r.Mean)
	}
	out := append([]ReportResult(nil), rows...)
	for _, k := range order {
		v := groups[k]
		if len(v) < 2 {
			continue
		}
		var m, ss float64
		for _, x := range v {
			m += x
		}
		m /= float64(len(v))
		for _, x := range v {
			ss += (x - m) * (x - m)
		}
		set := strings.TrimSpace(k.rest + " " + SettingMean)
		out = append(out, ReportResult{Setting: set, Method: k.method, Class: k.class, Metric: k.metric,
			Mean: m, Std: math.Sqrt(ss / float64(len(v)-1)), N: int64(len(v))})
	}
	return out
}

// SettingSweep starts the word that marks a sweep row's setting ("sweep=T").
const SettingSweep = "sweep="

// SweepMeans returns rows followed by, for each swept key in sweep (in order) and each of its
// values, one row per method and metric of class all with the mean over the settings that
// have that value (every other swept key's values; the replicates are already averaged).
// The new row's setting is the settings' other words, then "sweep=K K=V", then "X=mean" for each
// other swept key X. Its std is the sample standard deviation of the settings' means (0 for
// one) and n their number. Rows of seen-class means are not swept.
func SweepMeans(rows []ReportResult, sweep []string) []ReportResult {
	out := append([]ReportResult(nil), rows...)
	for _, v := range sweep {
		type key struct{ rest, val, method, metric string }
		groups := map[key][]float64{}
		var order []key
		for _, r := range rows {
			if r.Class != "all" || strings.Contains(r.Setting, SettingMean) {
				continue
			}
			var rest []string
			val, has := "", false
			for _, w := range strings.Fields(r.Setting) {
				name, x, ok := strings.Cut(w, "=")
				switch {
				case ok && name == v:
					val, has = x, true
				case ok && slices.Contains(sweep, name):
				default:
					rest = append(rest, w)
				}
			}
			if !has {
				continue
			}
			k := key{strings.Join(rest, " "), val, r.Method, r.Metric}
			if _, ok := groups[k]; !ok {
				order = append(order, k)
			}
			groups[k] = append(groups[k], r.Mean)
		}
		for _, k := range order {
			set := []string{}
			if k.rest != "" {
				set = append(set, k.rest)
			}
			set = append(set, SettingSweep+v, v+"="+k.val)
			for _, o := range sweep {
				if o != v {
					set = append(set, o+"=mean")
				}
			}
			m, sd := meanStd(groups[k])
			out = append(out, ReportResult{Setting: strings.Join(set, " "), Method: k.method, Class: "all", Metric: k.metric,
				Mean: m, Std: sd, N: int64(len(groups[k]))})
		}
	}
	return out
}

// meanStd returns the mean and sample standard deviation (0 for one value) of v.
func meanStd(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	if len(v) < 2 {
		return mean, 0
	}
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(ss / float64(len(v)-1))
}

// classLess orders classes with "all" first, then by name.
func classLess(a, b string) bool {
	if (a == "all") != (b == "all") {
		return a == "all"
	}
	return a < b
}

// ReportTables are the latest outputs of a DAG's report stage, read into owned rows.
type ReportTables struct {
	// Manifest is the report stage instance's manifest (when and from what it was made).
	Manifest artifacts.Manifest
	// Results, ROC and Log hold the rows of the results, roc and log tables (ROC and Log are
	// empty when the stored report predates them).
	Results []ReportResult
	ROC     []tables.ReportROC
	Log     []tables.ReportLog
}

// LoadReport reads the latest outputs of the report stage `stage` of DAG `dag` through the
// store's heads. It fails with a message that says to run the DAG first when there is none.
func LoadReport(ctx context.Context, s artifacts.Store, dag, stage string) (*ReportTables, error) {
	h, err := s.Head(ctx, dag, stage, "")
	if err != nil {
		if errors.Is(err, artifacts.ErrNotFound) {
			return nil, fmt.Errorf("DAG %s has no results of stage %s in this store yet: run `pipe run` on it first", dag, stage)
		}
		return nil, err
	}
	m, err := s.Manifest(ctx, h.Key)
	if err != nil {
		return nil, fmt.Errorf("DAG %s stage %s: manifest %s: %w", dag, stage, h.Key, err)
	}
	return LoadReportManifest(ctx, s, dag, stage, m)
}

// LoadReportManifest reads the outputs of the report stage instance whose manifest is m
// (found by its cache key); dag and stage name it in errors.
func LoadReportManifest(ctx context.Context, s artifacts.Store, dag, stage string, m artifacts.Manifest) (*ReportTables, error) {
	var err error
	out := &ReportTables{Manifest: m}
	res, ok := m.Outputs["results"]
	if !ok {
		return nil, fmt.Errorf("DAG %s stage %s (kind %s) has no results output; is it a report stage?", dag, stage, m.Kind)
	}
	if out.Results, err = tables.LoadResults(ctx, s, res.Digest); err != nil {
		return nil, fmt.Errorf("DAG %s stage %s results: %w", dag, stage, err)
	}
	if o, ok := m.Outputs["roc"]; ok {
		if out.ROC, err = tables.LoadReportROC(ctx, s, o.Digest); err != nil {
			return nil, fmt.Errorf("DAG %s stage %s roc: %w", dag, stage, err)
		}
	}
	if o, ok := m.Outputs["log"]; ok {
		if out.Log, err = tables.LoadReportLog(ctx, s, o.Digest); err != nil {
			return nil, fmt.Errorf("DAG %s stage %s log: %w", dag, stage, err)
		}
	}
	return out, nil
}
