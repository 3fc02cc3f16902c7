package tables

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// WriteTasks hands the tasks table of samples (hadg) to env.
func WriteTasks(env *kind.Env, samples []hadg.Sample) error {
	n := len(samples)
	task, label := make([]int64, n), make([]int64, n)
	role, id, kinds, gen := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, s := range samples {
		task[i], label[i] = int64(s.Task), int64(s.Label)
		role[i], id[i], kinds[i], gen[i] = string(s.Role), s.ID, string(s.Kind), s.Generator
	}
	return output(env, "tasks", nil, artifacts.Int64s("task", task), artifacts.Strings("role", role), artifacts.Strings("id", id),
		artifacts.Int64s("label", label), artifacts.Strings("kind", kinds), artifacts.Strings("generator", gen))
}

// ReadTasks reads the tasks table of the one input of env that has it.
func ReadTasks(ctx context.Context, env *kind.Env) ([]hadg.Sample, error) {
	rec, in, err := openFrom(ctx, env, "tasks")
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	s, err := DecodeTasks(rec)
	if err != nil {
		return nil, fmt.Errorf("input %s tasks: %w", in, err)
	}
	return s, nil
}

// DecodeTasks reads a tasks table record into samples (owned strings), checking roles,
// labels and ids; the caller releases rec.
func DecodeTasks(rec arrow.RecordBatch) ([]hadg.Sample, error) {
	c := cols{rec: rec}
	task, role, id, label := c.int64s("task"), c.strings("role"), c.strings("id"), c.int64s("label")
	kinds, gen := c.strings("kind"), c.strings("generator")
	if c.err != nil {
		return nil, c.err
	}
	out := make([]hadg.Sample, len(task))
	for i := range out {
		s := hadg.Sample{Task: int(task[i]), Role: hadg.Role(role[i]), ID: id[i], Label: int(label[i]), Kind: hadg.Kind(kinds[i]), Generator: gen[i]}
		if s.Task < 0 || (s.Role != hadg.Support && s.Role != hadg.Query) || s.Label < 0 || s.Label > 2 || s.ID == "" {
			return nil, fmt.Errorf("row %d: task %d role %q id %q label %d: want task >= 0, role support or query, label 0, 1 or 2", i, s.Task, s.Role, s.ID, s.Label)
		}
		out[i] = s
	}
	return out, nil
}
