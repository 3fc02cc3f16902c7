package tables

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// stored puts the tables into s and returns an env whose one input, stage src, reads them
// from the store as the pipeline does (OpenTable, and Open for whole tables).
func stored(t testing.TB, s artifacts.Store, src string, recs map[string]arrow.RecordBatch) *kind.Env {
	t.Helper()
	ctx := context.Background()
	digests := map[string]artifacts.Digest{}
	var names []string
	for name, rec := range recs {
		d, _, err := artifacts.Put(ctx, s, rec)
		if err != nil {
			t.Fatal(err)
		}
		digests[name] = d
		names = append(names, name)
	}
	return &kind.Env{Inputs: []kind.Input{{Stage: src, Outputs: names,
		Open: func(ctx context.Context, name string) (arrow.RecordBatch, error) {
			return artifacts.Get(ctx, s, digests[name])
		},
		OpenTable: func(ctx context.Context, name string) (*artifacts.TableReader, error) {
			return artifacts.OpenTable(ctx, s, digests[name])
		}}}}
}

// featureMaps makes n images' maps at two scales (c x h x w and c x h/2 x w/2), every value
// distinct, and the features table that holds them.
func featureMaps(t testing.TB, n, c, h, w int) ([]string, []fmap.Maps, arrow.RecordBatch) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("good/%05d.png", i)
	}
	ms := []fmap.Maps{fmap.New(n, c, h, w), fmap.New(n, c, h/2, w/2)}
	for _, m := range ms {
		for i := range m.Data {
			m.Data[i] = r.Float32()
		}
	}
	fw := MapWriter{Images: n}
	if err := fw.Add(ids, ms); err != nil {
		t.Fatal(err)
	}
	return ids, ms, written(t, func(env *kind.Env) error { return fw.Write(env, "features") })["features"]
}

// TestReadMapsFromStore reads chosen ids of a features table that spans many chunks of a
// store, and all of it, and compares the maps with those written; and reads the image index
// and image bytes from the store.
func TestReadMapsFromStore(t *testing.T) {
	ctx := context.Background()
	s, err := artifacts.Open("", artifacts.InMemory()) // 256 KiB chunks
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	ids, ms, rec := featureMaps(t, 300, 8, 8, 8) // 300 x 2 KiB + 512 B: 3 chunks
	defer rec.Release()
	env := stored(t, s, "features", map[string]arrow.RecordBatch{"features": rec})

	keep := map[string]bool{}
	var want []int
	for i := 0; i < len(ids); i += 7 {
		keep[ids[i]] = true
		want = append(want, i)
	}
	for _, tc := range []struct {
		name string
		keep map[string]bool
		rows []int
	}{{"some", keep, want}, {"all", nil, nil}} {
		set, err := ReadMaps(ctx, env, MapSource{Table: "features", Keep: tc.keep})
		if err != nil {
			t.Fatal(err)
		}
		rows := tc.rows
		if rows == nil {
			for i := range ids {
				rows = append(rows, i)
			}
		}
		if len(set.IDs) != len(rows) || len(set.Scales) != 2 {
			t.Fatalf("%s: %d ids at %d scales, want %d at 2", tc.name, len(set.IDs), len(set.Scales), len(rows))
		}
		for k, i := range rows {
			if set.IDs[k] != ids[i] {
				t.Fatalf("%s: id %d is %q, want %q", tc.name, k, set.IDs[k], ids[i])
			}
			for sc := range 2 {
				if !slices.Equal(set.Scales[sc].At(k), ms[sc].At(i)) {
					t.Fatalf("%s: %s scale %d differs", tc.name, ids[i], sc)
				}
			}
		}
		// The record path (tests) gives the same set.
		fromRec, err := MapSetFromRecords(OpenMaps{Rec: rec, Keep: tc.keep})
		if err != nil || !slices.Equal(fromRec.IDs, set.IDs) || !slices.Equal(fromRec.Scales[1].Data, set.Scales[1].Data) {
			t.Fatalf("%s: MapSetFromRecords differs from ReadMaps (%v)", tc.name, err)
		}
	}

	// A values column of the wrong type is named.
	bad, err := artifacts.NewTable(artifacts.Strings("id", []string{"a"}), artifacts.Int64s("scale", []int64{0}),
		artifacts.Int64s("c", []int64{1}), artifacts.Int64s("h", []int64{1}), artifacts.Int64s("w", []int64{1}),
		artifacts.Int64Lists("values", [][]int64{{1}}))
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Release()
	_, err = ReadMaps(ctx, stored(t, s, "features", map[string]arrow.RecordBatch{"features": bad}), MapSource{Table: "features"})
	if err == nil || !strings.Contains(err.Error(), `input features features: column "values" is list<item: int64`) {
		t.Fatalf("ReadMaps of int64 values: %v", err)
	}

	rows := []Image{
		{ID: "good/1.png", Split: "train", Label: 0, Class: "good", Bytes: []byte(strings.Repeat("x", 300_000))},
		{ID: "cut/2.png", Split: "test", Label: 1, Class: "cut", Bytes: []byte(strings.Repeat("y", 200_000))},
	}
	imgs := written(t, func(env *kind.Env) error { return WriteImages(env, rows) })
	ienv := stored(t, s, "ingest", imgs)
	r, err := OpenImages(ctx, ienv)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if strings.Join(r.IDs, ",") != "good/1.png,cut/2.png" || r.Class[1] != "cut" || r.Label[1] != 1 {
		t.Fatalf("index %+v", r.ImageIndex)
	}
	for i := range rows {
		b, err := r.Bytes(ctx, i)
		if err != nil || string(b) != string(rows[i].Bytes) {
			t.Fatalf("image %d: %d bytes, %v", i, len(b), err)
		}
	}
}

// BenchmarkReadMaps reads a 125 MB features table (1,000 images, 128 x 14 x 14 and
// 128 x 7 x 7) from a store on disk: all of it, and every 10th image, through ReadMaps
// (ranged reads) and as before (the whole blob decoded, then the maps copied out). It
// reports the bytes allocated per read relative to the table (alloc-x-table) and the
// peak heap while reading (peak-heap-MB, sampled).
func BenchmarkReadMaps(b *testing.B) {
	ctx := context.Background()
	s, err := artifacts.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	})
	ids, _, rec := featureMaps(b, 1000, 128, 14, 14)
	d, out, err := artifacts.Put(ctx, s, rec)
	rec.Release()
	if err != nil {
		b.Fatal(err)
	}
	tenth := map[string]bool{}
	for i := 0; i < len(ids); i += 10 {
		tenth[ids[i]] = true
	}
	env := &kind.Env{Inputs: []kind.Input{{Stage: "features", Outputs: []string{"features"},
		OpenTable: func(ctx context.Context, name string) (*artifacts.TableReader, error) {
			return artifacts.OpenTable(ctx, s, d)
		}}}}
	whole := func(keep map[string]bool) (fmap.Set, error) {
		rec, err := artifacts.Get(ctx, s, d)
		if err != nil {
			return fmap.Set{}, err
		}
		defer rec.Release()
		return wholeBlobMaps(rec, keep)
	}
	ranged := func(keep map[string]bool) (fmap.Set, error) {
		return ReadMaps(ctx, env, MapSource{Table: "features", Keep: keep})
	}
	for _, bc := range []struct {
		name string
		read func(map[string]bool) (fmap.Set, error)
		keep map[string]bool
	}{{"ranged/all", ranged, nil}, {"ranged/tenth", ranged, tenth}, {"wholeblob/all", whole, nil}, {"wholeblob/tenth", whole, tenth}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(out.Bytes)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				set, err := bc.read(bc.keep)
				if err != nil || len(set.IDs) == 0 {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/float64(out.Bytes), "alloc-x-table")
		})
	}
}

// wholeBlobMaps is ReadMaps as it was before ranged reads, for BenchmarkReadMaps: the
// decoded record's maps copied out.
func wholeBlobMaps(rec arrow.RecordBatch, keep map[string]bool) (fmap.Set, error) {
	ids, err := artifacts.StringCol(rec, "id")
	if err != nil {
		return fmap.Set{}, err
	}
	scale, _ := artifacts.Int64Col(rec, "scale")
	ch, _ := artifacts.Int64Col(rec, "c")
	h, _ := artifacts.Int64Col(rec, "h")
	w, _ := artifacts.Int64Col(rec, "w")
	vals, err := artifacts.Float32ListCol(rec, "values")
	if err != nil {
		return fmap.Set{}, err
	}
	var order []string
	var rows [2][]int
	for r, id := range ids {
		if keep != nil && !keep[id] {
			continue
		}
		if scale[r] == 0 {
			order = append(order, strings.Clone(id))
		}
		rows[scale[r]] = append(rows[scale[r]], r)
	}
	set := fmap.Set{IDs: order}
	for sc := range 2 {
		r0 := rows[sc][0]
		m := fmap.New(len(order), int(ch[r0]), int(h[r0]), int(w[r0]))
		for i, r := range rows[sc] {
			copy(m.At(i), vals[r])
		}
		set.Scales = append(set.Scales, m)
	}
	return set, nil
}
