//go:build !unix

package heads

// cpuSeconds is unknown here: benchmarks then report 0 CPU seconds.
func cpuSeconds() float64 { return 0 }
