package psi

import "testing"

// BenchmarkTrain times one Train call of psi's per-epoch size on ELPV: 10 full-batch Adam
// steps on N = 3000 sequences of K = 5 steps of T = 7 scores.
func BenchmarkTrain(b *testing.B) {
	x, y := randomData(3000, 5, 7, 11)
	m, err := New(7, 1, 0, LR, WeightDecay)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.Train(x, y, 10); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPredict times one Predict call on the same N = 3000 sequences.
func BenchmarkPredict(b *testing.B) {
	x, _ := randomData(3000, 5, 7, 11)
	m, err := New(7, 1, 0, LR, WeightDecay)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := m.Predict(x); err != nil {
			b.Fatal(err)
		}
	}
}
