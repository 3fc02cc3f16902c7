package tables

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// PerImage is a string column of a feature-map table with one value per image, repeated on
// each of the image's rows (the pseudo table's source and generator).
type PerImage struct {
	Name   string
	Values []string
}

// MapWriter accumulates the rows of a feature-map table (features, pseudo): one per image per
// scale, images in the order added, scale 0 then scale 1 (stages/TABLES.md). The maps go
// straight into an Arrow list builder, so a large table is held once, not twice.
type MapWriter struct {
	// Images, when set before the first Add, is the number of images that will be added:
	// the value buffer is then allocated once, at its final size.
	Images int

	ids            []string
	scale, c, h, w []int64
	extraNames     []string
	extra          [][]string
	values         *array.ListBuilder
	added          int
}

// Add appends the rows of images ids, whose maps are ms (one fmap.Maps per scale, image i
// at row i of each). Every call must pass the same extra columns (by name, in order), with
// one value per image each.
func (r *MapWriter) Add(ids []string, ms []fmap.Maps, extra ...PerImage) error {
	for s, m := range ms {
		if m.N != len(ids) {
			return fmt.Errorf("extract: scale %d has %d maps for %d images", s, m.N, len(ids))
		}
	}
	if r.values == nil {
		for _, e := range extra {
			r.extraNames = append(r.extraNames, e.Name)
		}
		r.extra = make([][]string, len(extra))
		r.values = array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	}
	if len(extra) != len(r.extraNames) {
		return fmt.Errorf("extract: %d extra columns, earlier calls had %v", len(extra), r.extraNames)
	}
	for k, e := range extra {
		if e.Name != r.extraNames[k] || len(e.Values) != len(ids) {
			return fmt.Errorf("extract: extra column %q with %d values for %d images (want %q)", e.Name, len(e.Values), len(ids), r.extraNames[k])
		}
	}
	vb := r.values.ValueBuilder().(*array.Float32Builder)
	if r.added == 0 && r.Images > len(ids) {
		per := 0
		for _, m := range ms {
			per += m.Size()
		}
		vb.Reserve(per * r.Images)
	}
	for i, id := range ids {
		for s, m := range ms {
			r.ids = append(r.ids, id)
			r.scale = append(r.scale, int64(s))
			r.c, r.h, r.w = append(r.c, int64(m.C)), append(r.h, int64(m.H)), append(r.w, int64(m.W))
			r.values.Append(true)
			vb.AppendValues(m.At(i), nil)
			for k, e := range extra {
				r.extra[k] = append(r.extra[k], e.Values[i])
			}
		}
	}
	r.added += len(ids)
	return nil
}

// Write hands the rows' table to env under name (features or pseudo) and resets r. The
// columns are id, the extra columns, scale, c, h, w, values.
func (r *MapWriter) Write(env *kind.Env, name string) error {
	rec, err := r.table()
	if err != nil {
		return fmt.Errorf("%s table: %w", name, err)
	}
	env.Output(name, rec)
	return nil
}

func (r *MapWriter) table() (arrow.RecordBatch, error) {
	if r.values == nil {
		r.values = array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	}
	defer r.values.Release()
	// Build the small columns through artifacts, then swap in the values column.
	cols := []artifacts.Col{artifacts.Strings("id", r.ids)}
	for k, name := range r.extraNames {
		cols = append(cols, artifacts.Strings(name, r.extra[k]))
	}
	cols = append(cols, artifacts.Int64s("scale", r.scale), artifacts.Int64s("c", r.c), artifacts.Int64s("h", r.h),
		artifacts.Int64s("w", r.w))
	small, err := artifacts.NewTable(cols...)
	if err != nil {
		return nil, err
	}
	defer small.Release()
	vals := r.values.NewArray()
	defer vals.Release()
	if vals.Len() != int(small.NumRows()) {
		return nil, fmt.Errorf("extract: %d value rows for %d rows", vals.Len(), small.NumRows())
	}
	fields := append(small.Schema().Fields(), arrow.Field{Name: "values", Type: vals.DataType()})
	arrs := append(append([]arrow.Array(nil), small.Columns()...), vals)
	*r = MapWriter{}
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, int64(vals.Len())), nil
}

// MapSource names a feature-map table to read (features or pseudo) and the ids to read from
// it (all when Keep is nil).
type MapSource struct {
	Table string
	Keep  map[string]bool
}

// ReadMaps reads the feature maps of the given tables, each from the one input of env that
// has it, into one set: rows in order of first appearance (table by table), scales in
// increasing order, each map copied once. Every id must have a map at every scale, and all
// maps of one scale one shape. The tables are released before it returns.
//
// Each table is still read whole from the store while ReadMaps runs (see the package doc);
// only the kept maps are copied.
func ReadMaps(ctx context.Context, env *kind.Env, srcs ...MapSource) (fmap.Set, error) {
	recs := make([]OpenMaps, 0, len(srcs))
	defer func() {
		for _, r := range recs {
			r.Rec.Release()
		}
	}()
	var names []string
	for _, src := range srcs {
		rec, in, err := openFrom(ctx, env, src.Table)
		if err != nil {
			return fmap.Set{}, err
		}
		recs = append(recs, OpenMaps{rec, src.Keep, "input " + in + " " + src.Table})
		names = append(names, src.Table)
	}
	set, err := MapSetFromRecords(recs...)
	if err != nil && len(srcs) > 1 {
		return fmap.Set{}, fmt.Errorf("%s: %w", strings.Join(names, " and "), err)
	}
	return set, err
}

// OpenMaps is an open feature-map table and the ids to read from it (all when Keep is nil),
// for MapSetFromRecords.
type OpenMaps struct {
	Rec  arrow.RecordBatch
	Keep map[string]bool
	name string // "input features[seed=1] features", for errors
}

// MapSetFromRecords reads open feature-map tables into one set, as ReadMaps does. It is for
// code that already holds the records (tests, and train until it reads through ReadMaps);
// the caller releases them.
func MapSetFromRecords(srcs ...OpenMaps) (fmap.Set, error) {
	type loc struct{ src, row int }
	type cell struct{ id, scale int }
	var order []string
	row := map[string]int{}
	at := map[cell]loc{} // (image row, scale) -> table row
	shapes := map[int64][3]int64{}
	vals := make([][][]float32, len(srcs))
	for si, src := range srcs {
		fail := func(err error) (fmap.Set, error) {
			if src.name != "" {
				err = fmt.Errorf("%s: %w", src.name, err)
			}
			return fmap.Set{}, err
		}
		rec, keep := src.Rec, src.Keep
		ids, err1 := artifacts.StringCol(rec, "id")
		c := cols{rec: rec}
		c.keep(err1)
		scale, ch, h, w := c.int64s("scale"), c.int64s("c"), c.int64s("h"), c.int64s("w")
		v := c.float32ListsAlias("values")
		if c.err != nil {
			return fail(c.err)
		}
		vals[si] = v
		for r, id := range ids {
			if keep != nil && !keep[id] {
				continue
			}
			if scale[r] < 0 {
				return fail(fmt.Errorf("row %d (id %q): scale %d", r, id, scale[r]))
			}
			sh := [3]int64{ch[r], h[r], w[r]}
			if sh[0] <= 0 || sh[1] <= 0 || sh[2] <= 0 || int64(len(v[r])) != sh[0]*sh[1]*sh[2] {
				return fail(fmt.Errorf("row %d (id %q): shape %v does not match %d values", r, id, sh, len(v[r])))
			}
			if old, ok := shapes[scale[r]]; ok && old != sh {
				return fail(fmt.Errorf("row %d (id %q): scale %d shape %v, other maps of that scale are %v", r, id, scale[r], sh, old))
			}
			shapes[scale[r]] = sh
			i, ok := row[id]
			if !ok {
				i = len(order)
				row[id] = i
				order = append(order, strings.Clone(id)) // not the table's bytes
			}
			k := cell{i, int(scale[r])}
			if _, dup := at[k]; dup {
				return fail(fmt.Errorf("row %d: id %q has two maps at scale %d", r, id, scale[r]))
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

// Pseudo is one pseudo anomaly of the pseudo table, without its maps.
type Pseudo struct {
	ID        string // <source id>#<generator>
	Source    string
	Generator string
}

// ReadPseudoIndex reads the pseudo anomalies of the one input of env that has a pseudo
// table, once each (the table has one row per scale), in table order, without their maps.
func ReadPseudoIndex(ctx context.Context, env *kind.Env) ([]Pseudo, error) {
	rec, in, err := openFrom(ctx, env, "pseudo")
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	ids, err1 := artifacts.StringCol(rec, "id")
	src, err2 := artifacts.StringCol(rec, "source")
	gen, err3 := artifacts.StringCol(rec, "generator")
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			return nil, fmt.Errorf("input %s pseudo: %w", in, err)
		}
	}
	var out []Pseudo
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, Pseudo{strings.Clone(id), strings.Clone(src[i]), strings.Clone(gen[i])})
	}
	return out, nil
}
