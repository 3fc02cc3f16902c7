package backbone

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// TestConvNetGradient checks lossGrad's analytic gradient (through the head, batch norm with
// batch statistics, ReLU and the convolutions) against central differences of the loss for
// every weight of a small network.
func TestConvNetGradient(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 0))
	n, err := newTrainNet(12, []int{3, 4})
	if err != nil {
		t.Fatal(err)
	}
	n.initKaiming(rng)
	for i := range n.theta { // move gamma off 1 and biases off 0 so all their terms count
		n.theta[i] += float32(0.1 * rng.NormFloat64())
	}
	in := []imgs.Image{randomImage(rng, 12, 12), randomImage(rng, 12, 12), randomImage(rng, 12, 12), randomImage(rng, 12, 12)}
	x, err := prepare(in, 12)
	if err != nil {
		t.Fatal(err)
	}
	y := []bool{false, true, false, true}
	// A prior that puts one normal above and one below the mean, and keeps both anomalies
	// inside the margin, so every branch of the loss has a gradient.
	s := n.scores(x)
	pr := prior{Mean: (s[0] + s[2]) / 2, Std: 0.05 + float32(math.Abs(float64(s[0]-s[2])))}
	pr.Margin = (max(s[1], s[3])-pr.Mean)/pr.Std + 1
	grad := make([]float32, len(n.theta))
	n.lossGrad(x, y, pr, 0.25, grad)
	loss := func() float64 {
		g := make([]float32, len(n.theta))
		return n.lossGrad(x, y, pr, 0.25, g)
	}
	const eps = 1e-4 // small: ReLU kinks lie within 1e-3 of many weights
	bad := 0
	for i := range n.theta {
		old := n.theta[i]
		n.theta[i] = old + eps
		lp := loss()
		n.theta[i] = old - eps
		lm := loss()
		n.theta[i] = old
		num := (lp - lm) / (2 * eps)
		if math.Abs(num-float64(grad[i])) > 2e-2*math.Max(math.Abs(num), math.Abs(float64(grad[i])))+2e-3 {
			bad++
			t.Logf("weight %d: analytic %g, numerical %g", i, grad[i], num)
		}
	}
	// A weight whose step crosses a ReLU or top-k boundary can disagree; allow a few.
	if bad > len(n.theta)/100 {
		t.Errorf("%d of %d gradient entries disagree with central differences", bad, len(n.theta))
	}
}

// TestConvNetFreeze checks the folding of batch norm: once the running statistics have
// converged to one batch's statistics, the frozen network scores that batch as the
// training-mode network does.
func TestConvNetFreeze(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 0))
	n, err := newTrainNet(16, []int{4, 6})
	if err != nil {
		t.Fatal(err)
	}
	n.initKaiming(rng)
	for i := range n.theta {
		n.theta[i] += float32(0.1 * rng.NormFloat64())
	}
	in := make([]imgs.Image, 6)
	for i := range in {
		in[i] = randomImage(rng, 16, 16)
	}
	x, err := prepare(in, 16)
	if err != nil {
		t.Fatal(err)
	}
	var train []float32
	for it := 0; it < 300; it++ { // momentum 0.1: 0.9^300 of the initial statistics remain
		train = n.scores(x)
	}
	frozen := n.freeze().scores(x)
	for i := range train {
		// The running variance is unbiased (m / (m - 1), m = 6 * 8 * 8 or 6 * 4 * 4).
		if math.Abs(float64(train[i]-frozen[i])) > 0.02*math.Max(1, math.Abs(float64(train[i]))) {
			t.Errorf("image %d: training-mode score %g, frozen %g", i, train[i], frozen[i])
		}
	}
}

// squares makes toy training data at side s: normals are smooth random gradients with a
// little noise; an anomaly is a normal with a bright square pasted in.
func squares(rng *rand.Rand, s, n int, anomalous bool) []imgs.Image {
	out := make([]imgs.Image, n)
	for i := range out {
		im := imgs.NewImage(s, s)
		a, b := rng.Float32()*0.5, rng.Float32()*0.5
		for c := 0; c < 3; c++ {
			p := im.Plane(c)
			for y := 0; y < s; y++ {
				for x := 0; x < s; x++ {
					p[y*s+x] = 0.2 + a*float32(x)/float32(s) + b*float32(y)/float32(s) + 0.05*rng.Float32()
				}
			}
		}
		if anomalous {
			im = pasteSquare(im, rng)
		}
		out[i] = im
	}
	return out
}

func pasteSquare(im imgs.Image, rng *rand.Rand) imgs.Image {
	out := imgs.Image{H: im.H, W: im.W, Pix: append([]float32(nil), im.Pix...)}
	k := im.H / 4
	y0, x0 := rng.IntN(im.H-k), rng.IntN(im.W-k)
	for c := 0; c < 3; c++ {
		p := out.Plane(c)
		for y := y0; y < y0+k; y++ {
			for x := x0; x < x0+k; x++ {
				p[y*im.W+x] = 1
			}
		}
	}
	return out
}

func toyConfig(seed uint64) ConvNetConfig {
	return ConvNetConfig{
		Size: 16, Channels: []int{8, 16}, Epochs: 6, Steps: 5, Batch: 12, LR: 3e-3, Seed: seed, Flip: true,
		Generators: []string{"square"},
		Pseudo: func(gen string, img imgs.Image, others []imgs.Image, rng *rand.Rand) (imgs.Image, error) {
			if gen != "square" || len(others) == 0 {
				panic("pseudo called with " + gen)
			}
			return pasteSquare(img, rng), nil
		},
	}
}

// TestConvNetTrains checks that training lowers the deviation loss and that the trained
// base model scores held-out anomalies above held-out normals.
func TestConvNetTrains(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 0))
	normals := squares(rng, 16, 30, false)
	anomalies := squares(rng, 16, 4, true)
	cfg := toyConfig(1)
	var calls, last, total int
	cfg.Progress = func(done, all int) { calls, last, total = calls+1, done, all }
	net, losses, err := TrainConvNet(context.Background(), cfg, normals, anomalies)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("epoch losses %.3f", losses)
	if losses[len(losses)-1] >= 0.7*losses[0] {
		t.Errorf("loss went from %.3f to %.3f; want at least a 30%% drop", losses[0], losses[len(losses)-1])
	}
	if calls != 30 || last != 30 || total != 30 {
		t.Errorf("progress: %d calls, last %d/%d, want 30 calls ending 30/30", calls, last, total)
	}
	scoreN, err1 := net.Scores(context.Background(), squares(rng, 16, 20, false))
	scoreA, err2 := net.Scores(context.Background(), squares(rng, 16, 20, true))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	sn, sa := mean32(scoreN), mean32(scoreA)
	if sa <= sn {
		t.Errorf("mean score of held-out anomalies %.3f <= normals %.3f", sa, sn)
	}
	if net.Channels() != 16 {
		t.Errorf("channels %d, want 16", net.Channels())
	}
	ms, err := net.Extract(context.Background(), normals[:3])
	if err != nil {
		t.Fatal(err)
	}
	// 16 -> 8 -> 4 at scale 0, 8 -> 4 -> 2 at scale 1.
	if ms[0].N != 3 || ms[0].C != 16 || ms[0].H != 4 || ms[1].H != 2 || ms[1].W != 2 {
		t.Errorf("maps %dx%dx%dx%d and %dx%dx%dx%d", ms[0].N, ms[0].C, ms[0].H, ms[0].W, ms[1].N, ms[1].C, ms[1].H, ms[1].W)
	}
}

func mean32(v []float32) float64 {
	var s float64
	for _, x := range v {
		s += float64(x)
	}
	return s / float64(len(v))
}

// TestConvNetDeterministic trains twice with one seed (identical weights, bit for bit) and
// once with another (different weights), and rebuilds the net from its Weights.
func TestConvNetDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 0))
	normals := squares(rng, 16, 10, false)
	train := func(seed uint64) *ConvNet {
		cfg := toyConfig(seed)
		cfg.Epochs = 2
		net, _, err := TrainConvNet(context.Background(), cfg, normals, nil)
		if err != nil {
			t.Fatal(err)
		}
		return net
	}
	a, b, c := train(1), train(1), train(2)
	same := func(x, y *ConvNet) bool {
		for i := range x.theta {
			if math.Float32bits(x.theta[i]) != math.Float32bits(y.theta[i]) {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("two trainings with seed 1 differ")
	}
	if same(a, c) {
		t.Error("trainings with seeds 1 and 2 are identical")
	}
	r, err := FromTensors(ConvNetName, 16, a.Weights())
	if err != nil {
		t.Fatal(err)
	}
	if !same(a, r.(*ConvNet)) {
		t.Error("FromTensors(Weights()) changed the weights")
	}
	ws := a.Weights()
	_, err = FromTensors(ConvNetName, 16, ws[1:]) // drops conv0.bias (sorted first)
	if err == nil || !strings.Contains(err.Error(), "conv0.bias") {
		t.Errorf("missing conv0.bias: error %v", err)
	}
}

func TestFlipLR(t *testing.T) {
	im := imgs.Image{H: 1, W: 3, Pix: []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}}
	checkValues(t, "flipped", flipLR(im).Pix, []float32{3, 2, 1, 6, 5, 4, 9, 8, 7})
}

// TestConvNetSameOnAnyCoreCount trains on one and on two goroutines: the parallel loops and
// matrix-product splits must not change a single bit (artifacts are content-addressed).
func TestConvNetSameOnAnyCoreCount(t *testing.T) {
	// At 64 x 64 the first convolution's product (16 x 27 times 27 x 12*32*32, 10 MFLOP)
	// and the element-wise loops exceed the thresholds at which work is split.
	normals := squares(rand.New(rand.NewPCG(11, 0)), 64, 10, false)
	cfg := toyConfig(3)
	cfg.Size, cfg.Epochs, cfg.Steps = 64, 1, 2
	train := func(procs int) []float32 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		net, _, err := TrainConvNet(context.Background(), cfg, normals, nil)
		if err != nil {
			t.Fatal(err)
		}
		ms, err := net.Extract(context.Background(), normals)
		if err != nil {
			t.Fatal(err)
		}
		return append(append([]float32(nil), net.theta...), ms[0].Data...)
	}
	one, two := train(1), train(2)
	for i := range one {
		if math.Float32bits(one[i]) != math.Float32bits(two[i]) {
			t.Fatalf("value %d: %g on one goroutine, %g on two", i, one[i], two[i])
		}
	}
}

func TestConvNetBadConfig(t *testing.T) {
	normals := squares(rand.New(rand.NewPCG(1, 1)), 16, 4, false)
	cfg := toyConfig(1)
	cfg.Pseudo = nil
	if _, _, err := TrainConvNet(context.Background(), cfg, normals, nil); err == nil || !strings.Contains(err.Error(), "needs anomalies") {
		t.Errorf("no anomalies at all: error %v", err)
	}
	cfg = toyConfig(1)
	cfg.Channels = []int{8, 0}
	if _, _, err := TrainConvNet(context.Background(), cfg, normals, nil); err == nil || !strings.Contains(err.Error(), "channels[1]") {
		t.Errorf("zero channels: error %v", err)
	}
	cfg = toyConfig(1)
	if _, _, err := TrainConvNet(context.Background(), cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "normals") {
		t.Errorf("no normals: error %v", err)
	}
}

// TestExtractSized: extracting images that imgs.DecodeResized brought to both scales gives
// bit for bit the maps Extract computes from the full-size images (which it resamples
// itself), for images larger than S, between S/2 and S, and at S.
func TestExtractSized(t *testing.T) {
	ctx := context.Background()
	n, err := newConvNet(16, []int{4, 8})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range n.convs {
		for j := range n.convs[i].W {
			n.convs[i].W[j] = float32(rng.NormFloat64() * 0.3)
		}
	}
	var full, s0, s1 []imgs.Image
	for _, sz := range [][2]int{{37, 50}, {12, 11}, {16, 16}} {
		im := imgs.NewImage(sz[0], sz[1])
		for j := range im.Pix {
			im.Pix[j] = float32(rng.IntN(256)) / 255
		}
		png, err := imgs.EncodePNG(im)
		if err != nil {
			t.Fatal(err)
		}
		dec, err := imgs.Decode(png)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := imgs.DecodeResized(png, imgs.Size{H: 16, W: 16}, imgs.Size{H: 8, W: 8})
		if err != nil {
			t.Fatal(err)
		}
		full, s0, s1 = append(full, dec), append(s0, rs[0]), append(s1, rs[1])
	}
	want, err := n.Extract(ctx, full)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ExtractSized(ctx, n, s0, s1)
	if err != nil {
		t.Fatal(err)
	}
	for scale := range want {
		for j := range want[scale].Data {
			if got[scale].Data[j] != want[scale].Data[j] {
				t.Fatalf("scale %d value %d: ExtractSized %g, Extract %g", scale, j, got[scale].Data[j], want[scale].Data[j])
			}
		}
	}
	if _, err := ExtractSized(ctx, n, s0, s1[:1]); err == nil {
		t.Error("ExtractSized with 3 images at scale 0 and 1 at scale 1: no error")
	}
}

// TestConvNetEarlyStopping: with a patience, every epoch run is scored on the validation
// set, training ends at the maximum or Patience epochs after the best figure, and the
// network returned is the best epoch's (its figure, recomputed, is the highest seen).
// Without validation normals early stopping is refused.
func TestConvNetEarlyStopping(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 0))
	normals := squares(rng, 16, 30, false)
	anomalies := squares(rng, 16, 4, true)
	for _, patience := range []int{1, 2} {
		cfg := toyConfig(3)
		cfg.Epochs = 8
		cfg.ValNormals, cfg.ValAnomalies, cfg.Patience = squares(rng, 16, 12, false), squares(rng, 16, 3, true), patience
		var figs []float64
		cfg.OnValidation = func(ep int, f float64) {
			if ep != len(figs) {
				t.Errorf("validation of epoch %d after %d epochs", ep, len(figs))
			}
			figs = append(figs, f)
		}
		net, losses, err := TrainConvNet(context.Background(), cfg, normals, anomalies)
		if err != nil {
			t.Fatal(err)
		}
		best := 0
		for ep, f := range figs {
			if f > figs[best] {
				best = ep
			}
		}
		t.Logf("patience %d: figures %.3f, best epoch %d, ran %d", patience, figs, best, len(losses))
		if len(figs) != len(losses) || (len(losses) != cfg.Epochs && len(losses) != best+patience+1) {
			t.Errorf("patience %d: ran %d epochs with %d figures, best %d; want %d figures, %d or best+patience+1 epochs",
				patience, len(losses), len(figs), best, len(losses), cfg.Epochs)
		}
		val, err := newConvnetValidation(cfg, resizeAll(normals, cfg.Size))
		if err != nil {
			t.Fatal(err)
		}
		got, err := val.figure(context.Background(), net)
		if err != nil {
			t.Fatal(err)
		}
		if got != figs[best] {
			t.Errorf("patience %d: returned network's figure %.6f, want the best epoch's %.6f", patience, got, figs[best])
		}
	}
	cfg := toyConfig(3)
	cfg.Patience = 2
	if _, _, err := TrainConvNet(context.Background(), cfg, normals, anomalies); err == nil || !strings.Contains(err.Error(), "validation normals") {
		t.Errorf("patience without validation normals: err = %v", err)
	}
}

// TestAUROCConvnet: the backbone's own AUROC counts ties as one half.
func TestAUROCConvnet(t *testing.T) {
	if got := auroc([]float32{0, 1, 2}, []float32{1, 3}); math.Abs(got-(0.5*(1+0.5)/3+0.5)) > 1e-12 {
		t.Errorf("auroc = %g, want %g", got, 0.5*(1+0.5)/3+0.5)
	}
}
