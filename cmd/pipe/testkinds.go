//go:build pipetestkinds

package main

// Builds with the pipetestkinds tag (the benchmarks') carry the test-only stage kinds.
import _ "github.com/pipe-ahl/pipe/cmd/pipe/internal/testkinds"
