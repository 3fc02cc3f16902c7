package optim

import (
	"math"
	"testing"
)

func TestSGD(t *testing.T) {
	th := []float32{1, -2}
	SGD(th, []float32{0.5, -1}, 0.1)
	if th[0] != 0.95 || th[1] != -1.9 {
		t.Fatalf("SGD: got %v, want [0.95 -1.9]", th)
	}
}

func TestClipNorm(t *testing.T) {
	g := []float64{3, 4}
	if n := ClipNorm(g, 1); n != 5 {
		t.Fatalf("norm before clipping %v, want 5", n)
	}
	if math.Abs(Norm(g)-1) > 1e-6 {
		t.Fatalf("norm after clipping %v, want 1", Norm(g))
	}
	h := []float64{0.3, 0.4}
	ClipNorm(h, 1)
	if h[0] != 0.3 || h[1] != 0.4 {
		t.Fatalf("a gradient under the limit changed: %v", h)
	}
}

// TestAdamByHand checks two Adam steps against values worked out by hand from the update
// rule: the first bias-corrected step is lr * g / (|g| + eps).
func TestAdamByHand(t *testing.T) {
	a := NewAdam(1, 0)
	th := []float64{1}
	a.Step(th, []float64{2}, 0.1)
	if want := 1 - 0.1*2/(2+1e-8); math.Abs(th[0]-want) > 1e-15 {
		t.Fatalf("step 1: got %v want %v", th[0], want)
	}
	// Step 2 with g = -1: m = 0.9*0.2 - 0.1 = 0.08, v = 0.999*0.004 + 0.001 = 0.004996.
	prev := th[0]
	a.Step(th, []float64{-1}, 0.1)
	mh := 0.08 / (1 - 0.81)
	vh := 0.004996 / (1 - 0.999*0.999)
	if want := prev - 0.1*mh/(math.Sqrt(vh)+1e-8); math.Abs(th[0]-want) > 1e-12 {
		t.Fatalf("step 2: got %v want %v", th[0], want)
	}
	// Weight decay adds wd*theta to the gradient: a zero gradient still moves the weight.
	b := NewAdam(1, 0.5)
	w := []float32{2}
	b.Step(w, []float32{0}, 0.01)
	if math.Abs(float64(w[0])-(2-0.01)) > 1e-6 {
		t.Fatalf("weight decay step: got %v want 1.99", w[0])
	}
}

func TestStepDecay(t *testing.T) {
	for i, c := range []struct {
		epoch int
		want  float64
	}{{0, 1}, {9, 1}, {10, 0.1}, {25, 0.01}} {
		if got := StepDecay(1, c.epoch, 10, 0.1); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("case %d: epoch %d got %v want %v", i, c.epoch, got, c.want)
		}
	}
}
