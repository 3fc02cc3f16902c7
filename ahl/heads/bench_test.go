package heads

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// Epoch benchmarks: one CDL epoch's worth of head work at the paper's defaults (docs/design.md,
// "Numerics"): T = 7 tasks x (20 support + 20 query) LossGrad calls on balanced batches of
// 48 (16 normal, 16 seen, 16 pseudo) of 512 x 14 x 14 + 512 x 7 x 7 maps drawn from a pool
// of 300 normals and 10 anomalies (random values), with an SGD step after each support
// batch. The batches are gathered before the timer starts (gathering is the sampler's work,
// measured there), eight distinct ones cycled, so the maps stream from memory as in training.
//
// Results (AMD EPYC, 2 cores shared with the rest of the team, load average ~10,
// 2026-11-28; medians of 3; `go test ./ahl/heads/ -run '^$' -bench Epoch -benchtime 1x
// -count 3`): devnet 0.72 CPU s per epoch (1.9-3.4 s wall), dra 20.3 CPU s per epoch (52-62
// s wall under that load; on two idle cores, two workers make about 10-11 s of it), peak
// RSS 0.35 GB and 0.56 GB including the benchmark's own 0.35 GB of maps. A dra LossGrad
// runs about 5 GFLOP (the composite convolution's forward, 960 x 512 x 4608, plus its weight
// gradient over the 96 top-1 rows), about 2/3 of its time in the Sgemm microkernel at
// about 100 GFLOP per CPU second.

const (
	benchT       = 7
	benchSteps   = 20 // support steps = query steps
	benchBatch   = 48
	benchNormals = 300
	benchAnoms   = 10
	benchC       = 512
)

// benchPool returns the feature pool: normals then anomalies, at both scales.
func benchPool() []fmap.Maps {
	rng := rand.New(rand.NewPCG(1, 2))
	var out []fmap.Maps
	for _, hw := range []int{14, 7} {
		m := fmap.New(benchNormals+benchAnoms, benchC, hw, hw)
		for i := range m.Data {
			m.Data[i] = max(0, float32(rng.NormFloat64()))
		}
		out = append(out, m)
	}
	return out
}

// benchBatches draws nb balanced batches with their 5-normal reference maps.
func benchBatches(pool []fmap.Maps, nb int) []Batch {
	rng := rand.New(rand.NewPCG(3, 4))
	bs := make([]Batch, nb)
	for j := range bs {
		idx := make([]int, 0, benchBatch)
		labels := make([]int, 0, benchBatch)
		for range benchBatch / 3 {
			idx = append(idx, rng.IntN(benchNormals))
			labels = append(labels, Normal)
			idx = append(idx, benchNormals+rng.IntN(benchAnoms))
			labels = append(labels, Seen)
			idx = append(idx, rng.IntN(benchNormals)) // stands in for a pseudo anomaly's map
			labels = append(labels, Pseudo)
		}
		ref := make([]int, 5)
		for i := range ref {
			ref[i] = rng.IntN(benchNormals)
		}
		for _, m := range pool {
			bs[j].X = append(bs[j].X, m.Gather(idx))
			bs[j].Ref = append(bs[j].Ref, m.Mean(ref))
		}
		bs[j].Labels = labels
	}
	return bs
}

// runEpoch runs the T tasks' inner and query loops on `workers` goroutines (tasks are
// independent within an epoch) and returns the summed query loss.
func runEpoch(h Head, theta []float32, bs []Batch, p Prior, workers int) float32 {
	losses := make([]float32, benchT)
	next := make(chan int, benchT)
	for i := range benchT {
		next <- i
	}
	close(next)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			th := make([]float32, len(theta))
			grad := make([]float32, len(theta))
			meta := make([]float32, len(theta))
			for task := range next {
				copy(th, theta)
				for s := range benchSteps {
					h.LossGrad(th, bs[(task+s)%len(bs)], p, grad)
					for j := range th {
						th[j] -= 2e-4 * grad[j]
					}
				}
				for s := range benchSteps {
					losses[task] += h.LossGrad(th, bs[(task+s+3)%len(bs)], p, grad)
					for j := range meta {
						meta[j] += grad[j]
					}
				}
			}
		}()
	}
	wg.Wait()
	var sum float32
	for _, l := range losses {
		sum += l
	}
	return sum
}

// peakRSSMB is the process's peak resident set (VmHWM) in MB, or 0 where unknown.
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

var (
	benchOnce sync.Once
	benchData []Batch
)

func benchEpoch(b *testing.B, h Head) {
	benchOnce.Do(func() { benchData = benchBatches(benchPool(), 8) })
	theta := h.Init(rand.New(rand.NewPCG(5, 6)))
	p := NewPrior(rand.New(rand.NewPCG(7, 8)))
	for _, workers := range []int{1, runtime.GOMAXPROCS(0)} {
		b.Run("workers="+strconv.Itoa(workers), func(b *testing.B) {
			b.ReportAllocs()
			cpu0 := cpuSeconds()
			for range b.N {
				runEpoch(h, theta, benchData, p, workers)
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/epoch")
			b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N), "cpu-s/epoch")
			b.ReportMetric(peakRSSMB(), "peakRSS-MB")
		})
	}
}

// BenchmarkEpochDevNet is one CDL epoch of devnet head work (target: <= 5 s on 2 cores).
func BenchmarkEpochDevNet(b *testing.B) {
	h, _ := NewDevNet(benchC)
	benchEpoch(b, h)
}

// BenchmarkEpochDRA is one CDL epoch of dra head work with C' = 512 and composite stride 3
// (target: <= 50 s on 2 cores).
func BenchmarkEpochDRA(b *testing.B) {
	h, _ := NewDRA(benchC, 512, 3)
	benchEpoch(b, h)
}

// BenchmarkLossGrad is one call on one batch, for profiling.
func BenchmarkLossGrad(b *testing.B) {
	benchOnce.Do(func() { benchData = benchBatches(benchPool(), 8) })
	dn, _ := NewDevNet(benchC)
	dra, _ := NewDRA(benchC, 512, 3)
	p := NewPrior(rand.New(rand.NewPCG(7, 8)))
	for _, h := range []Head{dn, dra} {
		b.Run(h.Name(), func(b *testing.B) {
			theta := h.Init(rand.New(rand.NewPCG(5, 6)))
			grad := make([]float32, len(theta))
			b.ReportAllocs()
			cpu0 := cpuSeconds()
			for i := range b.N {
				h.LossGrad(theta, benchData[i%len(benchData)], p, grad)
			}
			b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N)*1e3, "cpu-ms/op")
		})
	}
}

// BenchmarkGorgoniaLossGrad is the same call through the gorgonia reference graph, the
// measurement behind training with the hand-written heads.
func BenchmarkGorgoniaLossGrad(b *testing.B) {
	benchOnce.Do(func() { benchData = benchBatches(benchPool(), 8) })
	dn, _ := NewDevNet(benchC)
	dra, _ := NewDRA(benchC, 512, 3)
	p := NewPrior(rand.New(rand.NewPCG(7, 8)))
	for _, h := range []Head{dn, dra} {
		b.Run(h.Name(), func(b *testing.B) {
			theta := h.Init(rand.New(rand.NewPCG(5, 6)))
			grad := make([]float32, len(theta))
			b.ReportAllocs()
			for i := range b.N {
				if _, err := GorgoniaLossGrad(h, theta, benchData[i%len(benchData)], p, grad); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTopKMeanAbs is the top-k score of 100 maps of 16 x 16 (k = 25) and 8 x 8 (k = 6)
// positions, the ELPV convnet's two scales.
func BenchmarkTopKMeanAbs(b *testing.B) {
	for _, n := range []int{256, 64} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 1))
			z := make([]float32, 100*n)
			for i := range z {
				z[i] = float32(rng.NormFloat64())
			}
			idx := make([]int, topK(n))
			for b.Loop() {
				for i := 0; i < 100; i++ {
					topKMeanAbs(z[i*n:(i+1)*n], idx)
				}
			}
		})
	}
}
