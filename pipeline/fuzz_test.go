package pipeline

import (
	"strings"
	"testing"
)

// FuzzCompile checks that no DAG text makes parsing or compiling panic, and that every
// rejection is a validation *Error naming the file.
func FuzzCompile(f *testing.F) {
	for _, src := range []string{chainDAG, matrixDAG, "stages: {a: {kind: ptest-gen}}",
		"vars: {N: 1}\nstages:\n  a: {kind: ptest-gen, with: {n: \"${N}\", tags: [\"${N}\"]}}",
		"matrix: {x: [1, 2]}\nstages:\n  a: {kind: ptest-sum, needs: [a]}"} {
		f.Add(src)
	}
	f.Fuzz(func(t *testing.T, src string) {
		_, err := compileErr(src)
		if err == nil {
			return
		}
		if !IsInvalid(err) || !strings.Contains(err.Error(), "test.yaml") {
			t.Fatalf("error %q is not a validation error naming the file", err)
		}
	})
}
