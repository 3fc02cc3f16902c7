package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/pipe-ahl/pipe/pipeline"
)

// progressEvery is how often a long stage reports progress when stderr is not a terminal:
// often enough to show life in a CI log, rarely enough not to flood it. A variable so that
// tests can shorten it.
var progressEvery = 10 * time.Second

// humanOutput writes what a person reads on stderr: one line per stage instance (cached or
// ran, why, how long), and progress of long stages: a bar on a terminal, plain periodic lines
// otherwise.
type humanOutput struct {
	w        io.Writer
	terminal bool
	width    int // of the instance column
	// statusWidth is the width of the status column: wider with a remote, whose pulled
	// instances are "cached (remote)".
	statusWidth int
	mu          sync.Mutex
	bars        map[*pipeline.Instance]*progressbar.ProgressBar
	// errs counts the failed instances by stage and error text: an error that several
	// instances of a stage share is printed once, with the count at the end.
	errs     map[string]int
	errOrder []string
	// skipped counts the instances skipped because an upstream failed, by the failed
	// upstream's stage; they get one summary line, not a line each.
	skipped     map[string]int
	skipOrder   []string
	failedStage map[string]int
}

func newHumanOutput(w io.Writer, plan *pipeline.Plan) *humanOutput {
	h := &humanOutput{w: w, bars: map[*pipeline.Instance]*progressbar.ProgressBar{}, width: 12, statusWidth: 8,
		errs: map[string]int{}, skipped: map[string]int{}, failedStage: map[string]int{}}
	if plan != nil {
		for _, in := range plan.Instances {
			h.width = max(h.width, len(in.ID()))
		}
	}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			h.terminal = true
		}
	}
	return h
}

func (h *humanOutput) result(r *pipeline.Result) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if bar := h.bars[r.Instance]; bar != nil {
		_ = bar.Clear() // the result line replaces the bar; a failed terminal write is not actionable
		delete(h.bars, r.Instance)
	}
	secs := ""
	if r.Status == pipeline.Ran || r.Status == pipeline.Failed {
		secs = fmt.Sprintf("%.2fs", r.Seconds)
	}
	why := r.Reason
	if r.Err != nil {
		why = r.Err.Error()
	}
	switch {
	case r.Status == pipeline.Failed:
		h.failedStage[r.Instance.Stage]++
		k := r.Instance.Stage + "\x00" + why
		h.errs[k]++
		if h.errs[k] > 1 {
			return // printed once; counted in the summary
		}
		h.errOrder = append(h.errOrder, k)
	case r.Status == pipeline.Skipped && strings.HasPrefix(r.Reason, "upstream ") && strings.HasSuffix(r.Reason, " failed"):
		up := strings.TrimSuffix(strings.TrimPrefix(r.Reason, "upstream "), " failed")
		up, _, _ = strings.Cut(up, "[")
		if h.skipped[up] == 0 {
			h.skipOrder = append(h.skipOrder, up)
		}
		h.skipped[up]++
		return
	}
	status := r.Status
	if r.Remote {
		status = remoteCached
	}
	fmt.Fprintf(h.w, "%-*s %-*s %7s  %s\n", h.statusWidth, status, h.width, r.Instance.ID(), secs, why)
}

// Write writes the stages' log lines, clearing any progress bar first so that the line does
// not land inside it (the bar redraws at its next update).
func (h *humanOutput) Write(b []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, bar := range h.bars {
		_ = bar.Clear() // a failed terminal write is not actionable; h.w.Write reports its own
	}
	return h.w.Write(b)
}

// progress returns the Env.Progress callback of one instance.
func (h *humanOutput) progress(in *pipeline.Instance) func(done, total int) {
	var last time.Time
	start := time.Now()
	return func(done, total int) {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.terminal {
			bar := h.bars[in]
			if bar == nil && len(h.bars) > 0 {
				return // one bar at a time: bars of concurrent stages would overwrite each other
			}
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(h.w),
					progressbar.OptionSetDescription(in.ID()), progressbar.OptionShowCount(),
					progressbar.OptionSetElapsedTime(true), progressbar.OptionSetPredictTime(true),
					progressbar.OptionThrottle(100*time.Millisecond))
				h.bars[in] = bar
			}
			if bar.GetMax() != total {
				bar.ChangeMax(total)
			}
			_ = bar.Set(done) // a terminal write: not actionable, as fmt.Fprintf (.golangci.yml)
			return
		}
		now := time.Now()
		if last.IsZero() && now.Sub(start) < progressEvery {
			return // short stages print no progress at all
		}
		if !last.IsZero() && now.Sub(last) < progressEvery && done < total {
			return
		}
		last = now
		pct := 0.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		fmt.Fprintf(h.w, "%-8s %s %d/%d (%.0f%%) after %s\n", "progress", in.ID(), done, total, pct, now.Sub(start).Round(time.Second))
	}
}

// summary prints the closing line of a run, after one line per error that several
// instances shared and one per failed upstream stage whose dependents were skipped.
func (h *humanOutput) summary(rep *pipeline.Report) {
	h.mu.Lock()
	for _, k := range h.errOrder {
		if n := h.errs[k]; n > 1 {
			stage, _, _ := strings.Cut(k, "\x00")
			fmt.Fprintf(h.w, "%-8s the same error in %d more %s instances (%d in all)\n", pipeline.Failed, n-1, stage, n)
		}
	}
	for _, up := range h.skipOrder {
		n, f := h.skipped[up], h.failedStage[up]
		fmt.Fprintf(h.w, "%-8s %d %s: upstream %s failed in %d %s\n", pipeline.Skipped, n, plural(n, "instance", "instances"),
			up, f, plural(f, "instance", "instances"))
	}
	h.mu.Unlock()
	counts := map[string]int{}
	remote := 0
	for _, r := range rep.Results {
		counts[r.Status]++
		if r.Remote {
			remote++
		}
	}
	fmt.Fprintf(h.w, "%s %s: %d ran, %d cached", rep.Status, rep.DAG, counts[pipeline.Ran], counts[pipeline.Cached])
	if remote > 0 {
		fmt.Fprintf(h.w, " (%d from the remote)", remote)
	}
	for _, s := range []string{pipeline.Failed, pipeline.Skipped, pipeline.WouldRun, pipeline.Unknown} {
		if counts[s] > 0 {
			fmt.Fprintf(h.w, ", %d %s", counts[s], s)
		}
	}
	if rep.Status == "dry-run" {
		fmt.Fprintf(h.w, " (nothing was run or stored)\n")
		return
	}
	fmt.Fprintf(h.w, " (run %s, %s)\n", rep.RunID, time.Since(rep.Started).Round(time.Millisecond))
}

// remoteCached is the status printed for an instance pulled from (or, in a dry run, found
// in) the remote cache.
const remoteCached = pipeline.Cached + " (remote)"

// plural returns one when n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
