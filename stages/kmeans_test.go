package stages

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// testImage is one row of a hand-built ingest images table.
type testImage struct {
	id, split string
	label     int64
	class     string
}

func imagesTableT(t *testing.T, imgs []testImage) arrow.RecordBatch {
	t.Helper()
	var ids, split, class []string
	var label []int64
	var bytes [][]byte
	for _, im := range imgs {
		ids, split, class, label = append(ids, im.id), append(split, im.split), append(class, im.class), append(label, im.label)
		bytes = append(bytes, []byte("png"))
	}
	rec, err := artifacts.NewTable(artifacts.Strings("id", ids), artifacts.Strings("split", split),
		artifacts.Int64s("label", label), artifacts.Strings("class", class), artifacts.Binaries("bytes", bytes))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// mapsTableT builds a features table (or, with pseudo, a pseudo table whose ids are
// "<source>#<generator>") with two scales: scale 0 is c x 2 x 2, scale 1 is c x 1 x 1; every
// value of id's maps is fill(id, scale, channel).
func mapsTableT(t *testing.T, ids []string, c int, fill func(id string, scale, ch int) float32, pseudo bool) arrow.RecordBatch {
	t.Helper()
	return mapsTableSized(t, ids, c, []int{2, 1}, func(id string, s, ch, _ int) float32 { return fill(id, s, ch) }, pseudo)
}

// mapsTableSized is mapsTableT with square maps of the given sizes per scale and a value per
// position: fill(id, scale, channel, position).
func mapsTableSized(t *testing.T, ids []string, c int, sizes []int, fill func(id string, scale, ch, pos int) float32, pseudo bool) arrow.RecordBatch {
	t.Helper()
	var rid, src, gen []string
	var sc, cc, hh, ww []int64
	var vals [][]float32
	for _, id := range ids {
		for s, hw := range sizes {
			v := make([]float32, c*hw*hw)
			for ch := 0; ch < c; ch++ {
				for k := 0; k < hw*hw; k++ {
					v[ch*hw*hw+k] = fill(id, s, ch, k)
				}
			}
			rid, sc, cc, hh, ww = append(rid, id), append(sc, int64(s)), append(cc, int64(c)), append(hh, int64(hw)), append(ww, int64(hw))
			vals = append(vals, v)
			if pseudo {
				s, g, _ := strings.Cut(id, "#")
				src, gen = append(src, s), append(gen, g)
			}
		}
	}
	cols := []artifacts.Col{artifacts.Strings("id", rid)}
	if pseudo {
		cols = append(cols, artifacts.Strings("source", src), artifacts.Strings("generator", gen))
	}
	cols = append(cols, artifacts.Int64s("scale", sc), artifacts.Int64s("c", cc), artifacts.Int64s("h", hh),
		artifacts.Int64s("w", ww), artifacts.Float32Lists("values", vals))
	rec, err := artifacts.NewTable(cols...)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// clusteredSet is 12 training normals in three tight groups (g0, g1, g2), two seen anomalies
// and four test images; every image's maps are its group's value plus a small offset.
func clusteredSet(t *testing.T) (images, features arrow.RecordBatch, normals []string) {
	var imgs []testImage
	var all []string
	for g := 0; g < 3; g++ {
		for i := 0; i < 4; i++ {
			id := fmt.Sprintf("train/good/g%d_%d.png", g, i)
			imgs = append(imgs, testImage{id, "train", 0, "good"})
			normals = append(normals, id)
		}
	}
	imgs = append(imgs, testImage{"train/cut/a0.png", "train", 1, "cut"}, testImage{"train/cut/a1.png", "train", 1, "cut"},
		testImage{"test/good/t0.png", "test", 0, "good"}, testImage{"test/good/t1.png", "test", 0, "good"},
		testImage{"test/hole/h0.png", "test", 1, "hole"}, testImage{"test/cut/c0.png", "test", 1, "cut"})
	for _, im := range imgs {
		all = append(all, im.id)
	}
	fill := func(id string, s, ch int) float32 {
		var g, i int
		if _, err := fmt.Sscanf(id, "train/good/g%d_%d.png", &g, &i); err != nil {
			return 100 // anomalies and test images sit far away: clustering them would show
		}
		v := float32(0)
		if ch == g {
			v = 10
		}
		return v + 0.01*float32(i) + float32(s)
	}
	return imagesTableT(t, imgs), mapsTableT(t, all, 3, fill, false), normals
}

func TestKMeansClustersTrainingNormalsOnly(t *testing.T) {
	images, features, normals := clusteredSet(t)
	ins := []kind.Input{
		memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images}),
		memInput("features", "", nil, map[string]arrow.RecordBatch{"features": features, "backbone": features}),
	}
	out := runKind(t, "kmeans", nil, 7, ins...)
	ids, _ := artifacts.StringCol(out["assignments"], "id")
	cl, _ := artifacts.Int64Col(out["assignments"], "cluster")
	if strings.Join(ids, ",") != strings.Join(normals, ",") {
		t.Fatalf("assigned ids %v, want the 12 training normals in ingest order", ids)
	}
	// Each group is one cluster; canonical ids number clusters by their first member.
	for i, id := range ids {
		if want := int64(i / 4); cl[i] != want {
			t.Errorf("%s in cluster %d, want %d", id, cl[i], want)
		}
	}
	if n := out["centroids"].NumRows(); n != 3 {
		t.Errorf("%d centroids, want 3", n)
	}
	cv, _ := artifacts.Float32ListCol(out["centroids"], "values")
	// Pooled points are 3 channels per scale: 6 values; cluster 1's channel 1 is ~10.
	if len(cv[1]) != 6 || cv[1][1] < 9.9 || cv[1][1] > 10.1 {
		t.Errorf("centroid 1 = %v, want 6 values with channel 1 near 10", cv[1])
	}
	// The same seed gives the same tables.
	again := runKind(t, "kmeans", nil, 7, ins...)
	cl2, _ := artifacts.Int64Col(again["assignments"], "cluster")
	if fmt.Sprint(cl) != fmt.Sprint(cl2) {
		t.Errorf("same seed, different clusters: %v vs %v", cl, cl2)
	}
}

func TestKMeansErrors(t *testing.T) {
	images, features, _ := clusteredSet(t)
	ins := []kind.Input{
		memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": images}),
		memInput("features", "", nil, map[string]arrow.RecordBatch{"features": features}),
	}
	if _, err := tryKind("kmeans", &KMeansParams{K: 13, Restarts: 1, Features: "pooled"}, 1, ins...); err == nil || !strings.Contains(err.Error(), "only 12 training normals") {
		t.Errorf("k > normals: err = %v", err)
	}
	if err := (&KMeansParams{K: 3, Restarts: 1, Features: "mean"}).Validate(); err == nil {
		t.Error("features mean should not validate")
	}
	if _, err := tryKind("kmeans", nil, 1, ins[0]); err == nil || !strings.Contains(err.Error(), `"features" output`) {
		t.Errorf("missing features input: err = %v", err)
	}
	// A features table that misses one normal is an error naming the counts.
	_, _, normals := clusteredSet(t)
	short := mapsTableT(t, normals[1:], 3, func(string, int, int) float32 { return 1 }, false)
	ins[1] = memInput("features", "", nil, map[string]arrow.RecordBatch{"features": short})
	if _, err := tryKind("kmeans", nil, 1, ins...); err == nil || !strings.Contains(err.Error(), "cover 11 of the 12") {
		t.Errorf("short features: err = %v", err)
	}
}

func TestMapSetFromTableErrors(t *testing.T) {
	ok := mapsTableT(t, []string{"a", "b"}, 2, func(string, int, int) float32 { return 1 }, false)
	set, err := mapSetFromTable(ok, map[string]bool{"b": true})
	if err != nil || set.Len() != 1 || set.IDs[0] != "b" || len(set.Scales) != 2 || set.Scales[0].H != 2 || set.Scales[1].H != 1 {
		t.Fatalf("keep b: %+v, %v", set, err)
	}
	// Drop b's scale 1 row: b has no map at scale 1.
	ids, _ := artifacts.StringCol(ok, "id")
	sc, _ := artifacts.Int64Col(ok, "scale")
	vals, _ := artifacts.Float32ListCol(ok, "values")
	n := len(ids) - 1
	rec, err := artifacts.NewTable(artifacts.Strings("id", ids[:n]), artifacts.Int64s("scale", sc[:n]),
		artifacts.Int64s("c", []int64{2, 2, 2}), artifacts.Int64s("h", []int64{2, 1, 2}), artifacts.Int64s("w", []int64{2, 1, 2}),
		artifacts.Float32Lists("values", vals[:n]))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mapSetFromTable(rec, nil); err == nil || !strings.Contains(err.Error(), `"b" has no map at scale 1`) {
		t.Errorf("missing scale: err = %v", err)
	}
	// A shape that disagrees with the values.
	rec, _ = artifacts.NewTable(artifacts.Strings("id", []string{"a"}), artifacts.Int64s("scale", []int64{0}),
		artifacts.Int64s("c", []int64{2}), artifacts.Int64s("h", []int64{3}), artifacts.Int64s("w", []int64{3}),
		artifacts.Float32Lists("values", [][]float32{{1, 2}}))
	if _, err := mapSetFromTable(rec, nil); err == nil || !strings.Contains(err.Error(), "does not match 2 values") {
		t.Errorf("bad shape: err = %v", err)
	}
}

// inBlob reports whether s's bytes lie inside b.
func inBlob(s string, b []byte) bool {
	if len(s) == 0 || len(b) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.StringData(s))), uintptr(unsafe.Pointer(&b[0]))
	return p >= lo && p < lo+uintptr(len(b))
}

// decodedT round-trips rec through Arrow IPC, as the store does: the decoded table aliases
// the returned bytes.
func decodedT(t *testing.T, rec arrow.RecordBatch) (arrow.RecordBatch, []byte) {
	t.Helper()
	b, err := artifacts.EncodeIPC(rec)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := artifacts.DecodeIPC(b)
	if err != nil {
		t.Fatal(err)
	}
	return dec, b
}

// The image index and map sets outlive their tables; their strings must be copies, or they
// keep the whole store blob (the images' PNG bytes, every map) alive.
func TestReadersCopyOutOfTheBlob(t *testing.T) {
	images, features, normals := clusteredSet(t)
	imgRec, imgBlob := decodedT(t, images)
	defer imgRec.Release()
	if ids, _ := artifacts.StringCol(imgRec, "id"); !inBlob(ids[0], imgBlob) {
		t.Fatal("the decoded table's strings do not alias its blob: this test checks nothing")
	}
	env := &kind.Env{Stage: "kmeans", Inputs: []kind.Input{memInput("ingest", "", nil, map[string]arrow.RecordBatch{"images": imgRec})}}
	x, err := loadImageIndex(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if len(x.IDs) != 18 || x.IDs[0] != normals[0] || x.Split[17] != "test" || x.Class[17] != "cut" {
		t.Fatalf("index: ids %q, split %q, class %q", x.IDs, x.Split, x.Class)
	}
	for i := range x.IDs {
		for _, s := range []string{x.IDs[i], x.Split[i], x.Class[i]} {
			if inBlob(s, imgBlob) {
				t.Errorf("image index row %d: %q aliases the images blob", i, s)
			}
		}
	}
	featRec, featBlob := decodedT(t, features)
	defer featRec.Release()
	set, err := mapSetFromTable(featRec, setOf(normals))
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != len(normals) || set.IDs[0] != normals[0] {
		t.Fatalf("map set ids %q, want %q", set.IDs, normals)
	}
	for i, id := range set.IDs {
		if inBlob(id, featBlob) {
			t.Errorf("map set row %d: %q aliases the features blob", i, id)
		}
	}
}
