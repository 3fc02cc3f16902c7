package tables

import (
	"context"
	"fmt"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// readTensors reads a tensor table (name, shape, values) into copies.
func readTensors(rec arrow.RecordBatch) ([]artifacts.Tensor, error) {
	ts, err := artifacts.ReadTensors(rec)
	if err != nil {
		return nil, err
	}
	for i, t := range ts {
		ts[i] = artifacts.Tensor{Name: strings.Clone(t.Name), Shape: append([]int64(nil), t.Shape...),
			Values: append([]float32(nil), t.Values...)}
	}
	return ts, nil
}

// Model is the content of the train stage's model table: the head's weights as named
// tensors and the schema metadata that describes them (pipe.method, pipe.head, ...; see
// stages/TABLES.md).
type Model struct {
	Tensors []artifacts.Tensor
	Meta    Meta
}

// WriteModel hands the model table of m to env.
func WriteModel(env *kind.Env, m Model) error {
	rec, err := artifacts.TensorTable(m.Tensors)
	if err != nil {
		return fmt.Errorf("model table: %w", err)
	}
	env.Output("model", withMeta(rec, m.Meta))
	return nil
}

// ReadModel reads the model table of the one input of env that has it. The tensors are
// copies: the table is released before it returns.
func ReadModel(ctx context.Context, env *kind.Env) (Model, error) {
	rec, in, err := openFrom(ctx, env, "model")
	if err != nil {
		return Model{}, err
	}
	defer rec.Release()
	m, err := DecodeModel(rec)
	if err != nil {
		return Model{}, fmt.Errorf("input %s model: %w", in, err)
	}
	return m, nil
}

// DecodeModel reads a model table record into copies; the caller releases rec.
func DecodeModel(rec arrow.RecordBatch) (Model, error) {
	ts, err := readTensors(rec)
	if err != nil {
		return Model{}, err
	}
	return Model{Tensors: ts, Meta: metaOf(rec)}, nil
}

// LogRow is one row of the train stage's log table.
type LogRow struct {
	Epoch     int64
	Task      int64
	QueryLoss float64
	Weight    float64
}

// WriteTrainLog hands the train log table of rows, with schema metadata meta (the model's),
// to env.
func WriteTrainLog(env *kind.Env, rows []LogRow, meta Meta) error {
	n := len(rows)
	ep, task := make([]int64, n), make([]int64, n)
	loss, w := make([]float64, n), make([]float64, n)
	for i, r := range rows {
		ep[i], task[i], loss[i], w[i] = r.Epoch, r.Task, r.QueryLoss, r.Weight
	}
	return output(env, "log", meta, artifacts.Int64s("epoch", ep), artifacts.Int64s("task", task),
		artifacts.Float64s("query_loss", loss), artifacts.Float64s("weight", w))
}

// ReadTrainLog reads the log table of input in (a train instance) and its metadata.
func ReadTrainLog(ctx context.Context, in *kind.Input) ([]LogRow, Meta, error) {
	rec, err := open(ctx, in, "log")
	if err != nil {
		return nil, nil, err
	}
	defer rec.Release()
	c := cols{rec: rec}
	ep, task, loss, w := c.int64s("epoch"), c.int64s("task"), c.float64s("query_loss"), c.float64s("weight")
	if c.err != nil {
		return nil, nil, fmt.Errorf("input %s log: %w", in.ID(), c.err)
	}
	out := make([]LogRow, len(ep))
	for i := range ep {
		out[i] = LogRow{ep[i], task[i], loss[i], w[i]}
	}
	return out, metaOf(rec), nil
}
