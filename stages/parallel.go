package stages

import (
	"runtime"
	"sync"
)

// forEachParallel calls f(w, i) for i = 0 .. n-1 on up to GOMAXPROCS goroutines; w (0 ..
// workers-1) names the goroutine, so that f can keep scratch of its own per worker. Each i
// runs exactly once, and f must only write state owned by i (or by w), so the result does
// not depend on the number of goroutines. It returns the error of the lowest failing i.
func forEachParallel(n int, f func(w, i int) error) error {
	errs := make([]error, n)
	workers := min(runtime.GOMAXPROCS(0), n)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				errs[i] = f(w, i)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
