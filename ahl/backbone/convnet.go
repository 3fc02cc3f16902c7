package backbone

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	blocked "github.com/pipe-ahl/pipe/ahl/sgemm"
)

// ConvNet is a small CNN trained from scratch as the DevNet base model (docs/algorithm.md,
// "Feature maps at two scales"; docs/design.md, "Data"), then frozen: the offline stand-in
// for an ImageNet ResNet-18.
// Stage i (one per entry of its channel list) is a 3x3 convolution with stride 2 followed
// by a 3x3 convolution with stride 1, both with padding 1, a bias and ReLU. The feature map
// is the last stage's output: channels[-1] x S/2^L x S/2^L for L stages. Training puts batch
// norm between each convolution and its ReLU (see TrainConvNet); the frozen network has it
// folded into the convolution's weights and bias. A 1x1 convolution
// (C -> 1), the devnet head it was trained with, is kept with the weights but is not part of
// the features.
type ConvNet struct {
	size  int
	theta []float32 // every weight, flat; the convs' W and B are views into it
	convs []conv
	head  conv
}

// newConvNet lays out a network for images of side size with the given stage channels; its
// weights are zero.
func newConvNet(size int, channels []int) (*ConvNet, error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	if len(channels) == 0 {
		return nil, fmt.Errorf("backbone: convnet needs at least one stage (channels is empty)")
	}
	for i, c := range channels {
		if c <= 0 {
			return nil, fmt.Errorf("backbone: convnet channels[%d] = %d, want > 0", i, c)
		}
	}
	n := &ConvNet{size: size}
	total := 0
	cin := 3
	for _, c := range channels {
		total += c*cin*9 + c + c*c*9 + c
		cin = c
	}
	total += cin + 1
	n.theta = make([]float32, total)
	view := views(n.theta)
	cin = 3
	for _, c := range channels {
		n.convs = append(n.convs,
			conv{Cin: cin, Cout: c, K: 3, Stride: 2, Pad: 1, W: view(c * cin * 9), B: view(c)},
			conv{Cin: c, Cout: c, K: 3, Stride: 1, Pad: 1, W: view(c * c * 9), B: view(c)})
		cin = c
	}
	n.head = conv{Cin: cin, Cout: 1, K: 1, Stride: 1, W: view(cin), B: view(1)}
	return n, nil
}

// views returns a function that hands out consecutive pieces of theta of the lengths asked
// for, each capped at its own length, so that every layer's tensors are windows of one
// parameter vector (and an append to one cannot run into the next).
func views(theta []float32) func(k int) []float32 {
	off := 0
	return func(k int) []float32 {
		v := theta[off : off+k : off+k]
		off += k
		return v
	}
}

// initKaiming draws every weight from N(0, 2 / fan_in) (Kaiming-normal, fan-in) and sets
// biases to zero.
func (n *ConvNet) initKaiming(rng *rand.Rand) {
	for _, c := range n.layers() {
		std := math.Sqrt(2 / float64(c.Cin*c.K*c.K))
		for i := range c.W {
			c.W[i] = float32(rng.NormFloat64() * std)
		}
		clear(c.B)
	}
}

// layers lists the convolutions and then the head.
func (n *ConvNet) layers() []*conv {
	out := make([]*conv, 0, len(n.convs)+1)
	for i := range n.convs {
		out = append(out, &n.convs[i])
	}
	return append(out, &n.head)
}

// Name implements Backbone.
func (n *ConvNet) Name() string { return ConvNetName }

// Size implements Backbone.
func (n *ConvNet) Size() int { return n.size }

// Channels is the number of feature channels (the last stage's).
func (n *ConvNet) Channels() int { return n.head.Cin }

// Weights implements Backbone: conv<i>.weight [Cout, Cin, 3, 3] and conv<i>.bias [Cout] for
// the 2L convolutions (even i: stride 2, odd i: stride 1), head.weight [1, C, 1, 1] and
// head.bias [1]. The values are copies.
func (n *ConvNet) Weights() []Tensor {
	var ts []Tensor
	for i, c := range n.convs {
		ts = append(ts,
			Tensor{Name: fmt.Sprintf("conv%d.weight", i), Shape: []int{c.Cout, c.Cin, c.K, c.K}, Values: append([]float32(nil), c.W...)},
			Tensor{Name: fmt.Sprintf("conv%d.bias", i), Shape: []int{c.Cout}, Values: append([]float32(nil), c.B...)})
	}
	ts = append(ts,
		Tensor{Name: "head.weight", Shape: []int{1, n.head.Cin, 1, 1}, Values: append([]float32(nil), n.head.W...)},
		Tensor{Name: "head.bias", Shape: []int{1}, Values: append([]float32(nil), n.head.B...)})
	return sortedTensors(ts)
}

// convNetFromTensors rebuilds a ConvNet from the tensors Weights returned.
func convNetFromTensors(size int, ts []Tensor) (*ConvNet, error) {
	m := tensorMap(ts)
	var channels []int
	for i := 0; ; i += 2 {
		t, ok := m[fmt.Sprintf("conv%d.weight", i)]
		if !ok {
			break
		}
		if len(t.Shape) != 4 || t.Shape[0] <= 0 {
			return nil, fmt.Errorf("backbone: convnet tensor %q has shape %v, want [Cout, Cin, 3, 3]", fmt.Sprintf("conv%d.weight", i), t.Shape)
		}
		channels = append(channels, t.Shape[0])
	}
	if len(channels) == 0 {
		return nil, fmt.Errorf("backbone: convnet tensor %q missing", "conv0.weight")
	}
	n, err := newConvNet(size, channels)
	if err != nil {
		return nil, err
	}
	for i, c := range n.convs {
		w, err := take(m, fmt.Sprintf("conv%d.weight", i), c.Cout, c.Cin, c.K, c.K)
		if err != nil {
			return nil, err
		}
		b, err := take(m, fmt.Sprintf("conv%d.bias", i), c.Cout)
		if err != nil {
			return nil, err
		}
		copy(c.W, w.Values)
		copy(c.B, b.Values)
	}
	hw, err := take(m, "head.weight", 1, n.head.Cin, 1, 1)
	if err != nil {
		return nil, err
	}
	hb, err := take(m, "head.bias", 1)
	if err != nil {
		return nil, err
	}
	copy(n.head.W, hw.Values)
	copy(n.head.B, hb.Values)
	return n, nil
}

// Extract implements Backbone.
func (n *ConvNet) Extract(ctx context.Context, images []imgs.Image) ([]fmap.Maps, error) {
	return extractScales(ctx, [2][]imgs.Image{images, images}, n.size, n.features)
}

// extractSized implements sizedExtractor.
func (n *ConvNet) extractSized(ctx context.Context, scales [2][]imgs.Image) ([]fmap.Maps, error) {
	return extractScales(ctx, scales, n.size, n.features)
}

// features runs the convolutions (not the head) on a prepared batch. The batch is padded
// once; each convolution's bias and ReLU then write its output straight into the next
// convolution's zero-padded layout (the last one's unpadded), and every intermediate buffer
// goes back to the scratch pool once read (x itself is the caller's).
func (n *ConvNet) features(x act) act {
	xp, own := x, false
	if p := n.convs[0].Pad; p > 0 {
		xp, own = padAct(x, p), true
	}
	for i := range n.convs {
		c := &n.convs[i]
		z := c.forwardPadded(xp)
		if own {
			putScratch(xp.Data)
		}
		own = true
		pad := 0
		if i+1 < len(n.convs) {
			pad = n.convs[i+1].Pad
		}
		xp = biasReLUPadded(z, c.B, pad)
		putScratch(z.Data)
	}
	return xp
}

// biasReLUPadded returns max(z + bias, 0) per channel in a scratch buffer with a border of
// pad zeros around every plane. NormReLU with mean 0, inv 1 and gamma 1 computes exactly
// that (v - 0, v * 1 and 1 * v are v, bit for bit).
func biasReLUPadded(z act, bias []float32, pad int) act {
	hp, wp := z.H+2*pad, z.W+2*pad
	out := newScratchAct(z.C, z.B, hp, wp) // written in full
	parallel(z.C, z.B*hp*wp, func(lo, hi int) {
		for o := lo; o < hi; o++ {
			for i := 0; i < z.B; i++ {
				dst := out.plane(o, i)
				if pad > 0 {
					clearBorder(dst, hp, wp, pad)
				}
				blocked.NormReLU(z.plane(o, i), dst[pad*wp+pad:], z.W, wp, 0, 1, 1, bias[o])
			}
		}
	})
	return out
}

// Scores returns the trained base model's own DevNet anomaly score of each image (its head
// on the scale-0 maps: the mean of the top 10% of |z|), for checks and baselines.
func (n *ConvNet) Scores(ctx context.Context, images []imgs.Image) ([]float32, error) {
	chunk := max(1, chunkPixels/(n.size*n.size))
	out := make([]float32, 0, len(images))
	for lo := 0; lo < len(images); lo += chunk {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		x, err := prepare(images[lo:min(len(images), lo+chunk)], n.size)
		if err != nil {
			return nil, err
		}
		out = append(out, n.scores(x)...)
	}
	return out, nil
}

// scores runs the frozen network and its devnet head on a prepared batch: each image's score
// is the mean of the k largest |z| over the H x W positions of z = head(F).
func (n *ConvNet) scores(x act) []float32 {
	z := n.head.forward(n.features(x), false)
	out := make([]float32, z.B)
	for i := range out {
		out[i], _ = topKMean(z.plane(0, i))
	}
	return out
}
