// Package remote is pipe's shared remote cache: a second content-addressed store behind the
// local Badger store, on a gocloud.dev/blob bucket (a shared folder, file:///dir, or an S3
// bucket, s3://bucket/prefix?region=...). See docs/design.md, "Remote cache".
//
// The bucket holds three kinds of objects:
//
//	blobs/<sha256>                         the exact Arrow IPC bytes the local store holds
//	manifests/<key>.json                   an artifacts.Manifest, as JSON
//	heads/<dag>/<stage>/<instance>.json    an artifacts.Head ("_" for a shared instance)
//
// Blobs are write-once and verified by their sha256 on pull. A manifest is written only
// after all of its blobs are present, with one atomic put, so a push that dies half-way
// leaves at most unreferenced blobs, never a manifest whose outputs are missing. Two pushes
// of one key (from two machines) write the same blobs by digest; the second finds the
// manifest present and skips it.
//
// Credentials come only from the AWS SDK's default chain (AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/credentials and ~/.aws/config); they are never
// part of the URL and never printed.
package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/blob/s3blob"
	"gocloud.dev/gcerrors"

	"github.com/pipe-ahl/pipe/artifacts"
)

// Remote is an open remote cache. It is safe for concurrent use.
type Remote struct {
	bucket *blob.Bucket
	url    string // the URL as given, without any user info, for messages

	blobsUp, blobsDown, bytesUp, bytesDown, manifestsUp, manifestsDown atomic.Int64
	pushNanos, pullNanos                                               atomic.Int64

	pullMu  sync.Mutex
	pulling map[artifacts.Digest]chan struct{} // closed when the pull of that blob ends
}

// Stats counts what a Remote moved since it was opened.
type Stats struct {
	// ManifestsPushed and ManifestsPulled count manifests written to and read into a store.
	ManifestsPushed, ManifestsPulled int64
	// BlobsPushed and BlobsPulled count blobs moved (present ones are not counted).
	BlobsPushed, BlobsPulled int64
	// BytesPushed and BytesPulled count the blobs' bytes moved.
	BytesPushed, BytesPulled int64
	// PushSeconds and PullSeconds sum the time spent in Push and Pull (calls that overlap
	// each count in full).
	PushSeconds, PullSeconds float64
}

// Error is a failure to reach or use the remote (as opposed to an object being absent or
// damaged). It counts as an unusable store (errors.Is artifacts.ErrUnreadable), so that pipe
// exits with the store's code.
type Error struct {
	URL string // without credentials
	Op  string // what was being done: "open", "read manifests/<key>.json", ...
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("remote %s: %s: %v", e.URL, e.Op, e.Err) }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is makes an Error match artifacts.ErrUnreadable.
func (e *Error) Is(target error) bool { return target == artifacts.ErrUnreadable }

// Open opens the remote cache at rawURL:
//
//   - file:///abs/dir: a folder (a shared file system); it is created when absent. Objects
//     are written to a temporary file beside their final name and renamed, so a reader never
//     sees a partial object.
//   - s3://bucket/prefix?region=R&endpoint=URL&...: an S3 bucket, objects under prefix (the
//     URL path, or a prefix=P query parameter). The other query parameters are those of
//     gocloud.dev/blob/s3blob (region, endpoint, profile, use_path_style, disable_https,
//     hostname_immutable, anonymous, request_checksum_calculation,
//     response_checksum_validation, ...). With an endpoint and no use_path_style, path-style
//     addressing is used (what S3-compatible servers such as SeaweedFS and MinIO expect).
//     response_checksum_validation defaults to when_required: pipe verifies each blob's
//     sha256 itself.
//
// Open checks that the remote can be listed, so that an unreachable remote is an error here
// rather than in the middle of a run.
func Open(ctx context.Context, rawURL string) (*Remote, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &Error{URL: "(unparsable URL)", Op: "open", Err: errors.New("not a URL: want file:///abs/dir or s3://bucket/prefix?region=R")}
	}
	shown := redact(u)
	var b *blob.Bucket
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return nil, &Error{URL: shown, Op: "open", Err: fmt.Errorf("file URL with host %q: want file:///abs/dir (three slashes)", u.Host)}
		}
		if len(u.Query()) > 0 {
			return nil, &Error{URL: shown, Op: "open", Err: errors.New("file URLs take no query parameters")}
		}
		dir := filepath.FromSlash(u.Path)
		if !filepath.IsAbs(dir) {
			return nil, &Error{URL: shown, Op: "open", Err: errors.New("want an absolute folder: file:///abs/dir")}
		}
		b, err = fileblob.OpenBucket(dir, &fileblob.Options{CreateDir: true, NoTempDir: true, Metadata: fileblob.MetadataDontWrite})
	case "s3":
		if u.Host == "" {
			return nil, &Error{URL: shown, Op: "open", Err: errors.New("no bucket: want s3://bucket/prefix?region=R")}
		}
		q := u.Query()
		prefix := strings.Trim(u.Path, "/")
		if p := q.Get("prefix"); p != "" {
			if prefix != "" {
				return nil, &Error{URL: shown, Op: "open", Err: errors.New("a prefix both in the path and as prefix=: give one")}
			}
			prefix = strings.Trim(p, "/")
		}
		q.Del("prefix")
		if q.Get("endpoint") != "" && q.Get("use_path_style") == "" && q.Get("s3ForcePathStyle") == "" {
			q.Set("use_path_style", "true")
		}
		// pipe checks every pulled blob against its sha256. The SDK's own response checks
		// add nothing to that, and on objects uploaded in parts (blobs over 5 MiB) or without
		// a stored checksum it skips them with a WARN line on stderr, around pipe's output.
		if q.Get("response_checksum_validation") == "" {
			q.Set("response_checksum_validation", "when_required")
		}
		bu := &url.URL{Scheme: "s3", Host: u.Host, RawQuery: q.Encode()}
		b, err = (&s3blob.URLOpener{}).OpenBucketURL(ctx, bu)
		if err == nil && prefix != "" {
			b = blob.PrefixedBucket(b, prefix+"/")
		}
	default:
		return nil, &Error{URL: shown, Op: "open", Err: fmt.Errorf("scheme %q is not supported: want file:///abs/dir or s3://bucket/prefix?region=R", u.Scheme)}
	}
	if err != nil {
		return nil, &Error{URL: shown, Op: "open", Err: err}
	}
	r := &Remote{bucket: b, url: shown}
	if _, _, err := b.ListPage(ctx, blob.FirstPageToken, 1, &blob.ListOptions{Prefix: "manifests/"}); err != nil {
		_ = b.Close()
		return nil, r.fail("list manifests/", err)
	}
	return r, nil
}

// redact returns u as text without user info (a key or password written into the URL).
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// URL returns the remote's URL as given, without user info.
func (r *Remote) URL() string { return r.url }

// Close releases the bucket.
func (r *Remote) Close() error {
	if err := r.bucket.Close(); err != nil {
		return r.fail("close", err)
	}
	return nil
}

// Stats returns what the remote moved since it was opened.
func (r *Remote) Stats() Stats {
	return Stats{ManifestsPushed: r.manifestsUp.Load(), ManifestsPulled: r.manifestsDown.Load(),
		BlobsPushed: r.blobsUp.Load(), BlobsPulled: r.blobsDown.Load(),
		BytesPushed: r.bytesUp.Load(), BytesPulled: r.bytesDown.Load(),
		PushSeconds: float64(r.pushNanos.Load()) / 1e9, PullSeconds: float64(r.pullNanos.Load()) / 1e9}
}

// timed adds the time until the returned func is called to n.
func (r *Remote) timed(n *atomic.Int64) func() {
	start := time.Now()
	return func() { n.Add(int64(time.Since(start))) }
}

func (r *Remote) fail(op string, err error) error {
	return &Error{URL: r.url, Op: op, Err: err}
}

func blobKey(d artifacts.Digest) string { return "blobs/" + string(d) }

func manifestKey(key string) string { return "manifests/" + key + ".json" }

func headKey(dag, stage, instance string) string {
	if instance == "" {
		instance = "_"
	}
	return "heads/" + url.PathEscape(dag) + "/" + url.PathEscape(stage) + "/" + url.PathEscape(instance) + ".json"
}

// validKey reports whether a cache key can name an object (it is hex in practice).
func validKey(key string) error {
	if key == "" || strings.ContainsAny(key, "/\\") || strings.HasPrefix(key, ".") {
		return fmt.Errorf("remote: %q is not a cache key", key)
	}
	return nil
}

func notFound(err error) bool { return gcerrors.Code(err) == gcerrors.NotFound }

// Manifest returns the manifest stored under key. An absent one is an error wrapping
// artifacts.ErrNotFound; one that does not parse wraps both ErrNotFound and ErrCorrupt (a
// miss, as in the local store).
func (r *Remote) Manifest(ctx context.Context, key string) (artifacts.Manifest, error) {
	if err := validKey(key); err != nil {
		return artifacts.Manifest{}, err
	}
	v, err := r.bucket.ReadAll(ctx, manifestKey(key))
	if notFound(err) {
		return artifacts.Manifest{}, fmt.Errorf("remote %s: manifest %s: %w", r.url, key, artifacts.ErrNotFound)
	}
	if err != nil {
		return artifacts.Manifest{}, r.fail("read "+manifestKey(key), err)
	}
	m, err := artifacts.DecodeManifest(key, v)
	if err != nil {
		return artifacts.Manifest{}, fmt.Errorf("remote %s: %w", r.url, err)
	}
	return m, nil
}

// HasManifest reports whether a manifest is stored under key (without reading it).
func (r *Remote) HasManifest(ctx context.Context, key string) (bool, error) {
	if err := validKey(key); err != nil {
		return false, err
	}
	ok, err := r.bucket.Exists(ctx, manifestKey(key))
	if err != nil {
		return false, r.fail("look up "+manifestKey(key), err)
	}
	return ok, nil
}

// Pull copies m's blobs that local lacks (or holds damaged) from the remote, checks each
// against its digest, then stores m and points heads at it in local. A remote blob that is
// absent is an error wrapping artifacts.ErrNotFound; one whose bytes do not match its digest
// wraps artifacts.ErrCorrupt, and nothing of m is stored locally.
func (r *Remote) Pull(ctx context.Context, local artifacts.Store, m artifacts.Manifest, heads ...artifacts.Head) error {
	defer r.timed(&r.pullNanos)()
	for _, name := range sortedKeys(m.Outputs) {
		if err := r.pullBlob(ctx, local, m.Outputs[name]); err != nil {
			return fmt.Errorf("pull output %q of %s: %w", name, m.Key, err)
		}
	}
	if err := local.PutManifest(ctx, m, heads...); err != nil {
		return err
	}
	r.manifestsDown.Add(1)
	return nil
}

// pullBlob copies one blob into local unless local holds it intact. Concurrent pulls of one
// digest (instances that share an output) wait for the first instead of reading it again.
func (r *Remote) pullBlob(ctx context.Context, local artifacts.Store, o artifacts.Output) error {
	for {
		r.pullMu.Lock()
		wait, busy := r.pulling[o.Digest]
		if !busy {
			if r.pulling == nil {
				r.pulling = map[artifacts.Digest]chan struct{}{}
			}
			r.pulling[o.Digest] = make(chan struct{})
		}
		r.pullMu.Unlock()
		if !busy {
			break
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer func() {
		r.pullMu.Lock()
		close(r.pulling[o.Digest])
		delete(r.pulling, o.Digest)
		r.pullMu.Unlock()
	}()
	err := local.VerifyBlob(ctx, o.Digest)
	if err == nil {
		return nil
	}
	if !errors.Is(err, artifacts.ErrNotFound) && !errors.Is(err, artifacts.ErrCorrupt) {
		return err
	}
	data, err := r.readBlob(ctx, o)
	if err != nil {
		return err
	}
	if _, err := local.PutBlob(ctx, data); err != nil {
		return err
	}
	r.blobsDown.Add(1)
	r.bytesDown.Add(int64(len(data)))
	return nil
}

// readBlob reads blob o.Digest whole and checks its sha256.
func (r *Remote) readBlob(ctx context.Context, o artifacts.Output) ([]byte, error) {
	k := blobKey(o.Digest)
	rd, err := r.bucket.NewReader(ctx, k, nil)
	if notFound(err) {
		return nil, fmt.Errorf("remote %s: blob %s: %w", r.url, k, artifacts.ErrNotFound)
	}
	if err != nil {
		return nil, r.fail("read "+k, err)
	}
	defer func() { _ = rd.Close() }() // a reader: nothing to flush
	size := rd.Size()
	if o.Bytes > 0 && size != o.Bytes {
		return nil, fmt.Errorf("remote %s: blob %s holds %d bytes, its manifest says %d: %w", r.url, k, size, o.Bytes, artifacts.ErrCorrupt)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if _, err := buf.ReadFrom(rd); err != nil {
		return nil, r.fail("read "+k, err)
	}
	data := buf.Bytes()
	if d := artifacts.DigestOf(data); d != o.Digest {
		return nil, fmt.Errorf("remote %s: blob %s does not match its digest (its bytes hash to %s; remove the object and push again): %w", r.url, k, d, artifacts.ErrCorrupt)
	}
	return data, nil
}

// Push copies m's blobs that the remote lacks from local, then m, then points heads at it.
// When the remote holds m already, only the heads are written (those that differ). Blobs are
// streamed (one chunk in memory at a time) and checked against their digest on the way; a
// blob already present with the right size is not written again.
func (r *Remote) Push(ctx context.Context, local artifacts.Store, m artifacts.Manifest, heads ...artifacts.Head) error {
	defer r.timed(&r.pushNanos)()
	if err := validKey(m.Key); err != nil {
		return err
	}
	has, err := r.HasManifest(ctx, m.Key)
	if err != nil {
		return err
	}
	if !has {
		for _, name := range sortedKeys(m.Outputs) {
			if err := r.pushBlob(ctx, local, m.Outputs[name]); err != nil {
				return fmt.Errorf("push output %q of %s: %w", name, m.Key, err)
			}
		}
		v, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("encode manifest %s: %w", m.Key, err)
		}
		if err := r.bucket.WriteAll(ctx, manifestKey(m.Key), v, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
			return r.fail("write "+manifestKey(m.Key), err)
		}
		r.manifestsUp.Add(1)
	}
	for _, h := range heads {
		if h.Key != m.Key {
			return fmt.Errorf("remote: head %s/%s[%s] names key %s, not the pushed manifest %s", h.DAG, h.Stage, h.Instance, h.Key, m.Key)
		}
		if err := r.PutHead(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

// pushBlob streams one local blob to the remote unless it is there with the right size.
func (r *Remote) pushBlob(ctx context.Context, local artifacts.Store, o artifacts.Output) error {
	k := blobKey(o.Digest)
	attrs, err := r.bucket.Attributes(ctx, k)
	switch {
	case err == nil && attrs.Size == o.Bytes:
		return nil
	case err != nil && !notFound(err):
		return r.fail("look up "+k, err)
	}
	src, err := artifacts.OpenBlob(ctx, local, o.Digest)
	if err != nil {
		return err
	}
	defer src.Close()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := r.bucket.NewWriter(wctx, k, &blob.WriterOptions{ContentType: "application/vnd.apache.arrow.stream"})
	if err != nil {
		return r.fail("write "+k, err)
	}
	h := sha256.New()
	size := src.Size()
	buf := make([]byte, min(int64(artifacts.ChunkSize), size))
	for off := int64(0); off < size; {
		n := min(int64(len(buf)), size-off)
		p := buf[:n]
		if err := src.ReadAt(ctx, p, off); err != nil {
			cancel() // the writer is abandoned: nothing becomes visible
			_ = w.Close()
			return err
		}
		h.Write(p)
		if _, err := w.Write(p); err != nil {
			cancel()
			_ = w.Close()
			return r.fail("write "+k, err)
		}
		off += n
	}
	if d := hex.EncodeToString(h.Sum(nil)); d != string(o.Digest) {
		cancel()
		_ = w.Close()
		return fmt.Errorf("local blob %s hashes to %s (run pipe verify --repair): %w", o.Digest, d, artifacts.ErrCorrupt)
	}
	if err := w.Close(); err != nil {
		return r.fail("write "+k, err)
	}
	r.blobsUp.Add(1)
	r.bytesUp.Add(size)
	return nil
}

// Head returns the remote head of a DAG stage instance (an error wrapping
// artifacts.ErrNotFound when absent).
func (r *Remote) Head(ctx context.Context, dag, stage, instance string) (artifacts.Head, error) {
	k := headKey(dag, stage, instance)
	v, err := r.bucket.ReadAll(ctx, k)
	if notFound(err) {
		return artifacts.Head{}, fmt.Errorf("remote %s: head %s: %w", r.url, k, artifacts.ErrNotFound)
	}
	if err != nil {
		return artifacts.Head{}, r.fail("read "+k, err)
	}
	var h artifacts.Head
	if err := json.Unmarshal(v, &h); err != nil || h.DAG != dag || h.Stage != stage || h.Instance != instance {
		return artifacts.Head{}, fmt.Errorf("remote %s: head %s does not parse or names another instance, treated as absent: %w (%w)", r.url, k, artifacts.ErrCorrupt, artifacts.ErrNotFound)
	}
	return h, nil
}

// PutHead points a remote head at a key (the manifest should be pushed first). A head that
// names the key already is not written again.
func (r *Remote) PutHead(ctx context.Context, h artifacts.Head) error {
	if err := validKey(h.Key); err != nil {
		return err
	}
	if old, err := r.Head(ctx, h.DAG, h.Stage, h.Instance); err == nil && old.Key == h.Key {
		return nil
	}
	v, err := json.Marshal(h)
	if err != nil {
		return err
	}
	k := headKey(h.DAG, h.Stage, h.Instance)
	if err := r.bucket.WriteAll(ctx, k, v, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return r.fail("write "+k, err)
	}
	return nil
}

// Heads lists the remote heads of one DAG (of every DAG when dag is ""), sorted by DAG,
// stage and instance. Heads that do not parse are left out.
func (r *Remote) Heads(ctx context.Context, dag string) ([]artifacts.Head, error) {
	prefix := "heads/"
	if dag != "" {
		prefix += url.PathEscape(dag) + "/"
	}
	var out []artifacts.Head
	it := r.bucket.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, r.fail("list "+prefix, err)
		}
		if obj.IsDir || !strings.HasSuffix(obj.Key, ".json") {
			continue // fileblob's temporary files of a write in progress end in .tmp
		}
		v, err := r.bucket.ReadAll(ctx, obj.Key)
		if notFound(err) {
			continue
		}
		if err != nil {
			return nil, r.fail("read "+obj.Key, err)
		}
		var h artifacts.Head
		if json.Unmarshal(v, &h) != nil || headKey(h.DAG, h.Stage, h.Instance) != obj.Key {
			continue
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.DAG != b.DAG {
			return a.DAG < b.DAG
		}
		if a.Stage != b.Stage {
			return a.Stage < b.Stage
		}
		return a.Instance < b.Instance
	})
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
