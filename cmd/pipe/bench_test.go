package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// eightStages is the benchmark DAG: eight tcount stages shaped like the AHL DAG (ingest ->
// features -> {augment, clusters} -> tasks -> train -> score -> evaluate).
const eightStages = `name: bench8
seed: 1
stages:
  ingest:   {kind: tcount, with: {n: 1000}}
  features: {kind: tcount, needs: [ingest]}
  augment:  {kind: tcount, needs: [ingest, features]}
  clusters: {kind: tcount, needs: [features]}
  tasks:    {kind: tcount, needs: [features, clusters, augment]}
  train:    {kind: tcount, needs: [tasks, features, augment]}
  score:    {kind: tcount, needs: [train, features]}
  evaluate: {kind: tcount, needs: [score]}
`

// BenchmarkNoopRerun measures the wall time of a whole `pipe run` process on an 8-stage DAG
// whose stages are all cached: process start, store open, DAG compile, eight manifest
// lookups, run record, close. Goal: under 0.3 s. The binary is built once (with the
// pipetestkinds tag, otherwise identical to `make build`); the reported metric
// median-s/run is the median over b.N runs.
func BenchmarkNoopRerun(b *testing.B) {
	dir := b.TempDir()
	bin := filepath.Join(dir, "pipe")
	build := exec.Command("go", "build", "-tags", "pipetestkinds", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	dag := filepath.Join(dir, "bench8.yaml")
	if err := os.WriteFile(dag, []byte(eightStages), 0o644); err != nil {
		b.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	pipe := func() {
		cmd := exec.Command(bin, "run", "--store", store, dag)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("pipe run: %v\n%s", err, out)
		}
	}
	pipe() // populate the store
	var times []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		pipe()
		times = append(times, time.Since(t0))
	}
	b.StopTimer()
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(times[len(times)/2].Seconds(), "median-s/run")
}
