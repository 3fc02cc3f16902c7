package heads

import (
	"fmt"
	"sort"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// GorgoniaLossGrad computes h.LossGrad(theta, b, prior, grad) a second way: as a gorgonia
// float32 expression graph, differentiated symbolically and run on gorgonia's tape machine.
// It is the reference the hand-written heads are tested against (TestGorgoniaReference).
// The graph is the head's own (its gorgoniaLoss, in the head's file); a head without one
// gives an error.
//
// Why training does not use it: on the build machine (AMD EPYC, 2 shared cores, 2026-11-28)
// one LossGrad on a batch of 48 maps of 512 x 14 x 14 + 512 x 7 x 7 takes 0.49 s (devnet)
// and 2.6 s (dra, C' = 512, stride 3) here, against about 3 ms and 70 ms of CPU for the
// hand-written heads over ahl/sgemm: an epoch of 280 calls would take about 140 s and 730 s,
// far over the 5 s and 50 s targets. Its matrix products run on gonum's pure-Go BLAS (about
// 18 GFLOP/s on two cores, against about 90 on one for ahl/sgemm), it rebuilds the graph per
// batch shape and allocates about 350 MB per dra call (BenchmarkGorgoniaLossGrad).
//
// Top-k has no gorgonia op: the graph multiplies |z| by a mask of 1/k at the top-k
// positions, and the masks are chosen from a first, forward-only graph, which is exact
// because top-k is piecewise linear. Parts that do not depend on theta (the composite
// difference D = Ref - F, global average pools) are computed in Go.
func GorgoniaLossGrad(h Head, theta []float32, b Batch, prior Prior, grad []float32) (float32, error) {
	if err := CheckBatch(h, b, true); err != nil {
		return 0, err
	}
	b = b.Dense() // the graphs take each scale's maps as one tensor
	if len(theta) != len(grad) {
		return 0, fmt.Errorf("heads %s: grad has %d values, theta %d", h.Name(), len(grad), len(theta))
	}
	// First graph: the forward pass up to every |.| argument that top-k selects from; its
	// outputs are read back (gorgonia computes in place, so only graph outputs are safe to
	// read) and turned into masks for the second graph.
	probe := &gorgoniaBuilder{g: G.NewGraph(), theta: theta, specs: h.Layout(), params: map[string]*G.Node{}, probe: true}
	if _, err := probe.build(h, b, prior); err != nil {
		return 0, err
	}
	pm := G.NewTapeMachine(probe.g)
	defer func() { _ = pm.Close() }() // a tape machine that ran has nothing to flush
	if err := pm.RunAll(); err != nil {
		return 0, fmt.Errorf("heads %s: gorgonia run: %w", h.Name(), err)
	}
	var masks [][]float32
	for _, m := range probe.masks {
		z := m.z.Value().Data().([]float32)
		mask := make([]float32, len(z))
		k := topK(m.p)
		for i := 0; i < m.n; i++ {
			row := z[i*m.p : (i+1)*m.p]
			pos := make([]int, m.p)
			for j := range pos {
				pos[j] = j
			}
			sort.SliceStable(pos, func(a, c int) bool { return abs32(row[pos[a]]) > abs32(row[pos[c]]) })
			for _, j := range pos[:k] {
				mask[i*m.p+j] = 1 / float32(k)
			}
		}
		masks = append(masks, mask)
	}
	// Second graph: the loss with the masks as constants, and its gradient.
	gb := &gorgoniaBuilder{g: G.NewGraph(), theta: theta, specs: h.Layout(), params: map[string]*G.Node{}, given: masks}
	loss, err := gb.build(h, b, prior)
	if err != nil {
		return 0, err
	}
	var wrt G.Nodes
	for _, s := range gb.specs {
		wrt = append(wrt, gb.params[s.Name])
	}
	if _, err := G.Grad(loss, wrt...); err != nil {
		return 0, fmt.Errorf("heads %s: gorgonia gradient: %w", h.Name(), err)
	}
	vm := G.NewTapeMachine(gb.g, G.BindDualValues(wrt...))
	defer func() { _ = vm.Close() }() // a tape machine that ran has nothing to flush
	if err := vm.RunAll(); err != nil {
		return 0, fmt.Errorf("heads %s: gorgonia run: %w", h.Name(), err)
	}
	for i, s := range gb.specs {
		gv, err := wrt[i].Grad()
		if err != nil {
			return 0, fmt.Errorf("heads %s: gradient of %s: %w", h.Name(), s.Name, err)
		}
		switch d := gv.Data().(type) {
		case []float32:
			copy(grad[s.Offset:s.Offset+specSize(s)], d)
		case float32:
			grad[s.Offset] = d
		}
	}
	return loss.Value().Data().(float32), nil
}

// topkMask is an argument z (n x p) of a top-k mean of |.|.
type topkMask struct {
	z    *G.Node
	n, p int
}

type gorgoniaBuilder struct {
	g      *G.ExprGraph
	theta  []float32
	specs  []Spec
	params map[string]*G.Node
	probe  bool        // build only up to the top-k arguments, recording them in masks
	masks  []topkMask  // probe: the top-k arguments, in build order
	given  [][]float32 // not probe: the masks, in build order
	nconst int
}

// gorgoniaGraph is implemented by the heads that have a gorgonia reference: gorgoniaLoss
// adds the head's loss on b to gb's graph, from gb's param, constant, topKAbs and deviation
// nodes, and returns it. It may panic (G.Must); build turns that into an error. Each head's
// file holds its graph beside its hand-written forward and backward passes.
type gorgoniaGraph interface {
	gorgoniaLoss(gb *gorgoniaBuilder, b Batch, p Prior) *G.Node
}

// build returns the loss graph of h on b.
func (gb *gorgoniaBuilder) build(h Head, b Batch, p Prior) (loss *G.Node, err error) {
	g, ok := h.(gorgoniaGraph)
	if !ok {
		return nil, fmt.Errorf("heads: no gorgonia reference for head %q", h.Name())
	}
	defer func() {
		if r := recover(); r != nil {
			loss, err = nil, fmt.Errorf("heads %s: gorgonia graph: %v", h.Name(), r)
		}
	}()
	return g.gorgoniaLoss(gb, b, p), nil
}

// param is the weight tensor name as a graph node with shape (a scalar for one value).
func (gb *gorgoniaBuilder) param(name string, shape ...int) *G.Node {
	for _, s := range gb.specs {
		if s.Name != name {
			continue
		}
		v := append([]float32(nil), gb.theta[s.Offset:s.Offset+specSize(s)]...)
		var n *G.Node
		if len(shape) == 0 {
			n = G.NewScalar(gb.g, tensor.Float32, G.WithName(name), G.WithValue(v[0]))
		} else {
			n = G.NewTensor(gb.g, tensor.Float32, len(shape), G.WithName(name), G.WithShape(shape...),
				G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))))
		}
		gb.params[name] = n
		return n
	}
	panic("heads: no tensor " + name)
}

// constant is data as a graph node. Each gets its own name: gorgonia merges unnamed input
// nodes of equal type and shape into one, whatever their values.
func (gb *gorgoniaBuilder) constant(data []float32, shape ...int) *G.Node {
	gb.nconst++
	return G.NewTensor(gb.g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(fmt.Sprintf("const%d", gb.nconst)),
		G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))))
}

func (gb *gorgoniaBuilder) scalar(v float32) *G.Node {
	return G.NewConstant(v)
}

// topKAbs is the mean of the top-k |z| per row of z (n x p), as sum(mask * |z|) with the
// next given mask. When probing it records z and returns zeros, so that nothing computes
// over z in place.
func (gb *gorgoniaBuilder) topKAbs(z *G.Node, n, p int) *G.Node {
	if gb.probe {
		gb.masks = append(gb.masks, topkMask{z: z, n: n, p: p})
		return gb.constant(make([]float32, n), n)
	}
	mask := gb.constant(gb.given[0], n, p)
	gb.given = gb.given[1:]
	return G.Must(G.Sum(G.Must(G.HadamardProd(G.Must(G.Abs(z)), mask)), 1))
}

// conv1x1TopK is the devnet score of every map of x: z = w . x + bias, then top-k mean |z|.
func (gb *gorgoniaBuilder) conv1x1TopK(x fmap.Maps, w, bias *G.Node) *G.Node {
	hw := x.H * x.W
	// x as (N*HW) x C rows, so that z = X w.
	xt := make([]float32, x.N*hw*x.C)
	for i := 0; i < x.N; i++ {
		xi := x.At(i)
		for c := 0; c < x.C; c++ {
			for p := 0; p < hw; p++ {
				xt[(i*hw+p)*x.C+c] = xi[c*hw+p]
			}
		}
	}
	X := gb.constant(xt, x.N*hw, x.C)
	z := G.Must(G.Mul(X, G.Must(G.Reshape(w, tensor.Shape{x.C, 1}))))
	z = G.Must(G.Add(G.Must(G.Reshape(z, tensor.Shape{x.N, hw})), bias))
	return gb.topKAbs(z, x.N, hw)
}

// deviation is the deviation loss sum_i a_i |dev_i| + c_i max(0, m - dev_i) with
// a_i = (1 - y_i) / n and c_i = y_i / n on the rows in the subset (0 elsewhere).
func (gb *gorgoniaBuilder) deviation(score *G.Node, y []float32, in []bool, p Prior) *G.Node {
	n := 0
	for _, ok := range in {
		if ok {
			n++
		}
	}
	a := make([]float32, len(y))
	c := make([]float32, len(y))
	for i := range y {
		if in[i] {
			a[i] = (1 - y[i]) / float32(n)
			c[i] = y[i] / float32(n)
		}
	}
	dev := G.Must(G.Mul(G.Must(G.Sub(score, gb.scalar(p.Mean))), gb.scalar(1/p.Std)))
	t1 := G.Must(G.HadamardProd(gb.constant(a, len(y)), G.Must(G.Abs(dev))))
	t2 := G.Must(G.HadamardProd(gb.constant(c, len(y)), G.Must(G.Rectify(G.Must(G.Sub(gb.scalar(p.Margin), dev))))))
	return G.Must(G.Sum(G.Must(G.Add(t1, t2))))
}

// meanOverScales is the mean of per-scale score nodes (each N).
func (gb *gorgoniaBuilder) meanOverScales(per []*G.Node) *G.Node {
	s := per[0]
	for _, v := range per[1:] {
		s = G.Must(G.Add(s, v))
	}
	return G.Must(G.Mul(s, gb.scalar(1/float32(len(per)))))
}
