package backbone

import (
	"runtime"
	"sync"
)

// minParallelWork is the number of elementary operations below which a loop runs on one
// goroutine: starting goroutines costs about a microsecond each.
const minParallelWork = 1 << 15

// parallel calls f on disjoint ranges [lo, hi) covering [0, n), one range per GOMAXPROCS
// goroutine when n items of `work` operations each are worth it. f must only write state
// owned by its range, so results do not depend on the split.
func parallel(n, work int, f func(lo, hi int)) {
	p := min(runtime.GOMAXPROCS(0), n)
	if p <= 1 || n*work < minParallelWork {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	for k := 0; k < p; k++ {
		lo, hi := k*n/p, (k+1)*n/p
		wg.Go(func() { f(lo, hi) })
	}
	wg.Wait()
}

// scratch recycles the large buffers a convolution needs only while its matrix product runs
// (the zero-padded copy of its input, col2im's matrix, the transposed kernel).
var scratch sync.Pool

// getScratch returns a buffer of n floats with undefined contents.
func getScratch(n int) []float32 {
	if p, ok := scratch.Get().(*[]float32); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]float32, n)
}

// putScratch hands a buffer from getScratch back.
func putScratch(b []float32) { scratch.Put(&b) }
