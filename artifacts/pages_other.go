//go:build !linux

package artifacts

// dropPages does nothing where the kernel's advice is not wired up (see pages_linux.go).
func dropPages([]byte) {}
