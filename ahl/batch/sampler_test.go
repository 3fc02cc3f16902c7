package batch

import (
	"math"
	"slices"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/heads"
)

// pool returns rows 0..n-1 labelled by their position: the first nn normal, then ns seen,
// then np pseudo.
func labelled(nn, ns, np int) (rows, labels []int) {
	for i := 0; i < nn+ns+np; i++ {
		rows = append(rows, 100+i)
		l := heads.Normal
		if i >= nn+ns {
			l = heads.Pseudo
		} else if i >= nn {
			l = heads.Seen
		}
		labels = append(labels, l)
	}
	return rows, labels
}

func composition(labels []int) [heads.NLabels]int {
	var c [heads.NLabels]int
	for _, l := range labels {
		c[l]++
	}
	return c
}

func TestSamplerComposition(t *testing.T) {
	for i, c := range []struct {
		nn, ns, np int
		want       [heads.NLabels]int
	}{
		{30, 5, 20, [3]int{16, 16, 16}},
		{30, 0, 20, [3]int{24, 0, 24}},
		{30, 5, 0, [3]int{24, 24, 0}},
		{0, 5, 7, [3]int{0, 24, 24}},
		{30, 0, 0, [3]int{48, 0, 0}},
		{1, 1, 1, [3]int{16, 16, 16}},
	} {
		rows, labels := labelled(c.nn, c.ns, c.np)
		s, err := NewSampler(rows, labels, Size, 1, 2)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		for b := 0; b < PerPass; b++ {
			r, l := s.Next()
			if got := composition(l); got != c.want {
				t.Fatalf("case %d batch %d: composition %v, want %v", i, b, got, c.want)
			}
			for j := range r {
				if labels[r[j]-100] != l[j] {
					t.Fatalf("case %d: row %d returned with label %d, has %d", i, r[j], l[j], labels[r[j]-100])
				}
			}
		}
	}
	// An uneven split gives the remainder to the lower labels.
	rows, labels := labelled(4, 4, 4)
	s, _ := NewSampler(rows, labels, 10, 1, 2)
	if _, l := s.Next(); composition(l) != [3]int{4, 3, 3} {
		t.Fatalf("size 10: composition %v, want [4 3 3]", composition(l))
	}
}

// TestSamplerPermutation checks that each kind walks through a full permutation of its rows
// before any row repeats, and then reshuffles (a second pass in a different order).
func TestSamplerPermutation(t *testing.T) {
	rows, labels := labelled(32, 16, 64)
	s, err := NewSampler(rows, labels, Size, 7, 0)
	if err != nil {
		t.Fatal(err)
	}
	var normals []int
	for b := 0; b < 4; b++ { // 4 batches x 16 normals = two passes over 32 normals
		r, l := s.Next()
		for j := range r {
			if l[j] == heads.Normal {
				normals = append(normals, r[j])
			}
		}
	}
	first, second := slices.Clone(normals[:32]), slices.Clone(normals[32:])
	if slices.Equal(first, second) {
		t.Fatalf("second pass repeats the first pass's order")
	}
	for _, pass := range [][]int{first, second} {
		slices.Sort(pass)
		for k, r := range pass {
			if r != 100+k {
				t.Fatalf("a pass over the normals is not a permutation: %v", pass)
			}
		}
	}
	if slices.Equal(normals[:32], rows[:32]) {
		t.Fatalf("first pass not shuffled")
	}
}

func TestSamplerSeeds(t *testing.T) {
	rows, labels := labelled(40, 10, 40)
	draw := func(seed, stream uint64) []int {
		s, _ := NewSampler(rows, labels, Size, seed, stream)
		var out []int
		for b := 0; b < 3; b++ {
			r, _ := s.Next()
			out = append(out, r...)
		}
		return out
	}
	if !slices.Equal(draw(1, 2), draw(1, 2)) {
		t.Fatal("same seed and stream gave different batches")
	}
	if slices.Equal(draw(1, 2), draw(1, 3)) || slices.Equal(draw(1, 2), draw(2, 2)) {
		t.Fatal("different seeds or streams gave the same batches")
	}
}

func TestSamplerErrors(t *testing.T) {
	if _, err := NewSampler([]int{1, 2}, []int{0}, Size, 0, 0); err == nil {
		t.Error("length mismatch accepted")
	}
	if _, err := NewSampler([]int{1}, []int{3}, Size, 0, 0); err == nil {
		t.Error("label 3 accepted")
	}
	if _, err := NewSampler(nil, nil, Size, 0, 0); err == nil {
		t.Error("empty rows accepted")
	}
	if _, err := NewSampler([]int{1}, []int{0}, 0, 0, 0); err == nil {
		t.Error("size 0 accepted")
	}
}

// testPool returns n rows at two scales whose values encode (row, scale, position).
func testPool(n int) fmap.Set {
	p := fmap.Set{Scales: []fmap.Maps{fmap.New(n, 2, 2, 2), fmap.New(n, 2, 1, 1)}}
	for i := 0; i < n; i++ {
		p.IDs = append(p.IDs, string(rune('a'+i)))
		for k, m := range p.Scales {
			for q := range m.At(i) {
				m.At(i)[q] = float32(1000*i + 100*k + q)
			}
		}
	}
	return p
}

func TestGatherer(t *testing.T) {
	p := testPool(10)
	normals := []int{0, 1, 2, 3, 4, 5, 6}
	g, err := NewGatherer(p, normals, NRef, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	rows := []int{9, 2, 5}
	b := g.Batch(rows, []int{1, 0, 2})
	if b.Len() != 3 || !slices.Equal(b.Rows, rows) {
		t.Fatalf("batch of %d images, rows %v; want 3, %v", b.Len(), b.Rows, rows)
	}
	for k, m := range p.Scales {
		for j, r := range rows {
			// The batch reads the pool's rows in place, without copying them.
			if got := b.Map(k, j); &got[0] != &m.At(r)[0] || len(got) != m.Size() {
				t.Fatalf("scale %d image %d is not a view of pool row %d", k, j, r)
			}
		}
		// The reference is the mean of 5 distinct normals: its value at position 0 is
		// 1000 * (mean row) + 100k, and the mean of 5 distinct rows of 0..6 lies in [2, 4].
		v := b.Ref[k].Data[0] - float32(100*k)
		if b.Ref[k].N != 1 || v < 2000 || v > 4000 || math.Mod(float64(v), 200) != 0 {
			t.Fatalf("scale %d: reference value %v is not the mean of 5 distinct normals", k, v)
		}
	}
	// After SkipRef, batches come without a reference, for heads that do not read one.
	g.SkipRef()
	if b = g.Batch(rows, []int{1, 0, 2}); b.Ref != nil || !slices.Equal(b.Rows, rows) {
		t.Fatalf("after SkipRef: reference %v, rows %v; want none, %v", b.Ref, b.Rows, rows)
	}
	// With only 3 normals, every reference is their mean.
	g3, _ := NewGatherer(p, []int{4, 1, 7, 1}, NRef, 0, 0)
	b = g3.Batch([]int{0}, []int{0})
	if b.Ref[1].Data[0] != 4100 {
		t.Fatalf("reference of rows 1, 4, 7 at scale 1: %v, want 4100", b.Ref[1].Data[0])
	}
	if _, err := NewGatherer(p, []int{10}, NRef, 0, 0); err == nil {
		t.Error("reference row outside the pool accepted")
	}
	bad := p
	bad.IDs = bad.IDs[:5]
	if _, err := NewGatherer(bad, normals, NRef, 0, 0); err == nil {
		t.Error("pool with fewer IDs than rows accepted")
	}
}

// TestGathererNoAlloc checks that drawing and gathering a batch allocates nothing once the
// buffers exist.
func TestGathererNoAlloc(t *testing.T) {
	p := testPool(20)
	rows, labels := make([]int, 20), make([]int, 20)
	for i := range rows {
		rows[i] = i
		labels[i] = i % 3
	}
	s, _ := NewSampler(rows, labels, 12, 0, 0)
	g, _ := NewGatherer(p, rows[:10], NRef, 0, 0)
	g.Batch(s.Next())
	if a := testing.AllocsPerRun(50, func() { g.Batch(s.Next()) }); a != 0 {
		t.Fatalf("%v allocations per batch, want 0", a)
	}
}

// TestScores checks batched scoring against scoring one row at a time.
func TestScores(t *testing.T) {
	p := testPool(40)
	head := linearForTest{}
	rows := []int{3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 30, 1, 17, 18, 19, 0, 39}
	got := Scores(head, nil, p, rows, nil, 8)
	for k, r := range rows {
		want := head.Scores(nil, heads.Batch{X: []fmap.Maps{p.Scales[0].Gather([]int{r}), p.Scales[1].Gather([]int{r})}})[0]
		if got[k] != want {
			t.Fatalf("row %d: batched score %v, alone %v", r, got[k], want)
		}
	}
	if got := Chunks(rows, 8); !slices.Equal(got, [][2]int{{0, 8}, {8, 16}, {16, 17}}) {
		t.Errorf("Chunks = %v", got)
	}
}

// linearForTest scores a map by the sum of its values at every scale; the test pool's values
// encode the row, so a row scored in the wrong place shows.
type linearForTest struct{ heads.Head }

func (linearForTest) Scores(theta []float32, b heads.Batch) []float32 {
	out := make([]float32, b.Len())
	for s := range b.X {
		for i := range out {
			for _, v := range b.Map(s, i) {
				out[i] += v
			}
		}
	}
	return out
}
