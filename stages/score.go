package stages

import (
	"context"
	"errors"
	"fmt"

	"github.com/pipe-ahl/pipe/ahl/batch"
	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// scoreVersion is the score stage's code version (part of its cache key).
const scoreVersion = 1

// ScoreParams configures the score stage.
type ScoreParams struct {
	// BatchSize is how many test images are scored at once (memory, not results).
	BatchSize int `json:"batch_size"`
}

// Validate checks the score params.
func (p *ScoreParams) Validate() error {
	if p.BatchSize < 1 {
		return fmt.Errorf("batch_size: %d, want >= 1", p.BatchSize)
	}
	return nil
}

func init() {
	register(kind.Definition{
		Kind:    "score",
		Version: scoreVersion,
		Params:  func() any { return &ScoreParams{BatchSize: 64} },
		Inputs:  kind.Inputs{Required: []string{"images", "model", "features"}},
		Outputs: []string{"scores"},
		Run:     runScore,
	})
}

// runScore scores every test image (split test of the ingest images table) with the trained
// model, without adaptation (docs/algorithm.md, "Scoring the test set"); the model's head is
// rebuilt through the heads registry from the model table's metadata. Heads score against
// the reference map the dra head's composite sub-head needs: the mean map of all training
// normals. The scores table carries the model's method and head as schema metadata.
func runScore(ctx context.Context, env *kind.Env) error {
	p := env.Params.(*ScoreParams)
	imgs, err := tables.ReadImageIndex(ctx, env)
	if err != nil {
		return err
	}
	tm, err := tables.ReadModel(ctx, env)
	if err != nil {
		return err
	}
	model, err := decodeModel(tm)
	if err != nil {
		return err
	}
	meta := tm.Meta.Pick(tables.MethodKey, tables.HeadKey, tables.FusionKey)

	var testIDs []string
	var labels []int64
	var classes []string
	for i, id := range imgs.IDs {
		if imgs.Split[i] == "test" {
			testIDs = append(testIDs, id)
			labels = append(labels, imgs.Label[i])
			classes = append(classes, imgs.Class[i])
		}
	}
	if len(testIDs) == 0 {
		return errors.New("the images table has no test images")
	}
	normals := imgs.TrainNormals()
	want := setOf(append(append([]string(nil), testIDs...), normals...))
	set, err := tables.ReadMaps(ctx, env, tables.MapSource{Table: "features", Keep: want})
	if err != nil {
		return err
	}
	if set.Len() != len(want) {
		return fmt.Errorf("features cover %d of the %d test images and training normals", set.Len(), len(want))
	}
	testRows := rowsOf(set, testIDs)
	var ref []fmap.Maps
	if model.Method != MethodKNN {
		if ref, err = batch.Ref(set, rowsOf(set, normals)); err != nil {
			return err
		}
	}
	scores, err := model.scoreRows(set, testRows, ref, p.BatchSize)
	if err != nil {
		return err
	}
	rows := make([]tables.Score, len(testIDs))
	for i, id := range testIDs {
		rows[i] = tables.Score{ID: id, Label: labels[i], Class: classes[i], Score: scores[i]}
	}
	if err := tables.WriteScores(env, rows, meta); err != nil {
		return err
	}
	fmt.Fprintf(env.Log, "scored %d test images with %s\n", len(testIDs), model.summary())
	return nil
}
