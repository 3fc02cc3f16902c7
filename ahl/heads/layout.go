package heads

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
)

// layout builds the flat-vector layout of named tensors, in order.
type layout struct {
	specs []Spec
	size  int
}

// add appends a tensor and returns its offset.
func (l *layout) add(name string, shape ...int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	off := l.size
	l.specs = append(l.specs, Spec{Name: name, Shape: shape, Offset: off})
	l.size += n
	return off
}

// specSize is the number of values of a tensor.
func specSize(s Spec) int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// initLayout returns weights for specs drawn from rng (docs/algorithm.md, "Scoring heads",
// Initialisation): tensors named
// "*.weight" are Kaiming-normal with fan-in, N(0, 2 / fan_in) with fan_in = the product of
// all dimensions but the first (PyTorch's kaiming_normal_ default, gain sqrt(2) for ReLU);
// "*.gamma" are 1; "*.bias" and "*.beta" are 0. The draws run in layout order.
func initLayout(specs []Spec, rng *rand.Rand) []float32 {
	total := 0
	for _, s := range specs {
		total += specSize(s)
	}
	theta := make([]float32, total)
	for _, s := range specs {
		t := theta[s.Offset : s.Offset+specSize(s)]
		switch {
		case strings.HasSuffix(s.Name, ".weight"):
			fanIn := specSize(s) / s.Shape[0]
			std := math.Sqrt(2 / float64(fanIn))
			for i := range t {
				t[i] = float32(rng.NormFloat64() * std)
			}
		case strings.HasSuffix(s.Name, ".gamma"):
			for i := range t {
				t[i] = 1
			}
		case strings.HasSuffix(s.Name, ".bias"), strings.HasSuffix(s.Name, ".beta"):
		default:
			panic(fmt.Sprintf("heads: no init rule for tensor %q", s.Name))
		}
	}
	return theta
}

// CheckBatch reports, as an error naming the field, why b cannot be scored by h: no scales,
// a scale whose shape disagrees with its data or whose N differs from X[0]'s, a row of Rows
// outside the pool, labels (when present, or when withLabels) of the wrong length or outside
// {Normal, Seen, Pseudo}, or, when h is a Checker, a break of h's own rules (its channel
// count, its reference maps). Scores and LossGrad panic on such batches.
func CheckBatch(h Head, b Batch, withLabels bool) error {
	if len(b.X) == 0 {
		return fmt.Errorf("heads %s: batch has no scales", h.Name())
	}
	for s, m := range b.X {
		if err := m.Check(); err != nil {
			return fmt.Errorf("heads %s: batch X[%d]: %w", h.Name(), s, err)
		}
		if m.N != b.X[0].N {
			return fmt.Errorf("heads %s: batch X[%d] has %d images, X[0] has %d", h.Name(), s, m.N, b.X[0].N)
		}
	}
	for i, r := range b.Rows {
		if r < 0 || r >= b.X[0].N {
			return fmt.Errorf("heads %s: batch row %d is %d, outside the pool's %d rows", h.Name(), i, r, b.X[0].N)
		}
	}
	n := b.Len()
	if err := CheckOffsets(h, b.Offset, b.X[0].N); err != nil {
		return err
	}
	if withLabels || b.Labels != nil {
		if len(b.Labels) != n {
			return fmt.Errorf("heads %s: batch has %d labels for %d images", h.Name(), len(b.Labels), n)
		}
		for i, l := range b.Labels {
			if l < 0 || l >= NLabels {
				return fmt.Errorf("heads %s: batch label %d is %d, want 0 (normal), 1 (seen) or 2 (pseudo)", h.Name(), i, l)
			}
		}
	}
	if c, ok := h.(Checker); ok {
		return c.CheckMaps(b)
	}
	return nil
}

// checkChannels reports the first scale of b whose channel count is not c, for head name.
func checkChannels(name string, c int, b Batch) error {
	for s, m := range b.X {
		if m.C != c {
			return fmt.Errorf("heads %s: batch X[%d] has %d channels, the head expects %d", name, s, m.C, c)
		}
	}
	return nil
}

// mustCheck panics with CheckBatch's message.
func mustCheck(h Head, b Batch, withLabels bool) {
	if err := CheckBatch(h, b, withLabels); err != nil {
		panic(err.Error())
	}
}
