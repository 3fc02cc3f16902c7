package tables

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/kind"
)

// written runs write on a fresh env and returns the tables it handed over.
func written(t testing.TB, write func(env *kind.Env) error) map[string]arrow.RecordBatch {
	t.Helper()
	env := &kind.Env{}
	if err := write(env); err != nil {
		t.Fatal(err)
	}
	return env.Outputs()
}

// reading returns an env whose one input, stage src, has the given tables; each Open
// retains the record, and the test checks every opened record was released.
func reading(t *testing.T, src string, recs map[string]arrow.RecordBatch) *kind.Env {
	t.Helper()
	var names []string
	for n := range recs {
		names = append(names, n)
	}
	open := 0
	t.Cleanup(func() {
		if open != 0 {
			t.Errorf("%d opened records not released", open)
		}
	})
	return &kind.Env{Inputs: []kind.Input{{Stage: src, Outputs: names,
		Open: func(ctx context.Context, name string) (arrow.RecordBatch, error) {
			rec, ok := recs[name]
			if !ok {
				return nil, fmt.Errorf("no output %q", name)
			}
			rec.Retain()
			open++
			return &countingRecord{RecordBatch: rec, open: &open}, nil
		}}}}
}

// countingRecord counts its Release calls against the open records.
type countingRecord struct {
	arrow.RecordBatch
	open *int
}

func (r *countingRecord) Release() {
	*r.open--
	r.RecordBatch.Release()
}

// inRecord reports whether s's bytes lie inside the value buffer of rec's string column col.
func inRecord(rec arrow.RecordBatch, col int, s string) bool {
	a := rec.Column(col).(*array.String)
	buf := a.ValueBytes()
	if len(buf) == 0 || len(s) == 0 {
		return false
	}
	lo, hi := uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&buf[0]))+uintptr(len(buf))
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	return p >= lo && p < hi
}

func TestImagesRoundTripOwnedIndex(t *testing.T) {
	rows := []Image{
		{ID: "good/1.png", Split: "train", Label: 0, Class: "good", Bytes: []byte{1, 2}},
		{ID: "cut/2.png", Split: "train", Label: 1, Class: "cut", Bytes: []byte{3}},
		{ID: "good/3.png", Split: "test", Label: 0, Class: "good", Bytes: []byte{4, 5, 6}},
	}
	out := written(t, func(env *kind.Env) error { return WriteImages(env, rows) })
	rec := out["images"]
	env := reading(t, "ingest", out)
	x, err := ReadImageIndex(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(x.TrainNormals(), ","); got != "good/1.png" {
		t.Errorf("train normals %s", got)
	}
	if got := strings.Join(x.TrainAnomalies(), ","); got != "cut/2.png" {
		t.Errorf("train anomalies %s", got)
	}
	if i, ok := x.Row("good/3.png"); !ok || i != 2 || x.Split[i] != "test" {
		t.Errorf("Row(good/3.png) = %d, %v", i, ok)
	}
	for _, id := range x.IDs {
		if inRecord(rec, 0, id) {
			t.Errorf("id %q aliases the images table's memory", id)
		}
	}
	r, err := OpenImages(context.Background(), env)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := r.Bytes(context.Background(), 2); err != nil || len(b) != 3 || b[2] != 6 {
		t.Errorf("Bytes(2) = %v, %v", b, err)
	}
	if b, err := r.Bytes(context.Background(), 0); err != nil || len(b) != 2 || b[0] != 1 {
		t.Errorf("Bytes(0) = %v, %v", b, err)
	}
	if _, err := r.Bytes(context.Background(), 3); err == nil || !strings.Contains(err.Error(), "no row 3") {
		t.Errorf("Bytes(3) of 3 images: %v", err)
	}
	r.Close()
	if _, err := r.Bytes(context.Background(), 0); err == nil {
		t.Error("Bytes after Close succeeded")
	}
}

func TestImagesRejectsBadRows(t *testing.T) {
	rows := []Image{{ID: "a", Split: "train", Class: "good"}, {ID: "a", Split: "test", Class: "good"}}
	out := written(t, func(env *kind.Env) error { return WriteImages(env, rows) })
	_, err := ReadImageIndex(context.Background(), reading(t, "ingest", out))
	if err == nil || !strings.Contains(err.Error(), `input ingest images: duplicate id "a"`) {
		t.Fatalf("got %v, want a duplicate id error naming the input", err)
	}
	rows[1] = Image{ID: "b", Split: "dev", Class: "good"}
	out = written(t, func(env *kind.Env) error { return WriteImages(env, rows) })
	if _, err := ReadImageIndex(context.Background(), reading(t, "ingest", out)); err == nil || !strings.Contains(err.Error(), `split "dev"`) {
		t.Fatalf("got %v, want a split error", err)
	}
}

func TestTasksRoundTrip(t *testing.T) {
	samples := []hadg.Sample{
		{Task: 0, Role: hadg.Support, ID: "n1", Label: 0, Kind: hadg.Kind("normal")},
		{Task: 0, Role: hadg.Query, ID: "n1#cutmix", Label: 2, Kind: hadg.Kind("pseudo"), Generator: "cutmix"},
	}
	out := written(t, func(env *kind.Env) error { return WriteTasks(env, samples) })
	got, err := ReadTasks(context.Background(), reading(t, "tasks", out))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != samples[1] || got[0] != samples[0] {
		t.Fatalf("got %+v, want %+v", got, samples)
	}
	if inRecord(out["tasks"], 2, got[1].ID) {
		t.Error("task ids alias the tasks table's memory")
	}
}

func TestReadMapsKeepsAndMerges(t *testing.T) {
	maps := func(n, c int, base float32) []fmap.Maps {
		m0, m1 := fmap.New(n, c, 2, 2), fmap.New(n, c, 1, 1)
		for i := range n {
			for k := range m0.At(i) {
				m0.At(i)[k] = base + float32(i)
			}
			m1.At(i)[0] = -base - float32(i)
		}
		return []fmap.Maps{m0, m1}
	}
	var fw MapWriter
	if err := fw.Add([]string{"a", "b", "c"}, maps(3, 2, 10)); err != nil {
		t.Fatal(err)
	}
	feats := written(t, func(env *kind.Env) error { return fw.Write(env, "features") })
	var pw MapWriter
	err := pw.Add([]string{"a#cutmix"}, maps(1, 2, 50), PerImage{Name: "source", Values: []string{"a"}},
		PerImage{Name: "generator", Values: []string{"cutmix"}})
	if err != nil {
		t.Fatal(err)
	}
	pseudo := written(t, func(env *kind.Env) error { return pw.Write(env, "pseudo") })
	env := reading(t, "features", feats)
	env.Inputs = append(env.Inputs, reading(t, "augment", pseudo).Inputs...)
	set, err := ReadMaps(context.Background(), env, MapSource{Table: "features", Keep: map[string]bool{"c": true, "a": true}},
		MapSource{Table: "pseudo"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.IDs, ","); got != "a,c,a#cutmix" {
		t.Fatalf("ids %s, want a,c,a#cutmix (table order, kept only)", got)
	}
	if v := set.Scales[0].At(1)[3]; v != 12 {
		t.Errorf("c's scale-0 value %v, want 12", v)
	}
	if v := set.Scales[1].At(2)[0]; v != -50 {
		t.Errorf("a#cutmix's scale-1 value %v, want -50", v)
	}
	ps, err := ReadPseudoIndex(context.Background(), reading(t, "augment", pseudo))
	if err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0] != (Pseudo{"a#cutmix", "a", "cutmix"}) {
		t.Errorf("pseudo index %+v, want one row per pseudo anomaly", ps)
	}
}

func TestMetricsCarryMeta(t *testing.T) {
	rows := []Metric{{"auroc", "all", 0.75}, {"auprc", "cut", 0.5}}
	out := written(t, func(env *kind.Env) error {
		return WriteMetrics(env, rows, Meta{MethodKey: "ahl", HeadKey: "dra"})
	})
	env := reading(t, "evaluate", out)
	got, meta, err := ReadMetrics(context.Background(), &env.Inputs[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1] != rows[1] {
		t.Errorf("rows %+v, want %+v", got, rows)
	}
	if meta.MethodLabel() != "ahl/dra" {
		t.Errorf("method label %q, want ahl/dra", meta.MethodLabel())
	}
	if l := (Meta{MethodKey: "ahl", HeadKey: "devnet", FusionKey: "knn"}).MethodLabel(); l != "ahl/devnet+knn" {
		t.Errorf("fused method label %q, want ahl/devnet+knn", l)
	}
	if (Meta{}).MethodLabel() != "?" {
		t.Error("a table without a method should be labelled ?")
	}
	if _, _, err := ReadTrainLog(context.Background(), &env.Inputs[0]); err == nil || !strings.Contains(err.Error(), "input evaluate log") {
		t.Errorf("reading a missing table: got %v", err)
	}
}
