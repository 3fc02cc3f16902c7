package psi

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// GorgoniaLossGrad computes psi's mean squared error on (x, targets) a second way: as a
// gorgonia float64 expression graph built from matrix products and element-wise gate
// functions (gorgonia has no LSTM op), differentiated symbolically and run on gorgonia's
// tape machine. It returns the loss and the predictions (N x T, row-major) and writes the
// gradient into grad in the flat layout documented on Model. It is the reference the
// hand-written forward and backward passes are tested against (TestGorgoniaReference);
// training does not use it.
//
// The graph processes all N sequences at once, with the sequences as columns: a state is
// an H x N matrix. Each gate's rows of W, U and b are a contiguous block of theta, so every
// gate's weights are a parameter node of their own and no slicing is needed.
func GorgoniaLossGrad(theta []float64, x Sequences, targets []float64, grad []float64) (loss float64, pred []float64, err error) {
	if err := x.Check(); err != nil {
		return 0, nil, err
	}
	o := layout(x.T, x.T)
	switch {
	case len(theta) != o.nWeights || len(grad) != o.nWeights:
		return 0, nil, fmt.Errorf("psi: %d weights and %d gradient values, T = %d needs %d", len(theta), len(grad), x.T, o.nWeights)
	case len(targets) != x.N*x.T:
		return 0, nil, fmt.Errorf("psi: %d target values for %d sequences of T = %d", len(targets), x.N, x.T)
	case x.N == 0:
		return 0, nil, fmt.Errorf("psi: no sequences")
	}
	gb := &graphBuilder{g: G.NewGraph(), theta: theta}
	lossNode, out, err := gb.build(o, x, targets)
	if err != nil {
		return 0, nil, fmt.Errorf("psi: gorgonia graph: %w", err)
	}
	// Gorgonia refuses to differentiate with respect to a node the loss does not depend on.
	// Some weights are such nodes: the head reads layer 1's backward direction only at the
	// last time position, its first step, where the zero initial state multiplies U and the
	// forget gate (with K = 1, every direction's forget gate). Their gradient is zero.
	used := ancestors(gb.g, lossNode)
	var wrt G.Nodes
	var offs []int
	for i, p := range gb.params {
		if used[p] {
			wrt = append(wrt, p)
			offs = append(offs, gb.offsets[i])
		}
	}
	if _, err := G.Grad(lossNode, wrt...); err != nil {
		return 0, nil, fmt.Errorf("psi: gorgonia gradient: %w", err)
	}
	// Read copies out's value when it is computed: a later op may overwrite it in place.
	var outVal G.Value
	G.Read(out, &outVal)
	vm := G.NewTapeMachine(gb.g, G.BindDualValues(wrt...))
	defer func() { _ = vm.Close() }() // a tape machine that ran has nothing to flush
	if err := vm.RunAll(); err != nil {
		return 0, nil, fmt.Errorf("psi: gorgonia run: %w", err)
	}
	clear(grad)
	for i, p := range wrt {
		gv, err := p.Grad()
		if err != nil {
			return 0, nil, fmt.Errorf("psi: gradient of %s: %w", p.Name(), err)
		}
		copy(grad[offs[i]:], gv.Data().([]float64))
	}
	// The output is T x N; predictions are N x T.
	od := outVal.Data().([]float64)
	pred = make([]float64, x.N*x.T)
	for n := 0; n < x.N; n++ {
		for k := 0; k < x.T; k++ {
			pred[n*x.T+k] = od[k*x.N+n]
		}
	}
	return lossNode.Value().Data().(float64), pred, nil
}

// graphBuilder holds the graph under construction and its parameter nodes, each with the
// offset of its block in theta.
type graphBuilder struct {
	g       *G.ExprGraph
	theta   []float64
	params  G.Nodes
	offsets []int
	nconst  int
}

// param is theta[off : off+rows*cols] as a rows x cols parameter node.
func (gb *graphBuilder) param(name string, off, rows, cols int) *G.Node {
	v := append([]float64(nil), gb.theta[off:off+rows*cols]...)
	n := G.NewMatrix(gb.g, tensor.Float64, G.WithName(name), G.WithShape(rows, cols),
		G.WithValue(tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(v))))
	gb.params = append(gb.params, n)
	gb.offsets = append(gb.offsets, off)
	return n
}

// constant is data as a rows x cols input node. Each gets its own name: gorgonia merges
// unnamed input nodes of equal type and shape into one, whatever their values.
func (gb *graphBuilder) constant(data []float64, rows, cols int) *G.Node {
	gb.nconst++
	return G.NewMatrix(gb.g, tensor.Float64, G.WithName(fmt.Sprintf("const%d", gb.nconst)), G.WithShape(rows, cols),
		G.WithValue(tensor.New(tensor.WithShape(rows, cols), tensor.WithBacking(data))))
}

// ancestors returns the nodes of g that root depends on, root included.
func ancestors(g *G.ExprGraph, root *G.Node) map[*G.Node]bool {
	seen := map[*G.Node]bool{root: true}
	stack := []*G.Node{root}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for it := g.From(n.ID()); it.Next(); {
			c := it.Node().(*G.Node)
			if !seen[c] {
				seen[c] = true
				stack = append(stack, c)
			}
		}
	}
	return seen
}

// gate holds one gate's weights in one direction of one layer: W (H x in), U (H x H, nil
// when K = 1 since the initial state is zero) and b (H x 1).
type gate struct{ w, u, b *G.Node }

// build returns the loss node and the output node (T x N) of psi on x.
func (gb *graphBuilder) build(o offsets, x Sequences, targets []float64) (loss, out *G.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	h, k, n := x.T, x.K, x.N
	// The input at each time step as a T x N matrix.
	in := make([]*G.Node, k)
	for t := range in {
		xt := make([]float64, x.T*n)
		for s := 0; s < n; s++ {
			for j := 0; j < x.T; j++ {
				xt[j*n+s] = x.Data[(s*k+t)*x.T+j]
			}
		}
		in[t] = gb.constant(xt, x.T, n)
	}
	for l := 0; l < 2; l++ {
		var hs [2][]*G.Node
		for d := 0; d < 2; d++ {
			p := o.lstm[l][d]
			var gs [4]gate // input, forget, cell, output
			for q := range gs {
				name := fmt.Sprintf("l%d.d%d.g%d.", l, d, q)
				gs[q].w = gb.param(name+"W", p.w+q*h*p.in, h, p.in)
				if k > 1 {
					gs[q].u = gb.param(name+"U", p.u+q*h*h, h, h)
				}
				gs[q].b = gb.param(name+"b", p.b+q*h, h, 1)
			}
			hs[d] = gb.direction(gs, in, d == 1)
		}
		// The next layer's input (or the head's) is [forward; backward] at each time step.
		for t := range in {
			in[t] = G.Must(G.Concat(0, hs[0][t], hs[1][t]))
		}
	}
	// Head on the last time step: FC(2H -> 2H) -> ReLU -> FC(2H -> T).
	z := in[k-1]
	w1, b1 := gb.param("fc1.W", o.w1, 2*h, 2*h), gb.param("fc1.b", o.b1, 2*h, 1)
	w2, b2 := gb.param("fc2.W", o.w2, x.T, 2*h), gb.param("fc2.b", o.b2, x.T, 1)
	r := G.Must(G.Rectify(G.Must(G.BroadcastAdd(G.Must(G.Mul(w1, z)), b1, nil, []byte{1}))))
	out = G.Must(G.BroadcastAdd(G.Must(G.Mul(w2, r)), b2, nil, []byte{1}))
	yt := make([]float64, x.T*n)
	for s := 0; s < n; s++ {
		for j := 0; j < x.T; j++ {
			yt[j*n+s] = targets[s*x.T+j]
		}
	}
	// MSE: the mean over all N x T squared differences.
	loss = G.Must(G.Mean(G.Must(G.Square(G.Must(G.Sub(out, gb.constant(yt, x.T, n)))))))
	return loss, out, nil
}

// direction runs one LSTM direction over the inputs xs (in time order, each in x N) from
// zero initial states and returns the hidden state (H x N) at every time position:
// a_q = W_q x_t + U_q h_prev + b_q; i, f, o = sigmoid, g = tanh; c = f c_prev + i g;
// h = o tanh(c). The backward direction processes the time positions last to first.
func (gb *graphBuilder) direction(gs [4]gate, xs []*G.Node, reverse bool) []*G.Node {
	hs := make([]*G.Node, len(xs))
	var hPrev, cPrev *G.Node
	for s := range xs {
		t := s
		if reverse {
			t = len(xs) - 1 - s
		}
		var a [4]*G.Node
		for q, g := range gs {
			a[q] = G.Must(G.Mul(g.w, xs[t]))
			if hPrev != nil {
				a[q] = G.Must(G.Add(a[q], G.Must(G.Mul(g.u, hPrev))))
			}
			a[q] = G.Must(G.BroadcastAdd(a[q], g.b, nil, []byte{1}))
		}
		i, f := G.Must(G.Sigmoid(a[0])), G.Must(G.Sigmoid(a[1]))
		g, o := G.Must(G.Tanh(a[2])), G.Must(G.Sigmoid(a[3]))
		c := G.Must(G.HadamardProd(i, g))
		if cPrev != nil {
			c = G.Must(G.Add(G.Must(G.HadamardProd(f, cPrev)), c))
		}
		hs[t] = G.Must(G.HadamardProd(o, G.Must(G.Tanh(c))))
		hPrev, cPrev = hs[t], c
	}
	return hs
}
