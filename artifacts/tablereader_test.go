package artifacts

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// openMem opens an in-memory store: its chunks are 256 KiB, so small tables span several.
func openMem(t testing.TB) *Badger {
	t.Helper()
	s, err := Open("", InMemory(), WithGCGrace(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeOK(t, s) })
	return s
}

// wideTable has every column type the stage tables use, with rows rows; the lists and
// binaries grow with the row number so that rows straddle chunk boundaries.
func wideTable(t testing.TB, rows int) arrow.RecordBatch {
	t.Helper()
	ids, labels, scores := make([]string, rows), make([]int64, rows), make([]float64, rows)
	bins, vecs, shapes := make([][]byte, rows), make([][]float32, rows), make([][]int64, rows)
	for i := range rows {
		ids[i] = fmt.Sprintf("good/%04d.png", i)
		labels[i] = int64(i%3 - 1)
		scores[i] = float64(i) / 7
		bins[i] = randomBytes(1000+37*i, uint64(i))
		vecs[i] = make([]float32, 500+i%300)
		for j := range vecs[i] {
			vecs[i][j] = float32(i) + float32(j)/1024
		}
		shapes[i] = []int64{int64(i), 2, 3}[:1+i%3]
	}
	rec, err := NewTable(Strings("id", ids), Int64s("label", labels), Float64s("score", scores),
		Binaries("bytes", bins), Float32Lists("values", vecs), Int64Lists("shape", shapes))
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

// checkRanged reads every column of the table in d through a TableReader and compares it
// with the record DecodeIPC makes of the same blob.
func checkRanged(t *testing.T, s Store, d Digest) {
	t.Helper()
	ctx := context.Background()
	want, err := Get(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	defer want.Release()
	tr, err := OpenTable(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if tr.NumRows() != want.NumRows() || !tr.Schema().Equal(want.Schema()) {
		t.Fatalf("rows %d schema %v, want %d %v", tr.NumRows(), tr.Schema(), want.NumRows(), want.Schema())
	}
	for _, f := range want.Schema().Fields() {
		switch f.Type.ID() {
		case arrow.STRING:
			got, err := tr.Strings(ctx, f.Name)
			exp, _ := StringCol(want, f.Name)
			if err != nil || !slices.Equal(got, exp) {
				t.Fatalf("column %s: %q, %v; want %q", f.Name, got, err, exp)
			}
		case arrow.INT64:
			got, err := tr.Int64s(ctx, f.Name)
			exp, _ := Int64Col(want, f.Name)
			if err != nil || !slices.Equal(got, exp) {
				t.Fatalf("column %s: %v, %v; want %v", f.Name, got, err, exp)
			}
		case arrow.FLOAT64:
			got, err := tr.Float64s(ctx, f.Name)
			exp, _ := Float64Col(want, f.Name)
			if err != nil || !slices.EqualFunc(got, exp, sameFloat) {
				t.Fatalf("column %s: %v, %v; want %v", f.Name, got, err, exp)
			}
		case arrow.BINARY:
			exp, _ := BinaryCol(want, f.Name)
			var buf []byte
			for i := range exp {
				buf, err = tr.Binary(ctx, f.Name, i, buf)
				if err != nil || !bytes.Equal(buf, exp[i]) {
					t.Fatalf("column %s row %d: %d bytes, %v; want %d", f.Name, i, len(buf), err, len(exp[i]))
				}
			}
		case arrow.LIST:
			off, err := tr.Offsets(ctx, f.Name)
			if err != nil || len(off) != int(want.NumRows())+1 {
				t.Fatalf("column %s offsets: %d, %v", f.Name, len(off), err)
			}
			if exp, err := Float32ListCol(want, f.Name); err == nil {
				for i := range exp {
					got := make([]float32, off[i+1]-off[i])
					if err := tr.Float32Values(ctx, f.Name, off[i], off[i+1], got); err != nil ||
						!slices.EqualFunc(got, exp[i], func(a, b float32) bool { return sameFloat(float64(a), float64(b)) }) {
						t.Fatalf("column %s row %d: %v, %v; want %v", f.Name, i, got, err, exp[i])
					}
				}
				// All rows at once.
				all := make([]float32, off[len(off)-1]-off[0])
				if err := tr.Float32Values(ctx, f.Name, off[0], off[len(off)-1], all); err != nil ||
					len(exp) > 0 && len(exp[len(exp)-1]) > 0 && all[len(all)-1] != exp[len(exp)-1][len(exp[len(exp)-1])-1] {
					t.Fatalf("column %s, all rows: %v", f.Name, err)
				}
			} else if exp, err := Int64ListCol(want, f.Name); err == nil {
				for i := range exp {
					got := make([]int64, off[i+1]-off[i])
					if err := tr.Int64Values(ctx, f.Name, off[i], off[i+1], got); err != nil || !slices.Equal(got, exp[i]) {
						t.Fatalf("column %s row %d: %v, %v; want %v", f.Name, i, got, err, exp[i])
					}
				}
			} else {
				t.Fatalf("column %s: unexpected list type %s", f.Name, f.Type)
			}
		default:
			t.Fatalf("column %s: unexpected type %s", f.Name, f.Type)
		}
	}
}

func sameFloat(a, b float64) bool { return a == b || math.IsNaN(a) && math.IsNaN(b) }

// TestTableReaderRoundTrip reads tables of every column type the stages write, small and
// spanning many chunks, on disk and in memory, and compares each value with DecodeIPC.
func TestTableReaderRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, st := range []struct {
		name string
		s    *Badger
	}{{"disk", openTemp(t)}, {"memory", openMem(t)}} {
		for _, tc := range []struct {
			name string
			rec  func() arrow.RecordBatch
		}{
			{"sample", func() arrow.RecordBatch { return sampleTable(t) }},
			{"wide", func() arrow.RecordBatch { return wideTable(t, 400) }},
			{"empty", func() arrow.RecordBatch { return wideTable(t, 0) }},
		} {
			t.Run(st.name+"/"+tc.name, func(t *testing.T) {
				rec := tc.rec()
				d, _, err := Put(ctx, st.s, rec)
				rec.Release()
				if err != nil {
					t.Fatal(err)
				}
				checkRanged(t, st.s, d)
			})
		}
	}
}

// TestTableReaderReadsOnlyWhatItIsAskedFor checks that a row range of a large column reads
// only the chunks that hold it (plus the chunks of the stream's metadata and end).
func TestTableReaderReadsOnlyWhatItIsAskedFor(t *testing.T) {
	ctx := context.Background()
	s := openMem(t)
	rec := wideTable(t, 400)
	d, out, err := Put(ctx, s, rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	chunks := int((out.Bytes + memChunkSize - 1) / memChunkSize)
	if chunks < 8 {
		t.Fatalf("the table spans %d chunks; the test needs more", chunks)
	}
	tr, err := OpenTable(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if got := tr.blob.fetched; got > 2 {
		t.Fatalf("opening read %d chunks, want the first and the last", got)
	}
	// The small columns before the large ones lie in the first chunk: reading them reads
	// nothing of the image bytes or the values.
	before := tr.blob.fetched
	if _, err := tr.Strings(ctx, "id"); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Int64s(ctx, "label"); err != nil {
		t.Fatal(err)
	}
	if n := tr.blob.fetched - before; n > 1 {
		t.Fatalf("reading ids and labels read %d chunks, want the first only", n)
	}
	off, err := tr.Offsets(ctx, "values")
	if err != nil {
		t.Fatal(err)
	}
	before = tr.blob.fetched
	c, _ := tr.column("values", "", isListOf(arrow.FLOAT32))
	a, b := int64(200), int64(210)
	lo := c.child.bufs[1].off + 4*off[a]
	hi := c.child.bufs[1].off + 4*off[b]
	span := int(hi/memChunkSize - lo/memChunkSize + 1)
	got := make([]float32, off[b]-off[a])
	if err := tr.Float32Values(ctx, "values", off[a], off[b], got); err != nil {
		t.Fatal(err)
	}
	if got[0] != 200 || got[len(got)-1] != 209+float32(500+209%300-1)/1024 {
		t.Fatalf("rows 200..209: first %v last %v", got[0], got[len(got)-1])
	}
	if n := tr.blob.fetched - before; n > span {
		t.Fatalf("rows [%d, %d) read %d chunks, they lie in %d of %d", a, b, n, span, chunks)
	}
	// Reading the same rows again is served by the cached chunk where it covers them.
	before = tr.blob.fetched
	if err := tr.Float32Values(ctx, "values", off[b-1], off[b], got[:off[b]-off[b-1]]); err != nil {
		t.Fatal(err)
	}
	if lo/memChunkSize == hi/memChunkSize && tr.blob.fetched != before {
		t.Fatalf("a row in the cached chunk was read from the store again")
	}
}

// damage flips one byte in chunk i of blob d.
func damage(t *testing.T, s *Badger, d Digest, i int) {
	t.Helper()
	chunk := rawGet(t, s, chunkKey(d, i))
	chunk[len(chunk)/2] ^= 0x40
	rawSet(t, s, chunkKey(d, i), chunk)
}

// TestTableReaderDamagedChunk checks that a damaged chunk fails exactly the reads that
// touch it, with ErrCorrupt, and that reads elsewhere still succeed.
func TestTableReaderDamagedChunk(t *testing.T) {
	ctx := context.Background()
	s := openMem(t)
	rec := wideTable(t, 400)
	d, _, err := Put(ctx, s, rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := OpenTable(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	off, err := tr.Offsets(ctx, "values")
	if err != nil {
		t.Fatal(err)
	}
	c, _ := tr.column("values", "", isListOf(arrow.FLOAT32))
	// Damage the chunk that holds the middle of row 300's values, then read it.
	mid := c.child.bufs[1].off + 4*(off[300]+off[301])/2
	bad := int(mid / memChunkSize)
	damage(t, s, d, bad)
	got := make([]float32, off[301]-off[300])
	err = tr.Float32Values(ctx, "values", off[300], off[301], got)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("chunk %d", bad)) || !strings.Contains(err.Error(), string(d)) {
		t.Fatalf("reading a damaged chunk: %v; want ErrCorrupt naming the blob and chunk %d", err, bad)
	}
	// Rows in other chunks still read, and the ids (in the first chunk) too.
	first := c.child.bufs[1].off + 4*off[0]
	if int(first/memChunkSize) != bad {
		row0 := make([]float32, off[1]-off[0])
		if err := tr.Float32Values(ctx, "values", off[0], off[1], row0); err != nil || row0[0] != 0 {
			t.Fatalf("row 0 beside a damaged chunk: %v, %v", row0[:1], err)
		}
	}
	// Opening the table again and reading everything fails the same way.
	if _, err := Get(ctx, s, d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Get of the damaged blob: %v", err)
	}
	// A damaged metadata chunk fails OpenTable.
	damage(t, s, d, 0)
	if _, err := OpenTable(ctx, s, d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OpenTable with a damaged first chunk: %v", err)
	}
}

// TestOpenBlobWithoutChecksums reads a blob stored before chunk checksums: it is read and
// checked whole against its digest.
func TestOpenBlobWithoutChecksums(t *testing.T) {
	ctx := context.Background()
	s := openMem(t)
	rec := wideTable(t, 150)
	d, out, err := Put(ctx, s, rec)
	rec.Release()
	if err != nil {
		t.Fatal(err)
	}
	var m blobMeta
	if err := json.Unmarshal(rawGet(t, s, metaKey(d)), &m); err != nil {
		t.Fatal(err)
	}
	m.CRC = nil
	mb, _ := json.Marshal(m)
	rawSet(t, s, metaKey(d), mb)
	checkRanged(t, s, d)
	b, err := OpenBlob(ctx, s, d)
	if err != nil || b.Size() != out.Bytes || b.s != nil {
		t.Fatalf("OpenBlob of an old blob: size %d, %v; want it held whole", b.Size(), err)
	}
	damage(t, s, d, 1)
	if _, err := OpenBlob(ctx, s, d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("OpenBlob of a damaged old blob: %v", err)
	}
}

func TestBlobReaderRanges(t *testing.T) {
	ctx := context.Background()
	s := openMem(t)
	data := randomBytes(3*memChunkSize+5, 9)
	d, err := s.PutBlob(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenBlob(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int{{0, 0}, {0, 1}, {10, 20}, {memChunkSize - 3, memChunkSize + 3}, {0, memChunkSize},
		{memChunkSize / 2, 3*memChunkSize + 1}, {0, len(data)}, {len(data) - 1, len(data)}, {len(data), len(data)}} {
		p := make([]byte, r[1]-r[0])
		if err := b.ReadAt(ctx, p, int64(r[0])); err != nil || !bytes.Equal(p, data[r[0]:r[1]]) {
			t.Fatalf("ReadAt [%d, %d): %v", r[0], r[1], err)
		}
	}
	for _, r := range [][2]int64{{-1, 1}, {int64(len(data)) - 1, 2}, {int64(len(data)) + 1, 0}} {
		if err := b.ReadAt(ctx, make([]byte, r[1]), r[0]); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Fatalf("ReadAt %d bytes at %d: %v, want an out-of-range error", r[1], r[0], err)
		}
	}
	b.Close()
	if err := b.ReadAt(ctx, make([]byte, 1), 0); err == nil {
		t.Fatal("ReadAt after Close succeeded")
	}
	if _, err := OpenBlob(ctx, s, DigestOf([]byte("absent"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenBlob of an absent blob: %v", err)
	}
}

// encodeWith encodes rec with the given IPC writer options (for streams pipe does not write).
func encodeWith(t *testing.T, rec arrow.RecordBatch, batches int, opts ...ipc.Option) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, append([]ipc.Option{ipc.WithSchema(rec.Schema())}, opts...)...)
	for range batches {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestTableReaderRefuses checks the clear errors for streams the ranged reader does not read.
func TestTableReaderRefuses(t *testing.T) {
	ctx := context.Background()
	sample := sampleTable(t)
	defer sample.Release()

	ib := array.NewInt64Builder(memory.DefaultAllocator)
	ib.AppendValues([]int64{1, 2}, []bool{true, false})
	nulls := ib.NewArray()
	ib.Release()
	withNulls := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "n", Type: arrow.PrimitiveTypes.Int64, Nullable: true}}, nil), []arrow.Array{nulls}, 2)
	nulls.Release()
	defer withNulls.Release()

	sb := array.NewStructBuilder(memory.DefaultAllocator, arrow.StructOf(arrow.Field{Name: "x", Type: arrow.PrimitiveTypes.Int64}))
	sb.Append(true)
	sb.FieldBuilder(0).(*array.Int64Builder).Append(1)
	st := sb.NewArray()
	sb.Release()
	structs := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "s", Type: st.DataType()}}, nil), []arrow.Array{st}, 1)
	st.Release()
	defer structs.Release()

	good := encodeWith(t, sample, 1)
	for _, tc := range []struct {
		name, want string
		b          []byte
	}{
		{"two batches", "more than one record batch", encodeWith(t, sample, 2)},
		{"compressed", "compressed", encodeWith(t, sample, 1, ipc.WithLZ4())},
		{"nulls", `column "n" has 1 nulls`, encodeWith(t, withNulls, 1)},
		{"struct", `column "s" has type struct`, encodeWith(t, structs, 1)},
		{"schema only", "no record batch", good[:8+binary.LittleEndian.Uint32(good[4:])]},
		{"truncated", "malformed", good[:len(good)-64]},
		{"garbage", "malformed", []byte("not an arrow stream at all")},
		{"empty", "no schema", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewTableReader(ctx, BytesBlob(tc.b))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// The good stream reads, and type mismatches name the column.
	tr, err := NewTableReader(ctx, BytesBlob(good))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Int64s(ctx, "id"); err == nil || !strings.Contains(err.Error(), `column "id" is utf8, want int64`) {
		t.Fatalf("Int64s of a string column: %v", err)
	}
	if _, err := tr.Strings(ctx, "nope"); err == nil || !strings.Contains(err.Error(), `no column "nope"`) {
		t.Fatalf("absent column: %v", err)
	}
	if err := tr.Float32Values(ctx, "vec", 0, 99, make([]float32, 99)); err == nil {
		t.Fatal("values past the end read without an error")
	}
	if _, err := tr.Binary(ctx, "image", 3, nil); err == nil || !strings.Contains(err.Error(), "no row 3") {
		t.Fatalf("Binary past the last row: %v", err)
	}
}
