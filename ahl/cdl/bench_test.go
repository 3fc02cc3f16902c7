package cdl

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/hadg"
	"github.com/pipe-ahl/pipe/ahl/heads"
)

// paperPool returns the benchmark's feature pool at the paper's shapes (docs/design.md,
// "Numerics", speed target): 300 normals, 10 seen anomalies and one pseudo copy of every
// normal from each of three generators, 512 x 14 x 14 + 512 x 7 x 7 maps of ReLU-like values,
// and the HADG samples of T = 7 tasks over 3 clusters.
func paperPool(b *testing.B) (fmap.Set, []hadg.Sample) {
	const nNormal, nSeen = 300, 10
	gens := []string{"cutpaste", "cutmix", "draem"}
	var ids, normals, seen []string
	for i := 0; i < nNormal; i++ {
		normals = append(normals, fmt.Sprintf("n%03d", i))
	}
	for i := 0; i < nSeen; i++ {
		seen = append(seen, fmt.Sprintf("a%02d", i))
	}
	ids = append(append(ids, normals...), seen...)
	for _, g := range gens {
		for _, n := range normals {
			id, _ := hadg.DefaultPseudoID(n, g)
			ids = append(ids, id)
		}
	}
	pool := fmap.Set{IDs: ids}
	rng := rand.New(rand.NewPCG(1, 2))
	for _, hw := range []int{14, 7} {
		m := fmap.New(len(ids), 512, hw, hw)
		for k := range m.Data {
			m.Data[k] = max(rng.Float32()*2-0.5, 0)
		}
		pool.Scales = append(pool.Scales, m)
	}
	clusters := make([]int, nNormal)
	for i := range clusters {
		clusters[i] = i % 3
	}
	samples, _, err := hadg.Build(hadg.Input{Normals: normals, Clusters: clusters, Anomalies: seen,
		Generators: gens, Tasks: 7}, rand.New(rand.NewPCG(3, 4)))
	if err != nil {
		b.Fatal(err)
	}
	return pool, samples
}

var benchPool struct {
	once    sync.Once
	pool    fmap.Set
	samples []hadg.Sample
}

// peakRSS returns the process's peak resident set size in MiB (Linux VmHWM), or 0.
func peakRSS() float64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(s), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// heapPeak samples the live heap every 20 ms until stop is closed and returns its
// largest value in MiB.
func heapPeak(stop chan struct{}) func() float64 {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	var peak uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() float64 { <-done; return float64(peak) / (1 << 20) }
}

// BenchmarkCDLEpoch times one full CDL epoch at the paper's defaults (T = 7, batch 48, 20
// inner + 20 query steps per task, psi in use: weights from psi, scores of every training
// sample under every adapted theta_i recorded, psi trained) on the paper's map shapes, with
// the devnet head and with the dra head (C' = 512, composite stride 3). It reports ms per
// epoch, CPU seconds per epoch (all cores), allocations per epoch (after one warm-up epoch), the peak live heap during the timed
// epochs and the process's peak RSS (both include the 0.6 GB feature pool).
func BenchmarkCDLEpoch(b *testing.B) {
	benchPool.once.Do(func() { benchPool.pool, benchPool.samples = paperPool(b) })
	pool, samples := benchPool.pool, benchPool.samples
	ts, err := ResolveTasks(pool, samples)
	if err != nil {
		b.Fatal(err)
	}
	dra, err := heads.NewDRA(512, 512, 3)
	if err != nil {
		b.Fatal(err)
	}
	devnet, err := heads.NewDevNet(512)
	if err != nil {
		b.Fatal(err)
	}
	for _, head := range []heads.Head{devnet, dra} {
		b.Run(head.Name(), func(b *testing.B) {
			cfg := DefaultConfig()
			tr, err := newTrainer(cfg, head, pool, ts)
			if err != nil {
				b.Fatal(err)
			}
			// Epoch K+1 is a full epoch: it reads psi and records scores for psi's training.
			// Earlier epochs' score vectors are filled with random values.
			rng := rand.New(rand.NewPCG(5, 6))
			for e := 0; e <= cfg.K; e++ {
				s := make([]float64, len(ts.Rows)*ts.T)
				for k := range s {
					s[k] = 5 * rng.Float64()
				}
				tr.history = append(tr.history, s)
			}
			// One untimed epoch allocates the tasks' buffers; the timed ones show the steady state.
			if err := tr.epoch(context.Background(), cfg.K+1); err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			stop := make(chan struct{})
			peak := heapPeak(stop)
			cpu0 := cpuSeconds()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := tr.epoch(context.Background(), cfg.K+1); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			cpu := (cpuSeconds() - cpu0) / float64(b.N)
			close(stop)
			b.ReportMetric(cpu, "cpu-s/epoch")
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/epoch")
			b.ReportMetric(peak(), "peak-heap-MiB")
			b.ReportMetric(peakRSS(), "peak-RSS-MiB")
		})
	}
}
