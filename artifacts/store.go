// Package artifacts is pipe's content-addressed artifact store: Arrow IPC blobs addressed by
// their sha256, stage manifests keyed by cache key, heads and run records. It knows no stage
// kind. See docs/design.md, "Store".
package artifacts

import (
	"context"
	"errors"
	"time"
)

// Digest is the lowercase hex sha256 of an artifact's Arrow IPC stream bytes.
type Digest string

// The store's errors. Callers classify with errors.Is, never by message text.
var (
	// ErrNotFound is returned (wrapped) when a blob, manifest, head or run is absent. A
	// corrupt manifest wraps both ErrNotFound and ErrCorrupt, so that callers treat it as a
	// cache miss and can still say why.
	ErrNotFound = errors.New("not found")
	// ErrCorrupt is returned (wrapped) when stored bytes fail their checksum or digest, or a
	// stored record does not parse. The message names the artifact and the way out.
	ErrCorrupt = errors.New("damaged on disk")
	// ErrLocked is returned when another pipe process held the store for longer than the
	// lock wait (see WithLockWait).
	ErrLocked = errors.New("store is locked by another pipe process")
	// ErrNoSpace is returned before a write that the store's file system has no room for,
	// so that Badger never faults on a memory-mapped page it cannot back.
	ErrNoSpace = errors.New("no space left")
	// ErrStoreMissing is returned by Open with ReadOnly when the folder is absent or holds
	// no store: a read command never creates an empty store.
	ErrStoreMissing = errors.New("no store")
	// ErrReadOnly is returned by a write to a store opened with ReadOnly.
	ErrReadOnly = errors.New("store is opened read-only")
)

// Unusable reports whether err means the store itself cannot be used (full, damaged beyond
// a cache miss, unreadable, missing), as opposed to a stage failing.
func Unusable(err error) bool {
	return errors.Is(err, ErrNoSpace) || errors.Is(err, ErrStoreMissing) || errors.Is(err, ErrUnreadable)
}

// ErrUnreadable is returned (wrapped) when the store's files cannot be opened or read at
// all (Badger refuses to open them, or the file system fails).
var ErrUnreadable = errors.New("store is unreadable")

// Output describes one named output table of a stage instance.
type Output struct {
	Digest Digest `json:"digest"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
}

// Manifest records one completed stage computation, keyed by its cache key. It is content
// only: it holds the key's parts (so that `pipe status` can explain why a stage is stale) and
// the outputs, but no DAG, stage or instance name, because several DAGs may reach the same
// key. Names live on heads (Head), which point at manifests.
type Manifest struct {
	Key     string            `json:"key"`
	Kind    string            `json:"kind"`
	Version int               `json:"version"`
	Params  map[string]any    `json:"params"`
	Seed    uint64            `json:"seed"`
	Inputs  map[string]Digest `json:"inputs"` // "stage[instance]/output" -> digest
	Outputs map[string]Output `json:"outputs"`
	Seconds float64           `json:"seconds"`
	Created time.Time         `json:"created"`
}

// Head names the latest manifest of one DAG instance of one stage.
type Head struct {
	DAG      string `json:"dag"`
	Stage    string `json:"stage"`
	Instance string `json:"instance"`
	Key      string `json:"key"`
}

// Run is the record of one `pipe run`, keyed by a UUIDv7.
type Run struct {
	ID       string    `json:"id"`
	DAG      string    `json:"dag"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Keys     []string  `json:"keys"` // manifests the run produced or reused
	Pinned   bool      `json:"pinned"`
	Status   string    `json:"status"` // ok | failed | interrupted
}

// Store is the artifact store. Implementations must be safe for concurrent use by the
// goroutines of one process, and several processes may share one store (see Badger).
//
// Write order is the crash-safety contract: PutBlob before PutManifest, and PutManifest
// writes the manifest and its heads in one transaction, so a crash leaves at most
// unreferenced blobs, which GC removes.
type Store interface {
	// PutBlob stores Arrow IPC stream bytes and returns their digest. Storing bytes that
	// are already present and intact is cheap and not an error; a damaged copy is replaced.
	PutBlob(ctx context.Context, data []byte) (Digest, error)
	// Blob returns the bytes of a blob, verified: damage gives an error wrapping ErrCorrupt.
	Blob(ctx context.Context, d Digest) ([]byte, error)
	// HasBlob reports whether a blob is present (without reading its bytes).
	HasBlob(ctx context.Context, d Digest) (bool, error)
	// VerifyBlob reads a blob and checks it without keeping its bytes: nil when intact, an
	// error wrapping ErrNotFound when absent or ErrCorrupt when damaged.
	VerifyBlob(ctx context.Context, d Digest) error
	// PutManifest stores m under m.Key and points each head (whose Key must be m.Key) at
	// it, atomically.
	PutManifest(ctx context.Context, m Manifest, heads ...Head) error
	// PutHead points a head at an already stored manifest.
	PutHead(ctx context.Context, h Head) error
	// Manifest returns the manifest stored under key. A corrupt manifest is reported as an
	// error wrapping ErrNotFound, so callers treat it as a cache miss.
	Manifest(ctx context.Context, key string) (Manifest, error)
	// Head returns the latest key of a DAG stage instance.
	Head(ctx context.Context, dag, stage, instance string) (Head, error)
	// Heads lists all heads, of one DAG when dag is not empty.
	Heads(ctx context.Context, dag string) ([]Head, error)
	// Manifests lists every stored manifest.
	Manifests(ctx context.Context) ([]Manifest, error)
	// PutRun stores a run record.
	PutRun(ctx context.Context, r Run) error
	// Runs lists run records.
	Runs(ctx context.Context) ([]Run, error)
	// Close releases the store and its lock.
	Close() error
}
