package artifacts

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/endian"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	flatbuffers "github.com/google/flatbuffers/go"
)

// TableReader reads a stored table (an Arrow IPC stream of one record batch, as EncodeIPC
// writes it) by column and by row range, reading from its BlobReader only the bytes asked
// for: the stream's metadata when it opens, then a whole small column (ids, scales, list
// offsets) or the rows [a, b) of a large one (feature-map values, image bytes). A stage then
// needs memory for what it keeps, not for the blob.
//
// It reads the layout EncodeIPC produces for the column types of NewTable (utf8, binary,
// int64, float64, list<float32>, list<int64>): one record batch, without compression,
// dictionaries or nulls (validity buffers of length zero). Other fixed-width columns may be
// present but are not read; other types, nested lists, nulls, compression or a second batch
// are refused with an error naming what was found. Every value returned is a copy the
// caller owns.
//
// A TableReader is not safe for concurrent use.
type TableReader struct {
	blob   *BlobReader
	schema *arrow.Schema
	rows   int64
	cols   []*colLayout // one per schema field
	offs   map[*colLayout][]int64
}

// colLayout is where one column's (or list child's) buffers lie in the blob.
type colLayout struct {
	name   string
	typ    arrow.DataType
	length int64
	// bufs are the column's buffers as absolute byte ranges of the blob: validity, then
	// offsets (utf8, binary, list) and data (utf8, binary, fixed width).
	bufs  []byteRange
	child *colLayout // a list's values
}

type byteRange struct{ off, len int64 }

// OpenTable opens blob d of s as a table for ranged reads. Close it when done.
func OpenTable(ctx context.Context, s Store, d Digest) (*TableReader, error) {
	b, err := OpenBlob(ctx, s, d)
	if err != nil {
		return nil, err
	}
	t, err := NewTableReader(ctx, b)
	if err != nil {
		b.Close()
		return nil, err
	}
	return t, nil
}

// NewTableReader reads the schema and record batch metadata of the table in b. The reader
// takes b over: Close closes it.
func NewTableReader(ctx context.Context, b *BlobReader) (*TableReader, error) {
	t := &TableReader{blob: b, offs: map[*colLayout][]int64{}}
	if err := t.open(ctx); err != nil {
		return nil, fmt.Errorf("artifacts: blob %s: %w", b.name(), err)
	}
	return t, nil
}

// Close releases the reader's blob. Values already returned stay valid.
func (t *TableReader) Close() { t.blob.Close() }

// Schema returns the table's schema (fields and metadata).
func (t *TableReader) Schema() *arrow.Schema { return t.schema }

// NumRows returns the table's number of rows.
func (t *TableReader) NumRows() int64 { return t.rows }

// message reads the IPC message at off: its flatbuffer metadata and where its body starts.
// ok is false at the end-of-stream marker or at the end of the blob.
func (t *TableReader) message(ctx context.Context, off int64) (meta []byte, body int64, ok bool, err error) {
	size := t.blob.Size()
	if off == size {
		return nil, 0, false, nil
	}
	var pre [8]byte
	if size-off < 4 {
		return nil, 0, false, fmt.Errorf("malformed stream: %d stray bytes at byte %d", size-off, off)
	}
	if err := t.blob.ReadAt(ctx, pre[:4], off); err != nil {
		return nil, 0, false, err
	}
	n := binary.LittleEndian.Uint32(pre[:4])
	off += 4
	if n == ipcContinuation {
		if size-off < 4 {
			return nil, 0, false, fmt.Errorf("malformed stream: truncated message length at byte %d", off)
		}
		if err := t.blob.ReadAt(ctx, pre[4:], off); err != nil {
			return nil, 0, false, err
		}
		n = binary.LittleEndian.Uint32(pre[4:])
		off += 4
	}
	if n == 0 {
		return nil, 0, false, nil
	}
	if int64(n) > size-off || n < 4 {
		return nil, 0, false, fmt.Errorf("malformed stream: message of %d bytes at byte %d of %d", n, off, size)
	}
	meta = make([]byte, n)
	if err := t.blob.ReadAt(ctx, meta, off); err != nil {
		return nil, 0, false, err
	}
	if err := checkMeta(meta); err != nil {
		return nil, 0, false, err
	}
	return meta, off + int64(n), true, nil
}

// Flatbuffer slots (Message.fbs, Schema.fbs): a table's field k is at vtable slot 4+2k.
const (
	msgHeaderType = 1
	msgHeader     = 2
	msgBodyLength = 3

	headerSchema      = 1
	headerRecordBatch = 3

	batchLength      = 0
	batchNodes       = 1
	batchBuffers     = 2
	batchCompression = 3
	batchVariadic    = 4
)

func slot(field int) flatbuffers.VOffsetT { return flatbuffers.VOffsetT(4 + 2*field) }

// open reads the schema message and the record batch's metadata.
func (t *TableReader) open(ctx context.Context) (err error) {
	if endian.IsBigEndian {
		return errors.New("ranged table reads need a little-endian machine")
	}
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("malformed stream: %v", p)
		}
	}()
	meta, body, ok, err := t.message(ctx, 0)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("malformed stream: no schema message")
	}
	msg := &flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
	if ht := msg.GetByteSlot(slot(msgHeaderType), 0); ht != headerSchema {
		return fmt.Errorf("malformed stream: first message has header type %d, want a schema", ht)
	}
	if bl := msg.GetInt64Slot(slot(msgBodyLength), 0); bl != 0 {
		return fmt.Errorf("malformed stream: schema message has a body of %d bytes", bl)
	}
	if t.schema, err = parseSchema(meta); err != nil {
		return err
	}
	if t.schema.Endianness() != endian.LittleEndian {
		return errors.New("the table is big-endian")
	}

	meta, body, ok, err = t.message(ctx, body)
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("the stream holds no record batch")
	}
	msg = &flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
	if ht := msg.GetByteSlot(slot(msgHeaderType), 0); ht != headerRecordBatch {
		return fmt.Errorf("second message has header type %d, want a record batch (dictionaries are not read)", ht)
	}
	bodyLen := msg.GetInt64Slot(slot(msgBodyLength), 0)
	if bodyLen < 0 || bodyLen > t.blob.Size()-body {
		return fmt.Errorf("malformed stream: record batch body of %d bytes at byte %d of %d", bodyLen, body, t.blob.Size())
	}
	o := flatbuffers.UOffsetT(msg.Offset(slot(msgHeader)))
	if o == 0 {
		return errors.New("malformed stream: record batch message without a header")
	}
	rb := &flatbuffers.Table{Bytes: meta, Pos: msg.Indirect(o + msg.Pos)}
	if rb.Offset(slot(batchCompression)) != 0 {
		return errors.New("the record batch is compressed; ranged reads need uncompressed buffers")
	}
	if o := flatbuffers.UOffsetT(rb.Offset(slot(batchVariadic))); o != 0 && rb.VectorLen(o) > 0 {
		return errors.New("the record batch has variadic buffers (view types), which ranged reads do not read")
	}
	t.rows = rb.GetInt64Slot(slot(batchLength), 0)
	if t.rows < 0 {
		return fmt.Errorf("malformed stream: record batch of %d rows", t.rows)
	}
	type pair struct{ a, b int64 } // FieldNode{length, null_count}, Buffer{offset, length}
	structs := func(field int) []pair {
		o := flatbuffers.UOffsetT(rb.Offset(slot(field)))
		if o == 0 {
			return nil
		}
		n, start := rb.VectorLen(o), rb.Vector(o)
		out := make([]pair, n)
		for i := range out {
			p := start + flatbuffers.UOffsetT(16*i)
			out[i] = pair{rb.GetInt64(p), rb.GetInt64(p + 8)}
		}
		return out
	}
	nodes, bufs := structs(batchNodes), structs(batchBuffers)

	// Walk the fields in the pre-order of the IPC format, taking one node per field and
	// its buffers.
	var walk func(f arrow.Field) (*colLayout, error)
	walk = func(f arrow.Field) (*colLayout, error) {
		if len(nodes) == 0 {
			return nil, fmt.Errorf("malformed stream: no field node for column %q", f.Name)
		}
		nd := nodes[0]
		nodes = nodes[1:]
		c := &colLayout{name: f.Name, typ: f.Type, length: nd.a}
		if nd.a < 0 || nd.a/8 > bodyLen {
			// Every value takes at least a bit of the body (offsets, values or a validity bit).
			return nil, fmt.Errorf("malformed stream: column %q has length %d for a %d-byte body", f.Name, nd.a, bodyLen)
		}
		if nd.b != 0 {
			return nil, fmt.Errorf("column %q has %d nulls; ranged reads need columns without nulls", f.Name, nd.b)
		}
		nbuf, width := 0, 0
		switch ft := f.Type.(type) {
		case *arrow.StringType, *arrow.BinaryType:
			nbuf = 3 // validity, int32 offsets, data
		case *arrow.ListType:
			nbuf = 2 // validity, int32 offsets; then the child
		case arrow.FixedWidthDataType:
			nbuf = 2 // validity, values
			if ft.BitWidth()%8 == 0 {
				width = ft.BitWidth() / 8
			}
		default:
			return nil, fmt.Errorf("column %q has type %s, which ranged reads do not read", f.Name, f.Type)
		}
		if len(bufs) < nbuf {
			return nil, fmt.Errorf("malformed stream: too few buffers for column %q", f.Name)
		}
		for _, b := range bufs[:nbuf] {
			if b.a < 0 || b.b < 0 || b.a > bodyLen || b.b > bodyLen-b.a {
				return nil, fmt.Errorf("malformed stream: column %q has a buffer [%d, +%d) outside the %d-byte body", f.Name, b.a, b.b, bodyLen)
			}
			c.bufs = append(c.bufs, byteRange{body + b.a, b.b})
		}
		bufs = bufs[nbuf:]
		if width > 0 && c.bufs[1].len < c.length*int64(width) {
			return nil, fmt.Errorf("malformed stream: column %q has %d bytes for %d values of %d bytes", f.Name, c.bufs[1].len, c.length, width)
		}
		if nbuf >= 2 && width == 0 && c.length > 0 && c.bufs[1].len < 4*(c.length+1) {
			return nil, fmt.Errorf("malformed stream: column %q has %d offset bytes for %d rows", f.Name, c.bufs[1].len, c.length)
		}
		if lt, ok := f.Type.(*arrow.ListType); ok {
			child, err := walk(lt.ElemField())
			if err != nil {
				return nil, err
			}
			if child.typ.ID() == arrow.LIST {
				return nil, fmt.Errorf("column %q is a nested list, which ranged reads do not read", f.Name)
			}
			c.child = child
		}
		return c, nil
	}
	for _, f := range t.schema.Fields() {
		c, err := walk(f)
		if err != nil {
			return err
		}
		if c.length != t.rows {
			return fmt.Errorf("malformed stream: column %q has %d rows, the batch %d", f.Name, c.length, t.rows)
		}
		t.cols = append(t.cols, c)
	}
	if len(nodes) != 0 || len(bufs) != 0 {
		return fmt.Errorf("malformed stream: %d field nodes and %d buffers left over after the last column", len(nodes), len(bufs))
	}
	// Exactly one record batch: what follows its body is the end of the stream.
	if _, _, ok, err := t.message(ctx, body+bodyLen); err != nil {
		return err
	} else if ok {
		return errors.New("the stream holds more than one record batch")
	}
	return nil
}

// parseSchema decodes a schema message's metadata with Arrow's own reader, handed just that
// message.
func parseSchema(meta []byte) (*arrow.Schema, error) {
	var head []byte
	head = binary.LittleEndian.AppendUint32(head, ipcContinuation)
	head = binary.LittleEndian.AppendUint32(head, uint32(len(meta)))
	head = append(head, meta...)
	mr := &sliceMessageReader{b: head, refs: 1}
	r, err := ipc.NewReaderFromMessageReader(mr)
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	defer r.Release()
	return r.Schema(), nil
}

// column returns the layout of the named column, checking its type with ok.
func (t *TableReader) column(name, want string, ok func(c *colLayout) bool) (*colLayout, error) {
	for _, c := range t.cols {
		if c.name == name {
			if !ok(c) {
				return nil, fmt.Errorf("artifacts: blob %s: column %q is %s, want %s", t.blob.name(), name, c.typ, want)
			}
			return c, nil
		}
	}
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	return nil, fmt.Errorf("artifacts: blob %s: table has no column %q (has %v)", t.blob.name(), name, names)
}

func isType(id arrow.Type) func(c *colLayout) bool {
	return func(c *colLayout) bool { return c.typ.ID() == id }
}

func isListOf(id arrow.Type) func(c *colLayout) bool {
	return func(c *colLayout) bool { return c.typ.ID() == arrow.LIST && c.child.typ.ID() == id }
}

// fixed reads values [a, b) of a fixed-width column c into dst, which must hold b-a values.
func fixed[T int64 | float64 | int32 | float32](ctx context.Context, t *TableReader, c *colLayout, a, b int64, dst []T) error {
	if a < 0 || b < a || b > c.length || int64(len(dst)) != b-a {
		return fmt.Errorf("artifacts: blob %s: column %q: values [%d, %d) of %d into %d", t.blob.name(), c.name, a, b, c.length, len(dst))
	}
	if a == b {
		return nil
	}
	w := int64(unsafe.Sizeof(dst[0]))
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&dst[0])), len(dst)*int(w))
	return t.blob.ReadAt(ctx, raw, c.bufs[1].off+a*w)
}

// Int64s reads an int64 column.
func (t *TableReader) Int64s(ctx context.Context, name string) ([]int64, error) {
	c, err := t.column(name, "int64", isType(arrow.INT64))
	if err != nil {
		return nil, err
	}
	out := make([]int64, c.length)
	return out, fixed(ctx, t, c, 0, c.length, out)
}

// Float64s reads a float64 column.
func (t *TableReader) Float64s(ctx context.Context, name string) ([]float64, error) {
	c, err := t.column(name, "float64", isType(arrow.FLOAT64))
	if err != nil {
		return nil, err
	}
	out := make([]float64, c.length)
	return out, fixed(ctx, t, c, 0, c.length, out)
}

// offsets returns the length+1 offsets of a utf8, binary or list column, checked against
// the size of what they index (cached: a column's offsets are read once).
func (t *TableReader) offsets(ctx context.Context, c *colLayout) ([]int64, error) {
	if o, ok := t.offs[c]; ok {
		return o, nil
	}
	out := make([]int64, c.length+1)
	if c.length > 0 {
		raw := make([]int32, c.length+1)
		if err := fixed(ctx, t, &colLayout{name: c.name, length: c.length + 1, bufs: c.bufs}, 0, c.length+1, raw); err != nil {
			return nil, err
		}
		limit := c.bufs[len(c.bufs)-1].len // utf8, binary: the data buffer's bytes
		if c.child != nil {
			limit = c.child.length
		}
		for i, v := range raw {
			out[i] = int64(v)
			if v < 0 || int64(v) > limit || i > 0 && out[i] < out[i-1] {
				return nil, fmt.Errorf("artifacts: blob %s: malformed stream: column %q offset %d is %d (previous %d, limit %d)",
					t.blob.name(), c.name, i, v, out[max(i-1, 0)], limit)
			}
		}
	}
	t.offs[c] = out
	return out, nil
}

// Offsets returns the length+1 offsets of a list, utf8 or binary column: row i's elements
// (list) or bytes (utf8, binary) are [off[i], off[i+1]). The slice is shared by later calls:
// do not modify it.
func (t *TableReader) Offsets(ctx context.Context, name string) ([]int64, error) {
	c, err := t.column(name, "list, utf8 or binary", func(c *colLayout) bool {
		id := c.typ.ID()
		return id == arrow.LIST || id == arrow.STRING || id == arrow.BINARY
	})
	if err != nil {
		return nil, err
	}
	return t.offsets(ctx, c)
}

// Strings reads a utf8 column. The strings share one allocation (the column's bytes).
func (t *TableReader) Strings(ctx context.Context, name string) ([]string, error) {
	c, err := t.column(name, "utf8", isType(arrow.STRING))
	if err != nil {
		return nil, err
	}
	off, err := t.offsets(ctx, c)
	if err != nil {
		return nil, err
	}
	lo, hi := off[0], off[len(off)-1]
	data := make([]byte, hi-lo)
	if err := t.blob.ReadAt(ctx, data, c.bufs[2].off+lo); err != nil {
		return nil, err
	}
	all := unsafe.String(unsafe.SliceData(data), len(data)) // data is never written again
	out := make([]string, c.length)
	for i := range out {
		out[i] = all[off[i]-lo : off[i+1]-lo]
	}
	return out, nil
}

// Binary reads row i of a binary column into buf (grown as needed) and returns it: a reused
// buf makes reading row after row allocation-free.
func (t *TableReader) Binary(ctx context.Context, name string, i int, buf []byte) ([]byte, error) {
	c, err := t.column(name, "binary", isType(arrow.BINARY))
	if err != nil {
		return nil, err
	}
	if i < 0 || int64(i) >= c.length {
		return nil, fmt.Errorf("artifacts: blob %s: column %q has no row %d (%d rows)", t.blob.name(), name, i, c.length)
	}
	off, err := t.offsets(ctx, c)
	if err != nil {
		return nil, err
	}
	n := int(off[i+1] - off[i])
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	return buf, t.blob.ReadAt(ctx, buf, c.bufs[2].off+off[i])
}

// Float32Values reads the list<float32> column's values [a, b) (element indices, as Offsets
// gives them: rows r..s-1 are [off[r], off[s])) into dst, which must hold b-a values.
func (t *TableReader) Float32Values(ctx context.Context, name string, a, b int64, dst []float32) error {
	c, err := t.column(name, "list<float32>", isListOf(arrow.FLOAT32))
	if err != nil {
		return err
	}
	return fixed(ctx, t, c.child, a, b, dst)
}

// Int64Values reads the list<int64> column's values [a, b) into dst, as Float32Values.
func (t *TableReader) Int64Values(ctx context.Context, name string, a, b int64, dst []int64) error {
	c, err := t.column(name, "list<int64>", isListOf(arrow.INT64))
	if err != nil {
		return err
	}
	return fixed(ctx, t, c.child, a, b, dst)
}
