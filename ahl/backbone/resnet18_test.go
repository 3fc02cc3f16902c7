package backbone

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// randomResNet18 returns torchvision-named resnet18 tensors with Kaiming-normal convolution
// weights and batch norm statistics near the identity, plus the tensors a real state dict
// also has and the loader must ignore (fc.*, num_batches_tracked is never F32).
func randomResNet18(rng *rand.Rand) []Tensor {
	shapes := ResNet18Shapes()
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	var ts []Tensor
	for _, name := range names {
		sh := shapes[name]
		n := 1
		for _, d := range sh {
			n *= d
		}
		v := make([]float32, n)
		if len(sh) == 4 {
			std := math.Sqrt(2 / float64(sh[1]*sh[2]*sh[3]))
			for i := range v {
				v[i] = float32(rng.NormFloat64() * std)
			}
		} else {
			// Uniform on [lo, lo + span) by batch norm parameter.
			r := map[string][2]float64{
				"weight": {0.5, 0.5}, "bias": {-0.1, 0.2}, "running_mean": {-0.1, 0.2}, "running_var": {0.8, 0.4},
			}[name[strings.LastIndex(name, ".")+1:]]
			for i := range v {
				v[i] = float32(r[0] + r[1]*rng.Float64())
			}
		}
		ts = append(ts, Tensor{Name: name, Shape: sh, Values: v})
	}
	if len(ts) != 20*5 { // conv1, 16 block convs and 3 downsamples, each with 4 BN tensors
		panic(fmt.Sprintf("resnet18 has %d tensors", len(ts)))
	}
	ts = append(ts, Tensor{Name: "fc.weight", Shape: []int{1000, 512}, Values: make([]float32, 512000)},
		Tensor{Name: "fc.bias", Shape: []int{1000}, Values: make([]float32, 1000)})
	return ts
}

func randomImage(rng *rand.Rand, h, w int) imgs.Image {
	im := imgs.NewImage(h, w)
	for i := range im.Pix {
		im.Pix[i] = rng.Float32()
	}
	return im
}

func writeResNet18(t testing.TB, seed uint64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "resnet18.safetensors")
	if err := WriteSafetensors(path, randomResNet18(rand.New(rand.NewPCG(seed, 0)))); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestResNet18Shapes(t *testing.T) {
	path := writeResNet18(t, 1)
	rng := rand.New(rand.NewPCG(2, 0))
	for _, tc := range []struct{ size, h0, h1 int }{{224, 7, 4}, {448, 14, 7}} {
		r, err := LoadResNet18(path, tc.size)
		if err != nil {
			t.Fatal(err)
		}
		// One image at a foreign size (resized at both scales), one already at S.
		in := []imgs.Image{randomImage(rng, 100, 150), randomImage(rng, tc.size, tc.size)}
		ms, err := r.Extract(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 2 {
			t.Fatalf("S=%d: %d scales, want 2", tc.size, len(ms))
		}
		for k, want := range [][4]int{{2, 512, tc.h0, tc.h0}, {2, 512, tc.h1, tc.h1}} {
			m := ms[k]
			if got := [4]int{m.N, m.C, m.H, m.W}; got != want {
				t.Errorf("S=%d scale %d: shape %v, want %v", tc.size, k, got, want)
			}
			if err := m.Check(); err != nil {
				t.Error(err)
			}
			nonzero := 0
			for _, v := range m.Data {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) || v < 0 {
					t.Fatalf("S=%d scale %d: value %g (post-ReLU maps are finite and >= 0)", tc.size, k, v)
				}
				if v > 0 {
					nonzero++
				}
			}
			if nonzero < len(m.Data)/10 {
				t.Errorf("S=%d scale %d: only %d of %d values are positive", tc.size, k, nonzero, len(m.Data))
			}
		}
	}
}

// TestResNet18MatchesReference compares the folded, batched, im2col network with a direct
// float64 implementation of torchvision's resnet18 (convolution loops, batch norm applied
// separately) on 32 x 32 inputs.
func TestResNet18MatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 0))
	ts := randomResNet18(rng)
	r, err := NewResNet18(32, ts)
	if err != nil {
		t.Fatal(err)
	}
	in := []imgs.Image{randomImage(rng, 32, 32), randomImage(rng, 32, 32), randomImage(rng, 16, 16)}
	ms, err := r.Extract(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	m := tensorMap(ts)
	for i, im := range in[:2] {
		want := referenceResNet18(m, im)
		got := ms[0].At(i)
		compareMaps(t, fmt.Sprintf("image %d scale 0", i), got, want)
	}
	// Image 2 is already 16 x 16: scale 1 must see it unresampled.
	compareMaps(t, "image 2 scale 1", ms[1].At(2), referenceResNet18(m, in[2]))
}

func compareMaps(t *testing.T, what string, got []float32, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var scale float64
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	for j := range want {
		if math.Abs(float64(got[j])-want[j]) > 1e-4*math.Max(1, scale) {
			t.Fatalf("%s: value %d = %g, reference %g", what, j, got[j], want[j])
		}
	}
}

// ref is a float64 C x H x W tensor for the reference implementation.
type ref struct {
	c, h, w int
	v       []float64
}

func referenceResNet18(m map[string]Tensor, im imgs.Image) []float64 {
	x := ref{3, im.H, im.W, make([]float64, 3*im.H*im.W)}
	for c := 0; c < 3; c++ {
		for j, v := range im.Plane(c) {
			x.v[c*im.H*im.W+j] = (float64(v) - float64(imagenetMean[c])) / float64(imagenetStd[c])
		}
	}
	cbr := func(x ref, conv, bn string, stride, pad int, relu bool) ref {
		y := refConv(x, m[conv+".weight"], stride, pad)
		y = refBN(y, m, bn)
		if relu {
			for j, v := range y.v {
				y.v[j] = math.Max(v, 0)
			}
		}
		return y
	}
	x = cbr(x, "conv1", "bn1", 2, 3, true)
	x = refMaxPool(x)
	for li := range resnet18Stages {
		for bi := 0; bi < 2; bi++ {
			p := fmt.Sprintf("layer%d.%d.", li+1, bi)
			stride := 1
			if bi == 0 && li > 0 {
				stride = 2
			}
			h := cbr(x, p+"conv1", p+"bn1", stride, 1, true)
			h = cbr(h, p+"conv2", p+"bn2", 1, 1, false)
			short := x
			if _, ok := m[p+"downsample.0.weight"]; ok {
				short = cbr(x, p+"downsample.0", p+"downsample.1", stride, 0, false)
			}
			for j := range h.v {
				h.v[j] = math.Max(h.v[j]+short.v[j], 0)
			}
			x = h
		}
	}
	return x.v
}

func refConv(x ref, w Tensor, stride, pad int) ref {
	cout, k := w.Shape[0], w.Shape[2]
	ho, wo := (x.h+2*pad-k)/stride+1, (x.w+2*pad-k)/stride+1
	y := ref{cout, ho, wo, make([]float64, cout*ho*wo)}
	for o := 0; o < cout; o++ {
		for oy := 0; oy < ho; oy++ {
			for ox := 0; ox < wo; ox++ {
				var s float64
				for c := 0; c < x.c; c++ {
					for ky := 0; ky < k; ky++ {
						for kx := 0; kx < k; kx++ {
							iy, ix := oy*stride-pad+ky, ox*stride-pad+kx
							if iy >= 0 && iy < x.h && ix >= 0 && ix < x.w {
								s += float64(w.Values[((o*x.c+c)*k+ky)*k+kx]) * x.v[(c*x.h+iy)*x.w+ix]
							}
						}
					}
				}
				y.v[(o*ho+oy)*wo+ox] = s
			}
		}
	}
	return y
}

func refBN(x ref, m map[string]Tensor, bn string) ref {
	g, b := m[bn+".weight"].Values, m[bn+".bias"].Values
	mu, va := m[bn+".running_mean"].Values, m[bn+".running_var"].Values
	hw := x.h * x.w
	for c := 0; c < x.c; c++ {
		for j := c * hw; j < (c+1)*hw; j++ {
			x.v[j] = float64(g[c])*(x.v[j]-float64(mu[c]))/math.Sqrt(float64(va[c])+bnEps) + float64(b[c])
		}
	}
	return x
}

func refMaxPool(x ref) ref {
	ho, wo := (x.h-1)/2+1, (x.w-1)/2+1
	y := ref{x.c, ho, wo, make([]float64, x.c*ho*wo)}
	for c := 0; c < x.c; c++ {
		for oy := 0; oy < ho; oy++ {
			for ox := 0; ox < wo; ox++ {
				best := math.Inf(-1)
				for iy := 2*oy - 1; iy <= 2*oy+1; iy++ {
					for ix := 2*ox - 1; ix <= 2*ox+1; ix++ {
						if iy >= 0 && iy < x.h && ix >= 0 && ix < x.w {
							best = math.Max(best, x.v[(c*x.h+iy)*x.w+ix])
						}
					}
				}
				y.v[(c*ho+oy)*wo+ox] = best
			}
		}
	}
	return y
}

func TestResNet18BadWeights(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 0))
	base := randomResNet18(rng)
	edit := func(f func(ts []Tensor) []Tensor) []Tensor {
		cp := append([]Tensor(nil), base...)
		return f(cp)
	}
	for _, tc := range []struct {
		name string
		ts   []Tensor
		want []string
	}{
		{"missing tensor", edit(func(ts []Tensor) []Tensor {
			for i, x := range ts {
				if x.Name == "layer3.1.bn2.running_var" {
					return append(ts[:i], ts[i+1:]...)
				}
			}
			return ts
		}), []string{`"layer3.1.bn2.running_var" missing`, "[256]"}},
		{"wrong shape", edit(func(ts []Tensor) []Tensor {
			for i, x := range ts {
				if x.Name == "layer2.0.downsample.0.weight" {
					ts[i] = Tensor{Name: x.Name, Shape: []int{128, 64, 3, 3}, Values: make([]float32, 128*64*9)}
				}
			}
			return ts
		}), []string{`"layer2.0.downsample.0.weight" has shape [128 64 3 3], expected [128 64 1 1]`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "w.safetensors")
			if err := WriteSafetensors(path, tc.ts); err != nil {
				t.Fatal(err)
			}
			_, err := LoadResNet18(path, 224)
			for _, w := range append(tc.want, path) {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Fatalf("error %v, want one containing %q", err, w)
				}
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "nowhere.safetensors")
	if _, err := LoadResNet18(missing, 224); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing file: error %v, want one naming %s", err, missing)
	}
	if _, err := NewResNet18(4, base); err == nil || !strings.Contains(err.Error(), "size 4") {
		t.Fatalf("size 4: error %v", err)
	}
}

// TestResNet18WeightsRoundTrip rebuilds the backbone from Weights through FromTensors and
// checks that it extracts the same maps, and that batching does not change a map.
func TestResNet18WeightsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 0))
	r, err := NewResNet18(64, randomResNet18(rng))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range r.Weights() {
		if strings.HasPrefix(w.Name, "fc.") {
			t.Errorf("Weights exports %s, which the backbone does not use", w.Name)
		}
	}
	b, err := FromTensors(ResNet18Name, r.Size(), r.Weights())
	if err != nil {
		t.Fatal(err)
	}
	in := []imgs.Image{randomImage(rng, 64, 64), randomImage(rng, 80, 60)}
	ctx := context.Background()
	a1, err1 := r.Extract(ctx, in)
	a2, err2 := b.Extract(ctx, in)
	single, err3 := b.Extract(ctx, in[1:])
	if err1 != nil || err2 != nil || err3 != nil {
		t.Fatal(err1, err2, err3)
	}
	for k := range a1 {
		checkValues(t, fmt.Sprintf("scale %d after round trip", k), a2[k].Data, a1[k].Data)
		checkValues(t, fmt.Sprintf("scale %d alone vs in a batch", k), single[k].At(0), a1[k].At(1))
	}
	if _, err := FromTensors("vgg", 64, nil); err == nil || !strings.Contains(err.Error(), `"vgg"`) {
		t.Fatalf("unknown backbone: error %v", err)
	}
	empty, err := b.Extract(ctx, nil)
	if err != nil || len(empty) != 2 || empty[0].N != 0 || empty[0].C != 512 || empty[1].H != 1 {
		t.Fatalf("no images: %+v, %v", empty, err)
	}
}
