// Package optim holds the plain optimisers AHL trains with, over flat weight vectors: SGD,
// Adam with L2 weight decay (PyTorch's torch.optim.Adam semantics) and global-norm clipping.
package optim

import "math"

// Float is the element type of a weight vector.
type Float interface{ ~float32 | ~float64 }

// SGD takes one plain gradient step: theta <- theta - lr * grad.
func SGD[F Float](theta, grad []F, lr float64) {
	if len(theta) != len(grad) {
		panic("optim: SGD theta and grad lengths differ")
	}
	l := F(lr)
	for k, g := range grad {
		theta[k] -= l * g
	}
}

// Norm returns the Euclidean norm of g, accumulated in float64.
func Norm[F Float](g []F) float64 {
	var s float64
	for _, v := range g {
		s += float64(v) * float64(v)
	}
	return math.Sqrt(s)
}

// ClipNorm scales g in place so that its Euclidean norm is at most max, as PyTorch's
// clip_grad_norm_ does (factor max / (norm + 1e-6) when the norm exceeds max). It returns the
// norm before clipping.
func ClipNorm[F Float](g []F, max float64) float64 {
	n := Norm(g)
	if n > max {
		s := F(max / (n + 1e-6))
		for k := range g {
			g[k] *= s
		}
	}
	return n
}

// Adam is the Adam optimiser (Kingma and Ba 2015) with L2 weight decay added to the gradient
// before the moment updates, as torch.optim.Adam(weight_decay=...) does. Moments are kept in
// float64 whatever the weight type, so float32 weights lose nothing in the update arithmetic.
type Adam struct {
	Beta1, Beta2, Eps float64
	WeightDecay       float64
	m, v              []float64
	t                 int
}

// NewAdam returns an Adam optimiser for n weights with PyTorch's defaults (beta1 0.9,
// beta2 0.999, eps 1e-8) and the given weight decay.
func NewAdam(n int, weightDecay float64) *Adam {
	return &Adam{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay,
		m: make([]float64, n), v: make([]float64, n)}
}

// Steps is the number of steps taken so far.
func (a *Adam) Steps() int { return a.t }

// Step updates theta in place from grad with learning rate lr. grad is not modified.
func (a *Adam) Step(theta, grad any, lr float64) {
	switch th := theta.(type) {
	case []float32:
		adamStep(a, th, grad.([]float32), lr)
	case []float64:
		adamStep(a, th, grad.([]float64), lr)
	default:
		panic("optim: Adam.Step wants []float32 or []float64")
	}
}

func adamStep[F Float](a *Adam, theta, grad []F, lr float64) {
	if len(theta) != len(a.m) || len(grad) != len(a.m) {
		panic("optim: Adam sizes differ from the optimiser's")
	}
	a.t++
	bc1 := 1 - math.Pow(a.Beta1, float64(a.t))
	bc2 := 1 - math.Pow(a.Beta2, float64(a.t))
	step := lr / bc1
	for k := range theta {
		g := float64(grad[k]) + a.WeightDecay*float64(theta[k])
		a.m[k] = a.Beta1*a.m[k] + (1-a.Beta1)*g
		a.v[k] = a.Beta2*a.v[k] + (1-a.Beta2)*g*g
		denom := math.Sqrt(a.v[k])/math.Sqrt(bc2) + a.Eps
		theta[k] = F(float64(theta[k]) - step*a.m[k]/denom)
	}
}

// StepDecay returns base * factor^floor(epoch / every): the learning rate schedule
// "lr x 0.1 every 10 epochs" (PyTorch StepLR). every <= 0 means no decay.
func StepDecay(base float64, epoch, every int, factor float64) float64 {
	if every <= 0 {
		return base
	}
	return base * math.Pow(factor, float64(epoch/every))
}
