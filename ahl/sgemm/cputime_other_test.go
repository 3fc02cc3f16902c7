//go:build !unix

package sgemm

// cpuSeconds is unknown here: benchmarks then report 0 CPU seconds.
func cpuSeconds() float64 { return 0 }
