//go:build unix

package heads

import "syscall"

// cpuSeconds is the user + system CPU time this process has used so far: benchmarks report
// it per operation, a figure that, unlike wall time, holds up on a shared machine.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
