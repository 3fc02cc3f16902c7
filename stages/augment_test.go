package stages

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/augment"
	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// pixelBackbone is a stand-in backbone whose feature maps are the (resized) images
// themselves: 3 x S x S at scale 0 and 3 x S/2 x S/2 at scale 1.
type pixelBackbone struct{ size int }

func (b pixelBackbone) Name() string               { return "pixels" }
func (b pixelBackbone) Size() int                  { return b.size }
func (b pixelBackbone) Weights() []backbone.Tensor { return nil }
func (b pixelBackbone) Extract(ctx context.Context, images []imgs.Image) ([]fmap.Maps, error) {
	var out []fmap.Maps
	for _, s := range []int{b.size, b.size / 2} {
		m := fmap.New(len(images), 3, s, s)
		for i, img := range images {
			copy(m.At(i), imgs.Resize(img, s, s).Pix)
		}
		out = append(out, m)
	}
	return out, nil
}

// augmentEnv runs ingest on a small tree and returns an augment env whose inputs are that
// images table and a (placeholder) backbone table, with the stand-in backbone installed.
func augmentEnv(t *testing.T, p *AugmentParams, seed uint64) *kind.Env {
	t.Helper()
	old := augmentBackbone
	augmentBackbone = func(tables.BackboneTensors) (backbone.Backbone, error) { return pixelBackbone{size: 16}, nil }
	t.Cleanup(func() { augmentBackbone = old })
	bbTable, err := artifacts.TensorTable([]artifacts.Tensor{{Name: "w", Shape: []int64{1}, Values: []float32{0}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bbTable.Release() })
	return augmentEnvWith(t, p, seed, bbTable)
}

// augmentEnvWith is augmentEnv with a given backbone table (and augmentBackbone as it is).
func augmentEnvWith(t *testing.T, p *AugmentParams, seed uint64, bbTable arrow.RecordBatch) *kind.Env {
	t.Helper()
	root := writeMVTecTree(t, map[string]int{"train/good": 5, "test/good": 2, "test/crack": 3, "test/hole": 3})
	ing, err := runIngestFor(t, ingestParams(func(ip *IngestParams) { ip.Format, ip.Root, ip.Anomalies = "mvtec", root, 2 }), 1)
	if err != nil {
		t.Fatal(err)
	}
	images := ing.Outputs()["images"]
	open := func(rec arrow.RecordBatch) func(context.Context, string) (arrow.RecordBatch, error) {
		return func(context.Context, string) (arrow.RecordBatch, error) { rec.Retain(); return rec, nil }
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return &kind.Env{
		Stage: "augment", Params: p, Seed: seed, Log: &bytes.Buffer{}, Progress: func(int, int) {},
		Inputs: []kind.Input{
			{Stage: "ingest", Outputs: []string{"images"}, Open: open(images)},
			{Stage: "features", Outputs: []string{"backbone", "features"}, Open: open(bbTable)},
		},
	}
}

func augmentParams(change func(p *AugmentParams)) *AugmentParams {
	d, _ := lookup("augment")
	p := d.Params().(*AugmentParams)
	change(p)
	return p
}

type pseudoRows struct {
	id, src, gen []string
	scale, c, h  []int64
	values       [][]float32
}

func readPseudo(t *testing.T, env *kind.Env) pseudoRows {
	t.Helper()
	rec, ok := env.Outputs()["pseudo"]
	if !ok {
		t.Fatal("no pseudo output")
	}
	var r pseudoRows
	var errs [7]error
	r.id, errs[0] = artifacts.StringCol(rec, "id")
	r.src, errs[1] = artifacts.StringCol(rec, "source")
	r.gen, errs[2] = artifacts.StringCol(rec, "generator")
	r.scale, errs[3] = artifacts.Int64Col(rec, "scale")
	r.c, errs[4] = artifacts.Int64Col(rec, "c")
	r.h, errs[5] = artifacts.Int64Col(rec, "h")
	r.values, errs[6] = artifacts.Float32ListCol(rec, "values")
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func TestAugmentStage(t *testing.T) {
	env := augmentEnv(t, augmentParams(func(*AugmentParams) {}), 3)
	if err := runAugment(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	r := readPseudo(t, env)
	// 5 training normals x 3 generators x 2 scales.
	if len(r.id) != 30 {
		t.Fatalf("%d rows, want 30", len(r.id))
	}
	for i := range r.id {
		if r.id[i] != r.src[i]+"#"+r.gen[i] || !strings.HasPrefix(r.src[i], "train/good/") {
			t.Fatalf("row %d: id %s, source %s, generator %s", i, r.id[i], r.src[i], r.gen[i])
		}
		want := int64(16) >> r.scale[i]
		if r.c[i] != 3 || r.h[i] != want || len(r.values[i]) != int(3*want*want) {
			t.Fatalf("row %d: scale %d shape %dx%d with %d values", i, r.scale[i], r.c[i], r.h[i], len(r.values[i]))
		}
	}
	if r.gen[0] != "cutpaste" || r.gen[2] != "cutmix" || r.gen[4] != "draem" || r.scale[0] != 0 || r.scale[1] != 1 {
		t.Fatalf("row order: generators %v, scales %v", r.gen[:6], r.scale[:6])
	}

	// Same seed: identical; another seed: different.
	again := augmentEnv(t, augmentParams(func(*AugmentParams) {}), 3)
	if err := runAugment(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	other := augmentEnv(t, augmentParams(func(*AugmentParams) {}), 4)
	if err := runAugment(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	r2, r3 := readPseudo(t, again), readPseudo(t, other)
	same, differ := true, false
	for i := range r.values {
		same = same && slices.Equal(r.values[i], r2.values[i])
		differ = differ || !slices.Equal(r.values[i], r3.values[i])
	}
	if !same || !differ {
		t.Fatalf("same seed identical: %v, other seed differs: %v", same, differ)
	}

	// One goroutine gives the same table as several (makePseudo shares the normals out).
	prev := runtime.GOMAXPROCS(1)
	serial := augmentEnv(t, augmentParams(func(*AugmentParams) {}), 3)
	err := runAugment(context.Background(), serial)
	runtime.GOMAXPROCS(prev)
	if err != nil {
		t.Fatal(err)
	}
	rSerial := readPseudo(t, serial)
	for i := range r.values {
		if rSerial.id[i] != r.id[i] || !slices.Equal(rSerial.values[i], r.values[i]) {
			t.Fatalf("row %d: GOMAXPROCS 1 gives %s, GOMAXPROCS %d gives %s (or other values)", i, rSerial.id[i], prev, r.id[i])
		}
	}

	// Running draem alone gives the same draem copies as running all three.
	solo := augmentEnv(t, augmentParams(func(p *AugmentParams) { p.Generators = []string{"draem"} }), 3)
	if err := runAugment(context.Background(), solo); err != nil {
		t.Fatal(err)
	}
	rs := readPseudo(t, solo)
	if len(rs.id) != 10 || rs.id[0] != r.id[4] || !slices.Equal(rs.values[0], r.values[4]) {
		t.Fatalf("draem alone: %d rows, first %s; differs from the full run's %s", len(rs.id), rs.id[0], r.id[4])
	}
}

func TestAugmentPreviewAndSource(t *testing.T) {
	prev := filepath.Join(t.TempDir(), "preview")
	src := t.TempDir()
	// One pure-red texture: draem copies can only move towards red inside the mask.
	red := imgs.NewImage(6, 6)
	for i := range red.Plane(0) {
		red.Plane(0)[i] = 1
	}
	data, err := imgs.EncodePNG(red)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(src, "banded"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "banded", "r.png"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	p := augmentParams(func(p *AugmentParams) { p.Preview, p.PreviewCount, p.Source = prev, 2, src })
	env := augmentEnv(t, p, 1)
	if err := runAugment(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(prev, "*.png"))
	if len(files) != 6 {
		t.Fatalf("preview files %v, want 2 normals x 3 generators", files)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		img, err := imgs.Decode(b)
		if err != nil || img.H != 16 {
			t.Fatalf("preview %s: %v, %dx%d", f, err, img.H, img.W)
		}
	}
	// The source images are grey; with a red texture, draem rows have red above green
	// somewhere, and nowhere green above red.
	r := readPseudo(t, env)
	for i := range r.id {
		if r.gen[i] != "draem" || r.scale[i] != 0 {
			continue
		}
		v := r.values[i]
		hw := len(v) / 3
		redder := false
		for k := 0; k < hw; k++ {
			if v[k] > v[hw+k]+1e-3 {
				redder = true
			}
			if v[hw+k] > v[k]+1e-6 {
				t.Fatalf("%s: green above red at %d", r.id[i], k)
			}
		}
		if !redder {
			t.Fatalf("%s: no trace of the red source texture", r.id[i])
		}
	}
	// The fingerprint follows the source folder.
	a, err := p.Fingerprint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "banded", "s.png"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := p.Fingerprint(context.Background()); err != nil || a == b {
		t.Fatalf("adding a source image: fingerprint %q, %v; want one other than %q", b, err, a)
	}
}

func TestAugmentErrors(t *testing.T) {
	for i, c := range []struct {
		p    func(p *AugmentParams)
		want string
	}{
		{func(p *AugmentParams) { p.Generators = nil }, "generators"},
		{func(p *AugmentParams) { p.Generators = []string{"mixup"} }, "cutpaste, cutmix, draem"},
		{func(p *AugmentParams) { p.Generators = []string{"draem", "draem"} }, "twice"},
		{func(p *AugmentParams) { p.PreviewCount = -1 }, "preview_count"},
	} {
		if err := augmentParams(c.p).Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: %v, want an error mentioning %q", i, err, c.want)
		}
	}
	empty := t.TempDir()
	env := augmentEnv(t, augmentParams(func(p *AugmentParams) { p.Source = empty }), 1)
	if err := runAugment(context.Background(), env); err == nil || !strings.Contains(err.Error(), empty) {
		t.Errorf("empty source folder: %v", err)
	}
	env = augmentEnv(t, augmentParams(func(*AugmentParams) {}), 1)
	env.Inputs = env.Inputs[:1]
	if err := runAugment(context.Background(), env); err == nil || !strings.Contains(err.Error(), "backbone") {
		t.Errorf("missing backbone input: %v", err)
	}
	if len(env.Outputs()) != 0 {
		t.Error("output written despite the error")
	}
}

// TestAugmentConvNetBackbone runs the stage on a real (untrained, seeded) convnet stored as
// the features stage stores it, and checks the rows against extracting the same augmented
// copies directly.
func TestAugmentConvNetBackbone(t *testing.T) {
	root := writeMVTecTree(t, map[string]int{"train/good": 5})
	var normals []imgs.Image
	for i := 0; i < 5; i++ {
		b, _ := os.ReadFile(filepath.Join(root, "train", "good", "a"+string(rune('0'+i))+".png"))
		img, err := imgs.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		normals = append(normals, imgs.Resize(img, 16, 16))
	}
	net, _, err := backbone.TrainConvNet(context.Background(), backbone.ConvNetConfig{
		Size: 16, Channels: []int{4, 8}, Epochs: 0, Steps: 1, Batch: 4, LR: 1e-3, Seed: 1,
		Generators: []string{"cutpaste"}, Pseudo: augment.Apply,
	}, normals, nil)
	if err != nil {
		t.Fatal(err)
	}
	table, err := backboneTable(net)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { table.Release() })
	env := augmentEnvWith(t, augmentParams(func(p *AugmentParams) { p.Generators = []string{"cutmix"} }), 9, table)
	if err := runAugment(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	r := readPseudo(t, env)
	if len(r.id) != 10 || r.c[0] != 8 || r.h[0] != 4 || r.h[1] != 2 {
		t.Fatalf("%d rows, first shapes c %d h %d / %d", len(r.id), r.c[0], r.h[0], r.h[1])
	}
	// Normal 2's cutmix copy, made and extracted here, equals rows 4 and 5.
	others := append(append([]imgs.Image{}, normals[:2]...), normals[3:]...)
	copy2, err := augment.Apply("cutmix", normals[2], others, rand.New(rand.NewPCG(9, augmentStream(2, "cutmix"))))
	if err != nil {
		t.Fatal(err)
	}
	maps, err := net.Extract(context.Background(), []imgs.Image{copy2})
	if err != nil {
		t.Fatal(err)
	}
	if r.id[4] != "train/good/a2.png#cutmix" || !slices.Equal(r.values[4], maps[0].At(0)) || !slices.Equal(r.values[5], maps[1].At(0)) {
		t.Fatalf("row %s differs from extracting normal 2's cutmix copy directly", r.id[4])
	}
}
