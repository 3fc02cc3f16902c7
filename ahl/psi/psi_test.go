package psi

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// refLSTM is one direction of one layer, read from the flat weights by the layout documented
// on Model, independently of the model's own offset table.
type refLSTM struct {
	w, u *mat.Dense
	b    *mat.VecDense
}

// refModel is a plain gonum reference of psi's forward pass.
type refModel struct {
	t, h   int
	lstm   [2][2]refLSTM
	w1, w2 *mat.Dense
	b1, b2 *mat.VecDense
}

func newRef(theta []float64, t int) *refModel {
	h := t
	r := &refModel{t: t, h: h}
	p := 0
	take := func(n int) []float64 {
		s := append([]float64(nil), theta[p:p+n]...)
		p += n
		return s
	}
	for l := 0; l < 2; l++ {
		in := t
		if l == 1 {
			in = 2 * h
		}
		for d := 0; d < 2; d++ {
			r.lstm[l][d].w = mat.NewDense(4*h, in, take(4*h*in))
			r.lstm[l][d].u = mat.NewDense(4*h, h, take(4*h*h))
			r.lstm[l][d].b = mat.NewVecDense(4*h, take(4*h))
		}
	}
	r.w1 = mat.NewDense(2*h, 2*h, take(4*h*h))
	r.b1 = mat.NewVecDense(2*h, take(2*h))
	r.w2 = mat.NewDense(t, 2*h, take(2*h*t))
	r.b2 = mat.NewVecDense(t, take(t))
	if p != len(theta) {
		panic("reference layout does not cover the weights")
	}
	return r
}

// run runs one direction over xs (a slice of input vectors in time order) and returns the
// hidden state at every time position.
func (l refLSTM) run(xs []*mat.VecDense, h int, reverse bool) []*mat.VecDense {
	out := make([]*mat.VecDense, len(xs))
	hp, cp := mat.NewVecDense(h, nil), mat.NewVecDense(h, nil)
	for s := range xs {
		t := s
		if reverse {
			t = len(xs) - 1 - s
		}
		a := mat.NewVecDense(4*h, nil)
		var wx, uh mat.VecDense
		wx.MulVec(l.w, xs[t])
		uh.MulVec(l.u, hp)
		a.AddVec(&wx, &uh)
		a.AddVec(a, l.b)
		hn, cn := mat.NewVecDense(h, nil), mat.NewVecDense(h, nil)
		for j := 0; j < h; j++ {
			sig := func(v float64) float64 { return 1 / (1 + math.Exp(-v)) }
			i, f, g, o := sig(a.AtVec(j)), sig(a.AtVec(h+j)), math.Tanh(a.AtVec(2*h+j)), sig(a.AtVec(3*h+j))
			c := f*cp.AtVec(j) + i*g
			cn.SetVec(j, c)
			hn.SetVec(j, o*math.Tanh(c))
		}
		out[t] = hn
		hp, cp = hn, cn
	}
	return out
}

func (r *refModel) forward(seq []float64, k int) []float64 {
	xs := make([]*mat.VecDense, k)
	for t := range xs {
		xs[t] = mat.NewVecDense(r.t, append([]float64(nil), seq[t*r.t:(t+1)*r.t]...))
	}
	for l := 0; l < 2; l++ {
		f := r.lstm[l][0].run(xs, r.h, false)
		b := r.lstm[l][1].run(xs, r.h, true)
		next := make([]*mat.VecDense, k)
		for t := range next {
			v := mat.NewVecDense(2*r.h, nil)
			for j := 0; j < r.h; j++ {
				v.SetVec(j, f[t].AtVec(j))
				v.SetVec(r.h+j, b[t].AtVec(j))
			}
			next[t] = v
		}
		xs = next
	}
	var y1, y2 mat.VecDense
	y1.MulVec(r.w1, xs[k-1])
	y1.AddVec(&y1, r.b1)
	for j := 0; j < y1.Len(); j++ {
		y1.SetVec(j, math.Max(y1.AtVec(j), 0))
	}
	y2.MulVec(r.w2, &y1)
	y2.AddVec(&y2, r.b2)
	return y2.RawVector().Data
}

func (r *refModel) loss(x Sequences, y []float64) float64 {
	var s float64
	for n := 0; n < x.N; n++ {
		out := r.forward(x.Data[n*x.K*x.T:(n+1)*x.K*x.T], x.K)
		for k, v := range out {
			d := v - y[n*x.T+k]
			s += d * d
		}
	}
	return s / float64(x.N*x.T)
}

func randomData(n, k, t int, seed uint64) (Sequences, []float64) {
	rng := rand.New(rand.NewPCG(seed, 0))
	x := Sequences{N: n, K: k, T: t, Data: make([]float64, n*k*t)}
	for i := range x.Data {
		x.Data[i] = 3 * rng.NormFloat64()
	}
	y := make([]float64, n*t)
	for i := range y {
		y[i] = 2 * rng.NormFloat64()
	}
	return x, y
}

// TestForwardMatchesReference checks psi's forward pass against the gonum reference.
func TestForwardMatchesReference(t *testing.T) {
	m, err := New(4, 1, 0, LR, WeightDecay)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := randomData(6, 5, 4, 2)
	got, err := m.Predict(x)
	if err != nil {
		t.Fatal(err)
	}
	r := newRef(m.Weights(), 4)
	for n := 0; n < x.N; n++ {
		want := r.forward(x.Data[n*20:(n+1)*20], 5)
		for k := range want {
			if math.Abs(got[n*4+k]-want[k]) > 1e-12 {
				t.Fatalf("sequence %d output %d: psi %v, reference %v", n, k, got[n*4+k], want[k])
			}
		}
	}
}

// TestGradientNumerical checks every component of psi's hand-written gradient against
// central differences of the independent gonum reference loss. In float64 with step 1e-5 the
// truncation error is about 1e-10 and the rounding error about 1e-11 (loss ~ 1, eps_machine
// 1e-16 / 1e-5), so 1e-7 absolute plus 1e-5 relative leaves two orders of margin while any
// wrong term in the backward pass (errors of order the gradient itself) fails.
func TestGradientNumerical(t *testing.T) {
	const T, K, N, h = 3, 4, 5, 1e-5
	m, _ := New(T, 3, 0, LR, WeightDecay)
	x, y := randomData(N, K, T, 4)
	grad := make([]float64, len(m.Weights()))
	loss := m.lossGrad(m.Weights(), x, y, grad)
	if want := newRef(m.Weights(), T).loss(x, y); math.Abs(loss-want) > 1e-12 {
		t.Fatalf("loss %v, reference %v", loss, want)
	}
	th := append([]float64(nil), m.Weights()...)
	worst := 0.0
	for k := range th {
		orig := th[k]
		th[k] = orig + h
		lp := newRef(th, T).loss(x, y)
		th[k] = orig - h
		lm := newRef(th, T).loss(x, y)
		th[k] = orig
		num := (lp - lm) / (2 * h)
		diff := math.Abs(num - grad[k])
		if diff > 1e-7+1e-5*math.Abs(num) {
			t.Fatalf("weight %d: analytic %v, numerical %v", k, grad[k], num)
		}
		worst = max(worst, diff)
	}
	t.Logf("%d weights, largest difference %.2g", len(th), worst)
}

// TestTrainLearns trains psi to predict a sequence's next step from a simple rule (the next
// score vector is the last one plus a constant) and checks that the error falls far.
func TestTrainLearns(t *testing.T) {
	const T, K, N = 4, 5, 64
	x, _ := randomData(N, K, T, 5)
	for i := range x.Data {
		x.Data[i] /= 3
	}
	y := make([]float64, N*T)
	for n := 0; n < N; n++ {
		for k := 0; k < T; k++ {
			y[n*T+k] = x.Data[n*K*T+(K-1)*T+k] + 0.5
		}
	}
	m, _ := New(T, 6, 0, LR, WeightDecay)
	first, err := m.Train(x, y, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Train(x, y, 300); err != nil {
		t.Fatal(err)
	}
	last, _ := m.Train(x, y, 1)
	t.Logf("MSE %.4f -> %.4f", first, last)
	if last > first/5 {
		t.Fatalf("training did not lower the MSE enough: %.4f -> %.4f", first, last)
	}
}

// TestDeterministic checks bit-identical predictions run after run and whatever the number of
// cores (150 sequences make three gradient chunks).
func TestDeterministic(t *testing.T) {
	x, y := randomData(150, 5, 7, 7)
	procs := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(procs)
	run := func(procs int) []float64 {
		runtime.GOMAXPROCS(procs)
		m, _ := New(7, 8, 1, LR, WeightDecay)
		if _, err := m.Train(x, y, 5); err != nil {
			t.Fatal(err)
		}
		p, _ := m.Predict(x)
		return p
	}
	a, b, c := run(1), run(1), run(3)
	for i := range a {
		if a[i] != b[i] || a[i] != c[i] {
			t.Fatalf("prediction %d differs between runs: %v, %v, %v", i, a[i], b[i], c[i])
		}
	}
}

func TestErrors(t *testing.T) {
	m, _ := New(3, 0, 0, LR, WeightDecay)
	if _, err := m.Predict(Sequences{N: 1, K: 2, T: 4, Data: make([]float64, 8)}); err == nil {
		t.Error("T = 4 sequences accepted by a T = 3 model")
	}
	if _, err := m.Predict(Sequences{N: 1, K: 2, T: 3, Data: make([]float64, 5)}); err == nil {
		t.Error("short data accepted")
	}
	if _, err := m.Train(Sequences{N: 1, K: 2, T: 3, Data: make([]float64, 6)}, []float64{1}, 1); err == nil {
		t.Error("short targets accepted")
	}
	if _, err := New(0, 0, 0, LR, WeightDecay); err == nil {
		t.Error("T = 0 accepted")
	}
}

// TestBatchedMatchesOld checks that the batched passes give bit for bit the results of psi's
// original one-sequence-at-a-time passes (old_test.go): the losses, the weights after several
// Adam steps and the predictions, for batch sizes around the chunk size, short and long
// sequences, several T and one or two cores, with gemm's assembly kernels and without.
func TestBatchedMatchesOld(t *testing.T) {
	for _, useAsm := range []bool{false, asmKernel} {
		saved := asmKernel
		asmKernel = useAsm
		testBatchedMatchesOld(t)
		asmKernel = saved
	}
}

func testBatchedMatchesOld(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(procs)
	for _, p := range []int{1, 2} {
		runtime.GOMAXPROCS(p)
		for _, T := range []int{1, 3, 7} {
			for _, K := range []int{1, 2, 5} {
				for _, N := range []int{1, 63, 64, 65, 300} {
					x, y := randomData(N, K, T, uint64(100*T+10*K+N))
					a, _ := New(T, 9, uint64(N), LR, WeightDecay)
					b, _ := New(T, 9, uint64(N), LR, WeightDecay)
					for step := 0; step < 3; step++ {
						la, err := a.Train(x, y, 2)
						if err != nil {
							t.Fatal(err)
						}
						lb := b.oldTrain(x, y, 2)
						if la != lb {
							t.Fatalf("asm %v procs %d T %d K %d N %d step %d: loss %v, original %v", asmKernel, p, T, K, N, step, la, lb)
						}
					}
					for i, v := range a.Weights() {
						if w := b.Weights()[i]; math.Float64bits(v) != math.Float64bits(w) {
							t.Fatalf("asm %v procs %d T %d K %d N %d: weight %d is %v, original %v", asmKernel, p, T, K, N, i, v, w)
						}
					}
					pa, err := a.Predict(x)
					if err != nil {
						t.Fatal(err)
					}
					for i, v := range b.oldPredict(x) {
						if math.Float64bits(pa[i]) != math.Float64bits(v) {
							t.Fatalf("asm %v procs %d T %d K %d N %d: prediction %d is %v, original %v", asmKernel, p, T, K, N, i, pa[i], v)
						}
					}
				}
			}
		}
	}
}
