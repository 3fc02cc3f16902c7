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

// Gatherer makes the heads.Batch of a batch's rows, which addresses the rows of the pool in
// place (heads.Batch.Rows), and draws each batch's reference map: the mean of nRef distinct
// normals drawn from its own seeded stream, written into a buffer it owns and reuses. One
// Gatherer serves one goroutine.
type Gatherer struct {
	pool    fmap.Set
	refRows []int
	nRef    int
	rng     *rand.Rand
	ref     []fmap.Maps
	pick    []int
	noRef   bool // SkipRef was called
	// Offset, when set, is every batch's heads.Batch.Offset: one score offset per pool row.
	Offset []float32
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

// Batch returns the heads.Batch of rows of the pool, with the given labels and a freshly
// drawn reference: X is the pool's scales and Rows is rows, read in place. The reference lives
// in the gatherer's buffer and stays valid until the next call; rows and labels are used as
// they are, not copied.
func (g *Gatherer) Batch(rows, labels []int) heads.Batch {
	if g.noRef {
		return heads.Batch{X: g.pool.Scales, Rows: rows, Labels: labels, Offset: g.Offset}
	}
	g.drawRef()
	return heads.Batch{X: g.pool.Scales, Rows: rows, Labels: labels, Ref: g.ref, Offset: g.Offset}
}

// SkipRef makes the following batches come without a reference (Ref nil), for a head that
// does not read it (a heads.RefFreeScorer): their mean maps, about a tenth of a devnet
// step's time, are not computed. The reference draws are the gatherer's only use of its
// random stream, so skipping them changes nothing else.
func (g *Gatherer) SkipRef() { g.noRef = true }

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

// ScoresInto scores rows of pool with head at theta, in the batches Chunks splits them into,
// against the reference ref (one map per scale), and writes the scores into out (len(rows)).
// The batches address the pool's rows in place (heads.Batch.Rows).
func ScoresInto(head heads.Head, theta []float32, pool fmap.Set, rows []int, ref []fmap.Maps, size int, out []float32) {
	for _, r := range Chunks(rows, size) {
		a, b := r[0], r[1]
		copy(out[a:b], head.Scores(theta, heads.Batch{X: pool.Scales, Rows: rows[a:b:b], Ref: ref}))
	}
}

// Chunks splits rows into the batches ScoresInto scores them in: [a, b) ranges of size rows
// (the last one shorter). Each image's score depends only on its own maps, so scoring each
// range separately gives the same scores as scoring all rows at once.
func Chunks(rows []int, size int) [][2]int {
	var out [][2]int
	for a := 0; a < len(rows); a += size {
		out = append(out, [2]int{a, min(a+size, len(rows))})
	}
	return out
}

// Scores scores rows of pool with head at theta, size rows at a time, against the reference
// ref (one map per scale; docs/algorithm.md, "Scoring the test set": the mean map of all
// training normals when scoring).
func Scores(head heads.Head, theta []float32, pool fmap.Set, rows []int, ref []fmap.Maps, size int) []float32 {
	out := make([]float32, len(rows))
	ScoresInto(head, theta, pool, rows, ref, size, out)
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
