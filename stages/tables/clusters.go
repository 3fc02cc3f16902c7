package tables

import (
	"context"
	"fmt"

	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// WriteAssignments hands the assignments table (kmeans) to env: image ids[i] is in cluster
// clusters[i].
func WriteAssignments(env *kind.Env, ids []string, clusters []int64) error {
	return output(env, "assignments", nil, artifacts.Strings("id", ids), artifacts.Int64s("cluster", clusters))
}

// WriteCentroids hands the centroids table (kmeans) to env: centroids[c] is cluster c's.
func WriteCentroids(env *kind.Env, centroids [][]float32) error {
	ids := make([]int64, len(centroids))
	for c := range ids {
		ids[c] = int64(c)
	}
	return output(env, "centroids", nil, artifacts.Int64s("cluster", ids), artifacts.Float32Lists("values", centroids))
}

// ReadAssignments reads the assignments table of the one input of env that has it, as the
// cluster of each assigned image id.
func ReadAssignments(ctx context.Context, env *kind.Env) (map[string]int, error) {
	rec, in, err := openFrom(ctx, env, "assignments")
	if err != nil {
		return nil, err
	}
	defer rec.Release()
	c := cols{rec: rec}
	ids, cl := c.strings("id"), c.int64s("cluster")
	if c.err != nil {
		return nil, fmt.Errorf("input %s assignments: %w", in, c.err)
	}
	out := make(map[string]int, len(ids))
	for i, id := range ids {
		out[id] = int(cl[i])
	}
	return out, nil
}
