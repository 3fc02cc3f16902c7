package pipeline

import (
	"context"
	"errors"

	"github.com/pipe-ahl/pipe/artifacts"
)

// Freshness values of a status line.
const (
	Fresh   = "fresh"   // cached: a manifest with the current key exists
	Stale   = "stale"   // ran before, but something it depends on changed
	Missing = "missing" // never ran
	Errored = "error"   // the key could not be computed (Reason says why)
)

// InstanceStatus is one line of `pipe status`.
type InstanceStatus struct {
	Instance *Instance
	State    string
	Reason   string
	Key      string // "" when an upstream instance is not fresh, so the key is unknown
	// Remote is set on a fresh instance whose key only the remote holds (it finished on
	// another machine); Reason then says so.
	Remote bool
}

// Status reports, per instance, whether it is fresh, stale (and why) or missing, without
// running anything or writing to the store.
func Status(ctx context.Context, p *Plan, opts Options) ([]InstanceStatus, error) {
	opts.DryRun = true
	opts.OnResult, opts.OnStart = nil, nil
	rep, err := Run(ctx, p, opts)
	if err != nil && (rep == nil || !errors.Is(err, ErrStageFailed)) {
		return nil, err
	}
	out := make([]InstanceStatus, len(rep.Results))
	for i, r := range rep.Results {
		s := InstanceStatus{Instance: r.Instance, Reason: r.Reason, Key: r.Key}
		switch r.Status {
		case Cached:
			s.State, s.Reason = Fresh, ""
			if r.Remote {
				s.Remote, s.Reason = true, r.Reason
			}
		case WouldRun:
			s.State = Stale
			if r.Reason == "never ran" {
				s.State = Missing
			}
		case Failed: // the key could not be computed (a fingerprint or store error)
			if storeUnusable(r.Err) {
				// The store, not this instance, is the problem: say so once.
				return nil, r.Err
			}
			s.State, s.Reason = Errored, r.Err.Error()
		default:
			s.State = Stale
			if _, err := opts.Store.Head(ctx, p.DAG, r.Instance.Stage, r.Instance.Label); err != nil {
				s.State, s.Reason = Missing, "never ran"
			}
		}
		out[i] = s
	}
	return out, nil
}

// storeUnusable reports whether err is about the whole store (locked, full, missing,
// unreadable) rather than one instance.
func storeUnusable(err error) bool {
	return errors.Is(err, artifacts.ErrLocked) || artifacts.Unusable(err)
}
