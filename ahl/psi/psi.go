// Package psi is AHL's self-supervised importance model (docs/algorithm.md, "psi and the
// importance weights"): a 2-layer bidirectional LSTM over the last K epochs' score vectors of
// a training sample, whose last time step's output passes through FC(2T -> 2T) -> ReLU ->
// FC(2T -> T) to predict the next epoch's score vector.
//
// psi is tiny (about 2,400 weights on sequences of 5 steps of 7 values), so the forward and
// backward passes are written out by hand in float64. The tests check them twice: against the
// same LSTM built from gorgonia ops (gorgonia has no LSTM; see GorgoniaLossGrad) and against
// an independent gonum forward pass and its numerical gradient.
package psi

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/pipe-ahl/pipe/ahl/optim"
)

// Paper defaults.
const (
	LR          = 0.02 // Adam learning rate (paper; the reference code uses 0.002)
	WeightDecay = 1e-3 // Adam L2 weight decay
)

// Sequences is N sequences of K time steps of T values each, row-major N x K x T.
type Sequences struct {
	N, K, T int
	Data    []float64
}

// Check reports an error when the data's length disagrees with the shape.
func (s Sequences) Check() error {
	if s.N < 0 || s.K <= 0 || s.T <= 0 || len(s.Data) != s.N*s.K*s.T {
		return fmt.Errorf("psi: sequences of shape %dx%dx%d do not match %d values", s.N, s.K, s.T, len(s.Data))
	}
	return nil
}

// Model is psi with input size T and hidden size T.
//
// Its weights are one flat float64 vector in this order: for layer 0 then 1, for the forward
// then the backward direction: W (4H x in, row-major), U (4H x H), b (4H), the gates in the
// order input, forget, cell, output (PyTorch's order; one bias where PyTorch has two equal in
// effect), in = T for layer 0 and 2H for layer 1; then FC1 weight (2H x 2H), FC1 bias (2H),
// FC2 weight (T x 2H), FC2 bias (T). H = T.
//
// A Model keeps its scratch between calls: it is not safe for concurrent use.
type Model struct {
	T, H  int
	theta []float64
	grad  []float64
	adam  *optim.Adam
	lr    float64
	off   offsets
	parts [][]float64 // per-chunk gradients
	works []*work     // per-goroutine scratch of the batched passes
}

type offsets struct {
	lstm     [2][2]struct{ w, u, b, in int }
	w1, b1   int
	w2, b2   int
	nWeights int
}

func layout(t, h int) offsets {
	var o offsets
	p := 0
	for l := 0; l < 2; l++ {
		in := t
		if l == 1 {
			in = 2 * h
		}
		for d := 0; d < 2; d++ {
			c := &o.lstm[l][d]
			c.in = in
			c.w = p
			p += 4 * h * in
			c.u = p
			p += 4 * h * h
			c.b = p
			p += 4 * h
		}
	}
	o.w1 = p
	p += 4 * h * h
	o.b1 = p
	p += 2 * h
	o.w2 = p
	p += t * 2 * h
	o.b2 = p
	p += t
	o.nWeights = p
	return o
}

// New returns psi for T base models, initialised as PyTorch does (LSTM weights and biases
// U(-1/sqrt(H), 1/sqrt(H)); each linear layer's U(-1/sqrt(fan_in), 1/sqrt(fan_in))) from
// rand.NewPCG(seed, stream), trained by Adam with learning rate lr and weight decay wd.
func New(t int, seed, stream uint64, lr, wd float64) (*Model, error) {
	if t <= 0 {
		return nil, fmt.Errorf("psi: T = %d, want > 0", t)
	}
	m := &Model{T: t, H: t, lr: lr, off: layout(t, t)}
	m.theta = make([]float64, m.off.nWeights)
	m.grad = make([]float64, m.off.nWeights)
	m.adam = optim.NewAdam(m.off.nWeights, wd)
	rng := rand.New(rand.NewPCG(seed, stream))
	uni := func(a, b int, bound float64) {
		for k := a; k < b; k++ {
			m.theta[k] = (2*rng.Float64() - 1) * bound
		}
	}
	uni(0, m.off.w1, 1/math.Sqrt(float64(m.H)))
	uni(m.off.w1, m.off.w2, 1/math.Sqrt(float64(2*m.H)))
	uni(m.off.w2, m.off.nWeights, 1/math.Sqrt(float64(2*m.H)))
	return m, nil
}

// Weights returns the model's flat weight vector (see Model for its layout). It is the
// model's own storage.
func (m *Model) Weights() []float64 { return m.theta }

func (m *Model) check(x Sequences) error {
	if err := x.Check(); err != nil {
		return err
	}
	if x.T != m.T {
		return fmt.Errorf("psi: sequences have %d values per step, model expects T = %d", x.T, m.T)
	}
	return nil
}

// Predict returns psi's prediction for every sequence, N x T row-major.
func (m *Model) Predict(x Sequences) ([]float64, error) {
	if err := m.check(x); err != nil {
		return nil, err
	}
	out := make([]float64, x.N*m.T)
	m.eachChunk(x.N, x.K, func(_, a, b int, w *work) {
		m.forwardBatch(m.theta, x, a, b, w)
		for n := a; n < b; n++ {
			copy(out[n*m.T:(n+1)*m.T], m.head(m.theta, w, n-a))
		}
	})
	return out, nil
}

// Train takes steps full-batch Adam steps on the mean squared error between psi(x) and
// targets (N x T, row-major) and returns the loss before the last step.
func (m *Model) Train(x Sequences, targets []float64, steps int) (float64, error) {
	if err := m.check(x); err != nil {
		return 0, err
	}
	if len(targets) != x.N*m.T {
		return 0, fmt.Errorf("psi: %d target values for %d sequences of T = %d", len(targets), x.N, m.T)
	}
	if x.N == 0 {
		return 0, fmt.Errorf("psi: no sequences to train on")
	}
	var loss float64
	for s := 0; s < steps; s++ {
		loss = m.lossGrad(m.theta, x, targets, m.grad)
		m.adam.Step(m.theta, m.grad, m.lr)
	}
	return loss, nil
}

// chunk is the number of sequences one goroutine processes in lockstep and whose gradient it
// accumulates; the chunks' gradients are summed in chunk order, so the result does not depend
// on the number of cores.
const chunk = 64

// eachChunk calls f(i, a, b, w) for every chunk i of sequences a..b-1 of n, spread over
// GOMAXPROCS goroutines, each with its own scratch w (kept in the model for the next call).
func (m *Model) eachChunk(n, k int, f func(i, a, b int, w *work)) {
	nc := (n + chunk - 1) / chunk
	workers := max(1, min(runtime.GOMAXPROCS(0), nc))
	for len(m.works) < workers {
		m.works = append(m.works, nil)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for g := range workers {
		if m.works[g] == nil || m.works[g].k != k {
			m.works[g] = newWork(m, k)
		}
		w := m.works[g]
		wg.Go(func() {
			for i := range next {
				f(i, i*chunk, min((i+1)*chunk, n), w)
			}
		})
	}
	for i := 0; i < nc; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
}

// lossGrad returns the mean squared error of theta on (x, y) and writes its gradient into grad.
func (m *Model) lossGrad(theta []float64, x Sequences, y []float64, grad []float64) float64 {
	nc := (x.N + chunk - 1) / chunk
	if len(m.parts) < nc {
		m.parts = make([][]float64, nc)
		for i := range m.parts {
			m.parts[i] = make([]float64, len(theta))
		}
	}
	losses := make([]float64, nc)
	m.eachChunk(x.N, x.K, func(i, a, b int, w *work) {
		losses[i] = m.chunkLossGrad(theta, x, y, a, b, w, m.parts[i])
	})
	clear(grad)
	var loss float64
	for i := 0; i < nc; i++ {
		loss += losses[i]
		for k, g := range m.parts[i] {
			grad[k] += g
		}
	}
	return loss
}

// chunkLossGrad returns the squared-error sum of sequences a..b-1 divided by N*T, and writes
// its gradient into grad.
//
// The sequences run through the LSTM in lockstep, but every value of one sequence is computed
// with the same floating-point operations in the same order as if it ran alone, and every
// gradient element adds its terms in the order of a sequence-by-sequence backward pass
// (sequence by sequence, within one the time steps as backDir visits them), so the result is
// bit for bit that of the one-sequence-at-a-time passes TestBatchedMatchesOld keeps.
func (m *Model) chunkLossGrad(theta []float64, x Sequences, y []float64, a, b int, w *work, grad []float64) float64 {
	clear(grad)
	var loss float64
	scale := 1 / float64(x.N*m.T)
	m.forwardBatch(theta, x, a, b, w)
	clear(w.dh1)
	for n := a; n < b; n++ {
		out := m.head(theta, w, n-a)
		for k, v := range out {
			d := v - y[n*m.T+k]
			loss += d * d
			w.dout[k] = 2 * d * scale
		}
		m.headBack(theta, w, n-a, grad)
	}
	m.backwardBatch(theta, w)
	m.lstmGrad(grad, w)
	return loss * scale
}

// work holds one goroutine's scratch for a batch of nb <= chunk sequences run in lockstep.
// Its batch arrays are structure-of-arrays: "rows" of nb values, one per sequence, so that
// row i holds element i of every sequence and the inner loops run over nb contiguous values.
type work struct {
	nb, k int
	x0    []float64       // layer 0 input: K x T rows (time t, value j: row t*T+j)
	h0    []float64       // layer 0 hidden states = layer 1 input: K x 2H rows (row t*2H + d*H + j for direction d)
	h1    []float64       // layer 1 hidden states: K x 2H rows, laid out as h0
	gates [2][2][]float64 // [layer][direction] post-activation gates: K x 4H rows (row t*4H + r)
	cs    [2][2][]float64 // [layer][direction] cell states: K x H rows
	tc    [2][2][]float64 // [layer][direction] tanh of the cell states: K x H rows
	da    [2][2][]float64 // [layer][direction] gradient w.r.t. the gates' pre-activations: K x 4H rows
	dh1   []float64       // gradient w.r.t. layer 1's hidden states from the head: K x 2H rows
	dx1   []float64       // gradient w.r.t. layer 1's input (layer 0's hidden states): K x 2H rows
	wt    []float64       // runDir's W transpose, at most 2H x 4H
	ut    []float64       // runDir's U transpose, H x 4H
	daP   []float64       // lstmGrad's packed gate gradients: K*chunk x 4H
	xP    []float64       // lstmGrad's packed inputs: K*chunk x at most 3H+8
	g     []float64       // lstmGrad's gradient tile: 4H x at most 3H+8
	dhN   []float64       // H rows: dh from the next step
	dcN   []float64       // H rows: dc from the next step
	zero  []float64       // H rows of zeros
	// One sequence's head: z (its last step's layer 1 output, 2H), y1 (FC1 pre-activation),
	// r (ReLU(y1)), out (T), dout (T), dr and dz (2H).
	z, y1, r, out, dout, dr, dz []float64
}

func newWork(m *Model, k int) *work {
	h, t := m.H, m.T
	rows := func(r int) []float64 { return make([]float64, r*chunk) }
	w := &work{k: k, x0: rows(k * t), h0: rows(k * 2 * h), h1: rows(k * 2 * h), dh1: rows(k * 2 * h),
		dx1: rows(k * 2 * h), dhN: rows(h), dcN: rows(h), zero: rows(h),
		z: make([]float64, 2*h), y1: make([]float64, 2*h), r: make([]float64, 2*h), out: make([]float64, t),
		dout: make([]float64, t), dr: make([]float64, 2*h), dz: make([]float64, 2*h),
		wt: make([]float64, 2*h*4*h), ut: make([]float64, h*4*h), daP: make([]float64, k*chunk*4*h),
		xP: make([]float64, k*chunk*(3*h+8)), g: make([]float64, 4*h*(3*h+8))}
	for l := 0; l < 2; l++ {
		for d := 0; d < 2; d++ {
			w.gates[l][d] = rows(k * 4 * h)
			w.cs[l][d] = rows(k * h)
			w.tc[l][d] = rows(k * h)
			w.da[l][d] = rows(k * 4 * h)
		}
	}
	return w
}

func sigmoid(a float64) float64 { return 1 / (1 + math.Exp(-a)) }

// pos is the time position of processing step s in direction d (1 runs backwards in time).
func pos(s, k, d int) int {
	if d == 1 {
		return k - 1 - s
	}
	return s
}

// forwardBatch runs psi's LSTM on sequences a..b-1 of x in lockstep, leaving the hidden
// states in w.
func (m *Model) forwardBatch(theta []float64, x Sequences, a, b int, w *work) {
	nb, k, t := b-a, x.K, m.T
	w.nb = nb
	for n := 0; n < nb; n++ {
		for i, v := range x.Data[(a+n)*k*t : (a+n+1)*k*t] {
			w.x0[i*nb+n] = v
		}
	}
	for d := 0; d < 2; d++ {
		m.runDir(theta, 0, d, w.x0, w.h0, w)
	}
	for d := 0; d < 2; d++ {
		m.runDir(theta, 1, d, w.h0, w.h1, w)
	}
}

// runDir runs direction d of layer l over the batch's input xs (K x in rows) from zero
// initial states, writing its hidden states into hs (K x 2H rows, the direction's half):
// a = W x_t + U h_prev + b; i, f, o = sigmoid, g = tanh; c = f c_prev + i g; h = o tanh(c).
func (m *Model) runDir(theta []float64, l, d int, xs, hs []float64, w *work) {
	h, nb, k := m.H, w.nb, w.k
	p := m.off.lstm[l][d]
	in := p.in
	gates, cs := w.gates[l][d], w.cs[l][d]
	wt, ut := w.wt[:in*4*h], w.ut[:h*4*h]
	transpose(wt, theta[p.w:p.w+4*h*in], 4*h, in)
	transpose(ut, theta[p.u:p.u+4*h*h], 4*h, h)
	for s := 0; s < k; s++ {
		t := pos(s, k, d)
		hPrev, cPrev := w.zero[:h*nb], w.zero[:h*nb]
		if s > 0 {
			tp := pos(s-1, k, d)
			hPrev, cPrev = hs[(tp*2*h+d*h)*nb:(tp*2*h+d*h+h)*nb], cs[tp*h*nb:(tp+1)*h*nb]
		}
		g := gates[t*4*h*nb : (t+1)*4*h*nb]
		affine(g, theta[p.b:p.b+4*h], wt, xs[t*in*nb:(t+1)*in*nb], ut, hPrev, nb)
		for i, v := range g[:2*h*nb] {
			g[i] = sigmoid(v)
		}
		for i, v := range g[2*h*nb : 3*h*nb] {
			g[2*h*nb+i] = math.Tanh(v)
		}
		for i, v := range g[3*h*nb:] {
			g[3*h*nb+i] = sigmoid(v)
		}
		gi, gf, gg, gout := g[:h*nb], g[h*nb:2*h*nb], g[2*h*nb:3*h*nb], g[3*h*nb:4*h*nb]
		ct := cs[t*h*nb : (t+1)*h*nb]
		tct := w.tc[l][d][t*h*nb : (t+1)*h*nb]
		ht := hs[(t*2*h+d*h)*nb : (t*2*h+d*h+h)*nb]
		for i := range ct {
			cj := gf[i]*cPrev[i] + gi[i]*gg[i]
			ct[i] = cj
			tc := math.Tanh(cj)
			tct[i] = tc
			ht[i] = gout[i] * tc
		}
	}
}

// head runs FC1, ReLU and FC2 on sequence n of the batch and returns its output (w.out).
func (m *Model) head(theta []float64, w *work, n int) []float64 {
	h, nb := m.H, w.nb
	last := (w.k - 1) * 2 * h
	for j := range w.z {
		w.z[j] = w.h1[(last+j)*nb+n]
	}
	o := m.off
	for i := 0; i < 2*h; i++ {
		s := theta[o.b1+i]
		row := theta[o.w1+i*2*h : o.w1+(i+1)*2*h]
		for j, v := range w.z {
			s += row[j] * v
		}
		w.y1[i] = s
		w.r[i] = max(s, 0)
	}
	for i := 0; i < m.T; i++ {
		s := theta[o.b2+i]
		row := theta[o.w2+i*2*h : o.w2+(i+1)*2*h]
		for j, v := range w.r {
			s += row[j] * v
		}
		w.out[i] = s
	}
	return w.out
}

// headBack accumulates into grad the head's gradient for sequence n of the batch, whose head
// was the last one run, given w.dout, and writes the gradient w.r.t. its last step's layer 1
// output into w.dh1.
func (m *Model) headBack(theta []float64, w *work, n int, grad []float64) {
	h := m.H
	o := m.off
	dr := w.dr
	clear(dr)
	for i := 0; i < m.T; i++ {
		grad[o.b2+i] += w.dout[i]
		row := theta[o.w2+i*2*h : o.w2+(i+1)*2*h]
		grow := grad[o.w2+i*2*h : o.w2+(i+1)*2*h]
		for j, v := range w.r {
			grow[j] += w.dout[i] * v
			dr[j] += w.dout[i] * row[j]
		}
	}
	dz := w.dz
	clear(dz)
	for i := 0; i < 2*h; i++ {
		if w.y1[i] <= 0 {
			continue
		}
		dy := dr[i]
		grad[o.b1+i] += dy
		row := theta[o.w1+i*2*h : o.w1+(i+1)*2*h]
		grow := grad[o.w1+i*2*h : o.w1+(i+1)*2*h]
		for j, v := range w.z {
			grow[j] += dy * v
			dz[j] += dy * row[j]
		}
	}
	last := (w.k - 1) * 2 * h
	for j, v := range dz {
		w.dh1[(last+j)*w.nb+n] = v
	}
}

// backwardBatch back-propagates the gradient in w.dh1 through the batch's LSTM, leaving the
// gradients w.r.t. the gates' pre-activations in w.da.
func (m *Model) backwardBatch(theta []float64, w *work) {
	clear(w.dx1[:w.k*2*m.H*w.nb])
	for d := 0; d < 2; d++ {
		m.backDir(theta, 1, d, w.h1, w.dh1, w.dx1, w)
	}
	for d := 0; d < 2; d++ {
		m.backDir(theta, 0, d, w.h0, w.dx1, nil, w)
	}
}

// backDir back-propagates through time for direction d of layer l of the batch: dhs (K x 2H
// rows, the direction's half) is the loss's gradient w.r.t. the direction's hidden states hs
// from above; the gradient w.r.t. the gates' pre-activations goes to w.da[l][d] and, unless dx
// is nil, the gradient w.r.t. the input (K x in rows) is added into dx.
func (m *Model) backDir(theta []float64, l, d int, hs, dhs, dx []float64, w *work) {
	h, nb, k := m.H, w.nb, w.k
	p := m.off.lstm[l][d]
	in := p.in
	gates, cs := w.gates[l][d], w.cs[l][d]
	dhN, dcN := w.dhN[:h*nb], w.dcN[:h*nb]
	clear(dhN)
	clear(dcN)
	for s := k - 1; s >= 0; s-- {
		t := pos(s, k, d)
		cPrev := w.zero[:h*nb]
		if s > 0 {
			tp := pos(s-1, k, d)
			cPrev = cs[tp*h*nb : (tp+1)*h*nb]
		}
		g := gates[t*4*h*nb : (t+1)*4*h*nb]
		gi, gf, gg, gout := g[:h*nb], g[h*nb:2*h*nb], g[2*h*nb:3*h*nb], g[3*h*nb:4*h*nb]
		da := w.da[l][d][t*4*h*nb : (t+1)*4*h*nb]
		dai, daf, dag, dao := da[:h*nb], da[h*nb:2*h*nb], da[2*h*nb:3*h*nb], da[3*h*nb:4*h*nb]
		tct := w.tc[l][d][t*h*nb : (t+1)*h*nb]
		dh := dhs[(t*2*h+d*h)*nb : (t*2*h+d*h+h)*nb]
		for i, tc := range tct {
			gi, gf, gg, gout := gi[i], gf[i], gg[i], gout[i]
			dht := dh[i] + dhN[i]
			dct := dht*gout*(1-tc*tc) + dcN[i]
			dai[i] = dct * gg * gi * (1 - gi)
			daf[i] = dct * cPrev[i] * gf * (1 - gf)
			dag[i] = dct * gi * (1 - gg*gg)
			dao[i] = dht * tc * gout * (1 - gout)
			dcN[i] = dct * gf
		}
		if dx != nil {
			// dx[j] += sum_r da[r] W[r][j]
			gemm(in, nb, 4*h, theta[p.w:p.w+4*h*in], in, da, nb, dx[t*in*nb:(t+1)*in*nb], nb)
		}
		if s > 0 { // step 0's dh for the step before it is never used
			clear(dhN)
			gemm(h, nb, 4*h, theta[p.u:p.u+4*h*h], h, da, nb, dhN, nb)
		}
	}
}

// lstmGrad adds into grad the LSTM weights' gradient of the batch, from w.da and the states:
// every element adds its terms sequence by sequence and, within a sequence, step by step from
// the last processing step to the first, as a one-sequence backward pass does. For each
// direction it packs the gate gradients (one row of 4H per sequence and step, in that order)
// and the matching inputs, previous hidden states and a 1 for the bias (one row of cp per
// sequence and step), and adds their product into the weights' gradient with gemm, whose sums
// run in row order.
func (m *Model) lstmGrad(grad []float64, w *work) {
	h, nb, k := m.H, w.nb, w.k
	for l := 0; l < 2; l++ {
		xs, hs := w.x0, w.h0
		if l == 1 {
			xs, hs = w.h0, w.h1
		}
		for d := 0; d < 2; d++ {
			p := m.off.lstm[l][d]
			in := p.in
			cp := (in + h + 1 + 7) &^ 7
			da := w.da[l][d]
			daP, xP, g := w.daP[:nb*k*4*h], w.xP[:nb*k*cp], w.g[:4*h*cp]
			clear(xP)
			for i := 0; i < k; i++ {
				s := k - 1 - i
				t := pos(s, k, d)
				for r := 0; r < 4*h; r++ {
					row := da[(t*4*h+r)*nb : (t*4*h+r+1)*nb]
					for n, v := range row {
						daP[(n*k+i)*4*h+r] = v
					}
				}
				for j := 0; j < in; j++ {
					row := xs[(t*in+j)*nb : (t*in+j+1)*nb]
					for n, v := range row {
						xP[(n*k+i)*cp+j] = v
					}
				}
				if s > 0 {
					tp := pos(s-1, k, d)
					for j := 0; j < h; j++ {
						row := hs[(tp*2*h+d*h+j)*nb : (tp*2*h+d*h+j+1)*nb]
						for n, v := range row {
							xP[(n*k+i)*cp+in+j] = v
						}
					}
				}
				for n := 0; n < nb; n++ {
					xP[(n*k+i)*cp+in+h] = 1 // da*1 is da: the bias's term
				}
			}
			for r := 0; r < 4*h; r++ {
				gr := g[r*cp : (r+1)*cp]
				copy(gr, grad[p.w+r*in:p.w+(r+1)*in])
				copy(gr[in:], grad[p.u+r*h:p.u+(r+1)*h])
				gr[in+h] = grad[p.b+r]
			}
			gemm(4*h, cp, nb*k, daP, 4*h, xP, cp, g, cp)
			for r := 0; r < 4*h; r++ {
				gr := g[r*cp : (r+1)*cp]
				copy(grad[p.w+r*in:p.w+(r+1)*in], gr)
				copy(grad[p.u+r*h:p.u+(r+1)*h], gr[in:])
				grad[p.b+r] = gr[in+h]
			}
		}
	}
}

// affine sets out's rows r (of nb values) to b[r] + sum_j W[r][j] x[j] + sum_j U[r][j] hp[j],
// adding the terms in that order for each value; wt is W's transpose (in x len(b)), ut U's
// (H x len(b)), x in rows and hp H rows.
func affine(out, b, wt, x, ut, hp []float64, nb int) {
	m := len(b)
	for r, br := range b {
		o := out[r*nb : (r+1)*nb]
		for n := range o {
			o[n] = br
		}
	}
	gemm(m, nb, len(wt)/m, wt, m, x, nb, out, nb)
	gemm(m, nb, len(ut)/m, ut, m, hp, nb, out, nb)
}

// transpose writes the transpose of a (rows x cols, row-major) into t.
func transpose(t, a []float64, rows, cols int) {
	for r := 0; r < rows; r++ {
		for c, v := range a[r*cols : (r+1)*cols] {
			t[c*rows+r] = v
		}
	}
}
