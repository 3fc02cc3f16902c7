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
type Model struct {
	T, H  int
	theta []float64
	grad  []float64
	adam  *optim.Adam
	lr    float64
	off   offsets
	parts [][]float64 // per-chunk gradients
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
	c := newCache(m, x.K)
	for n := 0; n < x.N; n++ {
		copy(out[n*m.T:(n+1)*m.T], m.forward(m.theta, x.Data[n*x.K*x.T:(n+1)*x.K*x.T], c))
	}
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

// chunk is the number of sequences whose gradient one goroutine accumulates; the chunks'
// gradients are summed in chunk order, so the result does not depend on the number of cores.
const chunk = 64

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
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), nc)) {
		wg.Go(func() {
			c := newCache(m, x.K)
			for i := range next {
				a, b := i*chunk, min((i+1)*chunk, x.N)
				losses[i] = m.chunkLossGrad(theta, x, y, a, b, c, m.parts[i])
			}
		})
	}
	for i := 0; i < nc; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
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
func (m *Model) chunkLossGrad(theta []float64, x Sequences, y []float64, a, b int, c *cache, grad []float64) float64 {
	clear(grad)
	var loss float64
	scale := 1 / float64(x.N*m.T)
	dout := make([]float64, m.T)
	for n := a; n < b; n++ {
		out := m.forward(theta, x.Data[n*x.K*x.T:(n+1)*x.K*x.T], c)
		for k, v := range out {
			d := v - y[n*m.T+k]
			loss += d * d
			dout[k] = 2 * d * scale
		}
		m.backward(theta, c, dout, grad)
	}
	return loss * scale
}

// dirCache holds one direction of one layer over a sequence: post-activation gates (K x 4H),
// cell states and hidden states (K x H), indexed by time position.
type dirCache struct {
	gates, c, h []float64
}

// cache holds everything the backward pass of one sequence needs.
type cache struct {
	K    int
	x    []float64       // input, K x T
	in1  []float64       // layer 1 input, K x 2H (forward and backward hidden states)
	dir  [2][2]dirCache  // [layer][direction]
	z    []float64       // last step's output, 2H
	y1   []float64       // FC1 pre-activation, 2H
	r    []float64       // ReLU(y1)
	out  []float64       // T
	dh   [2][2][]float64 // gradient w.r.t. hidden states, K x H
	dx1  []float64       // gradient w.r.t. layer 1 input, K x 2H
	dx0  []float64       // gradient w.r.t. layer 0 input (discarded), K x T
	tmp  []float64       // 4H scratch
	dhN  []float64       // H scratch: dh from the next step
	dcN  []float64       // H scratch: dc from the next step
	zero []float64       // H zeros
}

func newCache(m *Model, k int) *cache {
	h := m.H
	c := &cache{K: k, in1: make([]float64, k*2*h), z: make([]float64, 2*h), y1: make([]float64, 2*h),
		r: make([]float64, 2*h), out: make([]float64, m.T), dx1: make([]float64, k*2*h),
		dx0: make([]float64, k*m.T), tmp: make([]float64, 4*h), dhN: make([]float64, h),
		dcN: make([]float64, h), zero: make([]float64, h)}
	for l := 0; l < 2; l++ {
		for d := 0; d < 2; d++ {
			c.dir[l][d] = dirCache{gates: make([]float64, k*4*h), c: make([]float64, k*h), h: make([]float64, k*h)}
			c.dh[l][d] = make([]float64, k*h)
		}
	}
	return c
}

func sigmoid(a float64) float64 { return 1 / (1 + math.Exp(-a)) }

// forward runs psi on one sequence x (K x T) and returns the output (T values, in the cache).
func (m *Model) forward(theta, x []float64, c *cache) []float64 {
	h := m.H
	c.x = x
	for d := 0; d < 2; d++ {
		m.runDir(theta, 0, d, x, &c.dir[0][d], c.K, c.zero)
	}
	for t := 0; t < c.K; t++ {
		copy(c.in1[t*2*h:t*2*h+h], c.dir[0][0].h[t*h:(t+1)*h])
		copy(c.in1[t*2*h+h:(t+1)*2*h], c.dir[0][1].h[t*h:(t+1)*h])
	}
	for d := 0; d < 2; d++ {
		m.runDir(theta, 1, d, c.in1, &c.dir[1][d], c.K, c.zero)
	}
	last := (c.K - 1) * h
	copy(c.z[:h], c.dir[1][0].h[last:last+h])
	copy(c.z[h:], c.dir[1][1].h[last:last+h])
	o := m.off
	for i := 0; i < 2*h; i++ {
		s := theta[o.b1+i]
		row := theta[o.w1+i*2*h : o.w1+(i+1)*2*h]
		for j, v := range c.z {
			s += row[j] * v
		}
		c.y1[i] = s
		c.r[i] = max(s, 0)
	}
	for i := 0; i < m.T; i++ {
		s := theta[o.b2+i]
		row := theta[o.w2+i*2*h : o.w2+(i+1)*2*h]
		for j, v := range c.r {
			s += row[j] * v
		}
		c.out[i] = s
	}
	return c.out
}

// pos is the time position of processing step s in direction d (1 runs backwards in time).
func pos(s, k, d int) int {
	if d == 1 {
		return k - 1 - s
	}
	return s
}

// runDir runs direction d of layer l over the sequence x (K x in) from zero initial states:
// a = W x_t + U h_prev + b; i, f, o = sigmoid, g = tanh; c = f c_prev + i g; h = o tanh(c).
func (m *Model) runDir(theta []float64, l, d int, x []float64, dc *dirCache, k int, zero []float64) {
	h := m.H
	p := m.off.lstm[l][d]
	in := p.in
	for s := 0; s < k; s++ {
		t := pos(s, k, d)
		hPrev, cPrev := zero, zero
		if s > 0 {
			tp := pos(s-1, k, d)
			hPrev, cPrev = dc.h[tp*h:(tp+1)*h], dc.c[tp*h:(tp+1)*h]
		}
		xt := x[t*in : (t+1)*in]
		g := dc.gates[t*4*h : (t+1)*4*h]
		for r := 0; r < 4*h; r++ {
			a := theta[p.b+r]
			wr := theta[p.w+r*in : p.w+(r+1)*in]
			for j, v := range xt {
				a += wr[j] * v
			}
			ur := theta[p.u+r*h : p.u+(r+1)*h]
			for j, v := range hPrev {
				a += ur[j] * v
			}
			if r >= 2*h && r < 3*h {
				g[r] = math.Tanh(a)
			} else {
				g[r] = sigmoid(a)
			}
		}
		for j := 0; j < h; j++ {
			cj := g[h+j]*cPrev[j] + g[j]*g[2*h+j]
			dc.c[t*h+j] = cj
			dc.h[t*h+j] = g[3*h+j] * math.Tanh(cj)
		}
	}
}

// backward accumulates into grad the gradient of the loss for the sequence in c, given the
// gradient dout of the loss with respect to psi's output.
func (m *Model) backward(theta []float64, c *cache, dout, grad []float64) {
	h := m.H
	o := m.off
	// FC2 and ReLU.
	dr := c.tmp[:2*h]
	clear(dr)
	for i := 0; i < m.T; i++ {
		grad[o.b2+i] += dout[i]
		row := theta[o.w2+i*2*h : o.w2+(i+1)*2*h]
		grow := grad[o.w2+i*2*h : o.w2+(i+1)*2*h]
		for j, v := range c.r {
			grow[j] += dout[i] * v
			dr[j] += dout[i] * row[j]
		}
	}
	// FC1: the gradient w.r.t. z goes to the last time step of layer 1's two directions.
	for d := 0; d < 2; d++ {
		clear(c.dh[1][d])
		clear(c.dh[0][d])
	}
	last := (c.K - 1) * h
	for i := 0; i < 2*h; i++ {
		if c.y1[i] <= 0 {
			continue
		}
		dy := dr[i]
		grad[o.b1+i] += dy
		row := theta[o.w1+i*2*h : o.w1+(i+1)*2*h]
		grow := grad[o.w1+i*2*h : o.w1+(i+1)*2*h]
		for j, v := range c.z {
			grow[j] += dy * v
			if j < h {
				c.dh[1][0][last+j] += dy * row[j]
			} else {
				c.dh[1][1][last+j-h] += dy * row[j]
			}
		}
	}
	clear(c.dx1)
	for d := 0; d < 2; d++ {
		m.backDir(theta, grad, 1, d, c.in1, &c.dir[1][d], c.dh[1][d], c.dx1, c)
	}
	for t := 0; t < c.K; t++ {
		copy(c.dh[0][0][t*h:(t+1)*h], c.dx1[t*2*h:t*2*h+h])
		copy(c.dh[0][1][t*h:(t+1)*h], c.dx1[t*2*h+h:(t+1)*2*h])
	}
	clear(c.dx0)
	for d := 0; d < 2; d++ {
		m.backDir(theta, grad, 0, d, c.x, &c.dir[0][d], c.dh[0][d], c.dx0, c)
	}
}

// backDir back-propagates through time for direction d of layer l: dh (K x H) is the loss's
// gradient with respect to the direction's hidden states from above; the gradient with
// respect to the input x (K x in) is added into dx.
func (m *Model) backDir(theta, grad []float64, l, d int, x []float64, dc *dirCache, dh, dx []float64, c *cache) {
	h := m.H
	p := m.off.lstm[l][d]
	in := p.in
	k := c.K
	dhN, dcN, da := c.dhN, c.dcN, c.tmp
	clear(dhN)
	clear(dcN)
	for s := k - 1; s >= 0; s-- {
		t := pos(s, k, d)
		hPrev, cPrev := c.zero, c.zero
		if s > 0 {
			tp := pos(s-1, k, d)
			hPrev, cPrev = dc.h[tp*h:(tp+1)*h], dc.c[tp*h:(tp+1)*h]
		}
		g := dc.gates[t*4*h : (t+1)*4*h]
		for j := 0; j < h; j++ {
			gi, gf, gg, gout := g[j], g[h+j], g[2*h+j], g[3*h+j]
			tc := math.Tanh(dc.c[t*h+j])
			dht := dh[t*h+j] + dhN[j]
			dct := dht*gout*(1-tc*tc) + dcN[j]
			da[j] = dct * gg * gi * (1 - gi)
			da[h+j] = dct * cPrev[j] * gf * (1 - gf)
			da[2*h+j] = dct * gi * (1 - gg*gg)
			da[3*h+j] = dht * tc * gout * (1 - gout)
			dcN[j] = dct * gf
		}
		clear(dhN)
		xt := x[t*in : (t+1)*in]
		dxt := dx[t*in : (t+1)*in]
		for r := 0; r < 4*h; r++ {
			a := da[r]
			grad[p.b+r] += a
			wr := theta[p.w+r*in : p.w+(r+1)*in]
			gw := grad[p.w+r*in : p.w+(r+1)*in]
			for j, v := range xt {
				gw[j] += a * v
				dxt[j] += a * wr[j]
			}
			ur := theta[p.u+r*h : p.u+(r+1)*h]
			gu := grad[p.u+r*h : p.u+(r+1)*h]
			for j, v := range hPrev {
				gu[j] += a * v
				dhN[j] += a * ur[j]
			}
		}
	}
}
