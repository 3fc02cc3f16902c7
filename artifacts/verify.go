package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// BlobProblem is a blob that fails verification.
type BlobProblem struct {
	Digest Digest `json:"digest"`
	Detail string `json:"detail"`
}

// ManifestProblem is a manifest or head that fails verification.
type ManifestProblem struct {
	Key    string `json:"key"`
	Detail string `json:"detail"`
}

// VerifyReport is the result of Verify. The store is clean when OK returns true; Incomplete
// blobs (chunks without meta, left by an interrupted write) are harmless and gc removes them.
type VerifyReport struct {
	Blobs     int   `json:"blobs"`     // complete blobs checked
	Bytes     int64 `json:"bytes"`     // bytes re-hashed
	Manifests int   `json:"manifests"` // manifests checked
	Heads     int   `json:"heads"`

	Mismatched       []BlobProblem     `json:"mismatched,omitempty"`        // bytes do not hash to the digest
	MissingChunks    []BlobProblem     `json:"missing_chunks,omitempty"`    // meta present, chunks absent or wrong size
	Incomplete       []Digest          `json:"incomplete,omitempty"`        // chunks without meta
	CorruptManifests []ManifestProblem `json:"corrupt_manifests,omitempty"` // unparseable manifests (cache misses)
	Dangling         []ManifestProblem `json:"dangling,omitempty"`          // manifests or heads pointing at what is absent
}

// OK reports whether verification found no damage.
func (r VerifyReport) OK() bool {
	return len(r.Mismatched) == 0 && len(r.MissingChunks) == 0 && len(r.CorruptManifests) == 0 && len(r.Dangling) == 0
}

// Problems returns one line per problem found, for humans.
func (r VerifyReport) Problems() []string {
	var out []string
	for _, p := range r.Mismatched {
		out = append(out, fmt.Sprintf("blob %s: %s", p.Digest, p.Detail))
	}
	for _, p := range r.MissingChunks {
		out = append(out, fmt.Sprintf("blob %s: %s", p.Digest, p.Detail))
	}
	for _, p := range r.CorruptManifests {
		out = append(out, fmt.Sprintf("manifest %s: %s", p.Key, p.Detail))
	}
	for _, p := range r.Dangling {
		out = append(out, fmt.Sprintf("%s: %s", p.Key, p.Detail))
	}
	return out
}

// blobInfo is what a scan of the blob keys learns about one digest.
type blobInfo struct {
	digest    Digest
	meta      *blobMeta
	metaErr   error
	chunks    int   // chunk keys seen
	bytes     int64 // sum of chunk value sizes (only when values were read)
	gap       bool  // chunk indexes not 0, 1, 2, ...
	sum       string
	keyBytes  int64 // bytes of keys and values, for GC reports
	oddKeyErr string
	readErr   string // a chunk failed its value-log checksum or could not be read
}

// scanBlobs walks every blob key in order. With hashing it streams each chunk through sha256
// without copying it.
func scanBlobs(ctx context.Context, db *badger.DB, hashing bool, fn func(blobInfo) error) error {
	return db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = []byte(blobPrefix)
		opt.PrefetchValues = false
		it := txn.NewIterator(opt)
		defer it.Close()
		var cur *blobInfo
		var h hash.Hash
		flush := func() error {
			if cur == nil {
				return nil
			}
			if h != nil {
				cur.sum = hex.EncodeToString(h.Sum(nil))
			}
			err := fn(*cur)
			cur = nil
			return err
		}
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			rest := strings.TrimPrefix(string(item.Key()), blobPrefix)
			ds, part, _ := strings.Cut(rest, "/")
			d := Digest(ds)
			if cur == nil || cur.digest != d {
				if err := flush(); err != nil {
					return err
				}
				cur = &blobInfo{digest: d}
				if hashing {
					h = sha256.New()
				}
			}
			cur.keyBytes += int64(len(item.Key())) + item.ValueSize()
			if part == metaSuffix {
				var m blobMeta
				err := item.Value(func(v []byte) error { return json.Unmarshal(v, &m) })
				if err != nil {
					cur.metaErr = err
				} else {
					cur.meta = &m
				}
				continue
			}
			i, ok := parseChunkIndex(part)
			if !ok {
				cur.oddKeyErr = fmt.Sprintf("unexpected key %q", item.Key())
				continue
			}
			if i != cur.chunks {
				cur.gap = true
			}
			cur.chunks++
			if hashing {
				// Badger logs a value it cannot read (failed checksum, cut-off file) and
				// hands back an empty one; no stored chunk is empty.
				if err := item.Value(func(v []byte) error {
					if len(v) == 0 {
						return errors.New("empty value (damaged on disk)")
					}
					h.Write(v)
					cur.bytes += int64(len(v))
					return nil
				}); err != nil && cur.readErr == "" {
					cur.readErr = fmt.Sprintf("chunk %d is unreadable: %v", i, err)
				}
			}
		}
		return flush()
	})
}

// Verify re-hashes every blob, checks that every blob has all its chunks, that every
// manifest and head parses, and that every manifest's outputs and every head's manifest
// exist. It opens the store read-only.
func Verify(ctx context.Context, s *Badger) (VerifyReport, error) {
	db, release, err := s.acquire(ctx, false)
	if err != nil {
		return VerifyReport{}, err
	}
	defer release()
	return verify(ctx, s, db)
}

func verify(ctx context.Context, s *Badger, db *badger.DB) (VerifyReport, error) {
	var r VerifyReport
	have := map[Digest]bool{}
	err := scanBlobs(ctx, db, true, func(b blobInfo) error {
		switch {
		case b.meta == nil && b.metaErr == nil:
			r.Incomplete = append(r.Incomplete, b.digest)
			return nil
		case b.metaErr != nil:
			r.MissingChunks = append(r.MissingChunks, BlobProblem{b.digest, fmt.Sprintf("unreadable meta: %v", b.metaErr)})
			return nil
		}
		r.Blobs++
		r.Bytes += b.bytes
		switch {
		case b.readErr != "":
			r.Mismatched = append(r.Mismatched, BlobProblem{b.digest, b.readErr})
		case b.oddKeyErr != "":
			r.MissingChunks = append(r.MissingChunks, BlobProblem{b.digest, b.oddKeyErr})
		case b.chunks != b.meta.Chunks || b.gap:
			r.MissingChunks = append(r.MissingChunks, BlobProblem{b.digest, fmt.Sprintf("has %d of %d chunks", b.chunks, b.meta.Chunks)})
		case b.bytes != b.meta.Size:
			r.MissingChunks = append(r.MissingChunks, BlobProblem{b.digest, fmt.Sprintf("chunks hold %d bytes, meta says %d", b.bytes, b.meta.Size)})
		case b.sum != string(b.digest):
			r.Mismatched = append(r.Mismatched, BlobProblem{b.digest, fmt.Sprintf("bytes hash to %s", b.sum)})
		default:
			have[b.digest] = true
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("artifacts: verify %s: %w", s.dir, err)
	}
	manifests := map[string]bool{}
	err = db.View(func(txn *badger.Txn) error {
		if err := scanTxn(txn, []byte(manifestPrefix), func(k, v []byte) error {
			key := strings.TrimPrefix(string(k), manifestPrefix)
			r.Manifests++
			m, err := DecodeManifest(key, v)
			if err != nil {
				r.CorruptManifests = append(r.CorruptManifests, ManifestProblem{key, err.Error()})
				return nil
			}
			manifests[key] = true
			for _, name := range slices.Sorted(maps.Keys(m.Outputs)) {
				if d := m.Outputs[name].Digest; !have[d] {
					r.Dangling = append(r.Dangling, ManifestProblem{"manifest " + key,
						fmt.Sprintf("output %q (%s) points to blob %s, which is missing or damaged", name, m.Kind, d)})
				}
			}
			return nil
		}); err != nil {
			return err
		}
		return scanTxn(txn, []byte(headPrefix), func(k, v []byte) error {
			r.Heads++
			var h Head
			if err := json.Unmarshal(v, &h); err != nil {
				r.Dangling = append(r.Dangling, ManifestProblem{string(k), fmt.Sprintf("unreadable head: %v", err)})
				return nil
			}
			if !manifests[h.Key] {
				r.Dangling = append(r.Dangling, ManifestProblem{fmt.Sprintf("head %s/%s[%s]", h.DAG, h.Stage, h.Instance),
					fmt.Sprintf("points to manifest %s, which is missing or corrupt", h.Key)})
			}
			return nil
		})
	})
	if err != nil {
		return r, fmt.Errorf("artifacts: verify %s: %w", s.dir, err)
	}
	sort.Slice(r.Dangling, func(i, j int) bool { return r.Dangling[i].Key < r.Dangling[j].Key })
	return r, nil
}

// RepairReport says what Repair dropped.
type RepairReport struct {
	Blobs     []Digest `json:"blobs,omitempty"`     // damaged blobs dropped
	Manifests []string `json:"manifests,omitempty"` // manifests dropped (corrupt, or naming a dropped or missing blob)
	Heads     []Head   `json:"heads,omitempty"`     // heads dropped (their manifest is gone)
	HeadKeys  []string `json:"head_keys,omitempty"` // unreadable heads dropped, by store key
}

// Repair verifies the store (opened read-write) and drops what is damaged: damaged blobs, the
// manifests that are corrupt or name a damaged or missing blob, and the heads that point at
// a dropped or missing manifest. The stages behind them become cache misses and rerun;
// nothing else is touched. The verification before the repair is returned too.
func Repair(ctx context.Context, s *Badger) (VerifyReport, RepairReport, error) {
	var rr RepairReport
	db, release, err := s.acquire(ctx, true)
	if err != nil {
		return VerifyReport{}, rr, err
	}
	defer release()
	vr, err := verify(ctx, s, db)
	if err != nil {
		return vr, rr, err
	}
	fail := func(err error) (VerifyReport, RepairReport, error) {
		return vr, rr, fmt.Errorf("artifacts: repair %s: %w", s.dir, err)
	}
	bad := map[Digest]bool{}
	for _, p := range append(slices.Clone(vr.Mismatched), vr.MissingChunks...) {
		bad[p.Digest] = true
	}
	// Manifests to drop: corrupt ones and those naming a damaged or missing blob. Heads to
	// drop: unreadable ones and those naming a dropped or missing manifest.
	dropManifest := map[string]bool{}
	for _, p := range vr.CorruptManifests {
		dropManifest[p.Key] = true
	}
	var dropHeadKeys [][]byte
	err = db.View(func(txn *badger.Txn) error {
		kept := map[string]bool{}
		if err := scanTxn(txn, []byte(manifestPrefix), func(k, v []byte) error {
			key := strings.TrimPrefix(string(k), manifestPrefix)
			m, err := DecodeManifest(key, v)
			if err != nil {
				return nil
			}
			for _, o := range m.Outputs {
				if _, err := getMeta(txn, o.Digest); bad[o.Digest] || err != nil {
					dropManifest[key] = true
					return nil
				}
			}
			kept[key] = true
			return nil
		}); err != nil {
			return err
		}
		return scanTxn(txn, []byte(headPrefix), func(k, v []byte) error {
			var h Head
			if err := json.Unmarshal(v, &h); err != nil {
				rr.HeadKeys = append(rr.HeadKeys, string(k))
				dropHeadKeys = append(dropHeadKeys, slices.Clone(k))
				return nil
			}
			if !kept[h.Key] {
				rr.Heads = append(rr.Heads, h)
				dropHeadKeys = append(dropHeadKeys, slices.Clone(k))
			}
			return nil
		})
	})
	if err != nil {
		return fail(err)
	}
	rr.Manifests = slices.Sorted(maps.Keys(dropManifest))
	rr.Blobs = slices.Sorted(maps.Keys(bad))
	if len(rr.Manifests)+len(dropHeadKeys)+len(rr.Blobs) == 0 {
		return vr, rr, nil
	}
	// Heads and manifests first, so a crash in between leaves no manifest naming a dropped
	// blob and no head naming a dropped manifest.
	wb := db.NewWriteBatch()
	for _, k := range dropHeadKeys {
		if err := wb.Delete(k); err != nil {
			wb.Cancel()
			return fail(err)
		}
	}
	for _, key := range rr.Manifests {
		if err := wb.Delete(manifestKey(key)); err != nil {
			wb.Cancel()
			return fail(err)
		}
	}
	if err := wb.Flush(); err != nil {
		return fail(err)
	}
	if len(rr.Blobs) > 0 {
		prefixes := make([][]byte, len(rr.Blobs))
		for i, d := range rr.Blobs {
			prefixes[i] = blobKeyPrefix(d)
		}
		if err := db.DropPrefix(prefixes...); err != nil {
			return fail(err)
		}
	}
	return vr, rr, nil
}
