package backbone

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime/metrics"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/ahl/augment"
	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// peakHeap samples the live heap every few milliseconds while it runs; Stop returns the
// largest sample in MB (a lower bound of the true peak, which falls between samples).
type peakHeap struct {
	stop chan struct{}
	wg   sync.WaitGroup
	max  uint64
}

func startPeakHeap() *peakHeap {
	p := &peakHeap{stop: make(chan struct{})}
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	p.wg.Go(func() {
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			p.max = max(p.max, s[0].Value.Uint64())
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	})
	return p
}

func (p *peakHeap) Stop() float64 {
	close(p.stop)
	p.wg.Wait()
	return float64(p.max) / (1 << 20)
}

// cpuSeconds is the process's user + system CPU time: on a shared machine, work per CPU
// second is steadier than work per wall-clock second.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// resnet18Flops counts the multiply-adds of resnet18's convolutions at side s, times 2.
func resnet18Flops(r *ResNet18, s int) float64 {
	var f float64
	side := func(c *conv, n int) int { return c.outSize(n) }
	count := func(c *conv, n int) int {
		o := side(c, n)
		f += 2 * float64(c.Cout*c.Cin*c.K*c.K*o*o)
		return o
	}
	n := count(&r.conv1, s)
	n = (n+2-3)/2 + 1 // max pool
	for i := range r.blocks {
		b := &r.blocks[i]
		if b.down != nil {
			count(b.down, n)
		}
		n = count(&b.c2, count(&b.c1, n))
	}
	return f
}

// BenchmarkResNet18Forward runs resnet18 on a batch of images already at S x S (scale 0
// only) and reports images/s and the convolutions' GFLOP/s.
func BenchmarkResNet18Forward(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 0))
	for _, s := range []int{224, 448} {
		batch := 8
		if s == 448 {
			batch = 2
		}
		b.Run(fmt.Sprintf("S=%d", s), func(b *testing.B) {
			r, err := NewResNet18(s, randomResNet18(rng))
			if err != nil {
				b.Fatal(err)
			}
			in := make([]imgs.Image, batch)
			for i := range in {
				in[i] = randomImage(rng, s, s)
			}
			x, err := prepare(in, s)
			if err != nil {
				b.Fatal(err)
			}
			peak := startPeakHeap()
			cpu0 := cpuSeconds()
			b.ResetTimer()
			for b.Loop() {
				r.forward(x)
			}
			sec := b.Elapsed().Seconds() / float64(b.N)
			cpu := (cpuSeconds() - cpu0) / float64(b.N)
			flops := resnet18Flops(r, s) * float64(batch)
			b.ReportMetric(float64(batch)/sec, "images/s")
			b.ReportMetric(flops/sec/1e9, "GFLOP/s")
			b.ReportMetric(flops/cpu/1e9, "GFLOP/cpu-s")
			b.ReportMetric(peak.Stop(), "peak-heap-MB")
		})
	}
}

// BenchmarkResNet18Extract is the features stage's path: 16 images of 300 x 300 (ELPV's
// size), resized and run at both scales.
func BenchmarkResNet18Extract(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 0))
	r, err := NewResNet18(448, randomResNet18(rng))
	if err != nil {
		b.Fatal(err)
	}
	in := make([]imgs.Image, 16)
	for i := range in {
		in[i] = randomImage(rng, 300, 300)
	}
	peak := startPeakHeap()
	cpu0 := cpuSeconds()
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.Extract(context.Background(), in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(in))*float64(b.N)/b.Elapsed().Seconds(), "images/s")
	b.ReportMetric(float64(len(in))*float64(b.N)/(cpuSeconds()-cpu0), "images/cpu-s")
	b.ReportMetric(peak.Stop(), "peak-heap-MB")
}

// benchConvNetConfig is the features stage's default convnet at side s.
func benchConvNetConfig(s int) ConvNetConfig {
	return ConvNetConfig{
		Size: s, Channels: []int{16, 32, 64}, Epochs: 1, Steps: 20, Batch: 48, LR: 1e-3, WeightDecay: 1e-5,
		Seed: 1, Generators: augment.Generators, Pseudo: augment.Apply,
	}
}

// BenchmarkConvNetTrain trains the default convnet for one epoch (20 balanced batches of 48,
// pseudo anomalies made on the fly) on 200 normals and 10 anomalies.
func BenchmarkConvNetTrain(b *testing.B) {
	for _, s := range []int{28, 128} {
		b.Run(fmt.Sprintf("S=%d", s), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(3, 0))
			normals := make([]imgs.Image, 200)
			for i := range normals {
				normals[i] = randomImage(rng, s, s)
			}
			anomalies := normals[:10]
			peak := startPeakHeap()
			cpu0 := cpuSeconds()
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := TrainConvNet(context.Background(), benchConvNetConfig(s), normals, anomalies); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/epoch")
			b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N), "cpu-s/epoch")
			b.ReportMetric(peak.Stop(), "peak-heap-MB")
		})
	}
}

// BenchmarkConvNetExtract extracts both scales of 64 images with the default convnet.
func BenchmarkConvNetExtract(b *testing.B) {
	for _, s := range []int{28, 128} {
		b.Run(fmt.Sprintf("S=%d", s), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(4, 0))
			n, err := newConvNet(s, []int{16, 32, 64})
			if err != nil {
				b.Fatal(err)
			}
			n.initKaiming(rng)
			in := make([]imgs.Image, 64)
			for i := range in {
				in[i] = randomImage(rng, s, s)
			}
			cpu0 := cpuSeconds()
			b.ResetTimer()
			for b.Loop() {
				if _, err := n.Extract(context.Background(), in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(in))*float64(b.N)/b.Elapsed().Seconds(), "images/s")
			b.ReportMetric(float64(len(in))*float64(b.N)/(cpuSeconds()-cpu0), "images/cpu-s")
		})
	}
}
