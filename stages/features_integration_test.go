//go:build integration

package stages

import (
	"bytes"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/ahl/metrics"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// TestFeaturesConvNetHeadCT trains the convnet base model on HeadCT (general protocol, M = 10)
// at 128 x 128 with the stage's defaults and checks that it learned the task: the base
// model's own DevNet score must reach a test AUROC of 0.8, and its frozen features must
// separate the test set without labels (5-nearest-normal distance on the pooled maps,
// AUROC >= 0.8). Measured (seed 1): 0.91 and 0.90; without left-right flips 0.78 and 0.80,
// without batch norm 0.73 and 0.72; with 20 epochs 0.87 and 0.79 (75 normals: it overfits).
// The paper's DevNet on ImageNet features: about 0.98.
func TestFeaturesConvNetHeadCT(t *testing.T) { convNetOnDataset(t, "headct", 0.8, 0.8) }

// TestFeaturesConvNetELPV is the same check on ELPV (1131 training normals, 10 anomalies).
// Measured (seed 1): base model 0.62, 5-NN 0.78 with the default 10 epochs; 0.79 and 0.83
// with 20 (the paper's DevNet on ImageNet features: 0.84).
func TestFeaturesConvNetELPV(t *testing.T) { convNetOnDataset(t, "elpv", 0.55, 0.7) }

// convNetOnDataset trains the default convnet on a benchmark dataset (general protocol,
// M = 10) and requires test AUROCs of at least minHead for the base model's own score and
// minKNN for the 5-nearest-normal distance on its pooled features.
func convNetOnDataset(t *testing.T, dataset string, minHead, minKNN float64) {
	root := sharedData(t, dataset)
	env, err := runIngestFor(t, ingestParams(func(p *IngestParams) { p.Format, p.Root, p.Anomalies = "mvtec", root, 10 }), 7)
	if err != nil {
		t.Fatal(err)
	}
	images := env.Outputs()["images"]
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images})
	d, _ := lookup("features")
	p := d.Params().(*FeaturesParams)
	var log bytes.Buffer
	start := time.Now()
	fenv := &kind.Env{Stage: "features", Params: p, Seed: 1, Inputs: []kind.Input{in}, Log: &log, Progress: func(int, int) {}}
	if err := runFeatures(t.Context(), fenv); err != nil {
		t.Fatal(err)
	}
	t.Logf("features (convnet %v, S=%d, %d epochs) in %.1fs\n%s", p.Channels, p.Size, p.Epochs, time.Since(start).Seconds(), log.String())

	ids, _ := artifacts.StringCol(images, "id")
	split, _ := artifacts.StringCol(images, "split")
	label, _ := artifacts.Int64Col(images, "label")
	set, err := mapSetFromTable(fenv.Outputs()["features"], nil)
	if err != nil {
		t.Fatal(err)
	}
	pooled := make([][]float64, len(ids))
	for i := range ids {
		for _, m := range set.Scales {
			hw := m.H * m.W
			x := m.At(i)
			for c := 0; c < m.C; c++ {
				var s float64
				for _, v := range x[c*hw : (c+1)*hw] {
					s += float64(v)
				}
				pooled[i] = append(pooled[i], s/float64(hw))
			}
		}
	}
	var train []int
	for i := range ids {
		if split[i] == "train" && label[i] == 0 {
			train = append(train, i)
		}
	}
	var scores []float64
	var positive []bool
	for i := range ids {
		if split[i] != "test" {
			continue
		}
		ds := make([]float64, 0, len(train))
		for _, j := range train {
			var s float64
			for k := range pooled[i] {
				s += (pooled[i][k] - pooled[j][k]) * (pooled[i][k] - pooled[j][k])
			}
			ds = append(ds, math.Sqrt(s))
		}
		sort.Float64s(ds)
		var s float64
		for _, v := range ds[:5] {
			s += v
		}
		scores, positive = append(scores, s/5), append(positive, label[i] == 1)
	}
	auc, err := metrics.AUROC(scores, positive)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s test AUROC of 5-NN distance on pooled convnet features: %.3f (%d test images)", dataset, auc, len(scores))
	if auc < minKNN {
		t.Errorf("5-NN AUROC %.3f < %.2f", auc, minKNN)
	}

	b, err := backboneFromTable(fenv.Outputs()["backbone"])
	if err != nil {
		t.Fatal(err)
	}
	data, _ := artifacts.BinaryCol(images, "bytes")
	var test []imgs.Image
	for i := range ids {
		if split[i] == "test" {
			im, err := imgs.Decode(data[i])
			if err != nil {
				t.Fatal(err)
			}
			test = append(test, im)
		}
	}
	own, err := b.(*backbone.ConvNet).Scores(t.Context(), test)
	if err != nil {
		t.Fatal(err)
	}
	own64 := make([]float64, len(own))
	for i, v := range own {
		own64[i] = float64(v)
	}
	headAUC, err := metrics.AUROC(own64, positive)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s test AUROC of the convnet base model's own DevNet score: %.3f", dataset, headAUC)
	if headAUC < minHead {
		t.Errorf("base model AUROC %.3f < %.2f", headAUC, minHead)
	}
}
