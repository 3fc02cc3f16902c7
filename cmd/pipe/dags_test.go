package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pipe-ahl/pipe/pipeline"
	"github.com/pipe-ahl/pipe/stages"
)

// TestShippedDAGsValidate compiles every DAG in dags/ with the real kinds, so that a change
// to a kind's declared inputs or params cannot leave a shipped DAG invalid.
func TestShippedDAGsValidate(t *testing.T) {
	stages.Register()
	files, err := filepath.Glob("../../dags/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no DAG files found in ../../dags")
	}
	for _, path := range files {
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := pipeline.Parse(path, src)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if _, err := pipeline.Compile(f, nil); err != nil {
			t.Errorf("%v", err)
		}
	}
}
