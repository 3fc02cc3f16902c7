package knn

import (
	"math/rand/v2"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

func randomMaps(rng *rand.Rand, n, c, h, w int) fmap.Maps {
	m := fmap.New(n, c, h, w)
	for i := range m.Data {
		m.Data[i] = float32(rng.NormFloat64())
	}
	return m
}

// BenchmarkScores scores 200 test images against 300 training normals at the paper's sizes
// (512 x 14 x 14 and 512 x 7 x 7 maps), pooling included.
func BenchmarkScores(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	train := []fmap.Maps{randomMaps(rng, 300, 512, 14, 14), randomMaps(rng, 300, 512, 7, 7)}
	test := []fmap.Maps{randomMaps(rng, 200, 512, 14, 14), randomMaps(rng, 200, 512, 7, 7)}
	m, err := Fit(train, DefaultK)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := m.Scores(test); err != nil {
			b.Fatal(err)
		}
	}
}
