//go:build benchdag

package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkDAGCold runs a real DAG cold (a fresh store each time) in one `pipe run --jobs 1`
// process with the per-instance memory profile of $PIPE_STAGE_MEM (stagemem.go), and prints
// the profile as a Markdown table on stdout: each stage instance's wall time, CPU time, and
// peak private (RssAnon) and total (VmRSS) resident memory, then the largest per stage.
// Targets (issue 12): every instance at most 1 GiB private, the process at most 2 GiB total.
//
// By default it is ELPV, general protocol, M = 10, one seed (`make bench-dag`); it takes
// minutes. PIPE_BENCH_DAG (a DAG file relative to the repository root) and PIPE_BENCH_SEEDS
// (a matrix list such as [0,1,2]) choose others. It skips when the ELPV folder is not found
// at $PIPE_SHARED_DATA or ../shared/data beside the repository. The build tag keeps it out
// of `make test` and of `make bench`'s quick benchmarks.
func BenchmarkDAGCold(b *testing.B) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		b.Fatal(err)
	}
	data := os.Getenv("PIPE_SHARED_DATA")
	if data == "" {
		data = filepath.Join(root, "..", "shared", "data")
	}
	elpv := filepath.Join(data, "elpv")
	if _, err := os.Stat(filepath.Join(elpv, "train", "good")); err != nil {
		b.Skipf("ELPV not found at %s (set PIPE_SHARED_DATA to the folder holding elpv/): %v", elpv, err)
	}
	dag := envOr("PIPE_BENCH_DAG", "dags/elpv.yaml")
	seeds := envOr("PIPE_BENCH_SEEDS", "[0]")

	dir := b.TempDir()
	bin := filepath.Join(dir, "pipe")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		store := filepath.Join(dir, fmt.Sprintf("store%d", i))
		prof := filepath.Join(dir, fmt.Sprintf("stages%d.tsv", i))
		cmd := exec.Command(bin, "run", "--jobs", "1", "--store", store, "--set", "data="+elpv,
			"--set", "matrix.seed="+seeds, dag)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), stageMemEnv+"="+prof)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		wall := time.Since(t0)
		if err != nil {
			b.Fatalf("pipe run %s: %v\n%s", dag, err, out)
		}
		cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		rows, err := readStageMem(prof)
		if err != nil {
			b.Fatal(err)
		}
		load, _ := os.ReadFile("/proc/loadavg")
		fmt.Printf("\n%s, matrix.seed=%s, cold, --jobs 1: %.1f s wall, %.1f CPU-s (user + sys); load average at the end %s\n\n",
			dag, seeds, wall.Seconds(), cpu.Seconds(), strings.Join(strings.Fields(string(load))[:3], " "))
		printStageMem(rows)
		if err := os.RemoveAll(store); err != nil {
			b.Fatal(err)
		}
		var maxPriv, maxTotal float64
		for _, r := range rows {
			maxPriv, maxTotal = max(maxPriv, r.private), max(maxTotal, r.total)
		}
		b.ReportMetric(wall.Seconds(), "wall-s/run")
		b.ReportMetric(cpu.Seconds(), "cpu-s/run")
		b.ReportMetric(maxPriv, "max-private-MiB")
		b.ReportMetric(maxTotal, "max-total-MiB")
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// stageMemLine is one line of the $PIPE_STAGE_MEM profile.
type stageMemLine struct {
	instance, status string
	wall, cpu        float64 // seconds
	private, total   float64 // MiB
}

func readStageMem(path string) ([]stageMemLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }() // read only
	var rows []stageMemLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		if n == 1 {
			continue // header
		}
		f := strings.Split(sc.Text(), "\t")
		if len(f) != 6 {
			return nil, fmt.Errorf("%s:%d: %d fields, want 6: %q", path, n, len(f), sc.Text())
		}
		r := stageMemLine{instance: f[0], status: f[1]}
		for i, p := range []*float64{&r.wall, &r.cpu, &r.private, &r.total} {
			if *p, err = strconv.ParseFloat(f[2+i], 64); err != nil {
				return nil, fmt.Errorf("%s:%d: field %d: %w", path, n, 3+i, err)
			}
		}
		rows = append(rows, r)
	}
	return rows, sc.Err()
}

// printStageMem prints the instances in run order, then per stage the largest figures.
func printStageMem(rows []stageMemLine) {
	const target = 1024 // MiB, private, per instance
	fmt.Println("| stage instance | wall s | CPU s | peak private MiB | peak total MiB |")
	fmt.Println("|---|---:|---:|---:|---:|")
	type agg struct {
		n                   int
		cpu, private, total float64
	}
	var order []string
	stages := map[string]*agg{}
	for _, r := range rows {
		mark := ""
		if r.private > target {
			mark = " (over 1 GiB)"
		}
		fmt.Printf("| %s | %.1f | %.1f | %.0f%s | %.0f |\n", r.instance, r.wall, r.cpu, r.private, mark, r.total)
		stage, _, _ := strings.Cut(r.instance, "[")
		a := stages[stage]
		if a == nil {
			a = &agg{}
			stages[stage] = a
			order = append(order, stage)
		}
		a.n++
		a.cpu += r.cpu
		a.private, a.total = max(a.private, r.private), max(a.total, r.total)
	}
	fmt.Println()
	fmt.Println("| stage (instances) | CPU s, sum | peak private MiB, max | peak total MiB, max |")
	fmt.Println("|---|---:|---:|---:|")
	for _, s := range order {
		a := stages[s]
		fmt.Printf("| %s (%d) | %.1f | %.0f | %.0f |\n", s, a.n, a.cpu, a.private, a.total)
	}
	fmt.Println()
}
