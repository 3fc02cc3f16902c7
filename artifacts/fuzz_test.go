package artifacts

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

// FuzzDecodeIPC checks that no bytes make DecodeIPC panic or allocate without bound (it
// found a 305-byte stream whose schema claimed enough fields for a 29 GB allocation; checkMeta
// now refuses it). Arrow does not check that a record's buffers are as long as its length
// says, so cells of an accepted record are not walked here: the store verifies every blob's
// checksum before decoding, so only bytes pipe wrote itself reach DecodeIPC, and stages run
// under a recover.
func FuzzDecodeIPC(f *testing.F) {
	addTableSeeds(f, [][]Col{
		{Float64s("value", []float64{1, 2, 3})},
		{Strings("id", []string{"a", "bb"}), Int64s("n", []int64{7, 8})},
		{Float32Lists("features", [][]float32{{1, 2}, {3}})},
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := DecodeIPC(b)
		if err != nil {
			return
		}
		rec.Release()
	})
}

// FuzzDecodeManifest checks that no stored manifest bytes make DecodeManifest panic, that
// every rejection is a cache miss (ErrNotFound) saying why (ErrCorrupt), and that an accepted
// manifest records its key and valid output digests.
func FuzzDecodeManifest(f *testing.F) {
	m := Manifest{Key: "k1", Kind: "train", Version: 2, Params: map[string]any{"T": 7.0}, Seed: 42,
		Inputs:  map[string]Digest{"tasks/tasks": DigestOf([]byte("a"))},
		Outputs: map[string]Output{"model": {Digest: DigestOf([]byte("b")), Rows: 1, Bytes: 10}}}
	b, err := json.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"key":"k1","outputs":{"x":{"digest":"zz"}}}`))
	f.Add([]byte(`{"key":"k1","dag":"old","stage":"s","instance":"x=1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeManifest("k1", b)
		if err != nil {
			if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("rejection %v wraps neither ErrNotFound nor ErrCorrupt", err)
			}
			return
		}
		if got.Key != "k1" {
			t.Fatalf("accepted a manifest recording key %q", got.Key)
		}
		for name, o := range got.Outputs {
			if validDigest(o.Digest) != nil {
				t.Fatalf("accepted output %q with digest %q", name, o.Digest)
			}
		}
	})
}

// FuzzTableReader checks that no bytes make NewTableReader or its column reads panic or
// allocate beyond the stream's size: every read is bounded by the blob.
func FuzzTableReader(f *testing.F) {
	addTableSeeds(f, [][]Col{
		{Float64s("value", []float64{1, 2, 3})},
		{Strings("id", []string{"a", "bb"}), Int64s("n", []int64{7, 8}), Binaries("b", [][]byte{{1}, {2, 3}})},
		{Float32Lists("features", [][]float32{{1, 2}, {3}}), Int64Lists("shape", [][]int64{{1}, {2, 3}})},
	})
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		tr, err := NewTableReader(ctx, BytesBlob(b))
		if err != nil {
			return
		}
		defer tr.Close()
		for _, fd := range tr.Schema().Fields() {
			switch fd.Type.ID() {
			case arrow.STRING:
				_, _ = tr.Strings(ctx, fd.Name)
			case arrow.INT64:
				_, _ = tr.Int64s(ctx, fd.Name)
			case arrow.FLOAT64:
				_, _ = tr.Float64s(ctx, fd.Name)
			case arrow.BINARY:
				for i := range min(tr.NumRows(), 4) {
					_, _ = tr.Binary(ctx, fd.Name, int(i), nil)
				}
			case arrow.LIST:
				if off, err := tr.Offsets(ctx, fd.Name); err == nil {
					n := off[len(off)-1] - off[0]
					_ = tr.Float32Values(ctx, fd.Name, off[0], off[len(off)-1], make([]float32, n))
					_ = tr.Int64Values(ctx, fd.Name, off[0], off[len(off)-1], make([]int64, n))
				}
			}
		}
	})
}

// addTableSeeds adds the Arrow IPC bytes of one table per entry of tables to f's corpus.
func addTableSeeds(f *testing.F, tables [][]Col) {
	f.Helper()
	for _, cols := range tables {
		rec, err := NewTable(cols...)
		if err != nil {
			f.Fatal(err)
		}
		b, err := EncodeIPC(rec)
		rec.Release()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
