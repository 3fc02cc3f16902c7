package stages

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/artifacts"
)

// pngImagesTable is an ingest images table of real PNGs: normals are smooth ramps, anomalies
// carry a bright square. Sizes vary so the backbone must resize.
func pngImagesTable(t *testing.T, seed uint64) (arrow.RecordBatch, []imgs.Image) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	var ids, split, class []string
	var label []int64
	var data [][]byte
	var decoded []imgs.Image
	add := func(id, sp string, lab int64, side int) {
		im := imgs.NewImage(side, side+2)
		a := rng.Float32() * 0.5
		for i := range im.Pix {
			im.Pix[i] = 0.2 + a*float32(i%im.W)/float32(im.W) + 0.05*rng.Float32()
		}
		if lab == 1 {
			for c := 0; c < 3; c++ {
				p := im.Plane(c)
				for y := 2; y < 2+side/3; y++ {
					for x := 3; x < 3+side/3; x++ {
						p[y*im.W+x] = 1
					}
				}
			}
		}
		b, err := imgs.EncodePNG(im)
		if err != nil {
			t.Fatal(err)
		}
		back, err := imgs.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		ids, split, label, data, decoded = append(ids, id), append(split, sp), append(label, lab), append(data, b), append(decoded, back)
		cl := "good"
		if lab == 1 {
			cl = "square"
		}
		class = append(class, cl)
	}
	for i := 0; i < 12; i++ {
		add(fmt.Sprintf("train/good/%02d.png", i), "train", 0, 18+i%3)
	}
	add("train/square/00.png", "train", 1, 20)
	add("train/square/01.png", "train", 1, 19)
	add("test/good/00.png", "test", 0, 20)
	add("test/square/00.png", "test", 1, 21)
	rec, err := artifacts.NewTable(artifacts.Strings("id", ids), artifacts.Strings("split", split),
		artifacts.Int64s("label", label), artifacts.Strings("class", class), artifacts.Binaries("bytes", data))
	if err != nil {
		t.Fatal(err)
	}
	return rec, decoded
}

func smallConvNetParams() *FeaturesParams {
	d, _ := lookup("features")
	p := d.Params().(*FeaturesParams)
	p.Size, p.Channels, p.Epochs, p.Steps, p.Batch = 16, []int{4, 8}, 2, 3, 6
	return p
}

func mustDefaults[T any](t *testing.T, k string) T {
	d, ok := lookup(k)
	if !ok {
		t.Fatalf("kind %q not registered", k)
	}
	return d.Params().(T)
}

// checkFeatures checks the features table against the contract (stages/TABLES.md) and
// against what the backbone stored in the backbone table extracts itself.
func checkFeatures(t *testing.T, out map[string]arrow.RecordBatch, images []imgs.Image, ids []string, want [2][3]int64) {
	t.Helper()
	b, err := backboneFromTable(out["backbone"])
	if err != nil {
		t.Fatal(err)
	}
	ms, err := b.Extract(context.Background(), images)
	if err != nil {
		t.Fatal(err)
	}
	f := out["features"]
	gotIDs, _ := artifacts.StringCol(f, "id")
	scale, _ := artifacts.Int64Col(f, "scale")
	c, _ := artifacts.Int64Col(f, "c")
	h, _ := artifacts.Int64Col(f, "h")
	w, _ := artifacts.Int64Col(f, "w")
	vals, err := artifacts.Float32ListCol(f, "values")
	if err != nil {
		t.Fatal(err)
	}
	if len(gotIDs) != 2*len(ids) {
		t.Fatalf("%d rows, want %d (two scales per image)", len(gotIDs), 2*len(ids))
	}
	for r := range gotIDs {
		i, s := r/2, r%2
		if gotIDs[r] != ids[i] || scale[r] != int64(s) {
			t.Fatalf("row %d: (%s, scale %d), want (%s, scale %d): ingest order, scale 0 then 1", r, gotIDs[r], scale[r], ids[i], s)
		}
		if sh := [3]int64{c[r], h[r], w[r]}; sh != want[s] {
			t.Fatalf("row %d: shape %v, want %v", r, sh, want[s])
		}
		ref := ms[s].At(i)
		for k := range ref {
			if math.Abs(float64(vals[r][k]-ref[k])) > 1e-5 {
				t.Fatalf("row %d value %d: %g, the stored backbone gives %g", r, k, vals[r][k], ref[k])
			}
		}
	}
}

func TestFeaturesConvNet(t *testing.T) {
	images, decoded := pngImagesTable(t, 1)
	ids, _ := artifacts.StringCol(images, "id")
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images})
	out := runKind(t, "features", smallConvNetParams(), 7, in)
	if meta := schemaMeta(out["backbone"], backboneNameKey); meta != "convnet" {
		t.Errorf("backbone table names %q, want convnet", meta)
	}
	// 16 -> 8 -> 4 at scale 0 and 8 -> 4 -> 2 at scale 1, 8 channels.
	checkFeatures(t, out, decoded, ids, [2][3]int64{{8, 4, 4}, {8, 2, 2}})

	// The streamed values column has the type artifacts.Float32Lists gives.
	ref, err := artifacts.NewTable(artifacts.Strings("id", nil), artifacts.Int64s("scale", nil), artifacts.Int64s("c", nil),
		artifacts.Int64s("h", nil), artifacts.Int64s("w", nil), artifacts.Float32Lists("values", nil))
	if err != nil {
		t.Fatal(err)
	}
	if !ref.Schema().Equal(out["features"].Schema()) {
		t.Errorf("features schema %v, want %v", out["features"].Schema(), ref.Schema())
	}

	// Same seed: identical tables; another seed: another network.
	again := runKind(t, "features", smallConvNetParams(), 7, in)
	other := runKind(t, "features", smallConvNetParams(), 8, in)
	for _, name := range []string{"backbone", "features"} {
		if !tablesEqual(out[name], again[name]) {
			t.Errorf("%s differs between two runs with seed 7", name)
		}
	}
	if tablesEqual(out["features"], other["features"]) {
		t.Error("seeds 7 and 8 gave identical features")
	}
}

func TestFeaturesResNet18(t *testing.T) {
	images, decoded := pngImagesTable(t, 2)
	ids, _ := artifacts.StringCol(images, "id")
	path := filepath.Join(t.TempDir(), "r18.safetensors")
	writeRandomResNet18(t, path, 1)
	p := mustDefaults[*FeaturesParams](t, "features")
	p.Backbone, p.Weights, p.Size = "resnet18", path, 32
	fp1, err := p.Fingerprint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images})
	out := runKind(t, "features", p, 1, in)
	if schemaMeta(out["backbone"], backboneSizeKey) != "32" {
		t.Errorf("backbone table size %q, want 32", schemaMeta(out["backbone"], backboneSizeKey))
	}
	// 32 -> 1 x 1 (output stride 32) and 16 -> 1 x 1.
	checkFeatures(t, out, decoded, ids, [2][3]int64{{512, 1, 1}, {512, 1, 1}})

	// Other weights at the same path change the fingerprint.
	writeRandomResNet18(t, path, 2)
	fp2, err := p.Fingerprint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fp1 == fp2 {
		t.Error("fingerprint unchanged after the weights file changed")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Fingerprint(context.Background()); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("missing weights: fingerprint error %v, want one naming %s", err, path)
	}
	if _, err := tryKind("features", p, 1, in); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("missing weights: run error %v, want one naming %s", err, path)
	}
}

func writeRandomResNet18(t *testing.T, path string, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 0))
	var ts []backbone.Tensor
	for name, sh := range backbone.ResNet18Shapes() {
		n := 1
		for _, d := range sh {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(0.1 * rng.NormFloat64())
			if strings.HasSuffix(name, "running_var") || strings.HasSuffix(name, "bn1.weight") {
				v[i] = 1 + float32(math.Abs(float64(v[i])))
			}
		}
		ts = append(ts, backbone.Tensor{Name: name, Shape: sh, Values: v})
	}
	if err := backbone.WriteSafetensors(path, ts); err != nil {
		t.Fatal(err)
	}
}

func TestFeaturesErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(p *FeaturesParams)
		want string
	}{
		{"unknown backbone", func(p *FeaturesParams) { p.Backbone = "vgg" }, `backbone: "vgg"`},
		{"resnet18 without weights", func(p *FeaturesParams) { p.Backbone = "resnet18" }, "weights: required"},
		{"convnet with weights", func(p *FeaturesParams) { p.Weights = "w.safetensors" }, "only backbone resnet18"},
		{"size", func(p *FeaturesParams) { p.Size = 4 }, "size: 4"},
		{"channels", func(p *FeaturesParams) { p.Channels = []int{8, -1} }, "channels[1]"},
		{"generator", func(p *FeaturesParams) { p.Generators = []string{"blur"} }, `generators: unknown generator "blur"`},
		{"lr", func(p *FeaturesParams) { p.LR = 0 }, "lr: 0"},
	} {
		p := smallConvNetParams()
		tc.edit(p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
	// An undecodable image is named.
	rec, err := artifacts.NewTable(artifacts.Strings("id", []string{"train/good/bad.png"}), artifacts.Strings("split", []string{"train"}),
		artifacts.Int64s("label", []int64{0}), artifacts.Strings("class", []string{"good"}), artifacts.Binaries("bytes", [][]byte{[]byte("not a png")}))
	if err != nil {
		t.Fatal(err)
	}
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": rec})
	if _, err := tryKind("features", smallConvNetParams(), 1, in); err == nil || !strings.Contains(err.Error(), "train/good/bad.png") {
		t.Errorf("bad image: error %v, want one naming the id", err)
	}
	// A backbone table without its metadata is refused.
	bare, err := artifacts.TensorTable(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backboneFromTable(bare); err == nil || !strings.Contains(err.Error(), "schema metadata") {
		t.Errorf("bare tensor table: error %v", err)
	}
}

// TestExtractTableExtraColumns checks the helper the augment stage uses: per-image columns are
// repeated on both scale rows, after id.
func TestExtractTableExtraColumns(t *testing.T) {
	images, decoded := pngImagesTable(t, 3)
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images})
	out := runKind(t, "features", smallConvNetParams(), 1, in)
	b, err := backboneFromTable(out["backbone"])
	if err != nil {
		t.Fatal(err)
	}
	rec, err := extractTable(context.Background(), b, []string{"a#cutpaste", "b#draem"}, decoded[:2],
		perImage{Name: "source", Values: []string{"a", "b"}}, perImage{Name: "generator", Values: []string{"cutpaste", "draem"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range rec.Schema().Fields() {
		names = append(names, f.Name)
	}
	if got := strings.Join(names, ","); got != "id,source,generator,scale,c,h,w,values" {
		t.Errorf("columns %s", got)
	}
	gen, _ := artifacts.StringCol(rec, "generator")
	if strings.Join(gen, ",") != "cutpaste,cutpaste,draem,draem" {
		t.Errorf("generator column %v", gen)
	}
	if _, err := extractTable(context.Background(), b, []string{"a"}, decoded[:1], perImage{Name: "source", Values: nil}); err == nil {
		t.Error("an extra column with the wrong length should fail")
	}
}

// withSplits returns the images table rec with the split of the listed ids replaced.
func withSplits(t *testing.T, rec arrow.RecordBatch, split map[string]string) arrow.RecordBatch {
	t.Helper()
	ids, _ := artifacts.StringCol(rec, "id")
	sp, _ := artifacts.StringCol(rec, "split")
	cl, _ := artifacts.StringCol(rec, "class")
	lab, _ := artifacts.Int64Col(rec, "label")
	data, err := artifacts.BinaryCol(rec, "bytes")
	if err != nil {
		t.Fatal(err)
	}
	sp = append([]string(nil), sp...)
	for i, id := range ids {
		if s, ok := split[id]; ok {
			sp[i] = s
		}
	}
	out, err := artifacts.NewTable(artifacts.Strings("id", ids), artifacts.Strings("split", sp),
		artifacts.Int64s("label", lab), artifacts.Strings("class", cl), artifacts.Binaries("bytes", data))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFeaturesResize: with resize crop or pad the backbone sees each image made S x S by
// that mode (the stored features are the stored backbone's on imgs.Fit's images), the
// backbone table says so, and augment makes its pseudo anomalies from images prepared the
// same way (they differ from those of the same network told squash). Squash writes no
// resize metadata, so the default's bytes are those of before the param.
func TestFeaturesResize(t *testing.T) {
	images, decoded := pngImagesTable(t, 1)
	ids, _ := artifacts.StringCol(images, "id")
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images})
	if out := runKind(t, "features", smallConvNetParams(), 7, in); schemaMeta(out["backbone"], backboneResizeKey) != "" {
		t.Error("squash wrote resize metadata")
	}
	for _, mode := range []string{imgs.Crop, imgs.Pad} {
		p := smallConvNetParams()
		p.Resize = mode
		out := runKind(t, "features", p, 7, in)
		if got := schemaMeta(out["backbone"], backboneResizeKey); got != mode {
			t.Errorf("%s: backbone table resize %q", mode, got)
		}
		fitted := make([]imgs.Image, len(decoded))
		for i, im := range decoded {
			fitted[i], _ = imgs.Fit(im, mode, p.Size)
		}
		checkFeatures(t, out, fitted, ids, [2][3]int64{{8, 4, 4}, {8, 2, 2}})

		feat := memInput("features", "", nil, out)
		pseudo := runKind(t, "augment", nil, 3, in, feat)["pseudo"]
		squashed := withMeta(out["backbone"], map[string]string{backboneResizeKey: imgs.Squash})
		other := runKind(t, "augment", nil, 3, in, memInput("features", "", nil, map[string]arrow.RecordBatch{"backbone": squashed, "features": out["features"]}))["pseudo"]
		if tablesEqual(pseudo, other) {
			t.Errorf("%s: augment's pseudo anomalies do not depend on the backbone table's resize mode", mode)
		}
	}
	p := smallConvNetParams()
	p.Resize = "stretch"
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), `resize: "stretch"`) {
		t.Errorf("resize stretch: err = %v", err)
	}
}

// TestFeaturesEarlyStop: early stopping needs ingest's validation split (a clear error
// without one) and, with one, trains deterministically.
func TestFeaturesEarlyStop(t *testing.T) {
	images, _ := pngImagesTable(t, 1)
	p := smallConvNetParams()
	p.Epochs, p.EarlyStop = 4, 1
	_, err := tryKind("features", p, 7, memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images}))
	if err == nil || !strings.Contains(err.Error(), "early_stop: 1 needs ingest's validation split") {
		t.Errorf("early stop without a validation split: err = %v", err)
	}
	val := withSplits(t, images, map[string]string{"train/good/00.png": "val", "train/good/01.png": "val", "train/good/02.png": "val", "train/square/01.png": "val"})
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": val})
	a, b := runKind(t, "features", p, 7, in), runKind(t, "features", p, 7, in)
	if !tablesEqual(a["features"], b["features"]) {
		t.Error("early stopping: two runs with seed 7 differ")
	}
	p.EarlyStop = -1
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "early_stop: -1") {
		t.Errorf("early_stop -1: err = %v", err)
	}
}

// TestFeaturesPseudoOnly: with pseudo_only the convnet trains as if the labelled anomalies
// were not training images (the same network as when they are moved to the test split), so
// it differs from the default network, which trains on them; without generators it is an
// error.
func TestFeaturesPseudoOnly(t *testing.T) {
	images, _ := pngImagesTable(t, 1)
	in := memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images})
	p := smallConvNetParams()
	p.PseudoOnly = true
	pseudoOnly := runKind(t, "features", p, 7, in)
	moved := withSplits(t, images, map[string]string{"train/square/00.png": "test", "train/square/01.png": "test"})
	withoutLabelled := runKind(t, "features", smallConvNetParams(), 7, memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": moved}))
	if !tablesEqual(pseudoOnly["backbone"], withoutLabelled["backbone"]) {
		t.Error("pseudo_only: the network differs from the one trained with the labelled anomalies moved out of the training split")
	}
	if def := runKind(t, "features", smallConvNetParams(), 7, in); tablesEqual(pseudoOnly["backbone"], def["backbone"]) {
		t.Error("pseudo_only gave the same network as training on the labelled anomalies")
	}
	p.Generators = nil
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "pseudo_only: true with no generators") {
		t.Errorf("pseudo_only without generators: err = %v", err)
	}
}
