package backbone

import (
	"context"
	"fmt"

	"github.com/pipe-ahl/pipe/ahl/fmap"
	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// ResNet18 is torchvision's resnet18 up to layer4's output: conv1 (7x7, stride 2) + bn1 +
// ReLU, 3x3 max pool (stride 2), then layer1..layer4 of two BasicBlocks each (64, 128, 256,
// 512 channels; the first block of layer2..4 has stride 2 and a 1x1 downsample conv + BN on
// the shortcut). Batch norm runs in inference mode and is folded into the convolutions when
// the weights load. Output stride 32: 512 x 7 x 7 at S = 224, 512 x 14 x 14 at S = 448.
type ResNet18 struct {
	size   int
	raw    []Tensor // the torchvision tensors it was built from, for Weights
	conv1  conv
	blocks []basicBlock
}

// basicBlock is out = ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x)), with BN folded.
type basicBlock struct {
	c1, c2 conv
	down   *conv // nil: identity shortcut
}

// resnet18Stages lists layer1..layer4's output channels; each holds two blocks and all but
// layer1 halve the resolution in their first block.
var resnet18Stages = []int{64, 128, 256, 512}

// LoadResNet18 reads torchvision-named weights from a weights file, a PyTorch checkpoint
// (torchvision's resnet18-f37072fd.pth as it is) or a safetensors file (see ReadWeights and
// README.md), and builds the backbone for images of side size.
func LoadResNet18(path string, size int) (*ResNet18, error) {
	ts, err := ReadWeights(path)
	if err != nil {
		return nil, err
	}
	r, err := NewResNet18(size, ts)
	if err != nil {
		return nil, fmt.Errorf("%w (weights file %s)", err, path)
	}
	return r, nil
}

// NewResNet18 builds the backbone from torchvision-named tensors (conv1.weight,
// bn1.{weight,bias,running_mean,running_var}, layer1.0.conv1.weight, ...,
// layer2.0.downsample.0.weight, layer2.0.downsample.1.*). Other tensors (fc.*,
// num_batches_tracked) are ignored. A missing tensor or one of the wrong shape is an error
// that names it and the expected shape.
func NewResNet18(size int, ts []Tensor) (*ResNet18, error) {
	return newResNet18(size, resnet18Stages[0], ts)
}

// newResNet18 builds a resnet18 of base width width (layer1..layer4 have width, 2, 4 and 8
// times width channels; torchvision's is 64). Tests use narrow ones to check the network
// against torchvision with small weight files.
func newResNet18(size, width int, ts []Tensor) (*ResNet18, error) {
	if err := checkSize(size); err != nil {
		return nil, err
	}
	m := tensorMap(ts)
	r := &ResNet18{size: size}
	var err error
	if r.conv1, err = r.convBN(m, "conv1", "bn1", 3, width, 7, 2, 3); err != nil {
		return nil, err
	}
	cin := width
	for li, c := range resnet18Stages {
		cout := c / resnet18Stages[0] * width
		for bi := 0; bi < 2; bi++ {
			p := fmt.Sprintf("layer%d.%d.", li+1, bi)
			stride := 1
			if bi == 0 && li > 0 {
				stride = 2
			}
			var blk basicBlock
			if blk.c1, err = r.convBN(m, p+"conv1", p+"bn1", cin, cout, 3, stride, 1); err != nil {
				return nil, err
			}
			if blk.c2, err = r.convBN(m, p+"conv2", p+"bn2", cout, cout, 3, 1, 1); err != nil {
				return nil, err
			}
			if stride != 1 || cin != cout {
				d, err := r.convBN(m, p+"downsample.0", p+"downsample.1", cin, cout, 1, stride, 0)
				if err != nil {
					return nil, err
				}
				blk.down = &d
			}
			r.blocks = append(r.blocks, blk)
			cin = cout
		}
	}
	sortedTensors(r.raw)
	return r, nil
}

// ResNet18Shapes lists the shape of every tensor NewResNet18 reads, by torchvision name
// (weights and batch norm parameters and statistics, no fc.*).
func ResNet18Shapes() map[string][]int {
	out := map[string][]int{}
	convBN := func(conv, bn string, cin, cout, k int) {
		out[conv+".weight"] = []int{cout, cin, k, k}
		for _, s := range []string{"weight", "bias", "running_mean", "running_var"} {
			out[bn+"."+s] = []int{cout}
		}
	}
	convBN("conv1", "bn1", 3, 64, 7)
	cin := 64
	for li, cout := range resnet18Stages {
		for bi := 0; bi < 2; bi++ {
			p := fmt.Sprintf("layer%d.%d.", li+1, bi)
			in := cout
			if bi == 0 {
				in = cin
			}
			convBN(p+"conv1", p+"bn1", in, cout, 3)
			convBN(p+"conv2", p+"bn2", cout, cout, 3)
			if in != cout {
				convBN(p+"downsample.0", p+"downsample.1", in, cout, 1)
			}
		}
		cin = cout
	}
	return out
}

// convBN reads `<convName>.weight` (no bias, as in torchvision) and the batch norm
// `<bnName>.{weight,bias,running_mean,running_var}` and folds them into one convolution.
func (r *ResNet18) convBN(m map[string]Tensor, convName, bnName string, cin, cout, k, stride, pad int) (conv, error) {
	w, err := take(m, convName+".weight", cout, cin, k, k)
	if err != nil {
		return conv{}, err
	}
	bn := make([][]float32, 4)
	used := []Tensor{w}
	for i, suffix := range []string{"weight", "bias", "running_mean", "running_var"} {
		t, err := take(m, bnName+"."+suffix, cout)
		if err != nil {
			return conv{}, err
		}
		bn[i] = t.Values
		used = append(used, t)
	}
	for j, v := range bn[3] {
		if v < 0 {
			return conv{}, fmt.Errorf("backbone: tensor %q has a negative variance %g at %d", bnName+".running_var", v, j)
		}
	}
	r.raw = append(r.raw, used...)
	fw, fb := foldBN(w.Values, cout, bn[0], bn[1], bn[2], bn[3])
	return conv{Cin: cin, Cout: cout, K: k, Stride: stride, Pad: pad, W: fw, B: fb}, nil
}

// Name implements Backbone.
func (r *ResNet18) Name() string { return ResNet18Name }

// Size implements Backbone.
func (r *ResNet18) Size() int { return r.size }

// Weights implements Backbone: the torchvision tensors it was built from (BN unfolded), by
// name.
func (r *ResNet18) Weights() []Tensor { return r.raw }

// Extract implements Backbone.
func (r *ResNet18) Extract(ctx context.Context, images []imgs.Image) ([]fmap.Maps, error) {
	return extractScales(ctx, [2][]imgs.Image{images, images}, r.size, r.forward)
}

// extractSized implements sizedExtractor.
func (r *ResNet18) extractSized(ctx context.Context, scales [2][]imgs.Image) ([]fmap.Maps, error) {
	return extractScales(ctx, scales, r.size, r.forward)
}

// forward runs the network on a prepared batch.
func (r *ResNet18) forward(x act) act {
	x = r.conv1.forward(x, true)
	x = maxPool(x, 3, 2, 1)
	for i := range r.blocks {
		x = r.blocks[i].forward(x)
	}
	return x
}

func (b *basicBlock) forward(x act) act {
	h := b.c1.forward(x, true)
	h = b.c2.forward(h, false)
	short := x
	if b.down != nil {
		short = b.down.forward(x, false)
	}
	addReLU(h, short)
	return h
}

// chunkPixels bounds the input pixels per forward batch: larger batches give the matrix
// products wider right-hand sides, but the activations and padded copies of the inputs grow
// with them.
const chunkPixels = 1 << 19

// extractScales runs forward on the images of each scale (scales[0] brought to S x S,
// scales[1] to S/2 x S/2; Extract passes the same images for both), in chunks, and returns the
// maps of both scales.
func extractScales(ctx context.Context, scales [2][]imgs.Image, size int, forward func(act) act) ([]fmap.Maps, error) {
	out := make([]fmap.Maps, 2)
	for scale, s := range []int{size, size / 2} {
		images := scales[scale]
		chunk := max(1, min(64, chunkPixels/(s*s)))
		var parts []fmap.Maps
		if len(images) == 0 { // an empty batch still gets its maps' shape
			x, _ := prepare(nil, s)
			parts = append(parts, toMaps(forward(x)))
		}
		for lo := 0; lo < len(images); lo += chunk {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			hi := min(len(images), lo+chunk)
			x, err := prepare(images[lo:hi], s)
			if err != nil {
				return nil, err
			}
			parts = append(parts, toMaps(forward(x)))
		}
		out[scale] = concatMaps(parts)
	}
	return out, nil
}

// concatMaps stacks batches of equal C x H x W.
func concatMaps(parts []fmap.Maps) fmap.Maps {
	if len(parts) == 0 {
		return fmap.Maps{}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	p0 := parts[0]
	n := 0
	for _, p := range parts {
		n += p.N
	}
	out := fmap.Maps{N: n, C: p0.C, H: p0.H, W: p0.W, Data: make([]float32, 0, n*p0.Size())}
	for _, p := range parts {
		out.Data = append(out.Data, p.Data...)
	}
	return out
}
