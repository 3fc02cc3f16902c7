package main

import (
	"github.com/pipe-ahl/pipe/pipeline"
)

// loadPlan reads the DAG file at path and compiles it with the --set overrides.
func loadPlan(path string, sets []string) (*pipeline.Plan, error) {
	var ss []pipeline.Set
	for _, s := range sets {
		st, err := pipeline.ParseSet(s)
		if err != nil {
			return nil, usageError{err}
		}
		ss = append(ss, st)
	}
	f, err := pipeline.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return pipeline.Compile(f, ss)
}
