package artifacts

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
)

// featureTable is the benchmark's table: 10,000 ids, each with one list<float32> of 512.
func featureTable(b *testing.B) (arrow.RecordBatch, int64) {
	b.Helper()
	const rows, dim = 10_000, 512
	r := rand.New(rand.NewPCG(1, 1))
	ids := make([]string, rows)
	vecs := make([][]float32, rows)
	for i := range vecs {
		ids[i] = fmt.Sprintf("img-%05d", i)
		vecs[i] = make([]float32, dim)
		for j := range vecs[i] {
			vecs[i][j] = r.Float32()
		}
	}
	rec, err := NewTable(Strings("id", ids), Float32Lists("features", vecs))
	if err != nil {
		b.Fatal(err)
	}
	var size int64
	for _, c := range rec.Columns() {
		size += int64(dataSize(c.Data()))
	}
	return rec, size
}

// cpuTime is the CPU time (user + system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heapMetrics reports, relative to the table's size, the bytes allocated per operation
// (an upper bound on the extra peak heap of one operation) and the heap still in use
// after the last operation while its result is held; and the throughput per CPU second
// (MB per second of user + system time), which other load on a shared machine disturbs
// less than wall-clock MB/s.
func heapMetrics(b *testing.B, before runtime.MemStats, cpu0 time.Duration, bytes int64, tableBytes int64, live func()) {
	if cpu := (cpuTime(b) - cpu0).Seconds(); cpu > 0 {
		b.ReportMetric(float64(bytes)*float64(b.N)/1e6/cpu, "MB/cpu-s")
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N)/float64(tableBytes), "alloc-x-table/op")
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(tableBytes), "live-x-table")
	runtime.KeepAlive(live)
}

// BenchmarkFeatureTableWrite encodes and stores the feature table; one float changes per
// iteration so every write stores new bytes (no dedup). MB/s is of the IPC bytes.
func BenchmarkFeatureTableWrite(b *testing.B) {
	ctx := context.Background()
	s := openTemp(b)
	rec, size := featureTable(b)
	defer rec.Release()
	vals, err := Float32ListCol(rec, "features")
	if err != nil {
		b.Fatal(err)
	}
	enc, err := EncodeIPC(rec)
	if err != nil {
		b.Fatal(err)
	}
	n := int64(len(enc))
	b.SetBytes(n)
	// enc is not used below, so the garbage collector does not count it as live.
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		vals[0][0] = float32(i)
		if _, _, err := Put(ctx, s, rec); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	heapMetrics(b, before, cpu0, n, size, nil)
}

// BenchmarkFeatureTableRead loads and decodes the feature table from the store (the value
// log is in the page cache after the first iteration) and touches every row's features.
func BenchmarkFeatureTableRead(b *testing.B) {
	ctx := context.Background()
	s := openTemp(b)
	rec, size := featureTable(b)
	d, out, err := Put(ctx, s, rec)
	if err != nil {
		b.Fatal(err)
	}
	rec.Release()
	b.SetBytes(out.Bytes)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	var got arrow.RecordBatch
	cpu0 := cpuTime(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if got != nil {
			got.Release()
		}
		got, err = Get(ctx, s, d)
		if err != nil {
			b.Fatal(err)
		}
		vecs, err := Float32ListCol(got, "features")
		if err != nil || len(vecs) != 10_000 || len(vecs[9_999]) != 512 {
			b.Fatalf("read back %d rows: %v", len(vecs), err)
		}
	}
	b.StopTimer()
	heapMetrics(b, before, cpu0, out.Bytes, size, func() { _ = got })
	got.Release()
}
