//go:build integration

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// sharedData finds the real datasets: $PIPE_SHARED_DATA, else ../shared/data beside the
// repository.
func sharedData(t *testing.T) string {
	dir := os.Getenv("PIPE_SHARED_DATA")
	if dir == "" {
		dir = filepath.Join("..", "..", "..", "shared", "data")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(abs, "headct", "train", "good")); err != nil {
		t.Skipf("real datasets not found at %s (set PIPE_SHARED_DATA): %v", abs, err)
	}
	return abs
}

// TestHeadCTRunRerun runs ingest and a small features stage on the real HeadCT folder with
// the real stage kinds, then reruns: everything is cached, the fingerprint of the dataset
// files included, and the store verifies clean.
func TestHeadCTRunRerun(t *testing.T) {
	data := sharedData(t)
	bin, err := exec.LookPath("pipe")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	dag := filepath.Join(dir, "headct_small.yaml")
	src := `name: headct_small
seed: 1
vars: {M: 5}
stages:
  ingest:   {kind: ingest, with: {format: mvtec, root: ` + filepath.Join(data, "headct") + `, protocol: general, anomalies: "${M}"}}
  features: {kind: features, needs: [ingest], with: {backbone: convnet, size: 32, channels: [8, 16], epochs: 1, steps: 2, batch: 8}}
`
	if err := os.WriteFile(dag, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	run := func(args ...string) runJSON {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--store", store, "run", "--json", dag}, args...)...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("pipe run %v: %v\n%s", args, err, errOut.String())
		}
		var rj runJSON
		if err := json.Unmarshal(out.Bytes(), &rj); err != nil {
			t.Fatalf("run --json: %v\n%s", err, out.String())
		}
		return rj
	}
	statuses := func(rj runJSON) map[string]string {
		m := map[string]string{}
		for _, s := range rj.Stages {
			m[s.Name] = s.Status
		}
		return m
	}
	first := run()
	if got := statuses(first); got["ingest"] != "ran" || got["features"] != "ran" {
		t.Fatalf("first run: %v", got)
	}
	second := run()
	if got := statuses(second); got["ingest"] != "cached" || got["features"] != "cached" {
		t.Errorf("rerun: %v, want both cached", got)
	}
	third := run("--set", "M=6")
	if got := statuses(third); got["ingest"] != "ran" || third.Stages[0].Reason != "param anomalies: 5 -> 6" {
		t.Errorf("--set M=6: %v (%s)", got, third.Stages[0].Reason)
	}
	cmd := exec.Command(bin, "--store", store, "artifacts", "verify")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("verify: %v\n%s", err, out)
	}
}
