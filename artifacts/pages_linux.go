package artifacts

import (
	"os"
	"syscall"
	"unsafe"
)

var pageSize = uintptr(os.Getpagesize())

// dropPages tells the kernel that this process no longer needs the pages of b, a value
// Badger handed out of its memory-mapped value log (a shared file mapping), so that they
// stop counting towards the process's resident memory: without it every blob read (copied
// out, or only verified) stays resident as clean file-backed pages until Badger unmaps the
// log, and a burst of reads that keeps the store open (a rerun verifying every cached
// output) grows by the size of everything it read. The bytes stay in the page cache and
// read back the same on the next access. b must lie in a file mapping: on anonymous memory
// (Badger's in-memory mode) MADV_DONTNEED would zero it.
func dropPages(b []byte) {
	if len(b) == 0 {
		return
	}
	p := unsafe.Pointer(&b[0])
	start := uintptr(p)
	lo := start &^ (pageSize - 1)
	hi := (start + uintptr(len(b)) + pageSize - 1) &^ (pageSize - 1)
	// The rounded range stays within the mapping: mappings are whole pages. An error (none
	// is expected on a mapped range) only leaves the pages resident.
	_ = syscall.Madvise(unsafe.Slice((*byte)(unsafe.Add(p, -int(start-lo))), hi-lo), syscall.MADV_DONTNEED)
}
