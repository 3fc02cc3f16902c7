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

// scratchPools recycles large buffers, one pool per length: the zero-padded copies of
// convolution inputs, col2im's matrices, transposed kernels and the activations of training
// and extraction, which the next chunk needs again at the same sizes.
var scratchPools sync.Map // int -> *sync.Pool of *[]float32

// getScratch returns a buffer of n floats with undefined contents.
func getScratch(n int) []float32 {
	if p, ok := scratchPools.Load(n); ok {
		if b, ok := p.(*sync.Pool).Get().(*[]float32); ok {
			return (*b)[:n]
		}
	}
	return make([]float32, n)
}

// putScratch hands a buffer back for a later getScratch of its capacity; the caller must not
// use it afterwards.
func putScratch(b []float32) {
	if cap(b) == 0 {
		return
	}
	b = b[:cap(b)]
	p, _ := scratchPools.LoadOrStore(cap(b), &sync.Pool{})
	p.(*sync.Pool).Put(&b)
}

// newScratchAct is newAct with its data from getScratch, so with undefined contents: only for
// an activation that is written in full before it is read.
func newScratchAct(c, b, h, w int) act {
	return act{C: c, B: b, H: h, W: w, Data: getScratch(c * b * h * w)}
}

// intPools recycles the offset tables of patches, one pool per length, as scratchPools does
// for floats.
var intPools sync.Map // int -> *sync.Pool of *[]int

// getInts returns a slice of n ints with undefined contents.
func getInts(n int) []int {
	if p, ok := intPools.Load(n); ok {
		if b, ok := p.(*sync.Pool).Get().(*[]int); ok {
			return (*b)[:n]
		}
	}
	return make([]int, n)
}

// putInts hands a slice back for a later getInts of its capacity; the caller must not use it
// afterwards.
func putInts(b []int) {
	if cap(b) == 0 {
		return
	}
	b = b[:cap(b)]
	p, _ := intPools.LoadOrStore(cap(b), &sync.Pool{})
	p.(*sync.Pool).Put(&b)
}
