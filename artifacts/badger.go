package artifacts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
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
//
// CRC holds the CRC-32C (Castagnoli) of each chunk, so every read checks every byte it
// uses, wherever Badger keeps it: small blobs live inside the LSM tree's .sst files, which
// Badger does not checksum on read. CRC-32C runs at memory speed in hardware, unlike
// sha256, and lets a part of a blob be checked without reading the rest. Blobs written
// before it have no CRC and are checked against their sha256 digest instead.
type blobMeta struct {
	Size      int64    `json:"size"`
	Chunks    int      `json:"chunks"`
	ChunkSize int      `json:"chunk_size"`
	CRC       []uint32 `json:"crc32c,omitempty"`
	Written   int64    `json:"written,omitempty"` // Unix seconds; GC spares recent unnamed blobs
}

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

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

// Badger is the Store on a Badger database in one folder. It holds no Badger handle between
// operations, so that other pipe processes can read and write the same folder (see
// handle.go for the mechanism and why).
type Badger struct {
	dir         string
	log         *slog.Logger
	cfg         config
	chunk       int  // ChunkSize, or memChunkSize in memory
	txnBytes    int  // txnBytes, or memTxnBytes in memory
	readOnly    bool // opened with ReadOnly: never takes the writer lock
	maintenance bool // gc or repair may release the reserve file on a full disk
	mem         *badger.DB

	mu             sync.Mutex
	cond           *sync.Cond
	h              *handle // the open handle, or nil
	writersWaiting int
	closed         bool
	closeErr       error     // the first failed close of a handle, returned by Close
	yieldUntil     time.Time // no new handle before then (fairness, see yieldGap)
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
	readOnly     bool
	maintenance  bool
	lockWait     time.Duration
	vlogFileSize int64 // tests lower it to exercise value-log rotation and GC cheaply
	txnBytes     int   // tests lower it so that a kill lands inside a multi-transaction blob
	gcGrace      time.Duration
}

// defaultGCGrace is how long GC spares a blob that no manifest names: longer than any stage
// takes between storing its first output and writing its manifest (encoding the remaining
// outputs), short enough that a failed stage's outputs do not linger for days.
const defaultGCGrace = time.Hour

// WithGCGrace sets how long GC spares a stored blob that no manifest names yet (default 1
// hour); 0 deletes every unnamed blob, for a store no other process uses.
func WithGCGrace(d time.Duration) Option { return func(c *config) { c.gcGrace = d } }

// WithLogger sends the store's messages to l: corrupt manifests at warning level, Badger's
// own messages at debug level. The default is slog.Default(); nil discards everything.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// InMemory keeps the whole store in memory (dir is ignored and may be empty): for tests of
// code that uses a Store. Nothing is written to disk, there is no lock, and GC reclaims
// no disk space.
func InMemory() Option { return func(c *config) { c.inMemory = true } }

// ReadOnly opens the store for reading only: Open fails with ErrStoreMissing when dir holds
// no store (it never creates one), Badger is only ever opened read-only (a shared lock, so
// it works beside a running `pipe run` and on a read-only mount), and writes fail with
// ErrReadOnly.
func ReadOnly() Option { return func(c *config) { c.readOnly = true } }

// WithLockWait sets how long an operation waits while another process holds the store
// before it fails with ErrLocked (default 30 s).
func WithLockWait(d time.Duration) Option { return func(c *config) { c.lockWait = d } }

// Maintenance marks the store as opened by gc or verify --repair: on a full disk, its
// read-write opens may delete the store's reserve file to make room.
func Maintenance() Option { return func(c *config) { c.maintenance = true } }

// Open opens the store in dir, creating it unless ReadOnly is given. It checks that the store
// can be opened (waiting while another process writes, see WithLockWait) and then holds no
// lock: every operation takes Badger's lock for its own duration.
func Open(dir string, opts ...Option) (*Badger, error) {
	cfg := config{log: slog.Default(), vlogFileSize: valueLogFileSize, txnBytes: txnBytes, lockWait: defaultLockWait, gcGrace: defaultGCGrace}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	st := &Badger{dir: dir, log: cfg.log, cfg: cfg, chunk: ChunkSize, txnBytes: cfg.txnBytes,
		readOnly: cfg.readOnly, maintenance: cfg.maintenance}
	st.cond = sync.NewCond(&st.mu)
	if cfg.inMemory {
		st.dir, st.chunk, st.txnBytes = "", memChunkSize, memTxnBytes
		db, err := badger.Open(st.badgerOptions(true))
		if err != nil {
			return nil, fmt.Errorf("artifacts: open store in memory: %w", err)
		}
		st.mem = db
		return st, nil
	}
	if dir == "" {
		return nil, fmt.Errorf("artifacts: open store: no folder given")
	}
	exists := true
	if _, err := os.Stat(filepath.Join(dir, "MANIFEST")); errors.Is(err, os.ErrNotExist) {
		exists = false
	} else if err != nil {
		return nil, fmt.Errorf("artifacts: store %s: %w: %v", dir, ErrUnreadable, err)
	}
	if !exists && cfg.readOnly {
		abs, aerr := filepath.Abs(dir)
		if aerr != nil {
			abs = dir
		}
		why := "the folder does not exist"
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			why = "the folder holds no store"
		}
		return nil, fmt.Errorf("artifacts: store %s: %w (%s; check --store or PIPE_STORE, or run pipe run first)", abs, ErrStoreMissing, why)
	}
	if !exists {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return nil, fmt.Errorf("artifacts: %w on %s: %v", ErrNoSpace, dir, err)
			}
			return nil, fmt.Errorf("artifacts: create store %s: %w", dir, err)
		}
	}
	// Check that the store opens: read-only where it exists, read-write to create it.
	_, release, err := st.acquire(context.Background(), !exists)
	if err != nil {
		return nil, err
	}
	release()
	st.ensureReserve()
	return st, nil
}

// badgerOptions are the store's Badger options for a read-write or read-only open.
func (s *Badger) badgerOptions(write bool) badger.Options {
	bo := badger.DefaultOptions(s.dir).
		WithLogger(badgerLogger{s.log}).
		WithReadOnly(!write && s.mem == nil && s.dir != "").
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
		// Badger's own CRC of each value-log entry is not checked: every chunk carries a
		// CRC-32C in its blob's meta (blobMeta), checked on every read wherever the
		// chunk lives, and old blobs are checked against their digest. Checking both
		// halved the read speed of a cached feature table.
		WithVerifyValueChecksum(false).
		WithValueLogFileSize(s.cfg.vlogFileSize)
	if s.mem != nil || s.dir == "" {
		bo = bo.WithDir("").WithValueDir("").WithInMemory(true).WithMemTableSize(64 << 20).WithValueThreshold(1 << 20)
	}
	return bo
}

// firstLine cuts an error to its first line: Badger appends a hex dump of the whole value
// to its value-too-large errors.
func firstLine(err error) error {
	if msg, _, cut := strings.Cut(err.Error(), "\n"); cut {
		return errors.New(strings.TrimSuffix(strings.TrimSpace(msg), " Value:"))
	}
	return err
}

// Dir returns the store's folder.
func (s *Badger) Dir() string { return s.dir }

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
		if isHex := '0' <= c && c <= '9' || 'a' <= c && c <= 'f'; !isHex {
			return fmt.Errorf("artifacts: %q is not a digest (want lowercase hex)", string(d))
		}
	}
	return nil
}

// PutBlob stores data under its sha256 in chunks of ChunkSize, the meta key last. A blob
// already stored intact is not written again; a damaged or incomplete one is replaced.
func (s *Badger) PutBlob(ctx context.Context, data []byte) (Digest, error) {
	d := DigestOf(data)
	db, release, err := s.acquire(ctx, true)
	if err != nil {
		return "", err
	}
	defer release()
	err = db.View(func(txn *badger.Txn) error { return verifyBlob(ctx, txn, d, s.mem == nil) })
	switch {
	case err == nil:
		return d, nil
	case errors.Is(err, ErrCorrupt):
		s.log.Warn("artifacts: replacing a damaged blob with freshly computed bytes", "store", s.dir, "blob", d)
	case !errors.Is(err, ErrNotFound):
		return "", err
	}
	if err := s.checkSpace(int64(len(data))); err != nil {
		return "", err
	}
	n := (len(data) + s.chunk - 1) / s.chunk
	meta := blobMeta{Size: int64(len(data)), Chunks: n, ChunkSize: s.chunk, CRC: make([]uint32, n), Written: time.Now().Unix()}
	txn := db.NewTransaction(true)
	defer func() { txn.Discard() }()
	inTxn := 0
	for i := range n {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		lo, hi := i*s.chunk, min((i+1)*s.chunk, len(data))
		if inTxn > 0 && inTxn+hi-lo > s.txnBytes {
			if err := txn.Commit(); err != nil {
				return "", s.writeError(fmt.Sprintf("store blob %s", d), err)
			}
			txn = db.NewTransaction(true)
			inTxn = 0
		}
		meta.CRC[i] = crc32.Checksum(data[lo:hi], castagnoli)
		if err := txn.Set(chunkKey(d, i), data[lo:hi:hi]); err != nil {
			return "", s.writeError(fmt.Sprintf("store blob %s chunk %d", d, i), firstLine(err))
		}
		inTxn += hi - lo
	}
	mb, err := json.Marshal(meta)
	if err != nil {
		return "", err
	}
	if err := txn.Set(metaKey(d), mb); err != nil {
		return "", s.writeError(fmt.Sprintf("store blob %s meta", d), err)
	}
	if err := txn.Commit(); err != nil {
		return "", s.writeError(fmt.Sprintf("store blob %s", d), err)
	}
	return d, nil
}

// writeError wraps a failed write, as ErrNoSpace when the file system is full.
func (s *Badger) writeError(what string, err error) error {
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("artifacts: %s: %w on %s: %v", what, ErrNoSpace, s.dir, err)
	}
	return fmt.Errorf("artifacts: %s: %w", what, err)
}

// corruptf returns an error wrapping ErrCorrupt that names blob d and the way out.
func corruptf(d Digest, format string, a ...any) error {
	return fmt.Errorf("artifacts: blob %s is %w: %s; run `pipe artifacts verify --repair` and rerun the DAG to recompute it",
		d, ErrCorrupt, fmt.Sprintf(format, a...))
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
		return m, corruptf(d, "its meta is unreadable (%v)", err)
	}
	// Chunks 0 .. Chunks-2 are full; the last holds 1 .. ChunkSize bytes.
	if m.Size < 0 || m.Chunks < 0 || m.Chunks == 0 && m.Size != 0 || m.Chunks > 0 && (m.ChunkSize <= 0 ||
		int64(m.Chunks-1)*int64(m.ChunkSize) >= m.Size || m.Size > int64(m.Chunks)*int64(m.ChunkSize)) ||
		len(m.CRC) != 0 && len(m.CRC) != m.Chunks {
		return m, corruptf(d, "its meta is inconsistent (size %d, %d chunks of %d, %d checksums)", m.Size, m.Chunks, m.ChunkSize, len(m.CRC))
	}
	return m, nil
}

// Blob returns the bytes of a blob in one freshly allocated slice: each chunk is copied once,
// straight from Badger's memory-mapped value log into its place, and checked against its
// CRC-32C (or, for a blob stored without checksums, the whole blob against its digest).
func (s *Badger) Blob(ctx context.Context, d Digest) ([]byte, error) {
	if err := validDigest(d); err != nil {
		return nil, err
	}
	var out []byte
	err := s.view(ctx, func(txn *badger.Txn) error {
		m, err := getMeta(txn, d)
		if err != nil {
			return err
		}
		out = make([]byte, m.Size)
		for i := range m.Chunks {
			if err := ctx.Err(); err != nil {
				return err
			}
			lo := i * m.ChunkSize
			hi := min(lo+m.ChunkSize, len(out))
			if err := readChunk(txn, d, m, i, s.mem == nil, func(v []byte) { copy(out[lo:hi], v) }); err != nil {
				return err
			}
		}
		if len(m.CRC) == 0 && DigestOf(out) != d {
			return corruptf(d, "its bytes hash to %s", DigestOf(out))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readChunk checks chunk i of blob d (size, and CRC-32C when the meta has one) and hands
// its bytes to use, which must not keep them. With mapped (a store on disk, not in memory),
// a chunk of at least valueThreshold bytes lies in Badger's memory-mapped value log, and
// its pages are advised away after use (dropPages), so that reading a blob leaves only
// what the caller copied resident.
func readChunk(txn *badger.Txn, d Digest, m blobMeta, i int, mapped bool, use func(v []byte)) error {
	item, err := txn.Get(chunkKey(d, i))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return corruptf(d, "chunk %d of %d is missing", i, m.Chunks)
	}
	if err != nil {
		return fmt.Errorf("artifacts: blob %s chunk %d: %w", d, i, err)
	}
	want := int(min(int64(m.ChunkSize), m.Size-int64(i)*int64(m.ChunkSize)))
	return item.Value(func(v []byte) error {
		switch {
		case len(v) == 0:
			// Badger logs a value it cannot read and hands back an empty one.
			return corruptf(d, "chunk %d of %d is unreadable", i, m.Chunks)
		case len(v) != want:
			return corruptf(d, "chunk %d holds %d bytes, want %d", i, len(v), want)
		case len(m.CRC) > 0 && crc32.Checksum(v, castagnoli) != m.CRC[i]:
			return corruptf(d, "chunk %d of %d fails its checksum", i, m.Chunks)
		}
		use(v)
		if mapped && len(v) >= valueThreshold {
			dropPages(v)
		}
		return nil
	})
}

// VerifyBlob reads blob d without keeping its bytes and checks it: nil when intact, an error
// wrapping ErrNotFound when absent or ErrCorrupt when damaged.
func (s *Badger) VerifyBlob(ctx context.Context, d Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	return s.view(ctx, func(txn *badger.Txn) error { return verifyBlob(ctx, txn, d, s.mem == nil) })
}

// verifyBlob checks blob d in txn; mapped is readChunk's.
func verifyBlob(ctx context.Context, txn *badger.Txn, d Digest, mapped bool) error {
	m, err := getMeta(txn, d)
	if err != nil {
		return err
	}
	var h hash.Hash
	if len(m.CRC) == 0 {
		h = sha256.New()
	}
	for i := range m.Chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := readChunk(txn, d, m, i, mapped, func(v []byte) {
			if h != nil {
				h.Write(v)
			}
		}); err != nil {
			return err
		}
	}
	if h != nil {
		if sum := hex.EncodeToString(h.Sum(nil)); sum != string(d) {
			return corruptf(d, "its bytes hash to %s", sum)
		}
	}
	return nil
}

// BlobSize returns the size in bytes of a stored blob.
func (s *Badger) BlobSize(ctx context.Context, d Digest) (int64, error) {
	var m blobMeta
	err := s.view(ctx, func(txn *badger.Txn) error {
		var err error
		m, err = getMeta(txn, d)
		return err
	})
	return m.Size, err
}

// HasBlob reports whether a complete blob (its meta key) is present.
func (s *Badger) HasBlob(ctx context.Context, d Digest) (bool, error) {
	err := s.view(ctx, func(txn *badger.Txn) error {
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

// PutManifest stores m and points each of heads at it, in one transaction. Every output blob
// must already be stored (the write order of docs/design.md, "Store"); a missing one is an
// error.
func (s *Badger) PutManifest(ctx context.Context, m Manifest, heads ...Head) error {
	if m.Key == "" {
		return fmt.Errorf("artifacts: manifest needs a key")
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("artifacts: manifest %s: %w", m.Key, err)
	}
	hbs := make([][]byte, len(heads))
	for i, h := range heads {
		if h.Key != m.Key || h.DAG == "" || h.Stage == "" {
			return fmt.Errorf("artifacts: manifest %s: head %s/%s[%s] must name a DAG, a stage and key %s (got %q)", m.Key, h.DAG, h.Stage, h.Instance, m.Key, h.Key)
		}
		if hbs[i], err = json.Marshal(h); err != nil {
			return err
		}
	}
	db, release, err := s.acquire(ctx, true)
	if err != nil {
		return err
	}
	defer release()
	if err := s.checkSpace(int64(len(mb))); err != nil {
		return err
	}
	err = db.Update(func(txn *badger.Txn) error {
		for _, name := range slices.Sorted(maps.Keys(m.Outputs)) {
			d := m.Outputs[name].Digest
			if _, err := txn.Get(metaKey(d)); errors.Is(err, badger.ErrKeyNotFound) {
				return fmt.Errorf("output %q: blob %s is not stored (store blobs before the manifest)", name, d)
			} else if err != nil {
				return err
			}
		}
		if err := txn.Set(manifestKey(m.Key), mb); err != nil {
			return err
		}
		for i, h := range heads {
			if err := txn.Set(headKey(h.DAG, h.Stage, h.Instance), hbs[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.writeError(fmt.Sprintf("manifest %s", m.Key), err)
	}
	return nil
}

// PutHead points head h at the manifest stored under h.Key, which must exist.
func (s *Badger) PutHead(ctx context.Context, h Head) error {
	if h.DAG == "" || h.Stage == "" || h.Key == "" {
		return fmt.Errorf("artifacts: head needs a DAG, a stage and a key (got %q, %q, %q)", h.DAG, h.Stage, h.Key)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return err
	}
	db, release, err := s.acquire(ctx, true)
	if err != nil {
		return err
	}
	defer release()
	if err := s.checkSpace(int64(len(hb))); err != nil {
		return err
	}
	err = db.Update(func(txn *badger.Txn) error {
		if _, err := txn.Get(manifestKey(h.Key)); errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("manifest %s: %w", h.Key, ErrNotFound)
		} else if err != nil {
			return err
		}
		return txn.Set(headKey(h.DAG, h.Stage, h.Instance), hb)
	})
	if err != nil {
		return s.writeError(fmt.Sprintf("head %s/%s[%s]", h.DAG, h.Stage, h.Instance), err)
	}
	return nil
}

// Manifest returns the manifest stored under key. An absent manifest gives an error wrapping
// ErrNotFound; a corrupt one wraps ErrNotFound and ErrCorrupt and is logged at warning level.
func (s *Badger) Manifest(ctx context.Context, key string) (Manifest, error) {
	var m Manifest
	err := s.view(ctx, func(txn *badger.Txn) error {
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

// DecodeManifest parses a stored manifest's JSON and checks that it records key.
func DecodeManifest(key string, v []byte) (Manifest, error) {
	var m Manifest
	err := json.Unmarshal(v, &m)
	if err == nil && m.Key != key {
		err = fmt.Errorf("it records key %q", m.Key)
	}
	if err == nil {
		for name, o := range m.Outputs {
			if verr := validDigest(o.Digest); verr != nil {
				err = fmt.Errorf("output %q: %v", name, verr)
				break
			}
		}
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("artifacts: manifest %s is corrupt (%v), treating it as a miss: %w (%w)", key, err, ErrCorrupt, ErrNotFound)
	}
	return m, nil
}

// decodeManifest is DecodeManifest that also logs a corrupt manifest.
func (s *Badger) decodeManifest(key string, v []byte) (Manifest, error) {
	m, err := DecodeManifest(key, v)
	if err != nil {
		s.log.Warn("artifacts: corrupt manifest treated as a cache miss", "store", s.dir, "key", key, "err", err)
	}
	return m, err
}

// Head returns the latest key of a DAG stage instance.
func (s *Badger) Head(ctx context.Context, dag, stage, instance string) (Head, error) {
	var h Head
	err := s.view(ctx, func(txn *badger.Txn) error {
		item, err := txn.Get(headKey(dag, stage, instance))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("artifacts: head %s/%s[%s]: %w", dag, stage, instance, ErrNotFound)
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if err := json.Unmarshal(v, &h); err != nil {
				return fmt.Errorf("%w: %v", ErrCorrupt, err)
			}
			return nil
		})
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
	err := s.scan(ctx, []byte(prefix), func(k, v []byte) error {
		var h Head
		if err := json.Unmarshal(v, &h); err != nil {
			return fmt.Errorf("artifacts: head %s is %w: %v; run `pipe artifacts verify --repair`", k, ErrCorrupt, err)
		}
		out = append(out, h)
		return nil
	})
	return out, err
}

// Manifests lists every readable manifest in key order; corrupt ones are logged and skipped.
func (s *Badger) Manifests(ctx context.Context) ([]Manifest, error) {
	var out []Manifest
	err := s.scan(ctx, []byte(manifestPrefix), func(k, v []byte) error {
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
	db, release, err := s.acquire(ctx, true)
	if err != nil {
		return err
	}
	defer release()
	if err := s.checkSpace(int64(len(b))); err != nil {
		return err
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(runKey(r.ID), b) }); err != nil {
		return s.writeError(fmt.Sprintf("run %s", r.ID), err)
	}
	return nil
}

// Run returns one run record.
func (s *Badger) Run(ctx context.Context, id string) (Run, error) {
	var r Run
	err := s.view(ctx, func(txn *badger.Txn) error {
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

// Runs lists run records, oldest first (UUIDv7 keys sort by time). Unreadable ones are
// logged and skipped.
func (s *Badger) Runs(ctx context.Context) ([]Run, error) {
	var out []Run
	err := s.scan(ctx, []byte(runPrefix), func(k, v []byte) error {
		var r Run
		if err := json.Unmarshal(v, &r); err != nil {
			s.log.Warn("artifacts: unreadable run record skipped", "store", s.dir, "key", string(k), "err", err)
			return nil
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// scan calls fn with every key and value under prefix, in key order. The slices are only
// valid during the call.
func (s *Badger) scan(ctx context.Context, prefix []byte, fn func(k, v []byte) error) error {
	return s.view(ctx, func(txn *badger.Txn) error { return scanTxn(txn, prefix, fn) })
}

func scanTxn(txn *badger.Txn, prefix []byte, fn func(k, v []byte) error) error {
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
}

// badgerLogger routes Badger's log lines to slog at debug level, errors included: the store
// turns every failure that matters into an error of its own (a value Badger cannot read is
// ErrCorrupt), and Badger's raw lines (key bytes, offsets) only help with debugging.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, a ...any) {
	b.l.Debug("badger: " + strings.TrimSpace(fmt.Sprintf(f, a...)))
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
