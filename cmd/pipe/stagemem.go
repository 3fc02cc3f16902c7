package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/pipe-ahl/pipe/pipeline"
)

// stageMemEnv names the environment variable that turns on the per-instance memory profile
// of `pipe run`: its value is the file that receives one tab-separated line per stage
// instance that ran (see stageMem). It is a measuring aid for the whole-DAG benchmark
// (bench_dag_test.go) and RESULTS.md, not a user feature, so it is no flag.
const stageMemEnv = "PIPE_STAGE_MEM"

// stageMemInterval is how often the sampler reads /proc/self/status. The kernel's own peak
// (VmHWM, reset between instances) catches a total-RSS spike between samples; the private
// (anonymous) peak is sampled only.
const stageMemInterval = 10 * time.Millisecond

// stageMemHeader is the first line of the profile file.
const stageMemHeader = "instance\tstatus\twall_s\tcpu_s\tprivate_peak_mib\ttotal_peak_mib\n"

// stageMem measures, for each stage instance a run executes, its wall time, the process's
// CPU time (user + sys), and the peak private (RssAnon) and total (VmRSS: private plus
// file-backed and shared pages) resident memory of the process while it ran. With --jobs 1
// the process runs one instance at a time, so these are the instance's own figures. The
// time outside any instance (opening the store, checking cached instances, the run record)
// is reported as the row "(outside stages)". Linux only: it reads /proc/self.
type stageMem struct {
	mu      sync.Mutex
	out     *os.File
	cur     string // the running instance, "" outside
	start   time.Time
	cpu     time.Duration
	anon    int64 // peaks of the current period, KiB
	rss     int64
	outside stageMemRow
	pending map[string]stageMemRow // ended periods of instances whose result is not yet in
	stop    chan struct{}
	done    chan struct{}
}

type stageMemRow struct {
	wall, cpu   time.Duration
	anon, total int64 // KiB
}

// startStageMem starts the profile when $PIPE_STAGE_MEM is set, else returns nil. It needs
// --jobs 1 (concurrent instances share one process's memory).
func startStageMem(jobs int) (*stageMem, error) {
	path := os.Getenv(stageMemEnv)
	if path == "" {
		return nil, nil
	}
	if jobs != 1 {
		return nil, usagef("%s=%s profiles one instance at a time: run with --jobs 1, not %d", stageMemEnv, path, jobs)
	}
	if _, _, err := readProcStatus(); err != nil {
		return nil, fmt.Errorf("%s: %w", stageMemEnv, err)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", stageMemEnv, err)
	}
	if _, err := f.WriteString(stageMemHeader); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("%s: %w", stageMemEnv, err)
	}
	p := &stageMem{out: f, pending: map[string]stageMemRow{}, stop: make(chan struct{}), done: make(chan struct{})}
	p.begin("")
	go p.sample()
	return p, nil
}

// profileStages hooks the profile of $PIPE_STAGE_MEM, when set, into a run's options and
// returns the function that finishes it after the run.
func profileStages(o *pipeline.Options) (finish func() error, err error) {
	p, err := startStageMem(o.Jobs)
	if err != nil || p == nil {
		return func() error { return nil }, err
	}
	o.OnStart = p.onStart
	if next := o.OnResult; next != nil {
		o.OnResult = func(r *pipeline.Result) {
			p.onResult(r)
			next(r)
		}
	} else {
		o.OnResult = p.onResult
	}
	return p.finish, nil
}

// sample reads the process's memory every stageMemInterval until stop.
func (p *stageMem) sample() {
	defer close(p.done)
	t := time.NewTicker(stageMemInterval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			p.observe()
			p.mu.Unlock()
		}
	}
}

// observe records one sample into the current period; p.mu is held.
func (p *stageMem) observe() {
	anon, rss, err := readProcStatus()
	if err != nil {
		return
	}
	p.anon, p.rss = max(p.anon, anon), max(p.rss, rss)
}

// begin starts a period (an instance, or "" for outside); p.mu is held or p is not shared.
// Writing 5 to /proc/self/clear_refs resets the kernel's VmHWM to the current RSS.
func (p *stageMem) begin(instance string) {
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
	p.cur, p.start, p.cpu, p.anon, p.rss = instance, time.Now(), cpuTime(), 0, 0
	p.observe()
}

// end closes the current period and returns its figures; p.mu is held.
func (p *stageMem) end() stageMemRow {
	p.observe()
	if hwm, err := readProcField("VmHWM:"); err == nil {
		p.rss = max(p.rss, hwm)
	}
	return stageMemRow{wall: time.Since(p.start), cpu: cpuTime() - p.cpu, anon: p.anon, total: p.rss}
}

// onStart is pipeline.Options.OnStart: the period outside stages ends, the instance's begins.
// The runner frees its slot before it reports the result, so the next instance may start
// before the previous one's onResult: that one's period ends here and its line waits for
// its status in pending.
func (p *stageMem) onStart(in *pipeline.Instance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != "" {
		p.pending[p.cur] = p.end()
	} else {
		p.addOutside(p.end())
	}
	p.begin(in.ID())
}

// onResult closes the instance's period when the result is that of the running instance, or
// writes its line when its period already ended (cached and skipped instances never started).
func (p *stageMem) onResult(r *pipeline.Result) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := r.Instance.ID()
	if row, ok := p.pending[id]; ok {
		delete(p.pending, id)
		p.write(id, r.Status, row)
		return
	}
	if p.cur == "" || id != p.cur {
		return
	}
	p.write(p.cur, r.Status, p.end())
	p.begin("")
}

func (p *stageMem) addOutside(r stageMemRow) {
	o := &p.outside
	o.wall += r.wall
	o.cpu += r.cpu
	o.anon, o.total = max(o.anon, r.anon), max(o.total, r.total)
}

func (p *stageMem) write(instance, status string, r stageMemRow) {
	fmt.Fprintf(p.out, "%s\t%s\t%.2f\t%.2f\t%.0f\t%.0f\n", instance, status, r.wall.Seconds(), r.cpu.Seconds(),
		float64(r.anon)/1024, float64(r.total)/1024)
}

// finish stops the sampler, writes the "(outside stages)" row and closes the file.
func (p *stageMem) finish() error {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur == "" {
		p.addOutside(p.end())
	}
	p.write("(outside stages)", "-", p.outside)
	if err := p.out.Close(); err != nil {
		return fmt.Errorf("%s: %w", stageMemEnv, err)
	}
	return nil
}

// cpuTime is the process's user plus system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// readProcStatus returns RssAnon and VmRSS of this process in KiB.
func readProcStatus() (anon, rss int64, err error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0, err
	}
	anon, err = procField(b, "RssAnon:")
	if err != nil {
		return 0, 0, err
	}
	rss, err = procField(b, "VmRSS:")
	return anon, rss, err
}

func readProcField(name string) (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	return procField(b, name)
}

// procField parses a "Name:   1234 kB" line of /proc/self/status.
func procField(status []byte, name string) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(name)) {
			continue
		}
		f := bytes.Fields(line[len(name):])
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("/proc/self/status: line %q is not \"%s N kB\"", line, name)
		}
		return strconv.ParseInt(string(f[0]), 10, 64)
	}
	return 0, fmt.Errorf("/proc/self/status has no %s line", name)
}
