package main

import (
	"fmt"
	"io"
	"os"
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
	mu       sync.Mutex
	bars     map[*pipeline.Instance]*progressbar.ProgressBar
}

func newHumanOutput(w io.Writer, plan *pipeline.Plan) *humanOutput {
	h := &humanOutput{w: w, bars: map[*pipeline.Instance]*progressbar.ProgressBar{}, width: 12}
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
	fmt.Fprintf(h.w, "%-8s %-*s %7s  %s\n", r.Status, h.width, r.Instance.ID(), secs, why)
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

// summary prints the closing line of a run.
func (h *humanOutput) summary(rep *pipeline.Report) {
	counts := map[string]int{}
	for _, r := range rep.Results {
		counts[r.Status]++
	}
	fmt.Fprintf(h.w, "%s %s: %d ran, %d cached", rep.Status, rep.DAG, counts[pipeline.Ran], counts[pipeline.Cached])
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
