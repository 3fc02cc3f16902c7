package artifacts

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
		w.Close()
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
