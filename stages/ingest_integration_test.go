//go:build integration

package stages

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// sharedData finds the benchmark data folder (PIPE_SHARED_DATA or ../shared/data beside the
// repository) and skips the test when it is absent.
func sharedData(t *testing.T, name string) string {
	t.Helper()
	base := os.Getenv("PIPE_SHARED_DATA")
	if base == "" {
		base = filepath.Join("..", "..", "shared", "data")
	}
	dir := filepath.Join(base, name)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("benchmark data %s not found (set PIPE_SHARED_DATA or put shared/data beside the repository): %v", dir, err)
	}
	return dir
}

func TestIngestHeadCT(t *testing.T) {
	root := sharedData(t, "headct")
	for _, m := range []int{1, 10} {
		env, err := runIngestFor(t, ingestParams(func(p *IngestParams) { p.Format, p.Root, p.Anomalies = "mvtec", root, m }), 7)
		if err != nil {
			t.Fatal(err)
		}
		got, _, _ := imagesCounts(t, env)
		// README: train/good 75, test/good 25, test/hemorrhage 100 (AHL paper, Table 6).
		if got["train/good/0"] != 75 || got["test/good/0"] != 25 || got["train/hemorrhage/1"] != m || got["test/hemorrhage/1"] != 100-m {
			t.Errorf("M = %d: %v", m, got)
		}
	}
	_, err := runIngestFor(t, ingestParams(func(p *IngestParams) {
		p.Format, p.Root, p.Protocol, p.SeenClass, p.Anomalies = "mvtec", root, "hard", "hemorrhage", 10
	}), 7)
	if err == nil || !strings.Contains(err.Error(), "one anomaly class") {
		t.Errorf("hard protocol on a one-class dataset: %v", err)
	}
}

func TestIngestELPVHard(t *testing.T) {
	root := sharedData(t, "elpv")
	env, err := runIngestFor(t, ingestParams(func(p *IngestParams) {
		p.Format, p.Root, p.Protocol, p.SeenClass, p.Anomalies = "mvtec", root, "hard", "mono", 10
	}), 7)
	if err != nil {
		t.Fatal(err)
	}
	got, _, _ := imagesCounts(t, env)
	// README: train/good 1131, test/good 377, test/mono 313, test/poly 402.
	want := map[string]int{"train/good/0": 1131, "train/mono/1": 10, "test/good/0": 377, "test/poly/1": 402}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (%v)", k, got[k], v, got)
		}
	}
	if got["test/mono/1"] != 0 {
		t.Errorf("seen class mono in the test set: %v", got)
	}
}
