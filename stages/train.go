package stages

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/baseline"
	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/cdl"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/ahl/knn"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// trainVersion is the train stage's code version (part of its cache key). Version 2 drops the
// log's wall-clock seconds column, which made the log's bytes differ from run to run.
const trainVersion = 2

// Training methods (AHL_SPEC.md, "CDL" and "Baselines").
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
	// Head is the scoring head, devnet or dra (ignored by knn).
	Head string `json:"head"`
	// Epochs; 0 takes the method's paper default (ahl 30, devnet and ensemble 50).
	Epochs int `json:"epochs"`
	// CompositeWidth (C') and CompositeStride configure dra's composite sub-head.
	CompositeWidth  int `json:"composite_width"`
	CompositeStride int `json:"composite_stride"`
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
}

// defaultTrainParams are the paper's values (AHL_SPEC.md, "Paper defaults").
func defaultTrainParams() *TrainParams {
	c, d := cdl.DefaultConfig(), baseline.DefaultDevnet()
	return &TrainParams{Method: MethodAHL, Head: "dra", CompositeWidth: 512, CompositeStride: 3,
		BatchSize: c.BatchSize, InnerSteps: c.InnerSteps, QuerySteps: c.QuerySteps, StepsPerEpoch: d.StepsPerEpoch,
		InnerLR: c.InnerLR, MetaLR: c.MetaLR, LR: d.LR, MetaSteps: c.MetaSteps, LRDecayEvery: c.LRDecayEvery,
		K: c.K, PsiLR: c.PsiLR, Neighbours: knn.DefaultK}
}

// Validate checks the train params.
func (p *TrainParams) Validate() error {
	switch p.Method {
	case MethodAHL, MethodDevnet, MethodKNN, MethodEnsemble:
	default:
		return fmt.Errorf("method: %q, want ahl, devnet, knn or ensemble", p.Method)
	}
	if p.Head != "devnet" && p.Head != "dra" {
		return fmt.Errorf("head: %q, want devnet or dra", p.Head)
	}
	for _, f := range []struct {
		name   string
		v, min int
	}{{"epochs", p.Epochs, 0}, {"composite_width", p.CompositeWidth, 1}, {"composite_stride", p.CompositeStride, 1},
		{"batch_size", p.BatchSize, 1}, {"inner_steps", p.InnerSteps, 0}, {"query_steps", p.QuerySteps, 1},
		{"steps_per_epoch", p.StepsPerEpoch, 1}, {"meta_steps", p.MetaSteps, 1}, {"lr_decay_every", p.LRDecayEvery, 0},
		{"k", p.K, 1}, {"neighbours", p.Neighbours, 1}} {
		if f.v < f.min {
			return fmt.Errorf("%s: %d, want >= %d", f.name, f.v, f.min)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"inner_lr", p.InnerLR}, {"meta_lr", p.MetaLR}, {"lr", p.LR}, {"psi_lr", p.PsiLR}} {
		if !(f.v > 0) {
			return fmt.Errorf("%s: %g, want > 0", f.name, f.v)
		}
	}
	return nil
}

func init() {
	register(kind.Definition{
		Kind:    "train",
		Version: trainVersion,
		Params:  func() any { return defaultTrainParams() },
		Inputs:  kind.Inputs{Required: []string{"images", "features"}, Optional: []string{"tasks", "pseudo"}},
		Outputs: []string{"model", "log"},
		Run:     runTrain,
	})
}

// Schema metadata of the model table beyond modelMethodKey and modelHeadKey.
const (
	modelChannelsKey  = "pipe.channels"         // feature channels C the head was built for
	modelWidthKey     = "pipe.composite_width"  // dra's C'
	modelStrideKey    = "pipe.composite_stride" // dra's composite stride
	modelMembersKey   = "pipe.members"          // ensemble: number of member heads
	modelNeighbourKey = "pipe.neighbours"       // knn: k
)

// headSpec is what it takes to rebuild a head for scoring.
type headSpec struct {
	Name           string
	Channels       int
	CompositeWidth int
	Stride         int
}

func (h headSpec) build() (heads.Head, error) {
	switch h.Name {
	case "devnet":
		return heads.NewDevNet(h.Channels)
	case "dra":
		return heads.NewDRA(h.Channels, h.CompositeWidth, h.Stride)
	}
	return nil, fmt.Errorf("unknown head %q", h.Name)
}

func (h headSpec) meta() map[string]string {
	return map[string]string{modelHeadKey: h.Name, modelChannelsKey: strconv.Itoa(h.Channels),
		modelWidthKey: strconv.Itoa(h.CompositeWidth), modelStrideKey: strconv.Itoa(h.Stride)}
}

// runTrain trains the model of p.Method on the training images' features (and the pseudo
// anomalies and tasks where the method uses them) and writes the model and log tables.
func runTrain(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*TrainParams)
	imgs, err := loadImageIndex(ctx, env)
	if err != nil {
		return err
	}
	normals, anomalies := imgs.trainNormals(), imgs.trainAnomalies()
	if len(normals) == 0 {
		return fmt.Errorf("stage %s: the images table has no training normals", env.Stage)
	}
	train := setOf(append(append([]string(nil), normals...), anomalies...))
	pool, err := loadTrainPool(ctx, env, p, train)
	if err != nil {
		return err
	}
	// The input blobs are garbage now; collect them and return their memory to the OS
	// before training allocates its own buffers (one collection, well under a second).
	debug.FreeOSMemory()
	nReal := 0
	for _, id := range pool.IDs {
		if train[id] {
			nReal++
		}
	}
	if nReal != len(train) {
		return fmt.Errorf("stage %s: features cover %d of the %d training images", env.Stage, nReal, len(train))
	}
	c := pool.Scales[0].C
	for k, m := range pool.Scales {
		if m.C != c {
			return fmt.Errorf("stage %s: scale %d has %d channels, scale 0 has %d; the heads need one channel count", env.Stage, k, m.C, c)
		}
	}
	hs := headSpec{Name: p.Head, Channels: c, CompositeWidth: p.CompositeWidth, Stride: p.CompositeStride}
	meta := map[string]string{modelMethodKey: p.Method}

	if p.Method == MethodKNN {
		idx := make([]int, 0, len(normals))
		pos := map[string]int{}
		for i, id := range pool.IDs {
			pos[id] = i
		}
		for _, id := range normals {
			idx = append(idx, pos[id])
		}
		m, err := knn.Fit(pool.Gather(idx).Scales, p.Neighbours)
		if err != nil {
			return fmt.Errorf("stage %s: %w", env.Stage, err)
		}
		meta[modelNeighbourKey] = strconv.Itoa(m.K)
		model, err := artifacts.TensorTable([]artifacts.Tensor{{Name: "knn.train", Shape: []int64{int64(m.N), int64(m.D)}, Values: m.Train}})
		if err != nil {
			return fmt.Errorf("stage %s: %w", env.Stage, err)
		}
		env.Output("model", withMeta(model, meta))
		log, err := trainLog(nil)
		if err != nil {
			return fmt.Errorf("stage %s: %w", env.Stage, err)
		}
		env.Output("log", withMeta(log, meta))
		fmt.Fprintf(env.Log, "%s: knn over %d training normals (k = %d, %d pooled features)\n", env.Stage, m.N, m.K, m.D)
		return nil
	}

	for k, v := range hs.meta() {
		meta[k] = v
	}
	head, err := hs.build()
	if err != nil {
		return fmt.Errorf("stage %s: %w", env.Stage, err)
	}
	var samples []hadg.Sample
	if p.Method == MethodAHL || p.Method == MethodEnsemble {
		in, err := env.With("tasks")
		if err != nil {
			return fmt.Errorf("%w (method %s trains on the HADG tasks)", err, p.Method)
		}
		rec, err := in.Open(ctx, "tasks")
		if err != nil {
			return fmt.Errorf("stage %s: input %s tasks: %w", env.Stage, in.Stage, err)
		}
		samples, err = readTasks(rec)
		rec.Release()
		if err != nil {
			return fmt.Errorf("stage %s: input %s tasks: %w", env.Stage, in.Stage, err)
		}
	}

	var tensors []artifacts.Tensor
	var rows []cdl.LogRow
	switch p.Method {
	case MethodAHL:
		cfg := cdl.DefaultConfig()
		cfg.Epochs = cmpOr(p.Epochs, cfg.Epochs)
		cfg.BatchSize, cfg.InnerSteps, cfg.QuerySteps = p.BatchSize, p.InnerSteps, p.QuerySteps
		cfg.InnerLR, cfg.MetaLR, cfg.K, cfg.PsiLR = p.InnerLR, p.MetaLR, p.K, p.PsiLR
		cfg.MetaSteps, cfg.LRDecayEvery = p.MetaSteps, p.LRDecayEvery
		cfg.Seed, cfg.Progress = env.Seed, env.Progress
		res, err := cdl.Train(ctx, cfg, head, pool, samples)
		if err != nil {
			return fmt.Errorf("stage %s: %w", env.Stage, err)
		}
		tensors = headTensors(head, "", res.Theta)
		rows = res.Log
		for e, w := range res.Weights {
			if e == len(res.Weights)-1 || e%5 == 0 {
				fmt.Fprintf(env.Log, "%s: epoch %d weights %s (%.1fs)\n", env.Stage, e, fmtFloats(w), res.EpochSeconds[e])
			}
		}
	case MethodDevnet:
		cfg := devnetConfig(p, env)
		// All training data: normals, seen anomalies and pseudo anomalies, labelled by kind.
		pool2, lab := pool, make([]int, pool.Len())
		isAnomaly := setOf(anomalies)
		for i, id := range pool2.IDs {
			switch {
			case !train[id]:
				lab[i] = heads.Pseudo
			case isAnomaly[id]:
				lab[i] = heads.Seen
			default:
				lab[i] = heads.Normal
			}
		}
		theta, log, err := baseline.Devnet(ctx, cfg, head, pool2, batch.AllRows(pool2.Len()), lab)
		if err != nil {
			return fmt.Errorf("stage %s: %w", env.Stage, err)
		}
		tensors = headTensors(head, "", theta)
		for _, l := range log {
			rows = append(rows, cdl.LogRow{Epoch: l.Epoch, Task: 0, QueryLoss: l.Loss, Weight: 1})
		}
	case MethodEnsemble:
		cfg := devnetConfig(p, env)
		ens, err := baseline.TrainEnsemble(ctx, cfg, head, pool, samples)
		if err != nil {
			return fmt.Errorf("stage %s: %w", env.Stage, err)
		}
		for i, theta := range ens.Thetas {
			tensors = append(tensors, headTensors(head, fmt.Sprintf("member%d/", i), theta)...)
			for _, l := range ens.Logs[i] {
				rows = append(rows, cdl.LogRow{Epoch: l.Epoch, Task: i, QueryLoss: l.Loss, Weight: 1 / float64(len(ens.Thetas))})
			}
		}
		meta[modelMembersKey] = strconv.Itoa(len(ens.Thetas))
	}
	model, err := artifacts.TensorTable(tensors)
	if err != nil {
		return fmt.Errorf("stage %s: %w", env.Stage, err)
	}
	env.Output("model", withMeta(model, meta))
	log, err := trainLog(rows)
	if err != nil {
		return fmt.Errorf("stage %s: %w", env.Stage, err)
	}
	env.Output("log", withMeta(log, meta))
	return nil
}

// loadTrainPool reads the pool: the training images' maps, then (for the heads) every pseudo
// anomaly's, into one set so each map is copied once. The input records are released and
// their blobs dropped before it returns; a garbage collection then hands them back to the
// OS, so the blobs (features and pseudo, the images table's PNG bytes) do not stay in the
// process, nor set the collector's heap goal, while the model trains.
func loadTrainPool(ctx context.Context, env *kind.Env, p *TrainParams, train map[string]bool) (fmap.Set, error) {
	fin, err := env.With("features")
	if err != nil {
		return fmap.Set{}, err
	}
	frec, err := fin.Open(ctx, "features")
	if err != nil {
		return fmap.Set{}, fmt.Errorf("stage %s: input %s features: %w", env.Stage, fin.Stage, err)
	}
	defer frec.Release()
	srcs := []mapSource{{frec, train}}
	if p.Method != MethodKNN && env.Has("pseudo") {
		pin, err := env.With("pseudo")
		if err != nil {
			return fmap.Set{}, err
		}
		prec, err := pin.Open(ctx, "pseudo")
		if err != nil {
			return fmap.Set{}, fmt.Errorf("stage %s: input %s pseudo: %w", env.Stage, pin.Stage, err)
		}
		defer prec.Release()
		srcs = append(srcs, mapSource{prec, nil})
	}
	pool, err := mapSetFromTables(srcs...)
	if err != nil {
		return fmap.Set{}, fmt.Errorf("stage %s: features and pseudo anomalies: %w", env.Stage, err)
	}
	return pool, nil
}

func devnetConfig(p *TrainParams, env *kind.Env) baseline.DevnetConfig {
	cfg := baseline.DefaultDevnet()
	cfg.Epochs = cmpOr(p.Epochs, cfg.Epochs)
	cfg.StepsPerEpoch, cfg.BatchSize, cfg.LR, cfg.LRDecayEvery = p.StepsPerEpoch, p.BatchSize, p.LR, p.LRDecayEvery
	cfg.Seed, cfg.Progress = env.Seed, env.Progress
	return cfg
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

// headTensors splits a flat weight vector into the head's named tensors, names prefixed.
func headTensors(h heads.Head, prefix string, theta []float32) []artifacts.Tensor {
	var out []artifacts.Tensor
	for _, s := range h.Layout() {
		n := 1
		shape := make([]int64, len(s.Shape))
		for i, d := range s.Shape {
			n *= d
			shape[i] = int64(d)
		}
		out = append(out, artifacts.Tensor{Name: prefix + s.Name, Shape: shape, Values: theta[s.Offset : s.Offset+n]})
	}
	return out
}

// thetaFromTensors assembles the head's flat weight vector from tensors named prefix + the
// layout's names, checking every shape.
func thetaFromTensors(h heads.Head, prefix string, ts map[string]artifacts.Tensor) ([]float32, error) {
	var size int
	for _, s := range h.Layout() {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		size = max(size, s.Offset+n)
	}
	theta := make([]float32, size)
	for _, s := range h.Layout() {
		t, ok := ts[prefix+s.Name]
		if !ok {
			return nil, fmt.Errorf("model has no tensor %q", prefix+s.Name)
		}
		if len(t.Shape) != len(s.Shape) {
			return nil, fmt.Errorf("tensor %q has shape %v, the %s head wants %v", t.Name, t.Shape, h.Name(), s.Shape)
		}
		for i, d := range s.Shape {
			if t.Shape[i] != int64(d) {
				return nil, fmt.Errorf("tensor %q has shape %v, the %s head wants %v", t.Name, t.Shape, h.Name(), s.Shape)
			}
		}
		copy(theta[s.Offset:], t.Values)
	}
	return theta, nil
}

// trainLog builds the log table (stages/TABLES.md). It holds no wall-clock times: those
// differ from run to run, and the log must be byte-identical for the same inputs (the
// manifest records the stage's seconds).
func trainLog(rows []cdl.LogRow) (arrow.RecordBatch, error) {
	n := len(rows)
	ep, task := make([]int64, n), make([]int64, n)
	loss, w := make([]float64, n), make([]float64, n)
	for i, r := range rows {
		ep[i], task[i], loss[i], w[i] = int64(r.Epoch), int64(r.Task), r.QueryLoss, r.Weight
	}
	return artifacts.NewTable(artifacts.Int64s("epoch", ep), artifacts.Int64s("task", task),
		artifacts.Float64s("query_loss", loss), artifacts.Float64s("weight", w))
}

// trainedModel is a model table read back for scoring.
type trainedModel struct {
	Method  string
	Head    headSpec
	Thetas  [][]float32 // one per head (ensemble members), nil for knn
	KNN     knn.Model
	Summary string
}

// readModel reads a model table written by the train stage.
func readModel(rec arrow.RecordBatch) (*trainedModel, error) {
	m := &trainedModel{Method: schemaMeta(rec, modelMethodKey)}
	if m.Method == "" {
		return nil, fmt.Errorf("model table has no %s metadata (not written by the train stage?)", modelMethodKey)
	}
	ts, err := artifacts.ReadTensors(rec)
	if err != nil {
		return nil, err
	}
	byName := map[string]artifacts.Tensor{}
	for _, t := range ts {
		byName[t.Name] = t
	}
	atoi := func(key string) (int, error) {
		v, err := strconv.Atoi(schemaMeta(rec, key))
		if err != nil {
			return 0, fmt.Errorf("model metadata %s: %q is not an integer", key, schemaMeta(rec, key))
		}
		return v, nil
	}
	if m.Method == MethodKNN {
		t, ok := byName["knn.train"]
		if !ok || len(t.Shape) != 2 {
			return nil, fmt.Errorf("knn model has no 2-d tensor knn.train")
		}
		k, err := atoi(modelNeighbourKey)
		if err != nil {
			return nil, err
		}
		m.KNN = knn.Model{K: k, N: int(t.Shape[0]), D: int(t.Shape[1]), Train: t.Values}
		m.Summary = fmt.Sprintf("knn (k = %d over %d normals)", k, m.KNN.N)
		return m, nil
	}
	m.Head.Name = schemaMeta(rec, modelHeadKey)
	if m.Head.Channels, err = atoi(modelChannelsKey); err != nil {
		return nil, err
	}
	if m.Head.CompositeWidth, err = atoi(modelWidthKey); err != nil {
		return nil, err
	}
	if m.Head.Stride, err = atoi(modelStrideKey); err != nil {
		return nil, err
	}
	h, err := m.Head.build()
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	members := 1
	prefix := func(int) string { return "" }
	if m.Method == MethodEnsemble {
		if members, err = atoi(modelMembersKey); err != nil {
			return nil, err
		}
		prefix = func(i int) string { return fmt.Sprintf("member%d/", i) }
	}
	for i := 0; i < members; i++ {
		theta, err := thetaFromTensors(h, prefix(i), byName)
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		m.Thetas = append(m.Thetas, theta)
	}
	b, _ := json.Marshal(m.Head)
	m.Summary = fmt.Sprintf("%s with %d %s head(s) %s", m.Method, members, m.Head.Name, b)
	return m, nil
}

// RequiredInputs makes the tasks table required for the methods that train on HADG tasks
// (kind.Requirer), so a DAG whose train lacks hadg in needs fails validation.
func (p *TrainParams) RequiredInputs() []string {
	if p.Method == MethodAHL || p.Method == MethodEnsemble {
		return []string{"tasks"}
	}
	return nil
}
