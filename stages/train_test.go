package stages

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"gonum.org/v1/gonum/stat"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/knn"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// spotSet is a small synthetic anomaly detection problem on 4-channel maps of 6 x 6 (scale 0)
// and 3 x 3 (scale 1): normals are unit noise; anomalies (seen class cut in training and
// test, unseen class hole in test only) and pseudo anomalies add a bright spot to channel 0.
type spotSet struct {
	images, features, pseudo arrow.RecordBatch
}

func newSpotSet(t *testing.T) spotSet { return newSpotSetVal(t, 0) }

// newSpotSetVal is newSpotSet with the last val of the 24 training normals and (when val > 0)
// the last labelled anomaly in the validation split, as ingest's validation makes them.
func newSpotSetVal(t *testing.T, val int) spotSet { return newSpotSetWith(t, val, nil) }

// newSpotSetWith is newSpotSetVal whose feature values pass through tweak (when not nil),
// given the image id and the value.
func newSpotSetWith(t *testing.T, val int, tweak func(id string, v float32) float32) spotSet {
	t.Helper()
	var imgs []testImage
	split := func(i, n, held int) string {
		if i >= n-held {
			return "val"
		}
		return "train"
	}
	for i := 0; i < 24; i++ {
		imgs = append(imgs, testImage{fmt.Sprintf("train/good/n%02d.png", i), split(i, 24, val), 0, "good"})
	}
	for i := 0; i < 4; i++ {
		imgs = append(imgs, testImage{fmt.Sprintf("train/cut/c%d.png", i), split(i, 4, min(val, 1)), 1, "cut"})
	}
	for i := 0; i < 10; i++ {
		imgs = append(imgs, testImage{fmt.Sprintf("test/good/t%02d.png", i), "test", 0, "good"})
	}
	for i := 0; i < 5; i++ {
		imgs = append(imgs, testImage{fmt.Sprintf("test/cut/c%d.png", i), "test", 1, "cut"},
			testImage{fmt.Sprintf("test/hole/h%d.png", i), "test", 1, "hole"})
	}
	var ids, pids []string
	for _, im := range imgs {
		ids = append(ids, im.id)
		if im.split != "test" && im.label == 0 {
			for _, g := range testGenerators {
				pids = append(pids, im.id+"#"+g)
			}
		}
	}
	fill := func(id string, s, ch, pos int) float32 {
		h := fnv.New64a()
		h.Write([]byte(id))
		r := rand.New(rand.NewPCG(h.Sum64(), uint64(s*1000+ch*100+pos)))
		v := float32(r.NormFloat64())
		anomalous := strings.Contains(id, "/cut/") || strings.Contains(id, "/hole/") || strings.Contains(id, "#")
		if anomalous && ch == 0 && pos%5 == int(h.Sum64()%5) {
			v += 4
		}
		if tweak != nil {
			v = tweak(id, v)
		}
		return v
	}
	return spotSet{
		images:   imagesTableT(t, imgs),
		features: mapsTableSized(t, ids, 4, []int{6, 3}, fill, false),
		pseudo:   mapsTableSized(t, pids, 4, []int{6, 3}, fill, true),
	}
}

// chain runs clusters -> tasks -> train -> score -> evaluate on the set and returns the
// train, score and evaluate outputs.
func (s spotSet) chain(t *testing.T, p *TrainParams, seed uint64) (train, score, eval map[string]arrow.RecordBatch) {
	t.Helper()
	ingest := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": s.images})
	feat := memInput("features", "", nil, map[string]arrow.RecordBatch{"features": s.features})
	aug := memInput("augment", "", nil, map[string]arrow.RecordBatch{"pseudo": s.pseudo})
	km := runKind(t, "kmeans", &KMeansParams{K: 2, Restarts: 2, Features: "pooled"}, seed, ingest, feat)
	tasks := runKind(t, "hadg", &HADGParams{T: 3}, seed, memInput("clusters", "", nil, km), ingest, aug)
	train = runKind(t, "train", p, seed, memInput("tasks", "", nil, tasks), feat, aug, ingest)
	score = runKind(t, "score", nil, seed, memInput("train", "", nil, train), feat, ingest)
	eval = runKind(t, "evaluate", nil, seed, memInput("score", "", nil, score))
	return train, score, eval
}

// quick returns train params small enough for a unit test.
func quick(method, head string, epochs int) *TrainParams {
	p := defaultTrainParams()
	p.Method, p.Head, p.Epochs = method, head, epochs
	p.CompositeWidth, p.BatchSize, p.InnerSteps, p.QuerySteps, p.StepsPerEpoch, p.K = 4, 12, 2, 2, 5, 2
	return p
}

func metricOf(t *testing.T, rec arrow.RecordBatch, metric, class string) float64 {
	t.Helper()
	m, _ := artifacts.StringCol(rec, "metric")
	c, _ := artifacts.StringCol(rec, "class")
	v, _ := artifacts.Float64Col(rec, "value")
	for i := range m {
		if m[i] == metric && c[i] == class {
			return v[i]
		}
	}
	t.Fatalf("no %s of class %s", metric, class)
	return 0
}

func TestTrainScoreEveryMethod(t *testing.T) {
	s := newSpotSet(t)
	for _, tc := range []struct {
		method, head string
		epochs       int
		logRows      int
	}{
		{"ahl", "dra", 4, 4 * 3},
		{"ahl", "devnet", 4, 4 * 3},
		{"devnet", "devnet", 3, 3},
		{"ensemble", "devnet", 2, 2 * 3},
		{"knn", "devnet", 0, 0},
	} {
		t.Run(tc.method+"/"+tc.head, func(t *testing.T) {
			train, score, eval := s.chain(t, quick(tc.method, tc.head, tc.epochs), 5)
			if got := schemaMeta(train["model"], modelMethodKey); got != tc.method {
				t.Errorf("model method %q", got)
			}
			if n := int(train["log"].NumRows()); n != tc.logRows {
				t.Errorf("log has %d rows, want %d", n, tc.logRows)
			}
			ids, _ := artifacts.StringCol(score["scores"], "id")
			cls, _ := artifacts.StringCol(score["scores"], "class")
			if len(ids) != 20 || !strings.HasPrefix(ids[0], "test/good/") || cls[19] != "hole" {
				t.Errorf("scores cover %d images (%v ...), want the 20 test images in ingest order", len(ids), ids[:1])
			}
			want := tc.method
			if tc.method != "knn" {
				want += "/" + tc.head
			}
			if got := methodLabel(eval["metrics"]); got != want {
				t.Errorf("evaluate carries method %q, want %q", got, want)
			}
			m, err := readModel(train["model"])
			if err != nil {
				t.Fatal(err)
			}
			if tc.method == "ensemble" && len(m.Thetas) != 3 {
				t.Errorf("ensemble has %d members, want T = 3", len(m.Thetas))
			}
			// Same seed, same bytes: model and log.
			again, _, _ := s.chain(t, quick(tc.method, tc.head, tc.epochs), 5)
			for _, out := range []string{"model", "log"} {
				a, err1 := artifacts.EncodeIPC(train[out])
				b, err2 := artifacts.EncodeIPC(again[out])
				if err1 != nil || err2 != nil || string(a) != string(b) {
					t.Errorf("same seed, different %s bytes (%v, %v)", out, err1, err2)
				}
			}
			t.Logf("auroc all %.3f", metricOf(t, eval["metrics"], "auroc", "all"))
		})
	}
}

func TestTrainLearnsTheSpot(t *testing.T) {
	// The devnet baseline with a larger rate: the trained head must rank the test anomalies,
	// seen and unseen, above the normals.
	p := quick("devnet", "devnet", 10)
	p.LR = 0.02
	_, _, eval := newSpotSet(t).chain(t, p, 9)
	if a := metricOf(t, eval["metrics"], "auroc", "all"); a < 0.95 {
		t.Errorf("auroc %.3f after training, want >= 0.95", a)
	}
	if a := metricOf(t, eval["metrics"], "auroc", "hole"); a < 0.9 {
		t.Errorf("auroc of the unseen class %.3f, want >= 0.9", a)
	}
}

func TestTrainErrors(t *testing.T) {
	s := newSpotSet(t)
	ingest := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": s.images})
	feat := memInput("features", "", nil, map[string]arrow.RecordBatch{"features": s.features})
	if _, err := tryKind("train", quick("ahl", "devnet", 1), 1, ingest, feat); err == nil || !strings.Contains(err.Error(), `"tasks" output`) {
		t.Errorf("ahl without tasks: err = %v", err)
	}
	for _, tc := range []struct {
		edit func(p *TrainParams)
		want string
	}{
		{func(p *TrainParams) { p.Method = "maml" }, `method: "maml", want ahl, devnet, knn or ensemble`},
		{func(p *TrainParams) { p.Head = "resnet" }, `head: "resnet", want devnet, dra`},
		{func(p *TrainParams) { p.Epochs = -1 }, "epochs: -1, want >= 0"},
		{func(p *TrainParams) { p.CompositeStride = 0 }, "composite_stride: 0, want >= 1"},
		{func(p *TrainParams) { p.Neighbours = 0 }, "neighbours: 0, want >= 1"},
		// Checked by cdl.Config.Validate and baseline.DevnetConfig.Validate, whatever the method.
		{func(p *TrainParams) { p.Method, p.QuerySteps = "devnet", 0 }, "query_steps = 0, want >= 1"},
		{func(p *TrainParams) { p.Method, p.LR = "ahl", 0 }, "lr = 0, want > 0"},
	} {
		p := quick("ahl", "devnet", 1)
		tc.edit(p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", p, err, tc.want)
		}
	}
	// A model table without the train stage's metadata is refused by score.
	bare, _ := artifacts.TensorTable([]artifacts.Tensor{{Name: "w", Shape: []int64{1}, Values: []float32{1}}})
	if _, err := tryKind("score", nil, 1, memInput("train", "", nil, map[string]arrow.RecordBatch{"model": bare}), feat, ingest); err == nil || !strings.Contains(err.Error(), "metadata") {
		t.Errorf("bare model: err = %v", err)
	}
}

// TestTrainValidation: with a validation split, train scores the held-out normals, the
// held-out labelled anomaly and the held-out normals' pseudo anomalies and writes their
// AUROC; the planted spot is learnt, so the supervised head's validation AUROC is high. The
// held-out images change nothing else: they are not training data.
func TestTrainValidation(t *testing.T) {
	s := newSpotSetVal(t, 6)
	train, _, eval := s.chain(t, quick("devnet", "devnet", 10), 1)
	t.Logf("test auroc %.3f", metricOf(t, eval["metrics"], "auroc", "all"))
	rows, err := tables.DecodeMetrics(train["validation"])
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, r := range rows {
		got[r.Class] = r.Value
	}
	if len(rows) != 3 || got["all"] < 0.9 || got["real"] < 0.9 || got["pseudo"] < 0.9 {
		t.Errorf("validation rows %v, want classes all, real and pseudo, each AUROC >= 0.9", rows)
	}
	knn, _, _ := s.chain(t, quick("knn", "devnet", 0), 3)
	if rows, err := tables.DecodeMetrics(knn["validation"]); err != nil || len(rows) != 3 {
		t.Errorf("knn validation rows %v (%v), want 3", rows, err)
	}
	none, _, _ := newSpotSet(t).chain(t, quick("devnet", "devnet", 1), 3)
	if rows, err := tables.DecodeMetrics(none["validation"]); err != nil || len(rows) != 0 {
		t.Errorf("without a validation split: rows %v (%v), want none", rows, err)
	}
}

// TestTrainSchedule: schedule default maps the preset rates onto both trainers' configs,
// paper (and no schedule) keeps the params' own, and default refuses a rate set beside it.
func TestTrainSchedule(t *testing.T) {
	p := defaultTrainParams()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	paper := p.cdlConfig(0, nil)
	if paper.MetaLR != 0.005 || paper.InnerLR != 2e-4 || paper.LRDecayEvery != 10 || p.devnetConfig(0, nil).LR != 2e-4 {
		t.Errorf("no schedule: cdl %+v, want the paper's rates", paper)
	}
	p.Schedule = ScheduleDefault
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	d, c := defaultSchedule(), p.cdlConfig(0, nil)
	if c.MetaLR != d.MetaLR || c.InnerLR != d.InnerLR || c.LRDecayEvery != d.LRDecayEvery || p.devnetConfig(0, nil).LR != d.LR ||
		p.devnetConfig(0, nil).LRDecayEvery != d.LRDecayEvery {
		t.Errorf("schedule default: cdl %+v devnet %+v, want %+v", c, p.devnetConfig(0, nil), d)
	}
	if d.MetaLR == paper.MetaLR || d.LRDecayEvery == paper.LRDecayEvery {
		t.Errorf("default schedule %+v equals the paper's in meta_lr or decay", d)
	}
	p.LR = 0.01
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "lr: 0.01 with schedule: default") {
		t.Errorf("lr beside schedule default: err = %v", err)
	}
	p.Schedule = SchedulePaper
	if err := p.Validate(); err != nil || p.devnetConfig(0, nil).LR != 0.01 {
		t.Errorf("schedule paper with lr 0.01: err %v, lr %g, want the param's 0.01", err, p.devnetConfig(0, nil).LR)
	}
	p.Schedule = "fast"
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), `schedule: "fast"`) {
		t.Errorf("unknown schedule: err = %v", err)
	}
}

// TestTrainFusion: with fusion knn, the model keeps the head's weights (the same as without
// fusion), knn's training normals and the two scales fitted on the validation normals, and
// score writes w * z(head) + (1 - w) * z(knn), each z from the head-only and knn-only models
// of the same seed. Without a validation split, fusion is refused with a message that says
// what to set.
func TestTrainFusion(t *testing.T) {
	s := newSpotSetVal(t, 6)
	const w = 0.25
	p := quick("devnet", "devnet", 4)
	p.Fusion, p.FusionWeight = FusionKNN, w
	train, score, eval := s.chain(t, p, 1)
	if got := methodLabel(eval["metrics"]); got != "devnet/devnet+knn" {
		t.Errorf("evaluate carries method %q, want devnet/devnet+knn", got)
	}
	fused, err := readModel(train["model"])
	if err != nil {
		t.Fatal(err)
	}
	headTrain, headScore, _ := s.chain(t, quick("devnet", "devnet", 4), 1)
	_, knnScore, _ := s.chain(t, quick("knn", "devnet", 0), 1)
	head, err := readModel(headTrain["model"])
	if err != nil {
		t.Fatal(err)
	}
	if f := fused.Fusion; f == nil || f.HeadWeight != w || f.Head.Std <= 0 || f.KNN.Std <= 0 || fused.KNN.N != 18 || fused.KNN.K != 5 {
		t.Fatalf("fused model: fusion %+v, knn over %d normals (k %d); want weight %g, positive scales, k 5 over the 18 training normals", fused.Fusion, fused.KNN.N, fused.KNN.K, w)
	}
	if !slices.Equal(fused.Thetas[0], head.Thetas[0]) {
		t.Errorf("fusion changed the head's weights")
	}
	got, _ := artifacts.Float64Col(score["scores"], "score")
	hs, _ := artifacts.Float64Col(headScore["scores"], "score")
	ks, _ := artifacts.Float64Col(knnScore["scores"], "score")
	f := fused.Fusion
	for i := range got {
		want := w*(hs[i]-f.Head.Mean)/f.Head.Std + (1-w)*(ks[i]-f.KNN.Mean)/f.KNN.Std
		if math.Abs(got[i]-want) > 1e-9 {
			t.Errorf("test image %d: fused score %v, want %v (head %v, knn %v)", i, got[i], want, hs[i], ks[i])
		}
	}
	vrows, err := tables.DecodeMetrics(train["validation"])
	if err != nil {
		t.Fatal(err)
	}
	if last := vrows[len(vrows)-1]; last.Metric != MetricHeadWeight || last.Class != ClassFusion || last.Value != w {
		t.Errorf("validation rows %v, want the last one head_weight/fusion %g", vrows, w)
	}
	// The scales are the validation normals' mean and std: re-encoding the decoded model
	// gives the same metadata (exact float round trip).
	again, err := fused.encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{modelFusionKey, modelFusionWeightKey, modelFusionHeadKey, modelFusionKNNKey, modelNeighbourKey} {
		if again.Meta[k] != schemaMeta(train["model"], k) || again.Meta[k] == "" {
			t.Errorf("metadata %s: %q after a round trip, %q stored", k, again.Meta[k], schemaMeta(train["model"], k))
		}
	}

	noVal := quick("devnet", "devnet", 1)
	noVal.Fusion = FusionKNN
	ingest := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": newSpotSet(t).images})
	feat := memInput("features", "", nil, map[string]arrow.RecordBatch{"features": s.features})
	if _, err := tryKind("train", noVal, 1, ingest, feat); err == nil || !strings.Contains(err.Error(), "set ingest's validation") {
		t.Errorf("fusion without a validation split: err = %v", err)
	}
	for _, tc := range []struct {
		edit func(p *TrainParams)
		want string
	}{
		{func(p *TrainParams) { p.Fusion = "mean" }, `fusion: "mean", want knn, knn-residual or none`},
		{func(p *TrainParams) { p.FusionWeight = 0.5 }, "fusion_weight: 0.5 without fusion"},
		{func(p *TrainParams) { p.Fusion, p.FusionWeight = FusionKNN, 2 }, "fusion_weight: 2, want 0 < w <= 1"},
	} {
		q := quick("ahl", "devnet", 1)
		tc.edit(q)
		if err := q.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", q, err, tc.want)
		}
	}
}

// TestTrainFusionDropsInvertedHead: when the head alone ranks the held-out labelled anomaly
// below every held-out normal (here its maps are all zero, so the trained head, which
// scores the bright spot, gives it the lowest score), the fused model drops the head (weight
// 0) and scores as knn alone, and its validation table and pipe report's warnings say so.
func TestTrainFusionDropsInvertedHead(t *testing.T) {
	s := newSpotSetWith(t, 6, func(id string, v float32) float32 {
		if id == "train/cut/c3.png" { // the held-out labelled anomaly
			return 0
		}
		return v
	})
	p := quick("devnet", "devnet", 4)
	p.Fusion = FusionKNN
	train, score, _ := s.chain(t, p, 1)
	vrows, err := tables.DecodeMetrics(train["validation"])
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, r := range vrows {
		got[r.Metric+"/"+r.Class] = r.Value
	}
	if w, ok := got[MetricHeadWeight+"/"+ClassFusion]; !ok || w != 0 {
		t.Fatalf("validation rows %v, want head_weight 0 (the head is below chance on real)", vrows)
	}
	_, knnScore, _ := s.chain(t, quick("knn", "devnet", 0), 1)
	fs, _ := artifacts.Float64Col(score["scores"], "score")
	ks, _ := artifacts.Float64Col(knnScore["scores"], "score")
	for i := range fs {
		for j := range fs {
			if (fs[i] < fs[j]) != (ks[i] < ks[j]) {
				t.Fatalf("the dropped-head model does not rank test images as knn does: %v vs %v", fs, ks)
			}
		}
	}
	rows := []ReportResult{
		{Setting: "s", Method: "ahl", Class: ClassFusion, Metric: ValidationPrefix + MetricHeadWeight, Mean: 1.0 / 3, Std: 0.29, N: 3},
		{Setting: "s", Method: "devnet", Class: ClassFusion, Metric: ValidationPrefix + MetricHeadWeight, Mean: 0.5, Std: 0, N: 3},
		{Setting: "s " + SettingMean, Method: "ahl", Class: ClassFusion, Metric: ValidationPrefix + MetricHeadWeight, Mean: 0.4, Std: 0.1, N: 2},
	}
	warn := ValidationWarnings(rows)
	if len(warn) != 1 || !strings.Contains(warn[0], "s, method ahl: the head's share of the fused score is 0.33 ± 0.29 over 3 run(s)") {
		t.Errorf("warnings %q, want one for ahl's dropped head", warn)
	}
}

// TestTrainResidual: with fusion knn-residual, the model's knn scale is the mean and sample
// std of the training normals' leave-one-out knn distances (recomputed here by brute force),
// the head trains on scores offset by each pool row's standardised leave-one-out distance
// (so its weights differ from a head trained without them), and score writes the head's
// score plus knn's standardised distance: the score minus z(knn) is exactly what the decoded
// head gives each test image. Both methods that train a head take it; dra and an explicit
// fusion_weight are refused.
func TestTrainResidual(t *testing.T) {
	s := newSpotSetVal(t, 6)
	train, score, eval := s.chain(t, residualParams("devnet"), 1)
	if got := methodLabel(eval["metrics"]); got != "devnet/devnet+knn-residual" {
		t.Errorf("evaluate carries method %q, want devnet/devnet+knn-residual", got)
	}
	m, err := readModel(train["model"])
	if err != nil {
		t.Fatal(err)
	}
	// The training normals are the 18 train-split normals: n00..n17 (n18..n23 are held out).
	trainSet, err := mapSetFromTable(s.features, nil)
	if err != nil {
		t.Fatal(err)
	}
	var normalRows []int
	for r, id := range trainSet.IDs {
		if strings.HasPrefix(id, "train/good/") && id < "train/good/n18" {
			normalRows = append(normalRows, r)
		}
	}
	_, d, x, err := knn.Pool(trainSet.Gather(normalRows).Scales)
	if err != nil {
		t.Fatal(err)
	}
	var loo []float64
	for i := range normalRows {
		var dist []float64
		for j := range normalRows {
			if j == i {
				continue
			}
			var ss float64
			for f := 0; f < d; f++ {
				e := float64(x[i*d+f]) - float64(x[j*d+f])
				ss += e * e
			}
			dist = append(dist, math.Sqrt(ss))
		}
		slices.Sort(dist)
		loo = append(loo, (dist[0]+dist[1]+dist[2]+dist[3]+dist[4])/5)
	}
	mean := stat.Mean(loo, nil)
	std := stat.StdDev(loo, nil)
	f := m.Fusion
	if m.FusionMode != FusionResidual || f == nil || f.HeadWeight != 1 || math.Abs(f.KNN.Mean-mean) > 1e-9 || math.Abs(f.KNN.Std-std) > 1e-9 {
		t.Fatalf("model: mode %q, fusion %+v; want %s, head weight 1, knn scale %v ± %v", m.FusionMode, f, FusionResidual, mean, std)
	}
	headTrain, _, _ := s.chain(t, quick("devnet", "devnet", 4), 1)
	head, err := readModel(headTrain["model"])
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(m.Thetas[0], head.Thetas[0]) {
		t.Errorf("the residual head's weights equal the plain head's: the offsets did not reach training")
	}
	_, knnScore, _ := s.chain(t, quick("knn", "devnet", 0), 1)
	got, _ := artifacts.Float64Col(score["scores"], "score")
	ids, _ := artifacts.StringCol(score["scores"], "id")
	ks, _ := artifacts.Float64Col(knnScore["scores"], "score")
	testSet, err := mapSetFromTable(s.features, setOf(ids))
	if err != nil {
		t.Fatal(err)
	}
	hs, err := m.headScores(testSet, batch.AllRows(testSet.Len()), nil, 64)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		if testSet.IDs[i] != ids[i] {
			t.Fatalf("test image %d: scores has %s, the feature set %s", i, ids[i], testSet.IDs[i])
		}
		if want := hs[i] + (ks[i]-mean)/std; math.Abs(got[i]-want) > 1e-9 {
			t.Errorf("test image %s: score %v, want head %v + z(knn %v) = %v", ids[i], got[i], hs[i], ks[i], want)
		}
	}
	if auc := metricOf(t, eval["metrics"], "auroc", "all"); auc < 0.9 {
		t.Errorf("residual devnet: test AUROC %.3f, want >= 0.9 on the spot set", auc)
	}
	ahlTrain, _, ahlEval := s.chain(t, residualParams("ahl"), 1)
	if a, err := readModel(ahlTrain["model"]); err != nil || a.FusionMode != FusionResidual {
		t.Errorf("ahl residual model: %+v, %v", a, err)
	}
	if auc := metricOf(t, ahlEval["metrics"], "auroc", "all"); auc < 0.9 {
		t.Errorf("residual ahl: test AUROC %.3f, want >= 0.9 on the spot set", auc)
	}
	for _, tc := range []struct {
		edit func(p *TrainParams)
		want string
	}{
		{func(p *TrainParams) { p.Head = "dra" }, `fusion: knn-residual needs head devnet`},
		{func(p *TrainParams) { p.Method = MethodEnsemble }, "method ensemble does not"},
		{func(p *TrainParams) { p.FusionWeight = 0.5 }, "fusion_weight: 0.5 with fusion: knn-residual"},
	} {
		q := residualParams("ahl")
		tc.edit(q)
		if err := q.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one containing %q", q, err, tc.want)
		}
	}
}

func residualParams(method string) *TrainParams {
	p := quick(method, "devnet", 4)
	p.Fusion = FusionResidual
	return p
}
