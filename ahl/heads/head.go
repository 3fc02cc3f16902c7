// Package heads holds AHL's scoring heads (docs/algorithm.md, "Scoring heads") as differentiable
// functions of an explicit flat weight vector, and the deviation loss they train with.
//
// Heads are registered by name: New("dra", Config{Channels: 512}) builds one, and the model
// codec (codec.go) turns its Config into string metadata and its weights into named tensors
// and back, so that the train and score stages handle every head the same way. Each head is
// one file (devnet.go, dra.go) holding its registration, layout, forward and backward passes
// and gorgonia reference graph; adding a head is one such file plus its tests.
package heads

import (
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/fmap"
)

// Labels of training samples (docs/algorithm.md, conventions at the top).
const (
	Normal  = 0 // a normal image
	Seen    = 1 // a real, labelled (seen) anomaly
	Pseudo  = 2 // a pseudo anomaly made by an augmentation generator
	NLabels = 3
)

// Spec names one weight tensor inside the flat weight vector.
type Spec struct {
	Name   string
	Shape  []int
	Offset int // into the flat vector
}

// Batch is what a head scores: the maps of B images at every scale and their labels, plus
// the reference normal map per scale used by dra's composite sub-head (mean of nRef normals
// while training, of all training normals while scoring; ignored by devnet).
type Batch struct {
	X      []fmap.Maps // one per scale, each with N = B
	Labels []int       // B labels in {Normal, Seen, Pseudo}; nil when scoring
	Ref    []fmap.Maps // one per scale, each with N = 1
}

// Head is a scoring head g(theta; x). theta is one flat float32 vector laid out as Layout.
// Implementations must be safe for concurrent use with distinct theta and batches.
type Head interface {
	// Name is the head's kind as registered ("devnet", "dra").
	Name() string
	// Layout lists the weight tensors in the flat vector; the sum of their sizes is its length.
	Layout() []Spec
	// Init returns Kaiming-normal (fan-in) weights and zero biases drawn from rng.
	Init(rng *rand.Rand) []float32
	// Scores returns one anomaly score per image of b (the mean of the per-scale scores).
	Scores(theta []float32, b Batch) []float32
	// LossGrad returns the training loss of b (labels required) and its gradient with
	// respect to theta, written into grad (len(theta)), which it overwrites.
	LossGrad(theta []float32, b Batch, prior Prior, grad []float32) float32
}

// Checker is implemented by heads with rules of their own for the batches they take (a
// channel count, reference maps). CheckBatch applies them after its generic rules, so
// CheckMaps may assume every scale of b is a well-formed fmap.Maps of the same N.
type Checker interface {
	// CheckMaps reports, as an error naming the field, why b's maps do not fit the head.
	CheckMaps(b Batch) error
}

// Prior is the deviation loss's reference distribution: the mean and standard deviation of
// l = 5000 draws r ~ N(0, 1) from the seeded stream (docs/algorithm.md, "Deviation loss").
type Prior struct {
	Mean, Std float32
	Margin    float32 // m = 5
}
