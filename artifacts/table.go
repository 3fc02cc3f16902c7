package artifacts

import (
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Col is one named column to build a table from; make one with Strings, Int64s, Float64s,
// Float32Lists, Int64Lists or Binaries.
type Col struct {
	name  string
	dtype arrow.DataType
	n     int
	fill  func(b array.Builder)
}

// Strings is a utf8 column.
func Strings(name string, v []string) Col {
	return Col{name, arrow.BinaryTypes.String, len(v), func(b array.Builder) { b.(*array.StringBuilder).AppendValues(v, nil) }}
}

// Int64s is an int64 column.
func Int64s(name string, v []int64) Col {
	return Col{name, arrow.PrimitiveTypes.Int64, len(v), func(b array.Builder) { b.(*array.Int64Builder).AppendValues(v, nil) }}
}

// Float64s is a float64 column.
func Float64s(name string, v []float64) Col {
	return Col{name, arrow.PrimitiveTypes.Float64, len(v), func(b array.Builder) { b.(*array.Float64Builder).AppendValues(v, nil) }}
}

// Binaries is a binary column (for example encoded image bytes).
func Binaries(name string, v [][]byte) Col {
	return Col{name, arrow.BinaryTypes.Binary, len(v), func(b array.Builder) { b.(*array.BinaryBuilder).AppendValues(v, nil) }}
}

// Float32Lists is a List<float32> column: one float32 vector (for example a C x H x W
// feature map, row-major) per row.
func Float32Lists(name string, v [][]float32) Col {
	return Col{name, arrow.ListOf(arrow.PrimitiveTypes.Float32), len(v), func(b array.Builder) {
		lb := b.(*array.ListBuilder)
		vb := lb.ValueBuilder().(*array.Float32Builder)
		total := 0
		for _, x := range v {
			total += len(x)
		}
		vb.Reserve(total)
		for _, x := range v {
			lb.Append(true)
			vb.AppendValues(x, nil)
		}
	}}
}

// Int64Lists is a List<int64> column (for example tensor shapes).
func Int64Lists(name string, v [][]int64) Col {
	return Col{name, arrow.ListOf(arrow.PrimitiveTypes.Int64), len(v), func(b array.Builder) {
		lb := b.(*array.ListBuilder)
		vb := lb.ValueBuilder().(*array.Int64Builder)
		for _, x := range v {
			lb.Append(true)
			vb.AppendValues(x, nil)
		}
	}}
}

// NewTable builds a record from columns of equal length.
func NewTable(cols ...Col) (arrow.RecordBatch, error) {
	if len(cols) == 0 {
		return nil, fmt.Errorf("artifacts: a table needs at least one column")
	}
	fields := make([]arrow.Field, len(cols))
	arrs := make([]arrow.Array, len(cols))
	defer func() {
		for _, a := range arrs {
			if a != nil {
				a.Release()
			}
		}
	}()
	for i, c := range cols {
		if c.n != cols[0].n {
			return nil, fmt.Errorf("artifacts: column %q has %d rows, %q has %d", c.name, c.n, cols[0].name, cols[0].n)
		}
		fields[i] = arrow.Field{Name: c.name, Type: c.dtype}
		b := array.NewBuilder(memory.DefaultAllocator, c.dtype)
		c.fill(b)
		arrs[i] = b.NewArray()
		b.Release()
	}
	return array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, int64(cols[0].n)), nil
}

func column(rec arrow.RecordBatch, name string) (arrow.Array, error) {
	idx := rec.Schema().FieldIndices(name)
	if len(idx) == 0 {
		return nil, fmt.Errorf("artifacts: table has no column %q (has %v)", name, fieldNames(rec))
	}
	return rec.Column(idx[0]), nil
}

func fieldNames(rec arrow.RecordBatch) []string {
	var ns []string
	for _, f := range rec.Schema().Fields() {
		ns = append(ns, f.Name)
	}
	return ns
}

func typed[T any](rec arrow.RecordBatch, name string) (T, error) {
	var zero T
	a, err := column(rec, name)
	if err != nil {
		return zero, err
	}
	t, ok := a.(T)
	if !ok {
		return zero, fmt.Errorf("artifacts: column %q is %s, want %T", name, a.DataType(), zero)
	}
	return t, nil
}

// StringCol reads a utf8 column. The strings alias the record's memory (arrow-go builds them
// without a copy), as the slices of the other *Col readers do.
func StringCol(rec arrow.RecordBatch, name string) ([]string, error) {
	a, err := typed[*array.String](rec, name)
	if err != nil {
		return nil, err
	}
	out := make([]string, a.Len())
	for i := range out {
		out[i] = a.Value(i)
	}
	return out, nil
}

// Int64Col reads an int64 column; the slice aliases the record's memory.
func Int64Col(rec arrow.RecordBatch, name string) ([]int64, error) {
	a, err := typed[*array.Int64](rec, name)
	if err != nil {
		return nil, err
	}
	return a.Int64Values(), nil
}

// Float64Col reads a float64 column; the slice aliases the record's memory.
func Float64Col(rec arrow.RecordBatch, name string) ([]float64, error) {
	a, err := typed[*array.Float64](rec, name)
	if err != nil {
		return nil, err
	}
	return a.Float64Values(), nil
}

// BinaryCol reads a binary column; the slices alias the record's memory.
func BinaryCol(rec arrow.RecordBatch, name string) ([][]byte, error) {
	a, err := typed[*array.Binary](rec, name)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, a.Len())
	for i := range out {
		out[i] = a.Value(i)
	}
	return out, nil
}

// Float32ListCol reads a List<float32> column without copying: the slices alias the
// record's memory and stay valid while the record is retained.
func Float32ListCol(rec arrow.RecordBatch, name string) ([][]float32, error) {
	a, err := typed[*array.List](rec, name)
	if err != nil {
		return nil, err
	}
	vals, ok := a.ListValues().(*array.Float32)
	if !ok {
		return nil, fmt.Errorf("artifacts: column %q is %s, want list<float32>", name, a.DataType())
	}
	all := vals.Float32Values()
	offs := a.Offsets()
	out := make([][]float32, a.Len())
	for i := range out {
		out[i] = all[offs[i]:offs[i+1]:offs[i+1]]
	}
	return out, nil
}

// Int64ListCol reads a List<int64> column, aliasing the record's memory.
func Int64ListCol(rec arrow.RecordBatch, name string) ([][]int64, error) {
	a, err := typed[*array.List](rec, name)
	if err != nil {
		return nil, err
	}
	vals, ok := a.ListValues().(*array.Int64)
	if !ok {
		return nil, fmt.Errorf("artifacts: column %q is %s, want list<int64>", name, a.DataType())
	}
	all := vals.Int64Values()
	offs := a.Offsets()
	out := make([][]int64, a.Len())
	for i := range out {
		out[i] = all[offs[i]:offs[i+1]:offs[i+1]]
	}
	return out, nil
}

// Tensor is one named float32 tensor, row-major.
type Tensor struct {
	Name   string
	Shape  []int64
	Values []float32
}

// TensorTable stores named tensors (model or backbone weights) as a table with columns
// name, shape (list<int64>) and values (list<float32>).
func TensorTable(ts []Tensor) (arrow.RecordBatch, error) {
	names := make([]string, len(ts))
	shapes := make([][]int64, len(ts))
	values := make([][]float32, len(ts))
	for i, t := range ts {
		n := int64(1)
		for _, d := range t.Shape {
			n *= d
		}
		if n != int64(len(t.Values)) {
			return nil, fmt.Errorf("artifacts: tensor %q has shape %v but %d values", t.Name, t.Shape, len(t.Values))
		}
		names[i], shapes[i], values[i] = t.Name, t.Shape, t.Values
	}
	return NewTable(Strings("name", names), Int64Lists("shape", shapes), Float32Lists("values", values))
}

// ReadTensors reads a table written by TensorTable; values alias the record's memory.
func ReadTensors(rec arrow.RecordBatch) ([]Tensor, error) {
	names, err := StringCol(rec, "name")
	if err != nil {
		return nil, err
	}
	shapes, err := Int64ListCol(rec, "shape")
	if err != nil {
		return nil, err
	}
	values, err := Float32ListCol(rec, "values")
	if err != nil {
		return nil, err
	}
	out := make([]Tensor, len(names))
	for i := range names {
		out[i] = Tensor{names[i], shapes[i], values[i]}
	}
	return out, nil
}

// WithMetadata returns rec with the schema metadata kv added (replacing equal keys); it takes
// ownership of rec and shares its columns.
func WithMetadata(rec arrow.RecordBatch, kv map[string]string) arrow.RecordBatch {
	old := rec.Schema().Metadata()
	merged := map[string]string{}
	for i, k := range old.Keys() {
		merged[k] = old.Values()[i]
	}
	for k, v := range kv {
		merged[k] = v
	}
	md := arrow.MetadataFrom(merged)
	schema := arrow.NewSchema(rec.Schema().Fields(), &md)
	out := array.NewRecordBatch(schema, rec.Columns(), rec.NumRows())
	rec.Release()
	return out
}
