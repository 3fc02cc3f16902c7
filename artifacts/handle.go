package artifacts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// How the store shares its folder between processes.
//
// Badger allows one read-write opener per folder (an exclusive flock) or any number of
// read-only openers (a shared flock), and never both. A `pipe run` lasts hours, but it writes
// only for a moment after each stage; readers (status, artifacts, report, verify) and other
// runs must get in between. So a Badger store holds no Badger handle between operations: each
// operation (or a burst of them) opens Badger in the mode it needs, read-only where it only
// reads, and closes it again a moment after the last operation ends (linger). An open that
// finds the folder locked is retried with a bounded backoff; only after lockWait does it fail
// with ErrLocked.
//
// Measured on the 2-core build machine (a store with 50 blobs): a read-only open and close
// takes 2-6 ms and a read-write one 80-95 ms (Badger creates a memtable file, and on close
// flushes it into a level-0 table). Per stage, a run pays one read-write open for its output
// blobs and manifest (linger joins them into one burst): well under 1% of any real stage.
// A by-product: Badger's memory-mapped value-log pages are unmapped between operations, so a
// long run no longer keeps every blob it ever read mapped and resident.
const (
	// defaultLockWait bounds how long an operation waits for another process's handle
	// before failing with ErrLocked: longer than any single commit (a 64 MiB transaction
	// with fsyncs, a gc) takes, short enough that a stuck holder is reported.
	defaultLockWait = 30 * time.Second
	// readLinger and writeLinger are how long an unused handle stays open for the next
	// operation of a burst. A reader blocks other processes' writers, and a writer blocks
	// everyone, for that long after its last operation; 50 ms and 200 ms join the
	// operations of one status or one stage commit without making others wait visibly.
	readLinger  = 50 * time.Millisecond
	writeLinger = 200 * time.Millisecond
	// Backoff between attempts to take a locked folder. A failed attempt costs little
	// (Badger takes the folder's flock before reading anything), so waiters poll often.
	minBackoff = 2 * time.Millisecond
	maxBackoff = 25 * time.Millisecond
	// Fairness: a process that waits for the lock says so with a marker file
	// (waitMarker). While one exists, a handle is shared by new operations only while it
	// is younger than maxHold; an older one closes when its last operation ends, and this
	// process then waits yieldGap (more than a waiter's longest backoff) before it opens
	// Badger again, so the waiter gets its turn even while this one works back to back.
	// Without waiters a busy process keeps its handle (no cost to a long read).
	maxHold  = 250 * time.Millisecond
	yieldGap = 3 * maxBackoff
)

// handle is one open Badger database and the operations using it.
type handle struct {
	db     *badger.DB
	write  bool
	refs   int
	timer  *time.Timer
	opened time.Time
}

// acquire returns an open database in at least the given mode and a function that releases
// it. Operations of one process share the handle; a writer waits until the readers of this
// process are done, then reopens read-write. Calls must not nest (an operation that holds a
// read handle and asks for a write one would wait for itself).
func (s *Badger) acquire(ctx context.Context, write bool) (*badger.DB, func(), error) {
	if s.mem != nil {
		return s.mem, func() {}, nil
	}
	if write && s.readOnly {
		return nil, nil, fmt.Errorf("artifacts: store %s: %w (a read command cannot write)", s.dir, ErrReadOnly)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if write {
		s.writersWaiting++
		// Readers of this process wait while a writer waits (see below); wake them when this
		// writer stops waiting, also when its open fails, or they would wait forever.
		defer func() {
			s.writersWaiting--
			s.cond.Broadcast()
		}()
	}
	for {
		if s.closed {
			return nil, nil, fmt.Errorf("artifacts: store %s is closed", s.dir)
		}
		h := s.h
		switch {
		case h != nil && h.refs == 0 && time.Since(h.opened) > maxHold && s.othersWaiting():
			s.closeHandle()
			s.yieldUntil = time.Now().Add(yieldGap)
			continue
		case h != nil && (h.write || !write && s.writersWaiting == 0):
			// A write handle serves reads too; readers join a read handle unless a
			// writer of this process waits for it to close.
			h.refs++
			if h.timer != nil {
				h.timer.Stop()
				h.timer = nil
			}
			return h.db, func() { s.release(h) }, nil
		case h != nil && h.refs == 0 && write:
			s.closeHandle()
			continue
		case h != nil || !write && s.writersWaiting > 0:
			s.cond.Wait()
			continue
		}
		if wait := time.Until(s.yieldUntil); wait > 0 {
			time.Sleep(wait) // give a waiting process its turn (see yieldGap)
		}
		db, err := s.openDB(ctx, write)
		if err != nil {
			return nil, nil, err
		}
		s.h = &handle{db: db, write: write, refs: 1, opened: time.Now()}
		h = s.h
		return db, func() { s.release(h) }, nil
	}
}

// release ends one operation's use of h; the last one closes it after the linger.
func (s *Badger) release(h *handle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.refs--
	if h.refs > 0 {
		return
	}
	s.cond.Broadcast()
	if time.Since(h.opened) > maxHold && s.h == h && s.othersWaiting() {
		s.closeHandle()
		s.yieldUntil = time.Now().Add(yieldGap)
		return
	}
	linger := readLinger
	if h.write {
		linger = writeLinger
	}
	if s.writersWaiting > 0 && !h.write {
		linger = 0
	}
	h.timer = time.AfterFunc(linger, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.h == h && h.refs == 0 {
			s.closeHandle()
		}
	})
}

// closeHandle closes the current handle; s.mu is held and nobody uses it.
func (s *Badger) closeHandle() {
	h := s.h
	s.h = nil
	if h.timer != nil {
		h.timer.Stop()
	}
	if err := h.db.Close(); err != nil {
		s.log.Warn("artifacts: close store", "store", s.dir, "err", err)
		if s.closeErr == nil {
			s.closeErr = err
		}
	}
	s.cond.Broadcast()
}

// view runs fn in a read transaction.
func (s *Badger) view(ctx context.Context, fn func(txn *badger.Txn) error) error {
	db, release, err := s.acquire(ctx, false)
	if err != nil {
		return err
	}
	defer release()
	return db.View(fn)
}

// openDB opens Badger, waiting up to the lock wait while another process holds the folder.
func (s *Badger) openDB(ctx context.Context, write bool) (*badger.DB, error) {
	deadline := time.Now().Add(s.cfg.lockWait)
	backoff := minBackoff
	repairs := 0
	marker := ""
	for {
		if write {
			if err := s.checkSpace(0); err != nil {
				return nil, err
			}
		}
		if err := checkTables(s.dir); err != nil {
			return nil, fmt.Errorf("artifacts: store %s: %w: %v; the store cannot be repaired in place: remove it, or restore it from a copy", s.dir, ErrUnreadable, err)
		}
		db, err := badger.Open(s.badgerOptions(write))
		if err == nil {
			return db, nil
		}
		switch {
		case isLockErr(err):
			if marker == "" {
				marker = s.markWaiting()
				if marker != "" {
					// Best effort: othersWaiting skips and removes a dead process's marker.
					defer func() { _ = os.Remove(marker) }()
				}
			}
			if !time.Now().Before(deadline) {
				return nil, s.lockedError()
			}
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
			backoff = min(2*backoff, maxBackoff)
			continue
		case repairs < 2 && !errors.Is(err, syscall.EROFS) && !errors.Is(err, syscall.ENOSPC):
			// A process killed while writing leaves a memtable log that needs truncating
			// (read-only opens refuse it: ErrTruncateNeeded) or an empty one (Badger
			// initialises it, then still fails once: "Create a new file"). A read-write
			// open replays and repairs it; nothing committed is lost. Then try again.
			repairs++
			if write {
				s.log.Debug("artifacts: retrying the open", "store", s.dir, "err", err)
				continue
			}
			rw, rerr := badger.Open(s.badgerOptions(true))
			if rerr == nil {
				s.log.Debug("artifacts: repaired the memtable log left by a killed process", "store", s.dir, "err", err)
				if cerr := rw.Close(); cerr != nil {
					return nil, fmt.Errorf("artifacts: store %s: %w: %v", s.dir, ErrUnreadable, cerr)
				}
			}
			continue
		}
		if errors.Is(err, syscall.ENOSPC) {
			return nil, fmt.Errorf("artifacts: store %s: %w: %v", s.dir, ErrNoSpace, firstLine(err))
		}
		return nil, fmt.Errorf("artifacts: store %s: %w: %v", s.dir, ErrUnreadable, firstLine(err))
	}
}

// lockedError names the store and, when it recorded one, the process holding it.
func (s *Badger) lockedError() error {
	abs, aerr := filepath.Abs(s.dir)
	if aerr != nil {
		abs = s.dir
	}
	holder := ""
	if pid, rerr := os.ReadFile(filepath.Join(s.dir, "LOCK")); rerr == nil && len(strings.TrimSpace(string(pid))) > 0 {
		holder = fmt.Sprintf(" (pid %s)", strings.TrimSpace(string(pid)))
	}
	return fmt.Errorf("artifacts: store %s: %w%s for more than %s; wait for it to finish or use another --store",
		abs, ErrLocked, holder, s.cfg.lockWait)
}

// isLockErr reports whether err is Badger's failure to take the folder's flock.
func isLockErr(err error) bool {
	return errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN) ||
		strings.Contains(err.Error(), "Another process is using this Badger database")
}

// Close releases the store: it closes the open handle, if any. Operations after Close fail.
// It returns the first failure to close a Badger handle during the store's life (most handles
// close on their own after the linger), so a write whose flush failed is not lost silently.
func (s *Badger) Close() error {
	if s.mem != nil {
		if err := s.mem.Close(); err != nil {
			return fmt.Errorf("artifacts: close store: %w", err)
		}
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.h != nil && s.h.refs > 0 {
		s.cond.Wait()
	}
	if s.h != nil {
		s.closeHandle()
	}
	s.closed = true
	if s.closeErr != nil {
		return fmt.Errorf("artifacts: close store %s: %w", s.dir, s.closeErr)
	}
	return nil
}

// waitPrefix names the marker files of processes waiting for the store's lock.
const waitPrefix = "pipe-waiting."

// markWaiting creates this process's wait marker and returns its path, or "" when the folder
// is not writable (a read-only mount has no writer to wait for anyway).
func (s *Badger) markWaiting() string {
	p := filepath.Join(s.dir, fmt.Sprintf("%s%d", waitPrefix, os.Getpid()))
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return ""
	}
	_ = f.Close() // an empty file: only its name matters
	return p
}

// othersWaiting reports whether another live process has a wait marker in the folder. A
// marker left by a killed process is removed.
func (s *Badger) othersWaiting() bool {
	if s.dir == "" {
		return false
	}
	ms, _ := filepath.Glob(filepath.Join(s.dir, waitPrefix+"*"))
	for _, m := range ms {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), waitPrefix))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.Remove(m) // best effort: a marker that stays is skipped again next time
			continue
		}
		return true
	}
	return false
}
