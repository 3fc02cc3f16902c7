package batch

import (
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/heads"
)

// NRef is the number of normals whose mean map is a training batch's reference (dra's
// composite sub-head; docs/algorithm.md, "Balanced batches and reference maps").
const NRef = 5

// Gatherer copies the feature maps of a batch's rows out of a pool into buffers it owns and
// reuses, and draws each batch's reference map: the mean of nRef distinct normals drawn from
// its own seeded stream. One Gatherer serves one goroutine.
type Gatherer struct {
	pool    fmap.Set
	refRows []int
	nRef    int
	rng     *rand.Rand
	buf     [][]float32 // per scale: the gathered batch's storage
	x, ref  []fmap.Maps
	pick    []int
}

// NewGatherer returns a gatherer over pool whose references are drawn from refRows (the
// pool's training normals) with rand.NewPCG(seed, stream). With fewer than nRef normals,
// every batch's reference is the mean of all of them.
func NewGatherer(pool fmap.Set, refRows []int, nRef int, seed, stream uint64) (*Gatherer, error) {
	if err := CheckPool(pool); err != nil {
		return nil, err
	}
	if len(refRows) == 0 {
		return nil, fmt.Errorf("batch: no normal rows to draw reference maps from")
	}
	for _, r := range refRows {
		if r < 0 || r >= pool.Len() {
			return nil, fmt.Errorf("batch: reference row %d outside the pool's %d rows", r, pool.Len())
		}
	}
	refRows = slices.Compact(slices.Sorted(slices.Values(refRows)))
	if nRef <= 0 {
		return nil, fmt.Errorf("batch: nRef %d, want > 0", nRef)
	}
	if nRef > len(refRows) {
		nRef = len(refRows)
	}
	g := &Gatherer{pool: pool, refRows: refRows, nRef: nRef,
		rng:  rand.New(rand.NewPCG(seed, stream)),
		buf:  make([][]float32, len(pool.Scales)),
		x:    make([]fmap.Maps, len(pool.Scales)),
		ref:  make([]fmap.Maps, len(pool.Scales)),
		pick: make([]int, 0, nRef)}
	for k, m := range pool.Scales {
		g.ref[k] = fmap.New(1, m.C, m.H, m.W)
	}
	return g, nil
}

// CheckPool reports an error when a pool has no scales, a scale's shape disagrees with its
// data, or a scale's row count differs from the number of IDs.
func CheckPool(pool fmap.Set) error {
	if len(pool.Scales) == 0 {
		return fmt.Errorf("batch: feature pool has no scales")
	}
	for k, m := range pool.Scales {
		if err := m.Check(); err != nil {
			return fmt.Errorf("batch: feature pool scale %d: %w", k, err)
		}
		if m.N != pool.Len() {
			return fmt.Errorf("batch: feature pool scale %d has %d rows but %d IDs", k, m.N, pool.Len())
		}
	}
	return nil
}

// Batch returns the heads.Batch of rows with the given labels and a freshly drawn reference.
// Its maps live in the gatherer's buffers and stay valid until the next call; labels is used
// as it is, not copied.
func (g *Gatherer) Batch(rows, labels []int) heads.Batch {
	for k, m := range g.pool.Scales {
		g.x[k] = gatherInto(&g.buf[k], m, rows)
	}
	g.drawRef()
	return heads.Batch{X: g.x, Labels: labels, Ref: g.ref}
}

// gatherInto returns rows of m as one batch. When rows are consecutive it returns a view of m;
// otherwise it copies them into *buf, growing the buffer only when it is too small.
func gatherInto(buf *[]float32, m fmap.Maps, rows []int) fmap.Maps {
	s := m.Size()
	if consecutive(rows) {
		a, b := rows[0]*s, (rows[0]+len(rows))*s
		return fmap.Maps{N: len(rows), C: m.C, H: m.H, W: m.W, Data: m.Data[a:b:b]}
	}
	n := len(rows) * s
	if cap(*buf) < n {
		*buf = make([]float32, n)
	}
	d := (*buf)[:n]
	for j, r := range rows {
		copy(d[j*s:(j+1)*s], m.Data[r*s:(r+1)*s])
	}
	return fmap.Maps{N: len(rows), C: m.C, H: m.H, W: m.W, Data: d}
}

func consecutive(rows []int) bool {
	if len(rows) == 0 {
		return false
	}
	for j, r := range rows {
		if r != rows[0]+j {
			return false
		}
	}
	return true
}

// drawRef draws nRef distinct normals and writes their mean map, per scale, into g.ref.
func (g *Gatherer) drawRef() {
	g.pick = g.pick[:0]
	if g.nRef == len(g.refRows) {
		g.pick = append(g.pick, g.refRows...)
	}
	for len(g.pick) < g.nRef {
		r := g.refRows[g.rng.IntN(len(g.refRows))]
		if !slices.Contains(g.pick, r) {
			g.pick = append(g.pick, r)
		}
	}
	for k, m := range g.pool.Scales {
		meanInto(g.ref[k].Data, m, g.pick)
	}
}

// meanInto writes the mean of rows of m into dst (one map), accumulating in float32 in row
// order.
func meanInto(dst []float32, m fmap.Maps, rows []int) {
	clear(dst)
	for _, r := range rows {
		for i, v := range m.At(r) {
			dst[i] += v
		}
	}
	inv := 1 / float32(len(rows))
	for i := range dst {
		dst[i] *= inv
	}
}

// Ref returns the scoring reference: per scale, the mean map of rows (all training normals;
// docs/algorithm.md, "Scoring the test set"), accumulated in float64.
func Ref(pool fmap.Set, rows []int) ([]fmap.Maps, error) {
	if err := CheckPool(pool); err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("batch: no normal rows for the scoring reference")
	}
	out := make([]fmap.Maps, len(pool.Scales))
	for k, m := range pool.Scales {
		out[k] = m.Mean(rows)
	}
	return out, nil
}

// Scorer scores many rows of a pool, a batch at a time, reusing its gather buffers between
// calls. One Scorer serves one goroutine.
type Scorer struct {
	buf [][]float32
	x   []fmap.Maps
}

// Scores scores rows of pool with head at theta, size rows at a time, against the reference
// ref (one map per scale), and writes the scores into out (len(rows)). Runs of consecutive
// rows (a quarter of a batch or more) are scored in place, without copying; sorted rows make
// the most of it.
func (s *Scorer) Scores(head heads.Head, theta []float32, pool fmap.Set, rows []int, ref []fmap.Maps, size int, out []float32) {
	if len(s.buf) != len(pool.Scales) {
		s.buf = make([][]float32, len(pool.Scales))
		s.x = make([]fmap.Maps, len(pool.Scales))
	}
	for a := 0; a < len(rows); {
		b := chunkEnd(rows, a, size)
		for k, m := range pool.Scales {
			s.x[k] = gatherInto(&s.buf[k], m, rows[a:b])
		}
		copy(out[a:b], head.Scores(theta, heads.Batch{X: s.x, Ref: ref}))
		a = b
	}
}

// Chunks splits rows into the batches Scores scores them in: [a, b) ranges of rows, each a
// run of consecutive rows (a quarter of a batch or more, up to size) or size rows to copy.
// Scoring each range separately gives the same scores as scoring all rows at once.
func Chunks(rows []int, size int) [][2]int {
	var out [][2]int
	for a := 0; a < len(rows); {
		b := chunkEnd(rows, a, size)
		out = append(out, [2]int{a, b})
		a = b
	}
	return out
}

// chunkEnd returns the end of the batch of rows that starts at a: the run of consecutive rows
// from a when it holds at least a quarter of a batch (scored in place), otherwise the next
// size rows (copied).
func chunkEnd(rows []int, a, size int) int {
	b := a + 1
	for b < len(rows) && b-a < size && rows[b] == rows[b-1]+1 {
		b++
	}
	if b-a >= max(size/4, 1) {
		return b
	}
	return min(a+size, len(rows))
}

// Scores scores rows of pool with head at theta, size rows at a time, against the reference
// ref (one map per scale; docs/algorithm.md, "Scoring the test set": the mean map of all
// training normals when scoring).
func Scores(head heads.Head, theta []float32, pool fmap.Set, rows []int, ref []fmap.Maps, size int) []float32 {
	out := make([]float32, len(rows))
	var s Scorer
	s.Scores(head, theta, pool, rows, ref, size, out)
	return out
}

// AllRows returns 0, 1, ..., n-1.
func AllRows(n int) []int {
	r := make([]int, n)
	for i := range r {
		r[i] = i
	}
	return r
}
