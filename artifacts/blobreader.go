package artifacts

import (
	"context"
	"fmt"
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// BlobReader reads byte ranges of one stored blob without loading the rest of it, so that a
// stage can read the few columns or rows of a large table it needs (see TableReader).
//
// Every byte it returns has been checked: a chunk's CRC-32C is verified before any of its
// bytes are used, and damage is an error wrapping ErrCorrupt, as with Blob. A blob stored
// before chunk checksums existed can only be checked whole, against its digest: OpenBlob
// then reads and keeps it whole.
//
// It holds no Badger handle between calls (see handle.go): each ReadAt takes the store's
// read handle for the chunks it touches and lets it go before it returns, so a stage may keep
// a BlobReader open for as long as it computes. It keeps the last chunk it read partly (one
// chunk, ChunkSize bytes), so that reading a table row by row reads and checks each chunk
// once. A BlobReader is safe for concurrent use.
type BlobReader struct {
	s    *Badger // nil when the bytes are held in memory (whole)
	d    Digest
	meta blobMeta

	whole []byte // the bytes, when held in memory

	mu     sync.Mutex
	closed bool
	cache  []byte // the verified bytes of chunk cached, or nil
	cached int
	// fetched counts the chunks read from the store, for tests.
	fetched int
}

// OpenBlob opens blob d of s for ranged reads. It reads only the blob's meta (a missing blob
// is ErrNotFound); the bytes are read by ReadAt. A blob without chunk checksums, or one in a
// Store other than Badger, is read and checked whole here.
func OpenBlob(ctx context.Context, s Store, d Digest) (*BlobReader, error) {
	if err := validDigest(d); err != nil {
		return nil, err
	}
	b, ok := s.(*Badger)
	if ok {
		var m blobMeta
		err := b.view(ctx, func(txn *badger.Txn) error {
			var err error
			m, err = getMeta(txn, d)
			return err
		})
		if err != nil {
			return nil, err
		}
		if m.Chunks == 0 || len(m.CRC) > 0 {
			return &BlobReader{s: b, d: d, meta: m, cached: -1}, nil
		}
	}
	data, err := s.Blob(ctx, d)
	if err != nil {
		return nil, err
	}
	r := BytesBlob(data)
	r.d = d
	return r, nil
}

// BytesBlob returns a BlobReader over bytes already in memory (for example an encoded table
// that never went through a store). Its reads copy from data, which must not change.
func BytesBlob(data []byte) *BlobReader {
	return &BlobReader{whole: data, meta: blobMeta{Size: int64(len(data))}, cached: -1}
}

// Size returns the blob's size in bytes.
func (r *BlobReader) Size() int64 { return r.meta.Size }

// Digest returns the blob's digest, or "" for a BytesBlob.
func (r *BlobReader) Digest() Digest { return r.d }

// name is how errors name the blob.
func (r *BlobReader) name() string {
	if r.d == "" {
		return "in memory"
	}
	return string(r.d)
}

// maxChunksPerView bounds the chunks one read transaction copies, so that a long ReadAt
// lets other processes' writers in between (16 chunks: 64 MiB, a few tens of milliseconds).
const maxChunksPerView = 16

// ReadAt reads len(p) bytes of the blob starting at off into p. A range outside the blob is
// an error; a damaged chunk is an error wrapping ErrCorrupt, and p's contents are then
// undefined.
func (r *BlobReader) ReadAt(ctx context.Context, p []byte, off int64) error {
	n := int64(len(p))
	if off < 0 || n > r.meta.Size || off > r.meta.Size-n {
		return fmt.Errorf("artifacts: blob %s: bytes [%d, %d) are outside its %d bytes", r.name(), off, off+n, r.meta.Size)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("artifacts: blob %s: read after Close", r.name())
	}
	if n == 0 {
		return nil
	}
	if r.s == nil {
		copy(p, r.whole[off:off+n])
		return nil
	}
	cs := int64(r.meta.ChunkSize)
	first, last := int(off/cs), int((off+n-1)/cs)
	for i := first; i <= last; {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i == r.cached {
			r.copyOut(p, off, i, r.cache)
			i++
			continue
		}
		// Read chunks i.. (up to the next cached one) in one transaction.
		end := min(last+1, i+maxChunksPerView)
		if r.cached > i && r.cached < end {
			end = r.cached
		}
		err := r.s.view(ctx, func(txn *badger.Txn) error {
			for j := i; j < end; j++ {
				if err := ctx.Err(); err != nil {
					return err
				}
				lo, hi := int64(j)*cs, min(int64(j+1)*cs, r.meta.Size)
				whole := off <= lo && off+n >= hi
				r.fetched++
				err := readChunk(txn, r.d, r.meta, j, r.s.mem == nil, func(v []byte) {
					if whole {
						r.copyOut(p, off, j, v)
						return
					}
					r.cache = append(r.cache[:0], v...)
					r.cached = j
					r.copyOut(p, off, j, r.cache)
				})
				if err != nil {
					if r.cached == j {
						r.cache, r.cached = r.cache[:0], -1
					}
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		i = end
	}
	return nil
}

// Close drops the reader's cached chunk and in-memory bytes; reads after Close fail.
func (r *BlobReader) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cache, r.cached, r.whole, r.closed = nil, -1, nil, true
}

// copyOut copies the part of chunk i (whose bytes are v) that overlaps [off, off+len(p)) to
// its place in p.
func (r *BlobReader) copyOut(p []byte, off int64, i int, v []byte) {
	start := int64(i) * int64(r.meta.ChunkSize)
	lo, hi := max(off, start), min(off+int64(len(p)), start+int64(len(v)))
	copy(p[lo-off:hi-off], v[lo-start:hi-start])
}
