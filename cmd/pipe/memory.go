package main

import (
	"os"
	"runtime/debug"
)

// defaultJobs is how many stage instances `pipe run` runs at once unless --jobs says
// otherwise. Every stage already spreads its heavy loops over the cores, but each also has
// phases on one core (a convnet's loss and optimiser, decoding a table, a stage's start and
// end), and a second instance fills the idle core meanwhile: the ELPV DAG, 3 seeds, cold,
// ran in 124 s at two at once and 153 s one at a time on 2 cores, same binary (RESULTS.md,
// session 5). Two, not one per core, because each running instance holds its tables in
// memory (jobMemoryLimit each).
const defaultJobs = 2

// jobMemoryLimit and runMemoryLimit set the Go runtime's soft memory limit during `pipe run`:
// jobMemoryLimit per instance running at once, at most runMemoryLimit for the whole process
// (issue 12's targets: at most 1 GiB private memory per stage instance, at most 2 GiB total
// RSS for a `pipe run`, file-backed pages included). By default Go's collector lets the heap
// grow to twice the live data before it collects, so a stage holding 500 MB of tables
// peaked near 1 GB of garbage-inflated heap; near the limit the collector runs more often
// instead. The limit is soft: a stage that needs more live memory still runs, with the
// collector's CPU share capped at about half. augment's live tables are about 800 MB on
// ELPV, so a smaller per-instance share costs it twice the CPU (25 against 11 CPU-s at 768
// MiB). Two ELPV instances at once peaked at 1.90 and 1.93 GiB total RSS under a 1.5 GiB
// limit and at 1.46 and 1.69 GiB under 1.25 GiB, with the same CPU time (RESULTS.md, session 5).
// GOMEMLIMIT in the environment (a size, or "off") replaces the limit.
const (
	jobMemoryLimit = 900 << 20
	runMemoryLimit = 1280 << 20
)

// limitMemory sets the soft memory limit for a run of up to jobs instances at once, unless
// GOMEMLIMIT is set.
func limitMemory(jobs int) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return
	}
	debug.SetMemoryLimit(min(int64(jobs)*jobMemoryLimit, runMemoryLimit))
}
