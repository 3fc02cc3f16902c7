package tables

import (
	"context"
	"fmt"
	"runtime"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Image is one row of the images table (ingest).
type Image struct {
	ID    string // path relative to the dataset root
	Split string // train, val (held-out training images) or test
	Label int64  // 0 normal, 1 anomaly
	Class string // good or the anomaly class
	Bytes []byte // the encoded image
}

// WriteImages hands the images table of rows to env.
func WriteImages(env *kind.Env, rows []Image) error {
	n := len(rows)
	ids, splits, classes, data := make([]string, n), make([]string, n), make([]string, n), make([][]byte, n)
	labels := make([]int64, n)
	for i, r := range rows {
		ids[i], splits[i], labels[i], classes[i], data[i] = r.ID, r.Split, r.Label, r.Class, r.Bytes
	}
	return output(env, "images", nil, artifacts.Strings("id", ids), artifacts.Strings("split", splits),
		artifacts.Int64s("label", labels), artifacts.Strings("class", classes), artifacts.Binaries("bytes", data))
}

// ImageIndex is the images table without the image bytes: one entry per image, in ingest
// order. It holds copies, not the table's memory.
type ImageIndex struct {
	IDs   []string
	Split []string
	Label []int64
	Class []string
	byID  map[string]int
}

// Len is the number of images.
func (x *ImageIndex) Len() int { return len(x.IDs) }

// Row returns the index of the image with the given id.
func (x *ImageIndex) Row(id string) (int, bool) {
	i, ok := x.byID[id]
	return i, ok
}

// Select returns the ids of the images of the given split and label, in ingest order.
func (x *ImageIndex) Select(split string, label int64) []string {
	var out []string
	for i := range x.IDs {
		if x.Split[i] == split && x.Label[i] == label {
			out = append(out, x.IDs[i])
		}
	}
	return out
}

// TrainNormals returns the ids of the training normals, in ingest order.
func (x *ImageIndex) TrainNormals() []string { return x.Select("train", 0) }

// TrainAnomalies returns the ids of the labelled (seen) training anomalies, in ingest order.
func (x *ImageIndex) TrainAnomalies() []string { return x.Select("train", 1) }

// ValNormals returns the ids of the validation normals (split val, label 0), in ingest order.
func (x *ImageIndex) ValNormals() []string { return x.Select("val", 0) }

// ValAnomalies returns the ids of the held-out labelled anomalies (split val, label 1), in
// ingest order.
func (x *ImageIndex) ValAnomalies() []string { return x.Select("val", 1) }

// ReadImageIndex reads the image index of the one input of env that has an images table,
// checking that ids are unique, splits train or test and labels 0 or 1. No image bytes are
// read.
func ReadImageIndex(ctx context.Context, env *kind.Env) (*ImageIndex, error) {
	r, err := OpenImages(ctx, env)
	if err != nil {
		return nil, err
	}
	x := r.ImageIndex
	r.Close()
	// Kinds read the image index first, before their large inputs: collect what earlier
	// stage instances of this process left behind now, while the live heap is small, so
	// that the heap target of the reads that follow starts from this instance's own data
	// (measured on the demo: score's 12 instances peak at 137 MB RSS without it, 108 MB with it).
	runtime.GC()
	return x, nil
}

// ImageReader reads the images table: its index (owned) when it opens, each image's encoded
// bytes when asked for, so that only one image's bytes are in memory at a time.
type ImageReader struct {
	*ImageIndex
	t   *artifacts.TableReader
	buf []byte
	// Input names the input instance and table, for error messages.
	Input string
}

// OpenImages opens the images table of the one input of env that has it and reads its
// index. The caller calls Close when done with the bytes.
func OpenImages(ctx context.Context, env *kind.Env) (*ImageReader, error) {
	t, in, err := openTableFrom(ctx, env, "images")
	if err != nil {
		return nil, err
	}
	r, err := newImageReader(ctx, t)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("input %s images: %w", in, err)
	}
	r.Input = "input " + in + " images"
	return r, nil
}

func newImageReader(ctx context.Context, t *artifacts.TableReader) (*ImageReader, error) {
	x := &ImageIndex{}
	var err error
	for _, c := range []struct {
		name string
		dst  *[]string
	}{{"id", &x.IDs}, {"split", &x.Split}, {"class", &x.Class}} {
		if *c.dst, err = t.Strings(ctx, c.name); err != nil {
			return nil, err
		}
	}
	if x.Label, err = t.Int64s(ctx, "label"); err != nil {
		return nil, err
	}
	if _, err := t.Offsets(ctx, "bytes"); err != nil { // the column is there, and binary
		return nil, err
	}
	x.byID = make(map[string]int, len(x.IDs))
	for i, id := range x.IDs {
		if _, dup := x.byID[id]; dup {
			return nil, fmt.Errorf("duplicate id %q", id)
		}
		if x.Split[i] != "train" && x.Split[i] != "test" && x.Split[i] != "val" {
			return nil, fmt.Errorf("id %q has split %q, want train, val or test", id, x.Split[i])
		}
		if x.Label[i] != 0 && x.Label[i] != 1 {
			return nil, fmt.Errorf("id %q has label %d, want 0 or 1", id, x.Label[i])
		}
		x.byID[id] = i
	}
	return &ImageReader{ImageIndex: x, t: t}, nil
}

// Bytes reads the encoded image of row i from the store. The slice is the reader's buffer,
// reused by the next call: it is valid until the next Bytes or Close (copy it to keep it).
func (r *ImageReader) Bytes(ctx context.Context, i int) ([]byte, error) {
	if r.t == nil {
		return nil, fmt.Errorf("%s: image %d read after Close", r.Input, i)
	}
	b, err := r.t.Binary(ctx, "bytes", i, r.buf)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.Input, err)
	}
	r.buf = b
	return b, nil
}

// Close releases the table. The index stays valid.
func (r *ImageReader) Close() {
	if r.t != nil {
		r.t.Close()
		r.t, r.buf = nil, nil
	}
}
