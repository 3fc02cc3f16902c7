package artifacts

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

func sampleTable(t testing.TB) arrow.RecordBatch {
	t.Helper()
	rec, err := NewTable(
		Strings("id", []string{"a", "b", "c"}),
		Int64s("label", []int64{0, 1, -7}),
		Float64s("score", []float64{0.25, math.Inf(1), 1e-300}),
		Binaries("image", [][]byte{{1, 2}, {}, {255}}),
		Float32Lists("vec", [][]float32{{1, 2.5}, {}, {float32(math.NaN()), -0.125}}),
		Int64Lists("shape", [][]int64{{2}, {0}, {1, 2}}),
	)
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func TestIPCRoundTrip(t *testing.T) {
	ctx := context.Background()
	s := openTemp(t)
	rec := sampleTable(t)
	defer rec.Release()
	d, out, err := Put(ctx, s, rec)
	if err != nil {
		t.Fatal(err)
	}
	b1, _ := EncodeIPC(rec)
	b2, _ := EncodeIPC(rec)
	if !bytes.Equal(b1, b2) || DigestOf(b1) != d || out.Bytes != int64(len(b1)) || out.Rows != 3 {
		t.Fatalf("encoding is not deterministic or Output is wrong: %+v", out)
	}
	// The same table built again encodes to the same bytes (so unchanged outputs keep
	// their digest and downstream stays cached).
	again := sampleTable(t)
	defer again.Release()
	if b3, _ := EncodeIPC(again); !bytes.Equal(b1, b3) {
		t.Fatal("the same table built twice encodes differently")
	}
	got, err := Get(ctx, s, d)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	// Re-encoding a decoded table gives the stored bytes back.
	if b4, _ := EncodeIPC(got); !bytes.Equal(b1, b4) {
		t.Fatal("a decoded table re-encodes differently")
	}
	if !array.RecordApproxEqual(rec, got, array.WithNaNsEqual(true), array.WithAbsTolerance(0)) {
		t.Fatalf("round trip differs:\n%v\n%v", rec, got)
	}
	// The standard stream reader agrees with the zero-copy one.
	r, err := ipc.NewReader(bytes.NewReader(b1))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Release()
	if !r.Next() || !array.RecordApproxEqual(rec, r.RecordBatch(), array.WithNaNsEqual(true), array.WithAbsTolerance(0)) {
		t.Fatal("ipc.NewReader disagrees with DecodeIPC")
	}
}

func TestDecodeIPCIsZeroCopy(t *testing.T) {
	rec := sampleTable(t)
	defer rec.Release()
	b, err := EncodeIPC(rec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeIPC(b)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Release()
	vecs, err := Float32ListCol(got, "vec")
	if err != nil {
		t.Fatal(err)
	}
	lo, hi := uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&b[len(b)-1]))
	p := uintptr(unsafe.Pointer(&vecs[0][0]))
	if p < lo || p > hi {
		t.Fatalf("decoded values at %#x are not inside the blob [%#x, %#x]: a copy was made", p, lo, hi)
	}
	if p%4 != 0 {
		t.Fatalf("decoded float32 values are misaligned at %#x", p)
	}
}

func TestDecodeIPCBadInput(t *testing.T) {
	rec := sampleTable(t)
	defer rec.Release()
	b, err := EncodeIPC(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{0, 3, 8, 40, len(b) / 2, len(b) - 9} {
		if got, err := DecodeIPC(b[:cut]); err == nil {
			got.Release()
			t.Errorf("truncated to %d of %d bytes: no error", cut, len(b))
		}
	}
	garbage := bytes.Repeat([]byte{0xFF, 0xFF, 0xFF, 0xFF, 0x10, 0, 0, 0, 7}, 20)
	if got, err := DecodeIPC(garbage); err == nil {
		got.Release()
		t.Error("garbage decoded without error")
	}
	// Two record batches in one stream are refused.
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeIPC(buf.Bytes()); err == nil || !strings.Contains(err.Error(), "more than one") {
		if got != nil {
			got.Release()
		}
		t.Errorf("two batches: %v", err)
	}
}

func TestExportIPCFile(t *testing.T) {
	rec := sampleTable(t)
	defer rec.Release()
	var buf bytes.Buffer
	if err := ExportIPCFile(rec, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("ARROW1")) || !bytes.HasSuffix(buf.Bytes(), []byte("ARROW1")) {
		t.Fatal("export lacks the ARROW1 magic of the IPC file format")
	}
	fr, err := ipc.NewFileReader(bytes.NewReader(buf.Bytes()), ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := fr.Close(); err != nil {
			t.Error(err)
		}
	}()
	if fr.NumRecords() != 1 {
		t.Fatalf("file holds %d record batches, want 1", fr.NumRecords())
	}
	got, err := fr.RecordBatch(0)
	if err != nil {
		t.Fatal(err)
	}
	if !array.RecordApproxEqual(rec, got, array.WithNaNsEqual(true), array.WithAbsTolerance(0)) {
		t.Fatalf("exported file reads back differently:\n%v", got)
	}
}

func TestExportCSV(t *testing.T) {
	rec := sampleTable(t)
	defer rec.Release()
	var buf bytes.Buffer
	if err := ExportCSV(rec, &buf); err != nil {
		t.Fatal(err)
	}
	want := "id,label,score,image,vec,shape\n" +
		"a,0,0.25,AQI=,\"[1,2.5]\",[2]\n" +
		"b,1,+Inf,,[],[0]\n" +
		"c,-7,1e-300,/w==,\"[\"\"NaN\"\",-0.125]\",\"[1,2]\"\n"
	if buf.String() != want {
		t.Fatalf("CSV:\n%s\nwant:\n%s", buf.String(), want)
	}

	// Nulls are empty cells.
	lb := array.NewListBuilder(memory.DefaultAllocator, arrow.PrimitiveTypes.Float32)
	lb.Append(true)
	lb.ValueBuilder().(*array.Float32Builder).AppendValues([]float32{3}, nil)
	lb.AppendNull()
	lists := lb.NewArray()
	lb.Release()
	defer lists.Release()
	ib := array.NewInt64Builder(memory.DefaultAllocator)
	ib.AppendValues([]int64{1, 2}, nil)
	ids := ib.NewArray()
	ib.Release()
	defer ids.Release()
	withNull := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "id", Type: ids.DataType()}, {Name: "v", Type: lists.DataType(), Nullable: true}}, nil), []arrow.Array{ids, lists}, 2)
	defer withNull.Release()
	buf.Reset()
	if err := ExportCSV(withNull, &buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "id,v\n1,[3]\n2,\n" {
		t.Fatalf("CSV with a null list: %q", buf.String())
	}
}
