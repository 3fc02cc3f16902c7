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
// increasing order. Every id must have a map at every scale, and all maps of one scale one
// shape.
//
// It reads the tables' small columns (id, scale, c, h, w and the list offsets) whole, and of
// the values only the rows it keeps, straight into the set: its memory is the set's, not the
// tables' (see artifacts.TableReader).
func ReadMaps(ctx context.Context, env *kind.Env, srcs ...MapSource) (fmap.Set, error) {
	tabs := make([]mapTable, 0, len(srcs))
	defer func() {
		for _, t := range tabs {
			t.t.Close()
		}
	}()
	var names []string
	for _, src := range srcs {
		t, in, err := openTableFrom(ctx, env, src.Table)
		if err != nil {
			return fmap.Set{}, err
		}
		tabs = append(tabs, mapTable{t, src.Keep, "input " + in + " " + src.Table})
		names = append(names, src.Table)
	}
	set, err := readMapSet(ctx, tabs)
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
}

// MapSetFromRecords reads feature-map tables held as records into one set, as ReadMaps
// does (through the same reader, over each record's encoding). It is for code that holds the
// records (tests); the caller releases them.
func MapSetFromRecords(srcs ...OpenMaps) (fmap.Set, error) {
	ctx := context.Background()
	tabs := make([]mapTable, 0, len(srcs))
	defer func() {
		for _, t := range tabs {
			t.t.Close()
		}
	}()
	for _, src := range srcs {
		t, err := recordTable(ctx, src.Rec)
		if err != nil {
			return fmap.Set{}, err
		}
		tabs = append(tabs, mapTable{t: t, keep: src.Keep})
	}
	return readMapSet(ctx, tabs)
}

// mapTable is a feature-map table opened for ranged reads and the ids to read from it.
type mapTable struct {
	t    *artifacts.TableReader
	keep map[string]bool
	name string // "input features[seed=1] features", for errors
}

// mapValuesType is the type of a feature-map table's values column.
var mapValuesType = arrow.ListOf(arrow.PrimitiveTypes.Float32)

func readMapSet(ctx context.Context, srcs []mapTable) (fmap.Set, error) {
	type loc struct {
		src, row int
		a, b     int64 // the row's element range in the values column
	}
	type cell struct{ id, scale int }
	var order []string
	row := map[string]int{}
	at := map[cell]loc{} // (image row, scale) -> table row
	shapes := map[int64][3]int64{}
	for si, src := range srcs {
		fail := func(err error) (fmap.Set, error) {
			if src.name != "" {
				err = fmt.Errorf("%s: %w", src.name, err)
			}
			return fmap.Set{}, err
		}
		t, keep := src.t, src.keep
		if f, ok := t.Schema().FieldsByName("values"); ok && !arrow.TypeEqual(f[0].Type, mapValuesType) {
			return fail(fmt.Errorf("column \"values\" is %s, want %s", f[0].Type, mapValuesType))
		}
		ids, err := t.Strings(ctx, "id")
		if err != nil {
			return fail(err)
		}
		var scale, ch, h, w []int64
		for _, c := range []struct {
			name string
			dst  *[]int64
		}{{"scale", &scale}, {"c", &ch}, {"h", &h}, {"w", &w}} {
			if *c.dst, err = t.Int64s(ctx, c.name); err != nil {
				return fail(err)
			}
		}
		off, err := t.Offsets(ctx, "values")
		if err != nil {
			return fail(err)
		}
		for r, id := range ids {
			if keep != nil && !keep[id] {
				continue
			}
			if scale[r] < 0 {
				return fail(fmt.Errorf("row %d (id %q): scale %d", r, id, scale[r]))
			}
			sh := [3]int64{ch[r], h[r], w[r]}
			if n := off[r+1] - off[r]; sh[0] <= 0 || sh[1] <= 0 || sh[2] <= 0 || n != sh[0]*sh[1]*sh[2] {
				return fail(fmt.Errorf("row %d (id %q): shape %v does not match %d values", r, id, sh, n))
			}
			if old, ok := shapes[scale[r]]; ok && old != sh {
				return fail(fmt.Errorf("row %d (id %q): scale %d shape %v, other maps of that scale are %v", r, id, scale[r], sh, old))
			}
			shapes[scale[r]] = sh
			i, ok := row[id]
			if !ok {
				i = len(order)
				row[id] = i
				order = append(order, strings.Clone(id)) // not the whole id column
			}
			k := cell{i, int(scale[r])}
			if _, dup := at[k]; dup {
				return fail(fmt.Errorf("row %d: id %q has two maps at scale %d", r, id, scale[r]))
			}
			at[k] = loc{si, r, off[r], off[r+1]}
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
	type read struct {
		loc
		dst []float32
	}
	reads := make([][]read, len(srcs))
	for k := range scales {
		sh := shapes[int64(k)]
		m := fmap.New(len(order), int(sh[0]), int(sh[1]), int(sh[2]))
		for i, id := range order {
			l, ok := at[cell{i, k}]
			if !ok {
				return fmap.Set{}, fmt.Errorf("id %q has no map at scale %d", id, k)
			}
			reads[l.src] = append(reads[l.src], read{l, m.At(i)})
		}
		set.Scales[k] = m
	}
	// Read each table's kept rows in table order, so that its chunks are read once each.
	for si, rs := range reads {
		sort.Slice(rs, func(a, b int) bool { return rs[a].row < rs[b].row })
		for _, r := range rs {
			if err := srcs[si].t.Float32Values(ctx, "values", r.a, r.b, r.dst); err != nil {
				if srcs[si].name != "" {
					err = fmt.Errorf("%s: %w", srcs[si].name, err)
				}
				return fmap.Set{}, err
			}
		}
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
// table, once each (the table has one row per scale), in table order, without their maps
// (none of the maps' bytes are read).
func ReadPseudoIndex(ctx context.Context, env *kind.Env) ([]Pseudo, error) {
	t, in, err := openTableFrom(ctx, env, "pseudo")
	if err != nil {
		return nil, err
	}
	defer t.Close()
	var cols [3][]string
	for k, name := range []string{"id", "source", "generator"} {
		if cols[k], err = t.Strings(ctx, name); err != nil {
			return nil, fmt.Errorf("input %s pseudo: %w", in, err)
		}
	}
	ids, src, gen := cols[0], cols[1], cols[2]
	var out []Pseudo
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		out = append(out, Pseudo{id, src[i], gen[i]})
	}
	return out, nil
}
