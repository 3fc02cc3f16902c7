package stages

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/pipe-ahl/pipe/ahl/baseline"
	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/cdl"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/fusion"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/ahl/knn"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// trainVersion is the train stage's code version (part of its cache key). Version 2 drops the
// log's wall-clock seconds column, which made the log's bytes differ from run to run; 3 adds
// the validation table; 4 names its labelled-anomaly class real (was seen); 5 adds fusion
// (train.fusion) with its guard against a head below chance, and the validation table's
// head_weight row of a fused model.
const trainVersion = 5

// Training methods (docs/algorithm.md, "CDL" and "Baselines").
const (
	MethodAHL      = "ahl"      // CDL over the HADG tasks
	MethodDevnet   = "devnet"   // the same head trained directly on all training data
	MethodKNN      = "knn"      // unsupervised: distance to the nearest training normals
	MethodEnsemble = "ensemble" // T heads trained independently on the T tasks, scores averaged
)

// TrainParams configures the train stage. One kind serves every method so that a DAG can put
// `method` in its matrix and compare methods on the same features and tasks.
type TrainParams struct {
	// Method is ahl, devnet, knn or ensemble.
	Method string `json:"method"`
	// Head is the scoring head, a kind registered with ahl/heads: devnet or dra (ignored by
	// knn).
	Head string `json:"head"`
	// Epochs; 0 takes the method's paper default (ahl 30, devnet and ensemble 50).
	Epochs int `json:"epochs"`
	// CompositeWidth (C') and CompositeStride are dra's head options composite_width and
	// composite_stride, params of their own as DAG files have always spelt them.
	CompositeWidth  int `json:"composite_width"`
	CompositeStride int `json:"composite_stride"`
	// HeadOptions are any other head options by name (heads.Config.Options), for heads
	// whose options have no param of their own.
	HeadOptions map[string]int `json:"head_options,omitempty"`
	// BatchSize is the balanced batch size (48).
	BatchSize int `json:"batch_size"`
	// InnerSteps and QuerySteps are CDL's support SGD steps and query batches per task (20,
	// 20); StepsPerEpoch is direct training's batches per epoch (20).
	InnerSteps    int `json:"inner_steps"`
	QuerySteps    int `json:"query_steps"`
	StepsPerEpoch int `json:"steps_per_epoch"`
	// InnerLR is CDL's SGD rate alpha (2e-4), MetaLR its Adam rate on g (0.005 in the paper),
	// LR direct training's Adam rate (2e-4).
	InnerLR float64 `json:"inner_lr"`
	MetaLR  float64 `json:"meta_lr"`
	LR      float64 `json:"lr"`
	// MetaSteps is CDL's meta updates of g per epoch (1, as paper and code).
	MetaSteps int `json:"meta_steps"`
	// LRDecayEvery is the epochs between learning rate decays (x 0.1) of CDL's meta Adam
	// and of direct training's Adam (10); 0 never decays.
	LRDecayEvery int `json:"lr_decay_every"`
	// K is psi's history length (5); PsiLR its Adam rate (0.02).
	K     int     `json:"k"`
	PsiLR float64 `json:"psi_lr"`
	// Neighbours is knn's k (5).
	Neighbours int `json:"neighbours"`
	// Schedule names a preset of the learning rates above: paper (the paper's, also what an
	// absent schedule gives, so DAGs that predate the param keep their cache keys) or
	// default (chosen on the validation split, docs/algorithm.md "Training schedules").
	// With default the rates are the preset's, and setting lr, meta_lr, inner_lr or
	// lr_decay_every as well is an error.
	Schedule string `json:"schedule,omitempty"`
	// Fusion is "" (a head model scores by its heads alone) or knn: its scores are fused
	// with knn's distances to the training normals (ahl/fusion, docs/algorithm.md "Score
	// fusion"), each standardised on the validation normals, so it needs a validation
	// split. knn itself ignores it.
	Fusion string `json:"fusion,omitempty"`
	// FusionWeight is the head's share w of a fused score, 0 < w <= 1; 0 takes
	// DefaultFusionWeight.
	FusionWeight float64 `json:"fusion_weight,omitempty"`
}

// Training schedules (train.schedule).
const (
	SchedulePaper   = "paper"
	ScheduleDefault = "default"
)

// schedule is a preset of the learning rates of CDL and direct training.
type schedule struct {
	LR, MetaLR, InnerLR float64
	LRDecayEvery        int
}

// paperSchedule is the paper's (AHL: inner SGD 2e-4, meta Adam 0.005; DevNet: Adam 2e-4;
// both x 0.1 every 10 epochs).
func paperSchedule() schedule {
	c, d := cdl.DefaultConfig(), baseline.DefaultDevnet()
	return schedule{LR: d.LR, MetaLR: c.MetaLR, InnerLR: c.InnerLR, LRDecayEvery: c.LRDecayEvery}
}

// defaultSchedule is the one chosen on the validation split's real anomalies (RESULTS.md,
// 2026-11-30 session 2): constant rates, 25x and 10x the paper's Adam rates.
func defaultSchedule() schedule {
	return schedule{LR: 0.005, MetaLR: 0.05, InnerLR: cdl.DefaultConfig().InnerLR, LRDecayEvery: 0}
}

// rates returns p's effective learning rates: the default schedule's when p.Schedule is
// default, otherwise p's own (which start as the paper's).
func (p *TrainParams) rates() schedule {
	if p.Schedule == ScheduleDefault {
		return defaultSchedule()
	}
	return schedule{LR: p.LR, MetaLR: p.MetaLR, InnerLR: p.InnerLR, LRDecayEvery: p.LRDecayEvery}
}

// defaultTrainParams are the paper's values (docs/algorithm.md, the tables of "CDL" and
// "Baselines").
func defaultTrainParams() *TrainParams {
	c, d := cdl.DefaultConfig(), baseline.DefaultDevnet()
	return &TrainParams{Method: MethodAHL, Head: "dra", CompositeWidth: 512, CompositeStride: 3,
		BatchSize: c.BatchSize, InnerSteps: c.InnerSteps, QuerySteps: c.QuerySteps, StepsPerEpoch: d.StepsPerEpoch,
		InnerLR: c.InnerLR, MetaLR: c.MetaLR, LR: d.LR, MetaSteps: c.MetaSteps, LRDecayEvery: c.LRDecayEvery,
		K: c.K, PsiLR: c.PsiLR, Neighbours: knn.DefaultK}
}

// cdlConfig maps p onto CDL's config (AHL's training), seeded with seed.
func (p *TrainParams) cdlConfig(seed uint64, progress func(done, total int)) cdl.Config {
	cfg := cdl.DefaultConfig()
	cfg.Epochs = cmpOr(p.Epochs, cfg.Epochs)
	r := p.rates()
	cfg.BatchSize, cfg.InnerSteps, cfg.QuerySteps = p.BatchSize, p.InnerSteps, p.QuerySteps
	cfg.InnerLR, cfg.MetaLR, cfg.K, cfg.PsiLR = r.InnerLR, r.MetaLR, p.K, p.PsiLR
	cfg.MetaSteps, cfg.LRDecayEvery = p.MetaSteps, r.LRDecayEvery
	cfg.Seed, cfg.Progress = seed, progress
	return cfg
}

// devnetConfig maps p onto direct training's config (the devnet and ensemble baselines).
func (p *TrainParams) devnetConfig(seed uint64, progress func(done, total int)) baseline.DevnetConfig {
	cfg := baseline.DefaultDevnet()
	cfg.Epochs = cmpOr(p.Epochs, cfg.Epochs)
	r := p.rates()
	cfg.StepsPerEpoch, cfg.BatchSize, cfg.LR, cfg.LRDecayEvery = p.StepsPerEpoch, p.BatchSize, r.LR, r.LRDecayEvery
	cfg.Seed, cfg.Progress = seed, progress
	return cfg
}

// headConfig is the config of p's head for maps of c channels: every head option p holds.
func (p *TrainParams) headConfig(c int) heads.Config {
	opts := map[string]int{heads.OptCompositeWidth: p.CompositeWidth, heads.OptCompositeStride: p.CompositeStride}
	for k, v := range p.HeadOptions {
		opts[k] = v
	}
	return heads.Config{Channels: c, Options: opts}
}

// Validate checks the train params: the method, the head and its options (through the heads
// registry), and the configs of CDL and direct training they map onto (every method's, as
// one DAG may put several methods in its matrix).
func (p *TrainParams) Validate() error {
	if _, ok := methods[p.Method]; !ok {
		return fmt.Errorf("method: %q, want ahl, devnet, knn or ensemble", p.Method)
	}
	for k := range p.HeadOptions {
		if k == heads.OptCompositeWidth || k == heads.OptCompositeStride {
			return fmt.Errorf("head_options: %s is a param of its own; set it there", k)
		}
	}
	if err := heads.CheckOptions(p.Head, p.headConfig(0).Options); err != nil {
		return err
	}
	if p.Epochs < 0 {
		return fmt.Errorf("epochs: %d, want >= 0 (0 takes the method's default)", p.Epochs)
	}
	if p.Neighbours < 1 {
		return fmt.Errorf("neighbours: %d, want >= 1", p.Neighbours)
	}
	switch p.Schedule {
	case "", SchedulePaper:
	case ScheduleDefault:
		paper := paperSchedule()
		for _, f := range []struct {
			name      string
			got, want float64
		}{{"lr", p.LR, paper.LR}, {"meta_lr", p.MetaLR, paper.MetaLR}, {"inner_lr", p.InnerLR, paper.InnerLR},
			{"lr_decay_every", float64(p.LRDecayEvery), float64(paper.LRDecayEvery)}} {
			if f.got != f.want {
				return fmt.Errorf("%s: %g with schedule: default, which sets it; drop one of them (or use schedule: paper with your own rates)", f.name, f.got)
			}
		}
	default:
		return fmt.Errorf("schedule: %q, want %s or %s", p.Schedule, SchedulePaper, ScheduleDefault)
	}
	switch p.Fusion {
	case "", FusionKNN:
	case FusionResidual:
		if p.Method != MethodAHL && p.Method != MethodDevnet && p.Method != MethodKNN {
			return fmt.Errorf("fusion: %s trains the head as a residual over knn, which methods ahl and devnet do; method %s does not", p.Fusion, p.Method)
		}
		if p.Head != "devnet" && p.Method != MethodKNN {
			return fmt.Errorf("fusion: %s needs head devnet (its score takes an offset); head is %q", p.Fusion, p.Head)
		}
		if p.FusionWeight != 0 {
			return fmt.Errorf("fusion_weight: %g with fusion: %s, which adds the head's score to knn's at full weight; drop it", p.FusionWeight, p.Fusion)
		}
	default:
		return fmt.Errorf("fusion: %q, want %s, %s or none", p.Fusion, FusionKNN, FusionResidual)
	}
	if p.FusionWeight != 0 && p.Fusion == "" {
		return fmt.Errorf("fusion_weight: %g without fusion; set fusion: %s or drop it", p.FusionWeight, FusionKNN)
	}
	if !(p.FusionWeight >= 0 && p.FusionWeight <= 1) {
		return fmt.Errorf("fusion_weight: %g, want 0 < w <= 1 (the head's share; 0 takes %g)", p.FusionWeight, DefaultFusionWeight)
	}
	if err := p.cdlConfig(0, nil).Validate(); err != nil {
		return err
	}
	return p.devnetConfig(0, nil).Validate()
}

func init() {
	register(kind.Definition{
		Kind:    "train",
		Version: trainVersion,
		Params:  func() any { return defaultTrainParams() },
		Inputs:  kind.Inputs{Required: []string{"images", "features"}, Optional: []string{"tasks", "pseudo"}},
		Outputs: []string{"model", "log", "validation"},
		Run:     runTrain,
	})
}

// trainData is what every method trains on.
type trainData struct {
	// Pool holds the training images' maps, then (for the heads) every pseudo anomaly's.
	Pool fmap.Set
	// Train is the set of training image ids; Normals and Anomalies list them by label, in
	// ingest order.
	Train              map[string]bool
	Normals, Anomalies []string
	// Samples are the HADG tasks' samples, for the methods that train on them.
	Samples []hadg.Sample
	// Offset, when not nil, is one score offset per pool row that the head learns a residual
	// over (train.fusion: knn-residual).
	Offset []float32
}

// trainer trains one method. It returns the model and the log rows (stages/TABLES.md).
type trainer func(ctx context.Context, env *kind.Env, p *TrainParams, d *trainData) (*model, []cdl.LogRow, error)

// method is one training method: its trainer and the optional inputs it reads.
type method struct {
	train  trainer
	tasks  bool // trains on the HADG tasks (the tasks table is required)
	pseudo bool // trains on the pseudo anomalies too, when an input has them
}

// methods holds the train stage's methods by name.
var methods = map[string]method{
	MethodAHL:      {train: trainAHL, tasks: true, pseudo: true},
	MethodDevnet:   {train: trainDevnet, pseudo: true},
	MethodKNN:      {train: trainKNN},
	MethodEnsemble: {train: trainEnsemble, tasks: true, pseudo: true},
}

// RequiredInputs makes the tasks table required for the methods that train on HADG tasks
// (kind.Requirer), so a DAG whose train lacks hadg in needs fails validation.
func (p *TrainParams) RequiredInputs() []string {
	if methods[p.Method].tasks {
		return []string{"tasks"}
	}
	return nil
}

// runTrain trains the model of p.Method on the training images' features (and the pseudo
// anomalies and tasks where the method uses them) and writes the model and log tables.
func runTrain(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*TrainParams)
	meth := methods[p.Method]
	imgs, err := tables.ReadImageIndex(ctx, env)
	if err != nil {
		return err
	}
	d := &trainData{Normals: imgs.TrainNormals(), Anomalies: imgs.TrainAnomalies()}
	if len(d.Normals) == 0 {
		return errors.New("the images table has no training normals")
	}
	d.Train = setOf(append(append([]string(nil), d.Normals...), d.Anomalies...))
	if meth.tasks {
		if d.Samples, err = tables.ReadTasks(ctx, env); err != nil {
			return fmt.Errorf("%w (method %s trains on the HADG tasks)", err, p.Method)
		}
	}
	// The pool: the training images' maps, then every pseudo anomaly's, into one set so
	// that each map is copied once. ReadMaps releases the tables before it returns; a
	// collection then hands their blobs back to the OS, so that they neither stay in the
	// process nor set the collector's heap goal while the model trains (well under a second).
	srcs := []tables.MapSource{{Table: "features", Keep: d.Train}}
	if meth.pseudo && env.Has("pseudo") {
		src := tables.MapSource{Table: "pseudo"}
		if len(imgs.ValNormals()) > 0 {
			// The validation normals' pseudo anomalies are for validate only.
			src.Keep = pseudoOf(d.Normals)
		}
		srcs = append(srcs, src)
	}
	if d.Pool, err = tables.ReadMaps(ctx, env, srcs...); err != nil {
		return err
	}
	debug.FreeOSMemory()
	nReal := 0
	for _, id := range d.Pool.IDs {
		if d.Train[id] {
			nReal++
		}
	}
	if nReal != len(d.Train) {
		return fmt.Errorf("features cover %d of the %d training images", nReal, len(d.Train))
	}
	c := d.Pool.Scales[0].C
	for k, m := range d.Pool.Scales {
		if m.C != c {
			return fmt.Errorf("scale %d has %d channels, scale 0 has %d; the heads need one channel count", k, m.C, c)
		}
	}
	residual := p.Fusion == FusionResidual && p.Method != MethodKNN
	var residualKNN knn.Model
	var residualScale fusion.Scale
	if residual {
		if residualKNN, residualScale, d.Offset, err = residualOffsets(env, p, d); err != nil {
			return err
		}
	}
	m, rows, err := meth.train(ctx, env, p, d)
	if err != nil {
		return err
	}
	val, err := readValidation(ctx, env, imgs.ValNormals(), imgs.ValAnomalies())
	if err != nil {
		return err
	}
	switch {
	case residual:
		if err := finishResidual(env, m, residualKNN, residualScale, d, val); err != nil {
			return err
		}
	case p.Fusion == FusionKNN && p.Method != MethodKNN:
		if err := fuseWithKNN(env, p, m, d, val); err != nil {
			return err
		}
	}
	tm, err := m.encode()
	if err != nil {
		return err
	}
	if err := tables.WriteModel(env, tm); err != nil {
		return err
	}
	valRows, err := validate(env, m, d, val)
	if err != nil {
		return err
	}
	if m.Fusion != nil {
		valRows = append(valRows, tables.Metric{Metric: MetricHeadWeight, Class: ClassFusion, Value: m.Fusion.HeadWeight})
	}
	if err := tables.WriteValidation(env, valRows, tm.Meta); err != nil {
		return err
	}
	// The log holds no wall-clock times: they differ from run to run, and the log must be
	// byte-identical for the same inputs (the manifest records the stage's seconds).
	log := make([]tables.LogRow, len(rows))
	for i, r := range rows {
		log[i] = tables.LogRow{Epoch: int64(r.Epoch), Task: int64(r.Task), QueryLoss: r.QueryLoss, Weight: r.Weight}
	}
	return tables.WriteTrainLog(env, log, tm.Meta)
}

// newHead builds p's head for the pool's channel count through the heads registry, and the
// model that will hold its weights.
func newHead(p *TrainParams, d *trainData) (heads.Head, *model, error) {
	m := &model{Method: p.Method, Head: p.Head, Config: p.headConfig(d.Pool.Scales[0].C)}
	h, err := m.newHead()
	return h, m, err
}

// trainAHL trains the head by CDL over the HADG tasks (docs/algorithm.md, "CDL").
func trainAHL(ctx context.Context, env *kind.Env, p *TrainParams, d *trainData) (*model, []cdl.LogRow, error) {
	head, m, err := newHead(p, d)
	if err != nil {
		return nil, nil, err
	}
	cfg := p.cdlConfig(env.Seed, env.Progress)
	cfg.Offset = d.Offset
	res, err := cdl.Train(ctx, cfg, head, d.Pool, d.Samples)
	if err != nil {
		return nil, nil, err
	}
	m.Thetas = [][]float32{res.Theta}
	for e, w := range res.Weights {
		if e == len(res.Weights)-1 || e%5 == 0 {
			fmt.Fprintf(env.Log, "epoch %d weights %s (%.1fs)\n", e, fmtFloats(w), res.EpochSeconds[e])
		}
	}
	return m, res.Log, nil
}

// trainDevnet trains the head directly on all training data: normals, seen anomalies and
// pseudo anomalies, labelled by kind (docs/algorithm.md, "Baselines"). The log has task 0 and the
// training loss in query_loss.
func trainDevnet(ctx context.Context, env *kind.Env, p *TrainParams, d *trainData) (*model, []cdl.LogRow, error) {
	head, m, err := newHead(p, d)
	if err != nil {
		return nil, nil, err
	}
	lab := make([]int, d.Pool.Len())
	isAnomaly := setOf(d.Anomalies)
	for i, id := range d.Pool.IDs {
		switch {
		case !d.Train[id]:
			lab[i] = heads.Pseudo
		case isAnomaly[id]:
			lab[i] = heads.Seen
		default:
			lab[i] = heads.Normal
		}
	}
	cfg := p.devnetConfig(env.Seed, env.Progress)
	cfg.Offset = d.Offset
	theta, log, err := baseline.Devnet(ctx, cfg, head, d.Pool, batch.AllRows(d.Pool.Len()), lab)
	if err != nil {
		return nil, nil, err
	}
	m.Thetas = [][]float32{theta}
	var rows []cdl.LogRow
	for _, l := range log {
		rows = append(rows, cdl.LogRow{Epoch: l.Epoch, Task: 0, QueryLoss: l.Loss, Weight: 1})
	}
	return m, rows, nil
}

// trainEnsemble trains one head per HADG task, independently (the "+HADG" ablation); the
// log has one task per member, each weighted 1/T.
func trainEnsemble(ctx context.Context, env *kind.Env, p *TrainParams, d *trainData) (*model, []cdl.LogRow, error) {
	head, m, err := newHead(p, d)
	if err != nil {
		return nil, nil, err
	}
	ens, err := baseline.TrainEnsemble(ctx, p.devnetConfig(env.Seed, env.Progress), head, d.Pool, d.Samples)
	if err != nil {
		return nil, nil, err
	}
	m.Thetas = ens.Thetas
	var rows []cdl.LogRow
	for i := range ens.Thetas {
		for _, l := range ens.Logs[i] {
			rows = append(rows, cdl.LogRow{Epoch: l.Epoch, Task: i, QueryLoss: l.Loss, Weight: 1 / float64(len(ens.Thetas))})
		}
	}
	return m, rows, nil
}

// trainKNN fits knn to the training normals' pooled maps; it has no head and no log rows.
func trainKNN(ctx context.Context, env *kind.Env, p *TrainParams, d *trainData) (*model, []cdl.LogRow, error) {
	k, err := fitKNN(d, p.Neighbours)
	if err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(env.Log, "knn over %d training normals (k = %d, %d pooled features)\n", k.N, k.K, k.D)
	return &model{Method: MethodKNN, KNN: k}, nil, nil
}

// fitKNN fits knn with k neighbours to the pooled maps of the training normals.
func fitKNN(d *trainData, k int) (knn.Model, error) {
	return knn.Fit(d.Pool.Gather(rowsOf(d.Pool, d.Normals)).Scales, k)
}

func cmpOr(v, def int) int {
	if v != 0 {
		return v
	}
	return def
}

func fmtFloats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatFloat(x, 'f', 3, 64)
	}
	return "[" + strings.Join(s, " ") + "]"
}
