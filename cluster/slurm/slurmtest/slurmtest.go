// Package slurmtest holds what the Slurm integration tests share: the check that a real
// Slurm cluster answers before a test uses it.
package slurmtest

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// Require fails t unless a Slurm cluster answers (`make slurm-up`, as root, installs
// Debian's Slurm and brings up a single-node one): sinfo must be on the PATH and report a
// node idle, mixed or allocated. PIPE_SKIP_SLURM=1 skips t instead.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv("PIPE_SKIP_SLURM") == "1" {
		t.Skip("PIPE_SKIP_SLURM=1: no Slurm cluster")
	}
	if _, err := exec.LookPath("sinfo"); err != nil {
		t.Fatal("sinfo not found: run `make slurm-up` as root (installs Debian's Slurm and starts a single-node cluster), or set PIPE_SKIP_SLURM=1 to skip the Slurm tests")
	}
	out, err := exec.Command("sinfo", "--noheader", "--format=%t").CombinedOutput()
	if err != nil || !regexp.MustCompile(`idle|mix|alloc`).Match(out) {
		t.Fatalf("no Slurm node is up (sinfo: %q, %v): run `make slurm-up` as root, or set PIPE_SKIP_SLURM=1", out, err)
	}
}
