// Package batch draws AHL's balanced training batches and gathers their feature maps into
// heads.Batch values (docs/algorithm.md, "Balanced batches and reference maps").
package batch

import (
	"fmt"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/heads"
)

// Paper defaults for batches.
const (
	Size    = 48 // batch size: 16 normal + 16 real anomaly + 16 pseudo anomaly
	PerPass = 20 // batches per pass (an epoch of direct training, an inner or query loop)
)

// perm is an endless seeded permutation of a list of rows: it hands out the rows in a random
// order and reshuffles them once every row has been handed out.
type perm struct {
	rows []int
	pos  int
	rng  *rand.Rand
}

func newPerm(rows []int, rng *rand.Rand) *perm {
	p := &perm{rows: append([]int(nil), rows...), rng: rng}
	p.shuffle()
	return p
}

func (p *perm) shuffle() {
	p.rng.Shuffle(len(p.rows), func(i, j int) { p.rows[i], p.rows[j] = p.rows[j], p.rows[i] })
	p.pos = 0
}

func (p *perm) next() int {
	if p.pos == len(p.rows) {
		p.shuffle()
	}
	r := p.rows[p.pos]
	p.pos++
	return r
}

// Sampler draws balanced batches from labelled rows: an equal share of the batch from each
// label present (16 + 16 + 16 for size 48 with normals, real and pseudo anomalies; 24 + 24
// when one kind is absent; 48 of the only kind), each label from its own endless seeded
// permutation. A share that does not divide evenly gives its remainder to the lower labels.
type Sampler struct {
	kinds  []*perm
	labels []int // label of each kind
	counts []int // rows per batch of each kind
	rows   []int
	labs   []int
}

// NewSampler returns a sampler over rows (indices into a pool) with the given labels
// (heads.Normal, heads.Seen or heads.Pseudo). Label k's permutation draws from
// rand.NewPCG(seed, stream*heads.NLabels+k), so samplers with distinct streams are independent.
func NewSampler(rows, labels []int, size int, seed, stream uint64) (*Sampler, error) {
	if len(rows) != len(labels) {
		return nil, fmt.Errorf("batch: %d rows but %d labels", len(rows), len(labels))
	}
	if size <= 0 {
		return nil, fmt.Errorf("batch: batch size %d, want > 0", size)
	}
	byLabel := make([][]int, heads.NLabels)
	for k, l := range labels {
		if l < 0 || l >= heads.NLabels {
			return nil, fmt.Errorf("batch: row %d has label %d, want 0 (normal), 1 (real anomaly) or 2 (pseudo)", rows[k], l)
		}
		byLabel[l] = append(byLabel[l], rows[k])
	}
	s := &Sampler{}
	for l, rs := range byLabel {
		if len(rs) == 0 {
			continue
		}
		rng := rand.New(rand.NewPCG(seed, stream*heads.NLabels+uint64(l)))
		s.kinds = append(s.kinds, newPerm(rs, rng))
		s.labels = append(s.labels, l)
	}
	if len(s.kinds) == 0 {
		return nil, fmt.Errorf("batch: no rows to sample from")
	}
	s.counts = shares(size, len(s.kinds))
	s.rows = make([]int, size)
	s.labs = make([]int, size)
	return s, nil
}

// shares splits size into n near-equal parts, the remainder going to the first parts.
func shares(size, n int) []int {
	c := make([]int, n)
	for k := range c {
		c[k] = size / n
		if k < size%n {
			c[k]++
		}
	}
	return c
}

// Next draws the next batch: its rows (indices into the pool) and their labels, grouped by
// label in increasing order. The returned slices are reused by the following call.
func (s *Sampler) Next() (rows, labels []int) {
	j := 0
	for k, p := range s.kinds {
		for n := 0; n < s.counts[k]; n++ {
			s.rows[j] = p.next()
			s.labs[j] = s.labels[k]
			j++
		}
	}
	return s.rows, s.labs
}
