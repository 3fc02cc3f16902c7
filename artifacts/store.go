// Package artifacts is pipe's content-addressed artifact store: Arrow IPC blobs addressed by
// their sha256, stage manifests keyed by cache key, heads and run records. It knows no stage
// kind. See DESIGN.md, "Store".
package artifacts

import (
	"context"
	"errors"
	"time"
)

// Digest is the lowercase hex sha256 of an artifact's Arrow IPC stream bytes.
type Digest string

// ErrNotFound is returned (wrapped) when a blob, manifest, head or run is absent.
var ErrNotFound = errors.New("not found")

// ErrLocked is returned by Open when another pipe process holds the store.
var ErrLocked = errors.New("store is locked by another pipe process")

// Output describes one named output table of a stage instance.
type Output struct {
	Digest Digest `json:"digest"`
	Rows   int64  `json:"rows"`
	Bytes  int64  `json:"bytes"`
}

// Manifest records one completed stage instance, keyed by its cache key. It holds the key's
// parts so that `pipe status` can explain why a stage is stale.
type Manifest struct {
	Key      string            `json:"key"`
	DAG      string            `json:"dag"`
	Stage    string            `json:"stage"`
	Instance string            `json:"instance"`
	Kind     string            `json:"kind"`
	Version  int               `json:"version"`
	Params   map[string]any    `json:"params"`
	Seed     uint64            `json:"seed"`
	Inputs   map[string]Digest `json:"inputs"` // "stage[instance]/output" -> digest
	Outputs  map[string]Output `json:"outputs"`
	Seconds  float64           `json:"seconds"`
	Created  time.Time         `json:"created"`
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
// goroutines of one process; one process at a time holds a store (see ErrLocked).
//
// Write order is the crash-safety contract: PutBlob before PutManifest, and PutManifest
// writes the manifest and its head in one transaction, so a crash leaves at most
// unreferenced blobs, which GC removes.
type Store interface {
	// PutBlob stores Arrow IPC stream bytes and returns their digest. Storing bytes that
	// are already present is cheap and not an error.
	PutBlob(ctx context.Context, data []byte) (Digest, error)
	// Blob returns the bytes of a blob.
	Blob(ctx context.Context, d Digest) ([]byte, error)
	// HasBlob reports whether a blob is present.
	HasBlob(ctx context.Context, d Digest) (bool, error)
	// PutManifest stores m under m.Key and points the head (m.DAG, m.Stage, m.Instance) at it,
	// atomically.
	PutManifest(ctx context.Context, m Manifest) error
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
