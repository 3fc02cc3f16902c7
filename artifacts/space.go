package artifacts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/table"
)

// Full disks. Badger writes its value log and memtable log through memory maps; on a file
// system that cannot back a page (a full tmpfs), the process dies with SIGBUS instead of
// getting an error. So the store checks the free space (statfs) before it opens Badger
// read-write and before each blob write, and refuses with ErrNoSpace while there is room
// left for Badger to close cleanly.
const (
	// spaceMargin is the room a read-write open and close needs besides the blob bytes: the
	// pages Badger touches in a new memtable log, its discard-stats file (1 MiB), the
	// level-0 table it flushes the memtable into on close, and the MANIFEST edit.
	spaceMargin = 8 << 20
	// reserveSize is the ballast file a store keeps (reserveFile) so that on a full disk gc
	// and verify --repair can delete it and still open Badger read-write to free space.
	reserveSize = 8 << 20
	reserveFile = "pipe-reserve"
)

// freeBytes returns the bytes available to this user on the file system holding dir.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// checkSpace fails with ErrNoSpace unless the store's file system has room for n more bytes
// of blobs plus spaceMargin. A maintenance operation (gc, repair) first gives up the
// reserve file.
func (s *Badger) checkSpace(n int64) error {
	if s.dir == "" {
		return nil
	}
	need := n + n/64 + spaceMargin // values carry a small header each; chunks are 4 MiB
	have, err := freeBytes(s.dir)
	if err != nil {
		return nil // no statfs (an unusual file system): let Badger report what fails
	}
	if have < need && s.maintenance {
		if rerr := os.Remove(filepath.Join(s.dir, reserveFile)); rerr == nil {
			s.log.Info("artifacts: the disk is full; released the store's reserve to make room", "store", s.dir)
			have, _ = freeBytes(s.dir)
		}
	}
	if have < need {
		return fmt.Errorf("artifacts: %w on %s: need %s, have %s (free space, then run pipe gc)",
			ErrNoSpace, s.dir, fmtBytes(need), fmtBytes(have))
	}
	return nil
}

// ensureReserve creates the reserve file when it is missing and the disk has room for it
// besides a write margin. Failing to create it is not an error (read-only or full disks).
func (s *Badger) ensureReserve() {
	if s.dir == "" || s.readOnly {
		return
	}
	path := filepath.Join(s.dir, reserveFile)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		return
	}
	if have, err := freeBytes(s.dir); err != nil || have < reserveSize+spaceMargin {
		return
	}
	f, err := os.OpenFile(path+".tmp", os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return
	}
	// Written, not truncated: a sparse file would free nothing when deleted.
	_, werr := f.Write(make([]byte, reserveSize))
	cerr := f.Close()
	// The reserve is best effort: a leftover .tmp is rewritten (O_TRUNC) on the next try.
	if werr != nil || cerr != nil {
		_ = os.Remove(path + ".tmp")
		return
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		_ = os.Remove(path + ".tmp")
	}
}

// fmtBytes formats a byte count for messages.
func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// checkTables checks the footer of every Badger table (.sst) that the store's MANIFEST names,
// before Badger opens them: Badger panics, in a goroutine no caller can recover, on a table
// cut short (a footer length pointing outside the file). A table ends in [index][4-byte
// index length][checksum][4-byte checksum length], big-endian. Files the MANIFEST does not
// name (a table a killed process was writing, or one another process is writing now) are
// not read by Badger, so they are not checked.
func checkTables(dir string) error {
	f, err := os.Open(filepath.Join(dir, "MANIFEST"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a new store
	}
	if err != nil {
		return err
	}
	mf, _, err := badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir))
	_ = f.Close() // read only: nothing to flush
	if err != nil {
		return nil // Badger reports a damaged MANIFEST itself, as an error
	}
	for id := range mf.Tables {
		p := table.NewFilename(id, dir)
		if err := checkTable(p); err != nil {
			return fmt.Errorf("table %s is cut short or damaged (%v)", filepath.Base(p), err)
		}
	}
	return nil
}

func checkTable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil // compacted away meanwhile
		}
		return err
	}
	defer func() { _ = f.Close() }() // read only: nothing to flush
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	var b [4]byte
	readU32 := func(off int64) (int64, error) {
		if off < 0 || off+4 > size {
			return 0, fmt.Errorf("footer at %d outside %d bytes", off, size)
		}
		if _, err := f.ReadAt(b[:], off); err != nil {
			return 0, err
		}
		return int64(b[0])<<24 | int64(b[1])<<16 | int64(b[2])<<8 | int64(b[3]), nil
	}
	ckLen, err := readU32(size - 4)
	if err != nil {
		return err
	}
	idxLen, err := readU32(size - 8 - ckLen)
	if err != nil {
		return fmt.Errorf("checksum length %d: %v", ckLen, err)
	}
	if size-8-ckLen-idxLen < 0 {
		return fmt.Errorf("index length %d does not fit in %d bytes", idxLen, size)
	}
	return nil
}
