package artifacts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// GCBlob is one blob gc deleted (or would delete).
type GCBlob struct {
	Digest   Digest `json:"digest"`
	Bytes    int64  `json:"bytes"`    // the blob's size; for an incomplete blob, about its chunks' size
	Complete bool   `json:"complete"` // false for chunks left by an interrupted write
}

// GCReport is the result of GC.
type GCReport struct {
	DryRun bool `json:"dry_run"`

	BlobsKept        int   `json:"blobs_kept"`
	BytesKept        int64 `json:"bytes_kept"`
	ManifestsKept    int   `json:"manifests_kept"`
	BlobsDeleted     int   `json:"blobs_deleted"`
	BytesDeleted     int64 `json:"bytes_deleted"`
	ManifestsDeleted int   `json:"manifests_deleted"`
	// BlobsRecent counts the kept blobs that no manifest names but that were stored within
	// the grace period (see WithGCGrace): a run in another process may be about to name them.
	BlobsRecent int `json:"blobs_recent"`

	// Blobs and Manifests list what was deleted (or would be, with DryRun).
	Blobs     []GCBlob `json:"blobs,omitempty"`
	Manifests []string `json:"manifests,omitempty"`

	// DiskBefore and DiskAfter are the bytes the store's files occupy on disk before and
	// after gc; ValueLogRewrites counts the value-log files Badger's value-log GC rewrote.
	// Badger never rewrites the value-log file it is writing to, so space held there comes
	// back only once later writes move past it.
	DiskBefore       int64 `json:"disk_before"`
	DiskAfter        int64 `json:"disk_after"`
	ValueLogRewrites int   `json:"value_log_rewrites"`
}

// GC deletes every blob and manifest that neither a head nor a pinned run reaches. A head or
// a pinned run's key reaches its manifest; a manifest reaches its output and input blobs and
// the manifests that produced its inputs (so lineage stays explainable). With dryRun GC only
// reports what it would delete. Otherwise it deletes, then runs Badger's value-log GC until it
// reclaims nothing more.
//
// Other processes may be running meanwhile: a blob that no manifest names yet is kept while it
// is younger than the grace period (WithGCGrace, default 1 hour), because its run may be about
// to write the manifest. A blob with chunks but no meta is the leftover of a killed write (a
// write holds the store's lock from its first chunk to its meta, and GC holds it throughout),
// so it is deleted. GC must not run while the same process writes.
func GC(ctx context.Context, s *Badger, dryRun bool) (GCReport, error) {
	rep := GCReport{DryRun: dryRun}
	rep.DiskBefore = diskUsage(s.dir)
	fail := func(err error) (GCReport, error) { return rep, fmt.Errorf("artifacts: gc %s: %w", s.dir, err) }
	db, release, err := s.acquire(ctx, !dryRun)
	if err != nil {
		return rep, err
	}
	defer release()

	// Every manifest, parsed; corrupt ones are nil and always deleted.
	all := map[string]*Manifest{}
	err = db.View(func(txn *badger.Txn) error {
		return scanTxn(txn, []byte(manifestPrefix), func(k, v []byte) error {
			key := strings.TrimPrefix(string(k), manifestPrefix)
			var m Manifest
			if json.Unmarshal(v, &m) == nil && m.Key == key {
				all[key] = &m
			} else {
				all[key] = nil
			}
			return nil
		})
	})
	if err != nil {
		return fail(err)
	}
	producers := map[Digest][]string{}
	for key, m := range all {
		if m == nil {
			continue
		}
		for _, o := range m.Outputs {
			producers[o.Digest] = append(producers[o.Digest], key)
		}
	}

	// Roots: heads and pinned runs.
	var queue []string
	err = db.View(func(txn *badger.Txn) error {
		if err := scanTxn(txn, []byte(headPrefix), func(k, v []byte) error {
			var h Head
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("head %s is %w: %v; run `pipe artifacts verify --repair` first", k, ErrCorrupt, err)
			}
			queue = append(queue, h.Key)
			return nil
		}); err != nil {
			return err
		}
		return scanTxn(txn, []byte(runPrefix), func(k, v []byte) error {
			var r Run
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("run record %s is %w: %v", k, ErrCorrupt, err)
			}
			if r.Pinned {
				queue = append(queue, r.Keys...)
			}
			return nil
		})
	})
	if err != nil {
		return fail(err)
	}

	// Mark.
	keepManifest := map[string]bool{}
	keepBlob := map[Digest]bool{}
	for len(queue) > 0 {
		key := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		m := all[key]
		if m == nil || keepManifest[key] {
			continue
		}
		keepManifest[key] = true
		for _, o := range m.Outputs {
			keepBlob[o.Digest] = true
		}
		for _, d := range m.Inputs {
			keepBlob[d] = true
			queue = append(queue, producers[d]...)
		}
	}

	// Blobs some manifest names (reachable or not): the others are orphans.
	named := map[Digest]bool{}
	for _, m := range all {
		if m != nil {
			for _, o := range m.Outputs {
				named[o.Digest] = true
			}
		}
	}
	recent := time.Now().Add(-s.cfg.gcGrace).Unix()

	// Sweep: list.
	err = scanBlobs(ctx, db, false, func(b blobInfo) error {
		if keepBlob[b.digest] && b.meta != nil {
			rep.BlobsKept++
			rep.BytesKept += b.meta.Size
			return nil
		}
		if s.cfg.gcGrace > 0 && b.meta != nil && !named[b.digest] && b.meta.Written >= recent {
			// Another process's run may have stored it and not yet written the manifest
			// that names it (it holds no lock in between).
			rep.BlobsKept++
			rep.BytesKept += b.meta.Size
			rep.BlobsRecent++
			return nil
		}
		g := GCBlob{Digest: b.digest, Bytes: b.keyBytes, Complete: b.meta != nil}
		if b.meta != nil {
			g.Bytes = b.meta.Size
		}
		rep.Blobs = append(rep.Blobs, g)
		rep.BlobsDeleted++
		rep.BytesDeleted += g.Bytes
		return nil
	})
	if err != nil {
		return fail(err)
	}
	for key := range all {
		if keepManifest[key] {
			rep.ManifestsKept++
		} else {
			rep.Manifests = append(rep.Manifests, key)
		}
	}
	sort.Strings(rep.Manifests)
	rep.ManifestsDeleted = len(rep.Manifests)
	if dryRun {
		rep.DiskAfter = rep.DiskBefore
		return rep, nil
	}

	// Sweep: delete. Manifests go first, so a crash in between leaves no manifest whose
	// blobs are gone.
	wb := db.NewWriteBatch()
	for _, key := range rep.Manifests {
		if err := wb.Delete(manifestKey(key)); err != nil {
			wb.Cancel()
			return fail(err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fail(err)
	}
	// DropPrefix removes the keys from the LSM tree at once and records the value-log space
	// they held as discardable, which is what lets value-log GC below rewrite files; plain
	// deletes would only mark the keys, and the space would wait for compactions.
	prefixes := make([][]byte, len(rep.Blobs))
	for i, b := range rep.Blobs {
		prefixes[i] = blobKeyPrefix(b.Digest)
	}
	if len(prefixes) > 0 {
		if err := db.DropPrefix(prefixes...); err != nil {
			return fail(err)
		}
	}
	if !db.Opts().InMemory {
		for {
			if err := ctx.Err(); err != nil {
				return fail(err)
			}
			err := db.RunValueLogGC(0.5)
			if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
				break
			}
			if err != nil {
				return fail(err)
			}
			rep.ValueLogRewrites++
		}
	}
	rep.DiskAfter = diskUsage(s.dir)
	s.ensureReserve()
	return rep, nil
}

// diskUsage returns the bytes allocated on disk to the files under dir (value-log files are
// sparse, so their apparent size overstates what they hold).
func diskUsage(dir string) int64 {
	if dir == "" {
		return 0
	}
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += info.Size()
		}
		return nil
	})
	return n
}
