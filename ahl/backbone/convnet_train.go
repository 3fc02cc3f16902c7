package backbone

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/ahl/optim"
)

// PseudoFunc makes one pseudo anomaly of img with the named generator; others are the
// other training normals (cutmix's sources). augment.Apply has this signature.
type PseudoFunc func(generator string, img imgs.Image, others []imgs.Image, rng *rand.Rand) (imgs.Image, error)

// ConvNetConfig holds the convnet's architecture and training parameters.
type ConvNetConfig struct {
	Size     int   // S: training images are resized to S x S
	Channels []int // output channels of each stage (each halves the resolution)
	Epochs   int   // passes of Steps batches
	Steps    int   // batches per epoch (DevNet: 20)
	Batch    int   // batch size (DevNet: 48, balanced over the kinds present)
	LR       float64
	// WeightDecay is Adam's L2 weight decay.
	WeightDecay float64
	Seed        uint64
	// Flip mirrors each training image left-right with probability 1/2 (data augmentation
	// against overfitting the few training images).
	Flip bool
	// Generators names the pseudo-anomaly generators Pseudo is called with; each pseudo
	// anomaly draws one uniformly. No pseudo anomalies when empty or Pseudo is nil.
	Generators []string
	Pseudo     PseudoFunc
	// Progress, when not nil, is called after every step with (steps done, steps in all).
	Progress func(done, total int)

	// Early stopping on a validation split (off when Patience is 0). After every epoch the
	// network, frozen as it stands, scores ValNormals, ValAnomalies (held-out labelled
	// anomalies) and one pseudo anomaly of each validation normal (generator and draws
	// from stream streamValidation, cutmix pasting from training normals); the epoch's
	// figure is the mean, over the kinds of anomaly present, of the AUROC of the normals
	// against that kind, so the few real anomalies weigh as much as the many pseudo ones.
	// Training stops after Patience epochs without a higher figure, and the network of the
	// best epoch (the earliest on ties) is returned: Epochs is the maximum.
	ValNormals, ValAnomalies []imgs.Image
	Patience                 int
	// OnValidation, when not nil, is called with each epoch's validation figure.
	OnValidation func(epoch int, figure float64)
}

// Random streams of convnet training, all drawn from rand.NewPCG(Seed, stream).
const (
	streamInit    = 1 // Kaiming initialisation
	streamPrior   = 2 // the deviation loss's N(0, 1) reference draws
	streamPseudo  = 3 // generator choice and the generators' own draws
	streamSampler = 4 // balanced batches
	streamShuffle = 5 // the order of a batch's images, which sets its batch norm chunks
	streamFlip    = 6 // left-right flips
	// streamValidation draws the validation normals' pseudo anomalies (early stopping).
	streamValidation = 7
)

// trainChunkPixels bounds the input pixels of one training forward/backward pass (a batch
// runs in chunks whose gradients add up): every layer's activations and batch norm caches
// stay alive until the backward pass.
const trainChunkPixels = 1 << 17

// priorDraws and margin are DevNet's: l = 5000 reference scores, margin m = 5
// (docs/algorithm.md, "Deviation loss").
const (
	priorDraws = 5000
	margin     = 5
)

// prior is the deviation loss's reference distribution (heads.Prior's twin; ahl/heads is not
// imported so the backbone builds on its own).
type prior struct {
	Mean, Std, Margin float32
}

// deviationPrior draws l = 5000 values r ~ N(0, 1) and returns their mean and (sample)
// standard deviation.
func deviationPrior(rng *rand.Rand) prior {
	var s, s2 float64
	for i := 0; i < priorDraws; i++ {
		r := rng.NormFloat64()
		s += r
		s2 += r * r
	}
	mean := s / priorDraws
	std := math.Sqrt((s2 - priorDraws*mean*mean) / (priorDraws - 1))
	return prior{Mean: float32(mean), Std: float32(std), Margin: margin}
}

// TrainConvNet trains a ConvNet from scratch as the DevNet base model: the devnet head
// (1x1 convolution, top-k mean of |z|) on the last feature map, the deviation loss with real
// and pseudo anomalies as the anomalous class, balanced batches of normals, real anomalies
// and pseudo anomalies made on the fly from training normals, and Adam. While training, every
// convolution is followed by batch norm (statistics of its chunk of the batch, at most
// trainChunkPixels input pixels); the returned, frozen network has the running statistics
// folded into its convolutions. It also returns each epoch's mean loss.
func TrainConvNet(ctx context.Context, cfg ConvNetConfig, normals, anomalies []imgs.Image) (*ConvNet, []float64, error) {
	if cfg.Epochs < 0 || cfg.Steps <= 0 || cfg.Batch <= 0 || cfg.LR <= 0 {
		return nil, nil, fmt.Errorf("backbone: convnet training needs epochs >= 0, steps > 0, batch > 0 and lr > 0 (got %d, %d, %d, %g)", cfg.Epochs, cfg.Steps, cfg.Batch, cfg.LR)
	}
	if len(normals) == 0 {
		return nil, nil, fmt.Errorf("backbone: convnet training needs training normals, got none")
	}
	pseudo := cfg.Pseudo != nil && len(cfg.Generators) > 0
	if len(anomalies) == 0 && !pseudo {
		return nil, nil, fmt.Errorf("backbone: convnet training needs anomalies: no labelled anomalies and no pseudo-anomaly generators")
	}
	if cfg.Patience < 0 || (cfg.Patience > 0 && len(cfg.ValNormals) == 0) {
		return nil, nil, fmt.Errorf("backbone: convnet early stopping needs patience >= 0 and, when > 0, validation normals (got patience %d, %d normals)", cfg.Patience, len(cfg.ValNormals))
	}
	net, err := newTrainNet(cfg.Size, cfg.Channels)
	if err != nil {
		return nil, nil, err
	}
	net.initKaiming(rand.New(rand.NewPCG(cfg.Seed, streamInit)))
	shuffle := rand.New(rand.NewPCG(cfg.Seed, streamShuffle))
	flips := rand.New(rand.NewPCG(cfg.Seed, streamFlip))
	pr := deviationPrior(rand.New(rand.NewPCG(cfg.Seed, streamPrior)))
	prng := rand.New(rand.NewPCG(cfg.Seed, streamPseudo))

	// Resize once; pseudo anomalies are made at S x S.
	norm := resizeAll(normals, cfg.Size)
	anom := resizeAll(anomalies, cfg.Size)
	// Sampler rows: normals 0..nN-1, real anomalies nN.., pseudo rows nN+nA+i stand for a
	// pseudo anomaly made from normal i.
	kinds := [][]int{seq(0, len(norm)), seq(len(norm), len(anom))}
	if pseudo {
		kinds = append(kinds, seq(len(norm)+len(anom), len(norm)))
	}
	sampler := newBalanced(kinds, cfg.Batch, rand.New(rand.NewPCG(cfg.Seed, streamSampler)))

	var val *convnetValidation
	if cfg.Patience > 0 {
		var err error
		if val, err = newConvnetValidation(cfg, norm); err != nil {
			return nil, nil, err
		}
	}
	var best *ConvNet
	bestFig, bestEp := math.Inf(-1), -1

	adam := optim.NewAdam(len(net.theta), cfg.WeightDecay)
	grad := make([]float32, len(net.theta))
	chunk := max(1, trainChunkPixels/(cfg.Size*cfg.Size))
	losses := make([]float64, cfg.Epochs)
	total := cfg.Epochs * cfg.Steps
	for ep := 0; ep < cfg.Epochs; ep++ {
		var epochLoss float64
		for st := 0; st < cfg.Steps; st++ {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			rs := sampler.next()
			batchImgs := make([]imgs.Image, len(rs))
			targets := make([]bool, len(rs))
			for j, r := range rs {
				switch {
				case r < len(norm):
					batchImgs[j] = norm[r]
				case r < len(norm)+len(anom):
					batchImgs[j] = anom[r-len(norm)]
				default:
					i := r - len(norm) - len(anom)
					gen := cfg.Generators[prng.IntN(len(cfg.Generators))]
					others := make([]imgs.Image, 0, len(norm)-1)
					others = append(append(others, norm[:i]...), norm[i+1:]...)
					im, err := cfg.Pseudo(gen, norm[i], others, prng)
					if err != nil {
						return nil, nil, fmt.Errorf("backbone: convnet training: pseudo anomaly %s of normal %d: %w", gen, i, err)
					}
					batchImgs[j] = im
				}
				targets[j] = r >= len(norm)
				if cfg.Flip && flips.IntN(2) == 1 {
					batchImgs[j] = flipLR(batchImgs[j])
				}
			}
			// The sampler groups a batch by kind; mix it so every batch norm chunk sees
			// normals and anomalies alike.
			shuffle.Shuffle(len(rs), func(a, b int) {
				batchImgs[a], batchImgs[b] = batchImgs[b], batchImgs[a]
				targets[a], targets[b] = targets[b], targets[a]
			})
			clear(grad)
			var loss float64
			for lo := 0; lo < len(rs); lo += chunk {
				hi := min(len(rs), lo+chunk)
				x, err := prepare(batchImgs[lo:hi], cfg.Size)
				if err != nil {
					return nil, nil, err
				}
				loss += net.lossGrad(x, targets[lo:hi], pr, 1/float32(len(rs)), grad)
			}
			adam.Step(net.theta, grad, cfg.LR)
			epochLoss += loss
			if cfg.Progress != nil {
				cfg.Progress(ep*cfg.Steps+st+1, total)
			}
		}
		losses[ep] = epochLoss / float64(cfg.Steps)
		if val == nil {
			continue
		}
		frozen := net.freeze()
		fig, err := val.figure(ctx, frozen)
		if err != nil {
			return nil, nil, err
		}
		if cfg.OnValidation != nil {
			cfg.OnValidation(ep, fig)
		}
		if fig > bestFig {
			best, bestFig, bestEp = frozen, fig, ep
		}
		if ep-bestEp >= cfg.Patience {
			return best, losses[:ep+1], nil
		}
	}
	if best != nil {
		return best, losses, nil
	}
	return net.freeze(), losses, nil
}

// convnetValidation is early stopping's fixed validation set: the normals, and each kind
// of anomaly present (labelled, pseudo), all at S x S.
type convnetValidation struct {
	normals []imgs.Image
	kinds   [][]imgs.Image
}

// newConvnetValidation resizes cfg's validation images and makes one pseudo anomaly of each
// validation normal (cutmix sources: the training normals train).
func newConvnetValidation(cfg ConvNetConfig, train []imgs.Image) (*convnetValidation, error) {
	v := &convnetValidation{normals: resizeAll(cfg.ValNormals, cfg.Size)}
	if len(cfg.ValAnomalies) > 0 {
		v.kinds = append(v.kinds, resizeAll(cfg.ValAnomalies, cfg.Size))
	}
	if cfg.Pseudo != nil && len(cfg.Generators) > 0 {
		rng := rand.New(rand.NewPCG(cfg.Seed, streamValidation))
		ps := make([]imgs.Image, len(v.normals))
		for i, im := range v.normals {
			gen := cfg.Generators[rng.IntN(len(cfg.Generators))]
			p, err := cfg.Pseudo(gen, im, train, rng)
			if err != nil {
				return nil, fmt.Errorf("backbone: convnet validation: pseudo anomaly %s of validation normal %d: %w", gen, i, err)
			}
			ps[i] = p
		}
		v.kinds = append(v.kinds, ps)
	}
	if len(v.kinds) == 0 {
		return nil, fmt.Errorf("backbone: convnet early stopping needs validation anomalies or pseudo-anomaly generators, got neither")
	}
	return v, nil
}

// figure scores the validation set with net and returns the mean over the kinds of anomaly
// of the normals-against-that-kind AUROC.
func (v *convnetValidation) figure(ctx context.Context, net *ConvNet) (float64, error) {
	normal, err := net.Scores(ctx, v.normals)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, k := range v.kinds {
		anom, err := net.Scores(ctx, k)
		if err != nil {
			return 0, err
		}
		sum += auroc(normal, anom)
	}
	return sum / float64(len(v.kinds)), nil
}

// auroc is the Mann-Whitney AUROC of anomalies scoring above normals, ties counting half
// (metrics.AUROC's value; written out here so the backbone needs no labels slice).
func auroc(normal, anom []float32) float64 {
	var wins float64
	for _, a := range anom {
		for _, n := range normal {
			switch {
			case a > n:
				wins++
			case a == n:
				wins += 0.5
			}
		}
	}
	return wins / float64(len(normal)*len(anom))
}

// flipLR returns im mirrored left-right.
func flipLR(im imgs.Image) imgs.Image {
	out := imgs.NewImage(im.H, im.W)
	for y := 0; y < 3*im.H; y++ { // rows of all three planes
		src, dst := im.Pix[y*im.W:(y+1)*im.W], out.Pix[y*im.W:(y+1)*im.W]
		for x, v := range src {
			dst[im.W-1-x] = v
		}
	}
	return out
}

func resizeAll(in []imgs.Image, s int) []imgs.Image {
	out := make([]imgs.Image, len(in))
	for i, im := range in {
		out[i] = imgs.Resize(im, s, s)
	}
	return out
}

// topK is DevNet's k = max(floor(0.1 * H * W), 1).
func topK(hw int) int { return max(hw/10, 1) }

// topKMean returns the mean of the k largest |z| and their indices (ties by position).
func topKMean(z []float32) (float32, []int) {
	k := topK(len(z))
	idx := make([]int, len(z))
	for j := range idx {
		idx[j] = j
	}
	sort.SliceStable(idx, func(a, b int) bool { return abs32(z[idx[a]]) > abs32(z[idx[b]]) })
	var s float32
	for _, j := range idx[:k] {
		s += abs32(z[j])
	}
	return s / float32(k), idx[:k]
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// seq returns lo, lo+1, ..., lo+n-1.
func seq(lo, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = lo + i
	}
	return out
}

// balanced draws DevNet's balanced batches: an equal share of each non-empty kind (16 + 16
// + 16 for 48 with three kinds, 24 + 24 with two; remainders to the first kinds), each kind
// from its own endless permutation, reshuffled when used up.
type balanced struct {
	kinds  [][]int
	pos    []int
	counts []int
	rng    *rand.Rand
}

func newBalanced(kinds [][]int, size int, rng *rand.Rand) *balanced {
	b := &balanced{rng: rng}
	for _, k := range kinds {
		if len(k) > 0 {
			b.kinds = append(b.kinds, append([]int(nil), k...))
		}
	}
	b.pos = make([]int, len(b.kinds))
	for i := range b.kinds {
		b.shuffle(i)
		b.counts = append(b.counts, size/len(b.kinds))
		if i < size%len(b.kinds) {
			b.counts[i]++
		}
	}
	return b
}

func (b *balanced) shuffle(i int) {
	k := b.kinds[i]
	b.rng.Shuffle(len(k), func(x, y int) { k[x], k[y] = k[y], k[x] })
	b.pos[i] = 0
}

// next returns the next batch's rows, grouped by kind.
func (b *balanced) next() []int {
	var out []int
	for i, k := range b.kinds {
		for c := 0; c < b.counts[i]; c++ {
			if b.pos[i] == len(k) {
				b.shuffle(i)
			}
			out = append(out, k[b.pos[i]])
			b.pos[i]++
		}
	}
	return out
}
