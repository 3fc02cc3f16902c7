package main

import (
	"os"
	"runtime/debug"
)

// runMemoryLimit is the Go runtime's soft memory limit during `pipe run` (issue 12's target:
// at most 1 GiB private memory per stage instance). By default Go's collector lets the heap
// grow to twice the live data before it collects, so a stage holding 500 MB of tables peaked
// near 1 GB of garbage-inflated heap; near this limit the collector runs more often instead.
// The limit is soft: a stage that needs more live memory still runs, with the collector's
// CPU share capped at about half. GOMEMLIMIT in the environment (a size, or "off") replaces it.
const runMemoryLimit = 900 << 20

// limitMemory sets runMemoryLimit unless GOMEMLIMIT is set.
func limitMemory() {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	debug.SetMemoryLimit(runMemoryLimit)
}
