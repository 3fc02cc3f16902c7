package psi

// This file keeps psi's original one-sequence-at-a-time forward and backward passes as the
// reference the batched implementation must match bit for bit (TestBatchedMatchesOld).

import (
	"math"
	"runtime"
	"sync"
)

// oldPredict is Predict as it was before the batched passes.
func (m *Model) oldPredict(x Sequences) []float64 {
	out := make([]float64, x.N*m.T)
	c := oldNewCache(m, x.K)
	for n := 0; n < x.N; n++ {
		copy(out[n*m.T:(n+1)*m.T], m.oldForward(m.theta, x.Data[n*x.K*x.T:(n+1)*x.K*x.T], c))
	}
	return out
}

// oldTrain is Train as it was before the batched passes.
func (m *Model) oldTrain(x Sequences, targets []float64, steps int) float64 {
	var loss float64
	for s := 0; s < steps; s++ {
		loss = m.oldLossGrad(m.theta, x, targets, m.grad)
		m.adam.Step(m.theta, m.grad, m.lr)
	}
	return loss
}

// lossGrad returns the mean squared error of theta on (x, y) and writes its gradient into grad.
func (m *Model) oldLossGrad(theta []float64, x Sequences, y []float64, grad []float64) float64 {
	nc := (x.N + chunk - 1) / chunk
	parts := make([][]float64, nc)
	{
		for i := range parts {
			parts[i] = make([]float64, len(theta))
		}
	}
	losses := make([]float64, nc)
	next := make(chan int)
	var wg sync.WaitGroup
	for range max(1, min(runtime.GOMAXPROCS(0), nc)) {
		wg.Go(func() {
			c := oldNewCache(m, x.K)
			for i := range next {
				a, b := i*chunk, min((i+1)*chunk, x.N)
				losses[i] = m.oldChunkLossGrad(theta, x, y, a, b, c, parts[i])
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
		for k, g := range parts[i] {
			grad[k] += g
		}
	}
	return loss
}

// chunkLossGrad returns the squared-error sum of sequences a..b-1 divided by N*T, and writes
// its gradient into grad.
func (m *Model) oldChunkLossGrad(theta []float64, x Sequences, y []float64, a, b int, c *oldCache, grad []float64) float64 {
	clear(grad)
	var loss float64
	scale := 1 / float64(x.N*m.T)
	dout := make([]float64, m.T)
	for n := a; n < b; n++ {
		out := m.oldForward(theta, x.Data[n*x.K*x.T:(n+1)*x.K*x.T], c)
		for k, v := range out {
			d := v - y[n*m.T+k]
			loss += d * d
			dout[k] = 2 * d * scale
		}
		m.oldBackward(theta, c, dout, grad)
	}
	return loss * scale
}

// oldDirCache holds one direction of one layer over a sequence: post-activation gates (K x 4H),
// cell states and hidden states (K x H), indexed by time position.
type oldDirCache struct {
	gates, c, h []float64
}

// cache holds everything the backward pass of one sequence needs.
type oldCache struct {
	K    int
	x    []float64         // input, K x T
	in1  []float64         // layer 1 input, K x 2H (forward and backward hidden states)
	dir  [2][2]oldDirCache // [layer][direction]
	z    []float64         // last step's output, 2H
	y1   []float64         // FC1 pre-activation, 2H
	r    []float64         // ReLU(y1)
	out  []float64         // T
	dh   [2][2][]float64   // gradient w.r.t. hidden states, K x H
	dx1  []float64         // gradient w.r.t. layer 1 input, K x 2H
	dx0  []float64         // gradient w.r.t. layer 0 input (discarded), K x T
	tmp  []float64         // 4H scratch
	dhN  []float64         // H scratch: dh from the next step
	dcN  []float64         // H scratch: dc from the next step
	zero []float64         // H zeros
}

func oldNewCache(m *Model, k int) *oldCache {
	h := m.H
	c := &oldCache{K: k, in1: make([]float64, k*2*h), z: make([]float64, 2*h), y1: make([]float64, 2*h),
		r: make([]float64, 2*h), out: make([]float64, m.T), dx1: make([]float64, k*2*h),
		dx0: make([]float64, k*m.T), tmp: make([]float64, 4*h), dhN: make([]float64, h),
		dcN: make([]float64, h), zero: make([]float64, h)}
	for l := 0; l < 2; l++ {
		for d := 0; d < 2; d++ {
			c.dir[l][d] = oldDirCache{gates: make([]float64, k*4*h), c: make([]float64, k*h), h: make([]float64, k*h)}
			c.dh[l][d] = make([]float64, k*h)
		}
	}
	return c
}

func oldSigmoid(a float64) float64 { return 1 / (1 + math.Exp(-a)) }

// forward runs psi on one sequence x (K x T) and returns the output (T values, in the cache).
func (m *Model) oldForward(theta, x []float64, c *oldCache) []float64 {
	h := m.H
	c.x = x
	for d := 0; d < 2; d++ {
		m.oldRunDir(theta, 0, d, x, &c.dir[0][d], c.K, c.zero)
	}
	for t := 0; t < c.K; t++ {
		copy(c.in1[t*2*h:t*2*h+h], c.dir[0][0].h[t*h:(t+1)*h])
		copy(c.in1[t*2*h+h:(t+1)*2*h], c.dir[0][1].h[t*h:(t+1)*h])
	}
	for d := 0; d < 2; d++ {
		m.oldRunDir(theta, 1, d, c.in1, &c.dir[1][d], c.K, c.zero)
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
func oldPos(s, k, d int) int {
	if d == 1 {
		return k - 1 - s
	}
	return s
}

// runDir runs direction d of layer l over the sequence x (K x in) from zero initial states:
// a = W x_t + U h_prev + b; i, f, o = sigmoid, g = tanh; c = f c_prev + i g; h = o tanh(c).
func (m *Model) oldRunDir(theta []float64, l, d int, x []float64, dc *oldDirCache, k int, zero []float64) {
	h := m.H
	p := m.off.lstm[l][d]
	in := p.in
	for s := 0; s < k; s++ {
		t := oldPos(s, k, d)
		hPrev, cPrev := zero, zero
		if s > 0 {
			tp := oldPos(s-1, k, d)
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
				g[r] = oldSigmoid(a)
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
func (m *Model) oldBackward(theta []float64, c *oldCache, dout, grad []float64) {
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
		m.oldBackDir(theta, grad, 1, d, c.in1, &c.dir[1][d], c.dh[1][d], c.dx1, c)
	}
	for t := 0; t < c.K; t++ {
		copy(c.dh[0][0][t*h:(t+1)*h], c.dx1[t*2*h:t*2*h+h])
		copy(c.dh[0][1][t*h:(t+1)*h], c.dx1[t*2*h+h:(t+1)*2*h])
	}
	clear(c.dx0)
	for d := 0; d < 2; d++ {
		m.oldBackDir(theta, grad, 0, d, c.x, &c.dir[0][d], c.dh[0][d], c.dx0, c)
	}
}

// backDir back-propagates through time for direction d of layer l: dh (K x H) is the loss's
// gradient with respect to the direction's hidden states from above; the gradient with
// respect to the input x (K x in) is added into dx.
func (m *Model) oldBackDir(theta, grad []float64, l, d int, x []float64, dc *oldDirCache, dh, dx []float64, c *oldCache) {
	h := m.H
	p := m.off.lstm[l][d]
	in := p.in
	k := c.K
	dhN, dcN, da := c.dhN, c.dcN, c.tmp
	clear(dhN)
	clear(dcN)
	for s := k - 1; s >= 0; s-- {
		t := oldPos(s, k, d)
		hPrev, cPrev := c.zero, c.zero
		if s > 0 {
			tp := oldPos(s-1, k, d)
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
