package stages

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/kmeans"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// kmeansVersion is the kmeans stage's code version (part of its cache key).
const kmeansVersion = 1

// KMeansParams configures the clusters stage (HADG step 1; docs/algorithm.md, "k-means clusters").
type KMeansParams struct {
	// K is the number of clusters C (paper default 3).
	K int `json:"k"`
	// Restarts is the number of k-means++ starts; the lowest inertia wins.
	Restarts int `json:"restarts"`
	// Features is how an image's maps become one point: "pooled" (global average pool per
	// scale, concatenated) or "flattened" (whole maps).
	Features string `json:"features"`
}

// Validate checks the kmeans params.
func (p *KMeansParams) Validate() error {
	if p.K < 1 {
		return fmt.Errorf("k: %d, want >= 1", p.K)
	}
	if p.Restarts < 1 {
		return fmt.Errorf("restarts: %d, want >= 1", p.Restarts)
	}
	if p.Features != string(kmeans.Pooled) && p.Features != string(kmeans.Flattened) {
		return fmt.Errorf("features: %q, want %q or %q", p.Features, kmeans.Pooled, kmeans.Flattened)
	}
	return nil
}

func init() {
	register(kind.Definition{
		Kind:    "kmeans",
		Version: kmeansVersion,
		Params: func() any {
			return &KMeansParams{K: 3, Restarts: kmeans.DefaultRestarts, Features: string(kmeans.Pooled)}
		},
		Inputs:  kind.Inputs{Required: []string{"images", "features"}},
		Outputs: []string{"assignments", "centroids"},
		Run:     runKMeans,
	})
}

// runKMeans clusters the training normals (split train, label 0 in the ingest images table)
// by their features and writes their assignments (members of dropped clusters are absent)
// and the kept clusters' centroids.
func runKMeans(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*KMeansParams)
	imgs, err := tables.ReadImageIndex(ctx, env)
	if err != nil {
		return err
	}
	normals := imgs.TrainNormals()
	if len(normals) == 0 {
		return errors.New("the images table has no training normals to cluster")
	}
	set, err := tables.ReadMaps(ctx, env, tables.MapSource{Table: "features", Keep: setOf(normals)})
	if err != nil {
		return err
	}
	if set.Len() != len(normals) {
		return fmt.Errorf("features cover %d of the %d training normals", set.Len(), len(normals))
	}
	if p.K > set.Len() {
		return fmt.Errorf("k = %d clusters but only %d training normals", p.K, set.Len())
	}
	x, err := kmeans.Features(set.Scales, kmeans.Mode(p.Features))
	if err != nil {
		return err
	}
	res, err := kmeans.Fit(x, p.K, p.Restarts, rand.New(rand.NewPCG(env.Seed, 0)))
	if err != nil {
		return err
	}
	var ids []string
	var cl []int64
	for i, l := range res.Labels {
		if l >= 0 {
			ids = append(ids, set.IDs[i])
			cl = append(cl, int64(l))
		}
	}
	for _, d := range res.Dropped {
		fmt.Fprintf(env.Log, "dropped a cluster of %d normals (fewer than %d members); they join the holistic task only\n",
			d.Size, kmeans.DefaultMinSize)
	}
	fmt.Fprintf(env.Log, "%d normals in %d clusters of sizes %v (inertia %.4g)\n", set.Len(), len(res.Sizes), res.Sizes, res.Inertia)
	if err := tables.WriteAssignments(env, ids, cl); err != nil {
		return err
	}
	centroids := make([][]float32, res.Centroids.N)
	for c := range centroids {
		centroids[c] = res.Centroids.Row(c)
	}
	return tables.WriteCentroids(env, centroids)
}

// setOf returns the set of ids.
func setOf(ids []string) map[string]bool {
	m := make(map[string]bool, len(ids))
	for _, id := range ids {
		m[id] = true
	}
	return m
}
