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
	"fmt"
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
//
// When Rows is nil, the batch's images are the N maps of each scale of X. When Rows is set,
// X is a feature pool (every scale with the same N) and image i is row Rows[i] of each scale,
// read in place: training batches address the pool's rows without copying them. Heads read
// image i of scale s with Map(s, i) and count the images with Len; a head that wants X as
// one block of B maps (a reference implementation) calls Dense first.
//
// Offset, when not nil, is added to every image's score before the loss (a head trained as a
// residual over another detector, docs/algorithm.md "Score fusion"): one value per row of X,
// so image i's is Offset[Rows[i]] when Rows is set and Offset[i] otherwise. Heads that
// implement OffsetTaker accept it; CheckBatch refuses it for the others.
type Batch struct {
	X      []fmap.Maps // one per scale: the batch's B maps, or the pool when Rows is set
	Rows   []int       // when not nil, the B rows of X that are the batch's images
	Labels []int       // B labels in {Normal, Seen, Pseudo}; nil when scoring
	Ref    []fmap.Maps // one per scale, each with N = 1
	Offset []float32   // nil, or one score offset per row of X
}

// Len returns the number of images B in the batch.
func (b Batch) Len() int {
	if b.Rows != nil {
		return len(b.Rows)
	}
	if len(b.X) == 0 {
		return 0
	}
	return b.X[0].N
}

// Map returns a view of image i's map (C x H x W) at scale s.
func (b Batch) Map(s, i int) []float32 {
	if b.Rows != nil {
		return b.X[s].At(b.Rows[i])
	}
	return b.X[s].At(i)
}

// OffsetAt returns image i's score offset: 0 when b has none.
func (b Batch) OffsetAt(i int) float32 {
	switch {
	case b.Offset == nil:
		return 0
	case b.Rows != nil:
		return b.Offset[b.Rows[i]]
	default:
		return b.Offset[i]
	}
}

// Slice returns the batch of images i0 .. i1-1 of b (with their labels, when b has labels),
// sharing b's storage.
func (b Batch) Slice(i0, i1 int) Batch {
	out := Batch{Ref: b.Ref}
	if b.Labels != nil {
		out.Labels = b.Labels[i0:i1:i1]
	}
	if b.Rows != nil {
		out.X, out.Rows, out.Offset = b.X, b.Rows[i0:i1:i1], b.Offset
		return out
	}
	if b.Offset != nil {
		out.Offset = b.Offset[i0:i1:i1]
	}
	out.X = make([]fmap.Maps, len(b.X))
	for s, x := range b.X {
		out.X[s] = fmap.Maps{N: i1 - i0, C: x.C, H: x.H, W: x.W, Data: x.Data[i0*x.Size() : i1*x.Size() : i1*x.Size()]}
	}
	return out
}

// Dense returns b with its images copied out of the pool into one block of B maps per scale
// (Rows nil), or b itself when Rows is already nil.
func (b Batch) Dense() Batch {
	if b.Rows == nil {
		return b
	}
	out := Batch{X: make([]fmap.Maps, len(b.X)), Labels: b.Labels, Ref: b.Ref}
	for s, x := range b.X {
		out.X[s] = x.Gather(b.Rows)
	}
	if b.Offset != nil {
		out.Offset = make([]float32, len(b.Rows))
		for i := range b.Rows {
			out.Offset[i] = b.OffsetAt(i)
		}
	}
	return out
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

// RefFreeScorer is implemented by heads whose scores do not depend on the batch's reference
// maps (devnet). LossGradScores is LossGrad that also writes into scores (len b.Len()) each
// image's score at theta: bit for bit what Scores returns for that image, against any
// reference. CDL takes the adapted models' scores of their query samples from the query pass
// this way instead of scoring those samples a second time.
type RefFreeScorer interface {
	Head
	LossGradScores(theta []float32, b Batch, prior Prior, grad, scores []float32) float32
}

// OffsetTaker is implemented by heads that add a batch's score offsets (Batch.Offset) to
// their scores, so that they can be trained as a residual over another detector's scores.
type OffsetTaker interface {
	Head
	// TakesOffsets is a marker; it does nothing.
	TakesOffsets()
}

// CheckOffsets reports why offset cannot be the score offsets of a pool of n rows for h: h
// takes none, or there is not one per row. A nil offset is always fine.
func CheckOffsets(h Head, offset []float32, n int) error {
	if offset == nil {
		return nil
	}
	if _, ok := h.(OffsetTaker); !ok {
		return fmt.Errorf("heads %s: the head takes no score offsets (a residual over knn needs the devnet head)", h.Name())
	}
	if len(offset) != n {
		return fmt.Errorf("heads %s: %d score offsets for %d rows", h.Name(), len(offset), n)
	}
	return nil
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
