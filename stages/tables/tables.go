// Package tables reads and writes the stage output tables of stages/TABLES.md as Go values,
// so that no stage kind handles Arrow records itself.
//
// Every read function returns values the caller owns: strings are cloned and numbers copied
// out of Arrow memory, and the records are released before it returns. The few functions
// that hand out views of Arrow memory for speed (ImageReader.Bytes) say so, and say until
// when the view is valid. Errors name the input instance and the table once
// ("input features[seed=1] features: ..."); the pipeline adds the reading instance's name.
//
// Large tables (images, features, pseudo) are read by what a kind asks for, through
// artifacts.TableReader: the image index without the image bytes, each image's bytes when
// asked for, the feature maps of chosen ids straight into their set. Only those bytes are
// read from the store (in the chunks that hold them), so a stage needs memory for what it
// keeps, not for the table's blob.
package tables

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// Schema metadata keys that the train stage writes on its model table and that score and
// evaluate carry forward onto their tables (stages/TABLES.md), so that a report can name
// the method of an instance whose matrix does not.
const (
	MethodKey = "pipe.method"
	HeadKey   = "pipe.head"
	FusionKey = "pipe.fusion" // knn when the head's scores are fused with knn's (train.fusion)
)

// Meta is a table's schema metadata.
type Meta map[string]string

// MethodLabel names the method recorded in m: "ahl", or "ahl/dra" style when a head is
// recorded, "ahl/devnet+knn" when its scores are fused with knn's; "?" when there is none.
func (m Meta) MethodLabel() string {
	method := m[MethodKey]
	if method == "" {
		return "?"
	}
	if h := m[HeadKey]; h != "" {
		method += "/" + h
	}
	if f := m[FusionKey]; f != "" {
		method += "+" + f
	}
	return method
}

// Pick returns the entries of m under the given keys (those present).
func (m Meta) Pick(keys ...string) Meta {
	out := Meta{}
	for _, k := range keys {
		if v, ok := m[k]; ok && v != "" {
			out[k] = v
		}
	}
	return out
}

// openFrom opens table of the one input of env that has it.
func openFrom(ctx context.Context, env *kind.Env, table string) (arrow.RecordBatch, string, error) {
	in, err := env.With(table)
	if err != nil {
		return nil, "", err
	}
	rec, err := open(ctx, in, table)
	return rec, in.ID(), err
}

// open opens table of input in.
func open(ctx context.Context, in *kind.Input, table string) (arrow.RecordBatch, error) {
	rec, err := in.Open(ctx, table)
	if err != nil {
		return nil, fmt.Errorf("input %s %s: %w", in.ID(), table, err)
	}
	return rec, nil
}

// openTableFrom opens table of the one input of env that has it for ranged reads.
func openTableFrom(ctx context.Context, env *kind.Env, table string) (*artifacts.TableReader, string, error) {
	in, err := env.With(table)
	if err != nil {
		return nil, "", err
	}
	t, err := openTable(ctx, in, table)
	return t, in.ID(), err
}

// openTable opens table of input in for ranged reads. An input without a store behind it
// (a test's) has its record encoded and read from memory, so both take the same path.
func openTable(ctx context.Context, in *kind.Input, table string) (*artifacts.TableReader, error) {
	if in.OpenTable != nil {
		t, err := in.OpenTable(ctx, table)
		if err != nil {
			return nil, fmt.Errorf("input %s %s: %w", in.ID(), table, err)
		}
		return t, nil
	}
	rec, err := open(ctx, in, table)
	if err != nil {
		return nil, err
	}
	t, err := recordTable(ctx, rec)
	rec.Release()
	if err != nil {
		return nil, fmt.Errorf("input %s %s: %w", in.ID(), table, err)
	}
	return t, nil
}

// recordTable returns a TableReader over rec's IPC encoding (a copy: rec may be released).
func recordTable(ctx context.Context, rec arrow.RecordBatch) (*artifacts.TableReader, error) {
	b, err := artifacts.EncodeIPC(rec)
	if err != nil {
		return nil, err
	}
	return artifacts.NewTableReader(ctx, artifacts.BytesBlob(b))
}

// load reads a table from the store by digest, for readers outside a stage (the CLI).
func load(ctx context.Context, s artifacts.Store, d artifacts.Digest) (arrow.RecordBatch, error) {
	return artifacts.Get(ctx, s, d)
}

// metaOf returns rec's schema metadata.
func metaOf(rec arrow.RecordBatch) Meta {
	md := rec.Schema().Metadata()
	out := make(Meta, md.Len())
	for i, k := range md.Keys() {
		out[k] = strings.Clone(md.Values()[i])
	}
	return out
}

// withMeta returns rec with the schema metadata kv added; it takes ownership of rec.
func withMeta(rec arrow.RecordBatch, kv Meta) arrow.RecordBatch {
	return artifacts.WithMetadata(rec, kv)
}

// output builds a table from cols, adds meta and hands it to env under name.
func output(env *kind.Env, name string, meta Meta, cols ...artifacts.Col) error {
	rec, err := artifacts.NewTable(cols...)
	if err != nil {
		return fmt.Errorf("%s table: %w", name, err)
	}
	env.Output(name, withMeta(rec, meta))
	return nil
}

// cols reads columns of one record, keeping the first error, so a reader can read every
// column and check once. Strings are cloned and numbers copied unless the method says it
// aliases the record.
type cols struct {
	rec arrow.RecordBatch
	err error
}

func (c *cols) keep(err error) {
	if c.err == nil {
		c.err = err
	}
}

func (c *cols) strings(name string) []string {
	v, err := artifacts.StringCol(c.rec, name)
	c.keep(err)
	for i, s := range v {
		v[i] = strings.Clone(s)
	}
	return v
}

func (c *cols) int64s(name string) []int64 {
	v, err := artifacts.Int64Col(c.rec, name)
	c.keep(err)
	return append([]int64(nil), v...)
}

func (c *cols) float64s(name string) []float64 {
	v, err := artifacts.Float64Col(c.rec, name)
	c.keep(err)
	return append([]float64(nil), v...)
}
