package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/ristretto/v2/z"
	"github.com/google/uuid"
)

// ChunkSize is the size of one stored piece of a blob. Badger keeps values larger than
// valueThreshold in its value log, copies each value once into a staging buffer before it
// lands in the log, and writes all values of a transaction into one value-log file. 4 MiB
// keeps that staging buffer small, is 1/64 of a value-log file (so rotation wastes little
// and value-log GC can free files at a useful granularity), and makes the per-chunk lookup
// cost (a few microseconds) negligible next to copying 4 MiB (about a millisecond).
const ChunkSize = 4 << 20

// txnBytes bounds the blob bytes written in one Badger transaction: all values of a
// transaction go into one value-log file, so a transaction must stay well under
// valueLogFileSize; 16 chunks keep a commit (and its fsync) at 64 MiB.
const txnBytes = 16 * ChunkSize

// valueLogFileSize is Badger's value-log file size: 256 MiB instead of Badger's 1 GiB so that
// value-log GC, which rewrites or drops whole files, can give space back after a gc of a
// few stages, and the memory map per file stays modest.
const valueLogFileSize = 256 << 20

// valueThreshold is the value size from which Badger stores a value in the value log rather
// than in the LSM tree. Manifests, heads, runs and small tables (metrics) stay in the LSM
// tree; anything larger goes to the value log so that compactions never rewrite blob bytes.
const valueThreshold = 64 << 10

// Key prefixes of the store. Blob chunk keys are blob/<digest>/<8-digit chunk index>, so
// the chunks of a blob sort in order and before its meta key blob/<digest>/meta.
const (
	blobPrefix     = "blob/"
	manifestPrefix = "manifest/"
	headPrefix     = "head/"
	runPrefix      = "run/"
	metaSuffix     = "meta"
)

// blobMeta is the value of a blob's meta key. It is written after all chunks, in the last
// transaction of PutBlob, so a blob without meta is the leftover of an interrupted write.
type blobMeta struct {
	Size      int64 `json:"size"`
	Chunks    int   `json:"chunks"`
	ChunkSize int   `json:"chunk_size"`
}

func chunkKey(d Digest, i int) []byte {
	return fmt.Appendf(nil, "%s%s/%08d", blobPrefix, d, i)
}

func metaKey(d Digest) []byte { return []byte(blobPrefix + string(d) + "/" + metaSuffix) }

func blobKeyPrefix(d Digest) []byte { return []byte(blobPrefix + string(d) + "/") }

func manifestKey(key string) []byte { return []byte(manifestPrefix + key) }

// headKey escapes each part so that a "/" inside a DAG, stage or instance name cannot make
// two heads share a key.
func headKey(dag, stage, instance string) []byte {
	return []byte(headPrefix + url.PathEscape(dag) + "/" + url.PathEscape(stage) + "/" + url.PathEscape(instance))
}

func runKey(id string) []byte { return []byte(runPrefix + id) }

// Badger is the Store on a Badger database in one folder.
type Badger struct {
	db       *badger.DB
	dir      string
	log      *slog.Logger
	chunk    int // ChunkSize, or memChunkSize in memory
	txnBytes int // txnBytes, or memTxnBytes in memory
}

// In memory, Badger keeps every value in its memtables and refuses values over the value
// threshold, and a transaction's values count fully against its batch limit (15% of the
// memtable size), so blobs are cut smaller and committed in smaller transactions.
const (
	memChunkSize = 256 << 10
	memTxnBytes  = 2 << 20
)

var _ Store = (*Badger)(nil)

// Option configures Open.
type Option func(*config)

type config struct {
	log          *slog.Logger
	inMemory     bool
	vlogFileSize int64 // tests lower it to exercise value-log rotation and GC cheaply
	txnBytes     int   // tests lower it so that a kill lands inside a multi-transaction blob
}

// WithLogger sends the store's messages to l: corrupt manifests at warning level, Badger's
// own messages at debug level (its errors at error level). The default is slog.Default();
// nil discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// InMemory keeps the whole store in memory (dir is ignored and may be empty): for tests of
// code that uses a Store. Nothing is written to disk, there is no lock, and GC reclaims
// no disk space.
func InMemory() Option { return func(c *config) { c.inMemory = true } }

// Open opens (creating if needed) the store in dir. If another process (or another Open in
// this process) holds the store, Open fails at once with an error wrapping ErrLocked that
// names the folder.
func Open(dir string, opts ...Option) (*Badger, error) {
	cfg := config{log: slog.Default(), vlogFileSize: valueLogFileSize, txnBytes: txnBytes}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{cfg.log}).
		WithMetricsEnabled(false).
		// Durability: every commit fsyncs the value log and the memtable's write-ahead
		// log, and a value-log file is fsynced when it is rotated. Without SyncWrites,
		// DB.Sync only syncs the current value-log file, so a blob in an earlier file
		// could be lost on power failure while its manifest survives. Blobs are written
		// in 64 MiB transactions, so the cost is a few fsyncs per large blob.
		WithSyncWrites(true).
		// Memory: a lean store. Memtables hold only keys, value pointers and small
		// values, so 16 MiB ones suffice; the caches serve LSM blocks and indexes, not
		// blob bytes (those are read from the memory-mapped value log).
		WithMemTableSize(16 << 20).
		WithNumMemtables(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(8).
		WithBlockCacheSize(16 << 20).
		WithIndexCacheSize(8 << 20).
		WithNumCompactors(2).
		WithNumGoroutines(2).
		WithCompression(options.None).
		WithValueThreshold(valueThreshold).
		// No transaction reads a key and writes based on it (blobs are immutable and
		// content-addressed; a head is simply overwritten), so conflict detection would
		// only cost memory and turn concurrent writes into spurious ErrConflict.
		WithDetectConflicts(false).
		// Every value read from the value log is checked against its CRC32-C, so a blob
		// damaged on disk fails to load instead of feeding a stage wrong numbers. It halves
		// the read speed of a cached feature table (about 5 -> 2.4 GB/s here), which stays
		// far above what the stages consume.
		WithVerifyValueChecksum(true).
		WithValueLogFileSize(cfg.vlogFileSize)
	st := &Badger{dir: dir, log: cfg.log, chunk: ChunkSize, txnBytes: cfg.txnBytes}
	if cfg.inMemory {
		bo = bo.WithDir("").WithValueDir("").WithInMemory(true).WithMemTableSize(64 << 20).WithValueThreshold(1 << 20)
		st.dir, st.chunk, st.txnBytes = "", memChunkSize, memTxnBytes
	} else if dir == "" {
		return nil, fmt.Errorf("artifacts: open store: no folder given")
	}
	db, err := badger.Open(bo)
	if err != nil && !cfg.inMemory && strings.Contains(err.Error(), z.NewFile.Error()) {
		// A process killed between creating a memtable's write-ahead log and writing its
		// header leaves an empty *.mem file. Badger's open then initialises that file but
		// still fails ("while opening fid: N err: Create a new file"); the file is now an
		// empty, valid log, so a second open succeeds. Nothing was in the file to lose.
		cfg.log.Warn("artifacts: reopening after an empty memtable file left by a killed process", "store", dir)
		db, err = badger.Open(bo)
	}
	if err != nil {
		if isLockErr(err) {
			abs, aerr := filepath.Abs(dir)
			if aerr != nil {
				abs = dir
			}
			holder := ""
			if pid, rerr := os.ReadFile(filepath.Join(dir, "LOCK")); rerr == nil && len(strings.TrimSpace(string(pid))) > 0 {
				holder = fmt.Sprintf(" (pid %s)", strings.TrimSpace(string(pid)))
			}
			return nil, fmt.Errorf("artifacts: store %s: %w%s; wait for it to finish or use another --store", abs, ErrLocked, holder)
		}
		return nil, fmt.Errorf("artifacts: open store %s: %w", dir, err)
	}
	st.db = db
	return st, nil
}

// firstLine cuts an error to its first line: Badger appends a hex dump of the whole value
// to its value-too-large errors.
func firstLine(err error) error {
	if msg, _, cut := strings.Cut(err.Error(), "\n"); cut {
		return errors.New(strings.TrimSuffix(strings.TrimSpace(msg), " Value:"))
	}
	return err
}

// isLockErr reports whether err is Badger's failure to take the folder's flock.
func isLockErr(err error) bool {
	return errors.Is(err, syscall.EWOULDBLOCK) || errors.Is(err, syscall.EAGAIN) ||
		strings.Contains(err.Error(), "Another process is using this Badger database")
}

// Dir returns the store's folder.
func (s *Badger) Dir() string { return s.dir }

// Close releases the store and its lock.
func (s *Badger) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("artifacts: close store %s: %w", s.dir, err)
	}
	return nil
}

// DigestOf returns the digest of data.
func DigestOf(data []byte) Digest {
	sum := sha256.Sum256(data)
	return Digest(hex.EncodeToString(sum[:]))
}

func validDigest(d Digest) error {
	if len(d) != 64 {
		return fmt.Errorf("artifacts: %q is not a digest (want 64 hex digits)", string(d))
	}
	for _, c := range []byte(d) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("artifacts: %q is not a digest (want lowercase hex)", string(d))
		}
	}
	return nil
}

// PutBlob stores data under its sha256 in chunks of ChunkSize, the meta key last.
func (s *Badger) PutBlob(ctx context.Context, data []byte) (Digest, error) {
	d := DigestOf(data)
	if ok, err := s.HasBlob(ctx, d); err != nil || ok {
		return d, err
	}
	n := (len(data) + s.chunk - 1) / s.chunk
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	inTxn := 0
	for i := range n {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		lo, hi := i*s.chunk, min((i+1)*s.chunk, len(data))
		if inTxn > 0 && inTxn+hi-lo > s.txnBytes {
			if err := txn.Commit(); err != nil {
				return "", fmt.Errorf("artifacts: store blob %s: %w", d, err)
			}
			txn = s.db.NewTransaction(true)
			inTxn = 0
		}
		if err := txn.Set(chunkKey(d, i), data[lo:hi:hi]); err != nil {
			return "", fmt.Errorf("artifacts: store blob %s chunk %d: %w", d, i, firstLine(err))
		}
		inTxn += hi - lo
	}
	meta, err := json.Marshal(blobMeta{Size: int64(len(data)), Chunks: n, ChunkSize: s.chunk})
	if err != nil {
		return "", err
	}
	if err := txn.Set(metaKey(d), meta); err != nil {
		return "", fmt.Errorf("artifacts: store blob %s meta: %w", d, err)
	}
	if err := txn.Commit(); err != nil {
		return "", fmt.Errorf("artifacts: store blob %s: %w", d, err)
	}
	return d, nil
}

func getMeta(txn *badger.Txn, d Digest) (blobMeta, error) {
	var m blobMeta
	item, err := txn.Get(metaKey(d))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return m, fmt.Errorf("artifacts: blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return m, fmt.Errorf("artifacts: blob %s: %w", d, err)
	}
	if err := item.Value(func(v []byte) error { return json.Unmarshal(v, &m) }); err != nil {
		return m, fmt.Errorf("artifacts: blob %s: unreadable meta: %w", d, err)
	}
	if m.Size < 0 || m.Chunks < 0 {
		return m, fmt.Errorf("artifacts: blob %s: bad meta size %d chunks %d", d, m.Size, m.Chunks)
	}
	return m, nil
}

// Blob returns the bytes of a blob in one freshly allocated slice: each chunk is copied once,
// straight from Badger's memory-mapped value log into its place.
func (s *Badger) Blob(ctx context.Context, d Digest) ([]byte, error) {
	if err := validDigest(d); err != nil {
		return nil, err
	}
	var out []byte
	err := s.db.View(func(txn *badger.Txn) error {
		m, err := getMeta(txn, d)
		if err != nil {
			return err
		}
		// Chunks 0 .. Chunks-2 are full; the last holds 1 .. ChunkSize bytes.
		if m.Chunks == 0 && m.Size != 0 || m.Chunks > 0 && (m.ChunkSize <= 0 ||
			int64(m.Chunks-1)*int64(m.ChunkSize) >= m.Size || m.Size > int64(m.Chunks)*int64(m.ChunkSize)) {
			return fmt.Errorf("artifacts: blob %s: meta is inconsistent (size %d, %d chunks of %d)", d, m.Size, m.Chunks, m.ChunkSize)
		}
		out = make([]byte, m.Size)
		for i := range m.Chunks {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := readChunk(txn, d, m, i, out); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readChunk copies chunk i of blob d into its place in out.
func readChunk(txn *badger.Txn, d Digest, m blobMeta, i int, out []byte) error {
	item, err := txn.Get(chunkKey(d, i))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("artifacts: blob %s: chunk %d of %d is missing (run pipe artifacts verify)", d, i, m.Chunks)
	}
	if err != nil {
		return fmt.Errorf("artifacts: blob %s chunk %d: %w", d, i, err)
	}
	lo := i * m.ChunkSize
	hi := min(lo+m.ChunkSize, len(out))
	return item.Value(func(v []byte) error {
		switch {
		case len(v) == 0:
			// Badger logs a value it cannot read and hands back an empty one.
			return fmt.Errorf("artifacts: blob %s: chunk %d of %d is unreadable, damaged on disk (run pipe artifacts verify)", d, i, m.Chunks)
		case len(v) != hi-lo:
			return fmt.Errorf("artifacts: blob %s: chunk %d holds %d bytes, want %d", d, i, len(v), hi-lo)
		}
		copy(out[lo:hi], v)
		return nil
	})
}

// BlobSize returns the size in bytes of a stored blob.
func (s *Badger) BlobSize(ctx context.Context, d Digest) (int64, error) {
	var m blobMeta
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		m, err = getMeta(txn, d)
		return err
	})
	return m.Size, err
}

// HasBlob reports whether a complete blob (its meta key) is present.
func (s *Badger) HasBlob(ctx context.Context, d Digest) (bool, error) {
	err := s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get(metaKey(d))
		return err
	})
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("artifacts: blob %s: %w", d, err)
	}
	return true, nil
}

// PutManifest stores m and points its head at it in one transaction. Every output blob must
// already be stored (the write order of DESIGN.md); a missing one is an error.
func (s *Badger) PutManifest(ctx context.Context, m Manifest) error {
	if m.Key == "" || m.DAG == "" || m.Stage == "" {
		return fmt.Errorf("artifacts: manifest needs key, dag and stage (got key %q, dag %q, stage %q)", m.Key, m.DAG, m.Stage)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("artifacts: manifest %s of %s/%s: %w", m.Key, m.DAG, m.Stage, err)
	}
	hb, err := json.Marshal(Head{DAG: m.DAG, Stage: m.Stage, Instance: m.Instance, Key: m.Key})
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(m.Outputs)) {
		d := m.Outputs[name].Digest
		ok, err := s.HasBlob(ctx, d)
		if err == nil && !ok {
			err = fmt.Errorf("output %q: blob %s is not stored (store blobs before the manifest)", name, d)
		}
		if err != nil {
			return fmt.Errorf("artifacts: manifest %s of %s/%s[%s]: %w", m.Key, m.DAG, m.Stage, m.Instance, err)
		}
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := txn.Set(manifestKey(m.Key), mb); err != nil {
			return err
		}
		return txn.Set(headKey(m.DAG, m.Stage, m.Instance), hb)
	})
	if err != nil {
		return fmt.Errorf("artifacts: manifest %s of %s/%s[%s]: %w", m.Key, m.DAG, m.Stage, m.Instance, err)
	}
	return nil
}

// Manifest returns the manifest stored under key. An absent or corrupt manifest gives an
// error wrapping ErrNotFound; a corrupt one is also logged at warning level.
func (s *Badger) Manifest(ctx context.Context, key string) (Manifest, error) {
	var m Manifest
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(manifestKey(key))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("artifacts: manifest %s: %w", key, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("artifacts: manifest %s: %w", key, err)
		}
		return item.Value(func(v []byte) error {
			m, err = s.decodeManifest(key, v)
			return err
		})
	})
	return m, err
}

// decodeManifest parses a stored manifest; a corrupt one is reported and treated as absent.
func (s *Badger) decodeManifest(key string, v []byte) (Manifest, error) {
	var m Manifest
	err := json.Unmarshal(v, &m)
	if err == nil && m.Key != key {
		err = fmt.Errorf("it records key %q", m.Key)
	}
	if err != nil {
		s.log.Warn("artifacts: corrupt manifest treated as a cache miss", "store", s.dir, "key", key, "err", err)
		return Manifest{}, fmt.Errorf("artifacts: manifest %s is corrupt (%v), treating it as a miss: %w", key, err, ErrNotFound)
	}
	return m, nil
}

// Head returns the latest key of a DAG stage instance.
func (s *Badger) Head(ctx context.Context, dag, stage, instance string) (Head, error) {
	var h Head
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(headKey(dag, stage, instance))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("artifacts: head %s/%s[%s]: %w", dag, stage, instance, ErrNotFound)
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &h) })
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return h, fmt.Errorf("artifacts: head %s/%s[%s]: %w", dag, stage, instance, err)
	}
	return h, err
}

// Heads lists all heads, of one DAG when dag is not empty, in key order.
func (s *Badger) Heads(ctx context.Context, dag string) ([]Head, error) {
	prefix := headPrefix
	if dag != "" {
		prefix += url.PathEscape(dag) + "/"
	}
	var out []Head
	err := s.scan([]byte(prefix), func(k, v []byte) error {
		var h Head
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("artifacts: head %s is unreadable: %w", k, err)
		}
		out = append(out, h)
		return nil
	})
	return out, err
}

// Manifests lists every readable manifest in key order; corrupt ones are logged and skipped.
func (s *Badger) Manifests(ctx context.Context) ([]Manifest, error) {
	var out []Manifest
	err := s.scan([]byte(manifestPrefix), func(k, v []byte) error {
		m, err := s.decodeManifest(strings.TrimPrefix(string(k), manifestPrefix), v)
		if err == nil {
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// NewRunID returns a fresh UUIDv7 (time-ordered) for a run record.
func NewRunID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", fmt.Errorf("artifacts: new run id: %w", err)
	}
	return id.String(), nil
}

// PutRun stores (or replaces) a run record under run/<r.ID>.
func (s *Badger) PutRun(ctx context.Context, r Run) error {
	if _, err := uuid.Parse(r.ID); err != nil {
		return fmt.Errorf("artifacts: run id %q is not a UUID (make one with NewRunID): %w", r.ID, err)
	}
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("artifacts: run %s: %w", r.ID, err)
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(runKey(r.ID), b) }); err != nil {
		return fmt.Errorf("artifacts: run %s: %w", r.ID, err)
	}
	return nil
}

// Run returns one run record.
func (s *Badger) Run(ctx context.Context, id string) (Run, error) {
	var r Run
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(runKey(id))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("artifacts: run %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("artifacts: run %s: %w", id, err)
		}
		return item.Value(func(v []byte) error { return json.Unmarshal(v, &r) })
	})
	return r, err
}

// Runs lists run records, oldest first (UUIDv7 keys sort by time).
func (s *Badger) Runs(ctx context.Context) ([]Run, error) {
	var out []Run
	err := s.scan([]byte(runPrefix), func(k, v []byte) error {
		var r Run
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("artifacts: run record %s is unreadable: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// scan calls fn with every key and value under prefix, in key order. The slices are only
// valid during the call.
func (s *Badger) scan(prefix []byte, fn func(k, v []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		opt := badger.DefaultIteratorOptions
		opt.Prefix = prefix
		opt.PrefetchSize = 16
		it := txn.NewIterator(opt)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			item := it.Item()
			if err := item.Value(func(v []byte) error { return fn(item.Key(), v) }); err != nil {
				return err
			}
		}
		return nil
	})
}

// badgerLogger routes Badger's log lines to slog: errors as errors, the rest at debug level.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Error("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Warningf(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Infof(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}
func (b badgerLogger) Debugf(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
}

// parseChunkIndex parses the chunk part of a blob key; ok is false for the meta key.
func parseChunkIndex(s string) (int, bool) {
	if len(s) != 8 {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}
