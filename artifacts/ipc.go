package artifacts

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	flatbuffers "github.com/google/flatbuffers/go"
	"io"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// ipcOverhead is room for the schema and record-batch metadata messages and the padding of
// each buffer to 8 bytes when EncodeIPC sizes its output buffer.
const ipcOverhead = 64 << 10

// EncodeIPC writes rec as an Arrow IPC stream (schema, one record batch, end-of-stream),
// the byte form whose sha256 is the artifact's digest. The output buffer is sized up front,
// so the record's buffers are copied once.
func EncodeIPC(rec arrow.RecordBatch) ([]byte, error) {
	if rec == nil {
		return nil, errors.New("artifacts: encode: nil record")
	}
	est := ipcOverhead
	for _, c := range rec.Columns() {
		est += dataSize(c.Data())
	}
	buf := bytes.NewBuffer(make([]byte, 0, est))
	w := ipc.NewWriter(buf, ipc.WithSchema(rec.Schema()))
	if err := w.Write(rec); err != nil {
		_ = w.Close() // the write error is the one to report
		return nil, fmt.Errorf("artifacts: encode Arrow IPC: %w", err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("artifacts: encode Arrow IPC: %w", err)
	}
	return buf.Bytes(), nil
}

// dataSize is the total length of the buffers of an array and its children, padded to 8
// bytes each as the IPC format pads them.
func dataSize(d arrow.ArrayData) int {
	n := 0
	for _, b := range d.Buffers() {
		if b != nil {
			n += (b.Len() + 7) &^ 7
		}
	}
	for _, c := range d.Children() {
		n += dataSize(c)
	}
	return n
}

// DecodeIPC reads an Arrow IPC stream holding exactly one record batch. It copies nothing:
// the record's buffers alias b, which must not be modified while the record is in use.
// Release the record when done.
func DecodeIPC(b []byte) (rec arrow.RecordBatch, err error) {
	defer func() {
		if p := recover(); p != nil {
			if rec != nil {
				rec.Release()
			}
			rec, err = nil, fmt.Errorf("artifacts: decode Arrow IPC: malformed stream: %v", p)
		}
	}()
	mr := &sliceMessageReader{b: b}
	mr.refs = 1
	r, err := ipc.NewReaderFromMessageReader(mr)
	if err != nil {
		return nil, fmt.Errorf("artifacts: decode Arrow IPC: %w", err)
	}
	defer r.Release()
	if !r.Next() {
		if r.Err() != nil {
			return nil, fmt.Errorf("artifacts: decode Arrow IPC: %w", r.Err())
		}
		return nil, errors.New("artifacts: decode Arrow IPC: the stream holds no record batch")
	}
	rec = r.RecordBatch()
	rec.Retain()
	if r.Next() {
		rec.Release()
		return nil, errors.New("artifacts: decode Arrow IPC: the stream holds more than one record batch")
	}
	if r.Err() != nil {
		rec.Release()
		return nil, fmt.Errorf("artifacts: decode Arrow IPC: %w", r.Err())
	}
	return rec, nil
}

// sliceMessageReader reads IPC stream messages from a byte slice without copying: each
// message's metadata and body are sub-slices of b, so record buffers alias b (as
// ipc.NewMappedFileReader does for the file format).
type sliceMessageReader struct {
	b    []byte
	off  int
	msg  *ipc.Message
	refs int
}

func (r *sliceMessageReader) Retain() { r.refs++ }

func (r *sliceMessageReader) Release() {
	r.refs--
	if r.refs == 0 && r.msg != nil {
		r.msg.Release()
		r.msg = nil
	}
}

// ipcContinuation marks the start of a message in the IPC stream format.
const ipcContinuation = 0xFFFFFFFF

func (r *sliceMessageReader) Message() (*ipc.Message, error) {
	if r.msg != nil {
		r.msg.Release()
		r.msg = nil
	}
	read32 := func(what string) (uint32, error) {
		if len(r.b)-r.off < 4 {
			return 0, fmt.Errorf("truncated stream: no %s at byte %d of %d", what, r.off, len(r.b))
		}
		v := binary.LittleEndian.Uint32(r.b[r.off:])
		r.off += 4
		return v, nil
	}
	if r.off == len(r.b) {
		return nil, io.EOF // a stream without the end-of-stream marker ends here too
	}
	n, err := read32("continuation marker")
	if err != nil {
		return nil, err
	}
	if n == ipcContinuation {
		if n, err = read32("message length"); err != nil {
			return nil, err
		}
	}
	if n == 0 {
		return nil, io.EOF
	}
	if int64(n) > int64(len(r.b)-r.off) || n < 4 {
		return nil, fmt.Errorf("truncated stream: message of %d bytes at byte %d of %d", n, r.off, len(r.b))
	}
	meta := r.b[r.off : r.off+int(n)]
	r.off += int(n)
	if err := checkMeta(meta); err != nil {
		return nil, err
	}
	probe := ipc.NewMessage(memory.NewBufferBytes(meta), memory.NewBufferBytes(nil))
	bodyLen := probe.BodyLen()
	probe.Release()
	if bodyLen < 0 || bodyLen > int64(len(r.b)-r.off) {
		return nil, fmt.Errorf("truncated stream: message body of %d bytes at byte %d of %d", bodyLen, r.off, len(r.b))
	}
	body := r.b[r.off : r.off+int(bodyLen)]
	r.off += int(bodyLen)
	r.msg = ipc.NewMessage(memory.NewBufferBytes(meta), memory.NewBufferBytes(body))
	return r.msg, nil
}

// Put encodes rec as an Arrow IPC stream, stores it and returns its digest and the Output
// that describes it in a manifest.
func Put(ctx context.Context, s Store, rec arrow.RecordBatch) (Digest, Output, error) {
	b, err := EncodeIPC(rec)
	if err != nil {
		return "", Output{}, err
	}
	d, err := s.PutBlob(ctx, b)
	if err != nil {
		return "", Output{}, err
	}
	return d, Output{Digest: d, Rows: rec.NumRows(), Bytes: int64(len(b))}, nil
}

// Get loads the blob d and decodes it without a further copy. Release the record when done.
func Get(ctx context.Context, s Store, d Digest) (arrow.RecordBatch, error) {
	b, err := s.Blob(ctx, d)
	if err != nil {
		return nil, err
	}
	rec, err := DecodeIPC(b)
	if err != nil {
		return nil, fmt.Errorf("artifacts: blob %s: %w", d, err)
	}
	return rec, nil
}

// checkMeta bounds every vector length in an IPC message's metadata (a flatbuffer) by the
// metadata's size before Arrow reads it: Arrow allocates a slice of each vector's declared
// length (schema fields, children, metadata pairs), so a damaged length would make one
// allocation of many gigabytes, which kills the process instead of failing the decode. A
// bad offset here panics, which DecodeIPC turns into an error.
func checkMeta(meta []byte) error {
	limit := len(meta) / 4 // every element takes at least 4 bytes
	vec := func(t *flatbuffers.Table, field int, what string) (flatbuffers.UOffsetT, int, error) {
		o := flatbuffers.UOffsetT(t.Offset(flatbuffers.VOffsetT(4 + 2*field)))
		if o == 0 {
			return 0, 0, nil
		}
		n := t.VectorLen(o)
		if n < 0 || n > limit {
			return 0, 0, fmt.Errorf("malformed message: %s claims %d entries in %d bytes", what, n, len(meta))
		}
		return o, n, nil
	}
	table := func(t *flatbuffers.Table, field int) (*flatbuffers.Table, bool) {
		o := flatbuffers.UOffsetT(t.Offset(flatbuffers.VOffsetT(4 + 2*field)))
		if o == 0 {
			return nil, false
		}
		return &flatbuffers.Table{Bytes: t.Bytes, Pos: t.Indirect(o + t.Pos)}, true
	}
	var checkField func(f *flatbuffers.Table, depth int) error
	checkField = func(f *flatbuffers.Table, depth int) error {
		if depth > 64 {
			return errors.New("malformed message: fields nested more than 64 deep")
		}
		if _, _, err := vec(f, 6, "field metadata"); err != nil {
			return err
		}
		o, n, err := vec(f, 5, "field children")
		if err != nil {
			return err
		}
		for i := range n {
			c := &flatbuffers.Table{Bytes: f.Bytes, Pos: f.Indirect(f.Vector(o) + flatbuffers.UOffsetT(4*i))}
			if err := checkField(c, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	checkBatch := func(b *flatbuffers.Table) error {
		for _, fv := range []struct {
			field int
			what  string
		}{{1, "record batch nodes"}, {2, "record batch buffers"}, {4, "record batch variadic counts"}} {
			if _, _, err := vec(b, fv.field, fv.what); err != nil {
				return err
			}
		}
		return nil
	}
	msg := &flatbuffers.Table{Bytes: meta, Pos: flatbuffers.GetUOffsetT(meta)}
	if _, _, err := vec(msg, 4, "message metadata"); err != nil {
		return err
	}
	var headerType byte
	if o := flatbuffers.UOffsetT(msg.Offset(4 + 2*1)); o != 0 {
		headerType = msg.GetByte(o + msg.Pos)
	}
	header, ok := table(msg, 2)
	if !ok {
		return nil
	}
	switch headerType {
	case 1: // Schema
		if _, _, err := vec(header, 2, "schema metadata"); err != nil {
			return err
		}
		if _, _, err := vec(header, 3, "schema features"); err != nil {
			return err
		}
		o, n, err := vec(header, 1, "schema fields")
		if err != nil {
			return err
		}
		for i := range n {
			f := &flatbuffers.Table{Bytes: meta, Pos: header.Indirect(header.Vector(o) + flatbuffers.UOffsetT(4*i))}
			if err := checkField(f, 0); err != nil {
				return err
			}
		}
	case 2: // DictionaryBatch
		if data, ok := table(header, 1); ok {
			return checkBatch(data)
		}
	case 3: // RecordBatch
		return checkBatch(header)
	}
	return nil
}
