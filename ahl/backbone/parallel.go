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

// lengthPools recycles slices of one element type, one sync.Pool per length, so that a
// buffer handed back is handed out again to the next request of the same size.
type lengthPools[T any] struct{ m sync.Map } // int -> *sync.Pool of *[]T

// get returns a slice of n elements with undefined contents.
func (ps *lengthPools[T]) get(n int) []T {
	if p, ok := ps.m.Load(n); ok {
		if b, ok := p.(*sync.Pool).Get().(*[]T); ok {
			return (*b)[:n]
		}
	}
	return make([]T, n)
}

// put hands b back for a later get of its capacity; the caller must not use it afterwards.
func (ps *lengthPools[T]) put(b []T) {
	if cap(b) == 0 {
		return
	}
	b = b[:cap(b)]
	p, _ := ps.m.LoadOrStore(cap(b), &sync.Pool{})
	p.(*sync.Pool).Put(&b)
}

// scratchPools recycles large buffers: the zero-padded copies of convolution inputs,
// col2im's matrices, transposed kernels and the activations of training and extraction,
// which the next chunk needs again at the same sizes.
var scratchPools lengthPools[float32]

// getScratch returns a buffer of n floats with undefined contents.
func getScratch(n int) []float32 { return scratchPools.get(n) }

// putScratch hands a buffer back for a later getScratch of its capacity; the caller must not
// use it afterwards.
func putScratch(b []float32) { scratchPools.put(b) }

// newScratchAct is newAct with its data from getScratch, so with undefined contents: only for
// an activation that is written in full before it is read.
func newScratchAct(c, b, h, w int) act {
	return act{C: c, B: b, H: h, W: w, Data: getScratch(c * b * h * w)}
}

// intPools recycles the offset tables of patches, as scratchPools does for floats.
var intPools lengthPools[int]

// getInts returns a slice of n ints with undefined contents.
func getInts(n int) []int { return intPools.get(n) }

// putInts hands a slice back for a later getInts of its capacity; the caller must not use it
// afterwards.
func putInts(b []int) { intPools.put(b) }
