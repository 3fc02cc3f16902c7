package kmeans

import (
	"math/rand/v2"
	"testing"
)

// benchMatrix is n random points of d dimensions around three centres.
func benchMatrix(n, d int) Matrix {
	rng := rand.New(rand.NewPCG(1, 2))
	m := Matrix{N: n, D: d, Data: make([]float32, n*d)}
	for i := 0; i < n; i++ {
		shift := float32(i % 3)
		for j := 0; j < d; j++ {
			m.Data[i*d+j] = shift + float32(rng.NormFloat64())
		}
	}
	return m
}

// BenchmarkPooled is HADG's clustering at the paper's sizes with pooled features: 300 normals,
// 512 + 512 pooled channels, k = 3, ten restarts.
func BenchmarkPooled(b *testing.B) {
	x := benchMatrix(300, 1024)
	for b.Loop() {
		if _, err := Fit(x, 3, DefaultRestarts, rand.New(rand.NewPCG(1, 1))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlattened is one restart on flattened maps at the paper's sizes: 300 normals,
// 512*14*14 + 512*7*7 values each.
func BenchmarkFlattened(b *testing.B) {
	x := benchMatrix(300, 512*14*14+512*7*7)
	for b.Loop() {
		if _, err := Fit(x, 3, 1, rand.New(rand.NewPCG(1, 1))); err != nil {
			b.Fatal(err)
		}
	}
}
