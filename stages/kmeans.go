package stages

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/kmeans"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// kmeansVersion is the kmeans stage's code version (part of its cache key).
const kmeansVersion = 1

// KMeansParams configures the clusters stage (HADG step 1, AHL_SPEC.md).
type KMeansParams struct {
	// K is the number of clusters C (paper default 3).
	K int `json:"k"`
	// Restarts is the number of k-means++ starts; the lowest inertia wins.
	Restarts int `json:"restarts"`
	// Features is how an image's maps become one point: "pooled" (global average pool per
	// scale, concatenated) or "flattened" (whole maps).
	Features string `json:"features"`
}

// Validate checks the kmeans params.
func (p *KMeansParams) Validate() error {
	if p.K < 1 {
		return fmt.Errorf("k: %d, want >= 1", p.K)
	}
	if p.Restarts < 1 {
		return fmt.Errorf("restarts: %d, want >= 1", p.Restarts)
	}
	if p.Features != string(kmeans.Pooled) && p.Features != string(kmeans.Flattened) {
		return fmt.Errorf("features: %q, want %q or %q", p.Features, kmeans.Pooled, kmeans.Flattened)
	}
	return nil
}

func init() {
	register(kind.Definition{
		Kind:    "kmeans",
		Version: kmeansVersion,
		Params: func() any {
			return &KMeansParams{K: 3, Restarts: kmeans.DefaultRestarts, Features: string(kmeans.Pooled)}
		},
		Inputs:  kind.Inputs{Required: []string{"images", "features"}},
		Outputs: []string{"assignments", "centroids"},
		Run:     runKMeans,
	})
}

// runKMeans clusters the training normals (split train, label 0 in the ingest images table)
// by their features and writes their assignments (members of dropped clusters are absent)
// and the kept clusters' centroids.
func runKMeans(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*KMeansParams)
	imgs, err := loadImageIndex(ctx, env)
	if err != nil {
		return err
	}
	normals := imgs.trainNormals()
	if len(normals) == 0 {
		return errors.New("the images table has no training normals to cluster")
	}
	set, err := loadMapSet(ctx, env, "features", setOf(normals))
	if err != nil {
		return err
	}
	if set.Len() != len(normals) {
		return fmt.Errorf("features cover %d of the %d training normals", set.Len(), len(normals))
	}
	if p.K > set.Len() {
		return fmt.Errorf("k = %d clusters but only %d training normals", p.K, set.Len())
	}
	x, err := kmeans.Features(set.Scales, kmeans.Mode(p.Features))
	if err != nil {
		return err
	}
	res, err := kmeans.Fit(x, p.K, p.Restarts, rand.New(rand.NewPCG(env.Seed, 0)))
	if err != nil {
		return err
	}
	var ids []string
	var cl []int64
	for i, l := range res.Labels {
		if l >= 0 {
			ids = append(ids, set.IDs[i])
			cl = append(cl, int64(l))
		}
	}
	for _, d := range res.Dropped {
		fmt.Fprintf(env.Log, "%s: dropped a cluster of %d normals (fewer than %d members); they join the holistic task only\n",
			env.Stage, d.Size, kmeans.DefaultMinSize)
	}
	fmt.Fprintf(env.Log, "%s: %d normals in %d clusters of sizes %v (inertia %.4g)\n", env.Stage, set.Len(), len(res.Sizes), res.Sizes, res.Inertia)
	asg, err := artifacts.NewTable(artifacts.Strings("id", ids), artifacts.Int64s("cluster", cl))
	if err != nil {
		return err
	}
	env.Output("assignments", asg)
	cIDs := make([]int64, res.Centroids.N)
	cVals := make([][]float32, res.Centroids.N)
	for c := range cIDs {
		cIDs[c] = int64(c)
		cVals[c] = res.Centroids.Row(c)
	}
	cen, err := artifacts.NewTable(artifacts.Int64s("cluster", cIDs), artifacts.Float32Lists("values", cVals))
	if err != nil {
		return err
	}
	env.Output("centroids", cen)
	return nil
}

// imageIndex is the ingest images table without the image bytes: one entry per image in
// ingest order.
type imageIndex struct {
	IDs   []string
	Split []string
	Label []int64
	Class []string
	byID  map[string]int
}

// loadImageIndex reads the images table of the one upstream instance that has an `images`
// output (the ingest stage).
func loadImageIndex(ctx context.Context, env *kind.Env) (*imageIndex, error) {
	x, err := readImageIndex(ctx, env)
	if err != nil {
		return nil, err
	}
	// Nothing references the table's blob (every image's PNG bytes) any more: collect it now,
	// so that the stage's next input reuses its memory instead of growing the heap.
	runtime.GC()
	return x, nil
}

// readImageIndex is loadImageIndex's reader; the index holds copies, not the table's memory.
func readImageIndex(ctx context.Context, env *kind.Env) (*imageIndex, error) {
	in, err := env.With("images")
	if err != nil {
		return nil, err
	}
	rec, err := in.Open(ctx, "images")
	if err != nil {
		return nil, fmt.Errorf("input %s images: %w", in.Stage, err)
	}
	defer rec.Release()
	ids, err1 := artifacts.StringCol(rec, "id")
	split, err2 := artifacts.StringCol(rec, "split")
	label, err3 := artifacts.Int64Col(rec, "label")
	class, err4 := artifacts.StringCol(rec, "class")
	if err := firstErr(err1, err2, err3, err4); err != nil {
		return nil, fmt.Errorf("input %s images: %w", in.Stage, err)
	}
	// The strings are cloned: arrow's strings alias the table's blob, which holds every
	// image's PNG bytes, and the index outlives the record.
	cloneStrings(ids)
	cloneStrings(split)
	cloneStrings(class)
	x := &imageIndex{IDs: ids, Split: split, Label: append([]int64(nil), label...), Class: class, byID: make(map[string]int, len(ids))}
	for i, id := range ids {
		if _, dup := x.byID[id]; dup {
			return nil, fmt.Errorf("input %s images: duplicate id %q", in.Stage, id)
		}
		if split[i] != "train" && split[i] != "test" {
			return nil, fmt.Errorf("input %s images: id %q has split %q, want train or test", in.Stage, id, split[i])
		}
		if label[i] != 0 && label[i] != 1 {
			return nil, fmt.Errorf("input %s images: id %q has label %d, want 0 or 1", in.Stage, id, label[i])
		}
		x.byID[id] = i
	}
	return x, nil
}

// selectIDs returns the ids of the images of the given split and label, in ingest order.
func (x *imageIndex) selectIDs(split string, label int64) []string {
	var out []string
	for i := range x.IDs {
		if x.Split[i] == split && x.Label[i] == label {
			out = append(out, x.IDs[i])
		}
	}
	return out
}

// trainNormals returns the ids of the training normals, in ingest order.
func (x *imageIndex) trainNormals() []string { return x.selectIDs("train", 0) }

// trainAnomalies returns the ids of the labelled (seen) training anomalies, in ingest order.
func (x *imageIndex) trainAnomalies() []string { return x.selectIDs("train", 1) }

// cloneStrings replaces each string of s by a copy of its own, so that s does not keep
// alive the Arrow table (and the whole store blob under it) the strings were read from.
func cloneStrings(s []string) {
	for i, v := range s {
		s[i] = strings.Clone(v)
	}
}

func setOf(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}

// loadMapSet reads the feature maps of the one upstream instance that has the named output
// (`features` or `pseudo`; both have columns id, scale, c, h, w, values) into one fmap.Set.
// Only ids in keep are read (all when keep is nil); rows are in the table's order of first
// appearance, scales in increasing order. The maps and ids are copied out of the table, so
// the set does not keep the table's blob alive.
func loadMapSet(ctx context.Context, env *kind.Env, output string, keep map[string]bool) (fmap.Set, error) {
	in, err := env.With(output)
	if err != nil {
		return fmap.Set{}, err
	}
	rec, err := in.Open(ctx, output)
	if err != nil {
		return fmap.Set{}, fmt.Errorf("input %s %s: %w", in.Stage, output, err)
	}
	defer rec.Release()
	set, err := mapSetFromTable(rec, keep)
	if err != nil {
		return fmap.Set{}, fmt.Errorf("input %s %s: %w", in.Stage, output, err)
	}
	return set, nil
}

// mapSource is one feature-map table and the ids to read from it (all when keep is nil).
type mapSource struct {
	rec  arrow.RecordBatch
	keep map[string]bool
}

// mapSetFromTable is loadMapSet's table reader. Every id must have a map at every scale, and
// all maps of one scale must have one shape.
func mapSetFromTable(rec arrow.RecordBatch, keep map[string]bool) (fmap.Set, error) {
	return mapSetFromTables(mapSource{rec, keep})
}

// mapSetFromTables reads several feature-map tables (for example features and pseudo) into
// one set, rows in order of first appearance, copying each map once.
func mapSetFromTables(srcs ...mapSource) (fmap.Set, error) {
	type loc struct{ src, row int }
	type cell struct{ id, scale int }
	var order []string
	row := map[string]int{}
	at := map[cell]loc{} // (image row, scale) -> table row
	shapes := map[int64][3]int64{}
	vals := make([][][]float32, len(srcs))
	for si, src := range srcs {
		rec, keep := src.rec, src.keep
		ids, err1 := artifacts.StringCol(rec, "id")
		scale, err2 := artifacts.Int64Col(rec, "scale")
		c, err3 := artifacts.Int64Col(rec, "c")
		h, err4 := artifacts.Int64Col(rec, "h")
		w, err5 := artifacts.Int64Col(rec, "w")
		v, err6 := artifacts.Float32ListCol(rec, "values")
		if err := firstErr(err1, err2, err3, err4, err5, err6); err != nil {
			return fmap.Set{}, err
		}
		vals[si] = v
		for r, id := range ids {
			if keep != nil && !keep[id] {
				continue
			}
			if scale[r] < 0 {
				return fmap.Set{}, fmt.Errorf("row %d (id %q): scale %d", r, id, scale[r])
			}
			sh := [3]int64{c[r], h[r], w[r]}
			if sh[0] <= 0 || sh[1] <= 0 || sh[2] <= 0 || int64(len(v[r])) != sh[0]*sh[1]*sh[2] {
				return fmap.Set{}, fmt.Errorf("row %d (id %q): shape %v does not match %d values", r, id, sh, len(v[r]))
			}
			if old, ok := shapes[scale[r]]; ok && old != sh {
				return fmap.Set{}, fmt.Errorf("row %d (id %q): scale %d shape %v, other maps of that scale are %v", r, id, scale[r], sh, old)
			}
			shapes[scale[r]] = sh
			i, ok := row[id]
			if !ok {
				i = len(order)
				row[id] = i
				order = append(order, strings.Clone(id)) // not the blob's bytes: see loadMapSet
			}
			k := cell{i, int(scale[r])}
			if _, dup := at[k]; dup {
				return fmap.Set{}, fmt.Errorf("row %d: id %q has two maps at scale %d", r, id, scale[r])
			}
			at[k] = loc{si, r}
		}
	}
	var scales []int64
	for s := range shapes {
		scales = append(scales, s)
	}
	sort.Slice(scales, func(a, b int) bool { return scales[a] < scales[b] })
	for k, s := range scales {
		if s != int64(k) {
			return fmap.Set{}, fmt.Errorf("scales %v, want 0..%d", scales, len(scales)-1)
		}
	}
	set := fmap.Set{IDs: order, Scales: make([]fmap.Maps, len(scales))}
	for k := range scales {
		sh := shapes[int64(k)]
		m := fmap.New(len(order), int(sh[0]), int(sh[1]), int(sh[2]))
		for i, id := range order {
			l, ok := at[cell{i, k}]
			if !ok {
				return fmap.Set{}, fmt.Errorf("id %q has no map at scale %d", id, k)
			}
			copy(m.At(i), vals[l.src][l.row])
		}
		set.Scales[k] = m
	}
	return set, nil
}
