package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/pipe-ahl/pipe/artifacts"
)

// readThrough is an artifacts.Store that reads the local store first and the remote on a
// miss, for the commands that only read (report, artifacts ls/show/export). Writes go to the
// local store. Blobs read from the remote are checked against their digest and kept in memory
// for the command's lifetime; nothing is stored locally.
type readThrough struct {
	artifacts.Store
	r *Remote

	mu    sync.Mutex
	blobs map[artifacts.Digest][]byte
}

// ReadThrough returns a store that reads local first and r where local lacks a manifest,
// head or blob. Close closes local only.
func ReadThrough(local artifacts.Store, r *Remote) artifacts.Store {
	return &readThrough{Store: local, r: r, blobs: map[artifacts.Digest][]byte{}}
}

func (s *readThrough) remoteBlob(ctx context.Context, d artifacts.Digest) ([]byte, error) {
	s.mu.Lock()
	b, ok := s.blobs[d]
	s.mu.Unlock()
	if ok {
		return b, nil
	}
	b, err := s.r.readBlob(ctx, artifacts.Output{Digest: d})
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.blobs[d] = b
	s.mu.Unlock()
	return b, nil
}

// Blob reads the local blob, or the remote one (verified by its digest).
func (s *readThrough) Blob(ctx context.Context, d artifacts.Digest) ([]byte, error) {
	b, err := s.Store.Blob(ctx, d)
	if errors.Is(err, artifacts.ErrNotFound) {
		return s.remoteBlob(ctx, d)
	}
	return b, err
}

// HasBlob reports whether the blob is local or in the remote.
func (s *readThrough) HasBlob(ctx context.Context, d artifacts.Digest) (bool, error) {
	ok, err := s.Store.HasBlob(ctx, d)
	if err != nil || ok {
		return ok, err
	}
	ok, err = s.r.bucket.Exists(ctx, blobKey(d))
	if err != nil {
		return false, s.r.fail("look up "+blobKey(d), err)
	}
	return ok, nil
}

// VerifyBlob checks a local blob; a blob only in the remote is checked to be there (its
// bytes are checked against the digest when they are read).
func (s *readThrough) VerifyBlob(ctx context.Context, d artifacts.Digest) error {
	err := s.Store.VerifyBlob(ctx, d)
	if !errors.Is(err, artifacts.ErrNotFound) {
		return err
	}
	ok, herr := s.HasBlob(ctx, d)
	switch {
	case herr != nil:
		return herr
	case !ok:
		return fmt.Errorf("blob %s is neither local nor in the remote %s: %w", d, s.r.url, artifacts.ErrNotFound)
	}
	return nil
}

// Manifest reads the local manifest, or the remote one.
func (s *readThrough) Manifest(ctx context.Context, key string) (artifacts.Manifest, error) {
	m, err := s.Store.Manifest(ctx, key)
	if errors.Is(err, artifacts.ErrNotFound) {
		return s.r.Manifest(ctx, key)
	}
	return m, err
}

// Head reads the local head, or the remote one.
func (s *readThrough) Head(ctx context.Context, dag, stage, instance string) (artifacts.Head, error) {
	h, err := s.Store.Head(ctx, dag, stage, instance)
	if errors.Is(err, artifacts.ErrNotFound) {
		return s.r.Head(ctx, dag, stage, instance)
	}
	return h, err
}

// Heads lists the local heads and the remote ones that no local head names.
func (s *readThrough) Heads(ctx context.Context, dag string) ([]artifacts.Head, error) {
	local, err := s.Store.Heads(ctx, dag)
	if err != nil {
		return nil, err
	}
	remote, err := s.r.Heads(ctx, dag)
	if err != nil {
		return nil, err
	}
	type id struct{ dag, stage, instance string }
	seen := map[id]bool{}
	for _, h := range local {
		seen[id{h.DAG, h.Stage, h.Instance}] = true
	}
	for _, h := range remote {
		if !seen[id{h.DAG, h.Stage, h.Instance}] {
			local = append(local, h)
		}
	}
	return local, nil
}
