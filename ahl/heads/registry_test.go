package heads

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestRegistryBuiltins(t *testing.T) {
	names := Names()
	for _, want := range []string{"devnet", "dra"} {
		if !slices.Contains(names, want) {
			t.Errorf("Names() = %v, want it to hold %q", names, want)
		}
	}
	dn, err := New("devnet", Config{Channels: 6, Options: map[string]int{OptCompositeWidth: 9}})
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := dn.(*DevNet); !ok || d.c != 6 {
		t.Errorf("New(devnet) = %#v, want a devnet head for 6 channels", dn)
	}
	// dra's options default to C' = 512, stride 3; given ones win.
	h, err := New("dra", Config{Channels: 4})
	if err != nil {
		t.Fatal(err)
	}
	if d := h.(*DRA); d.c != 4 || d.cp != 512 || d.stride != 3 {
		t.Errorf("New(dra) defaults: c %d, C' %d, stride %d; want 4, 512, 3", d.c, d.cp, d.stride)
	}
	h, err = New("dra", Config{Channels: 4, Options: map[string]int{OptCompositeWidth: 5, OptCompositeStride: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if d := h.(*DRA); d.cp != 5 || d.stride != 1 {
		t.Errorf("New(dra) given C' 5 stride 1: got %d, %d", d.cp, d.stride)
	}
}

func TestRegistryErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"resnet", Config{Channels: 4}, `head: "resnet", want `},
		{"devnet", Config{Channels: 0}, "heads devnet: channels = 0, want > 0"},
		{"dra", Config{Channels: 4, Options: map[string]int{OptCompositeStride: 0}}, "heads dra: composite_stride = 0, want >= 1"},
	} {
		_, err := New(tc.name, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %+v): error %v, want one containing %q", tc.name, tc.cfg, err, tc.want)
		}
	}
	if _, err := New("resnet", Config{Channels: 4}); err == nil || !strings.Contains(err.Error(), "devnet") || !strings.Contains(err.Error(), "dra") {
		t.Errorf("unknown head: error %v, want it to list devnet and dra", err)
	}
	mustPanic := func(what string, k Kind) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("Register(%s) did not panic", what)
			}
		}()
		Register(k)
	}
	build := func(Config) (Head, error) { return nil, nil }
	mustPanic("a repeated name", Kind{Name: "dra", Build: build})
	mustPanic("no name", Kind{Build: build})
	mustPanic("no Build", Kind{Name: "nobuild"})
	mustPanic("a default below Min", Kind{Name: "baddefault", Build: build, Options: []Option{{Name: "x", Default: 0, Min: 1}}})
}

func TestCheckOptions(t *testing.T) {
	ok := map[string]int{OptCompositeWidth: 1, OptCompositeStride: 3}
	if err := CheckOptions("devnet", ok); err != nil {
		t.Errorf("devnet with dra's options in range: %v", err)
	}
	for _, tc := range []struct {
		head string
		opts map[string]int
		want string
	}{
		{"dra", map[string]int{OptCompositeWidth: 0, OptCompositeStride: 0}, "composite_stride: 0, want >= 1"},
		{"devnet", map[string]int{OptCompositeWidth: -2}, "composite_width: -2, want >= 1"},
		{"dra", map[string]int{"width": 3}, "width: no registered head"},
		{"nohead", nil, `head: "nohead"`},
	} {
		err := CheckOptions(tc.head, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckOptions(%s, %v): error %v, want one containing %q", tc.head, tc.opts, err, tc.want)
		}
	}
}

// TestCodecRoundTrip writes every registered head's config and weights the way a model
// table holds them and reads them back.
func TestCodecRoundTrip(t *testing.T) {
	for _, name := range Names() {
		cfg := Config{Channels: 3, Options: map[string]int{}}
		k, _ := Lookup(name)
		for _, o := range k.Options {
			cfg.Options[o.Name] = o.Min + 1
		}
		h, err := New(name, cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		theta := h.Init(rand.New(rand.NewPCG(1, 2)))
		meta := cfg.Meta()
		back, err := ConfigFromMeta(name, meta)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if back.Channels != 3 || len(back.Options) != len(k.Options) {
			t.Errorf("%s: config %+v read back as %+v", name, cfg, back)
		}
		for _, o := range k.Options {
			if back.Options[o.Name] != cfg.Options[o.Name] {
				t.Errorf("%s: option %s = %d read back as %d", name, o.Name, cfg.Options[o.Name], back.Options[o.Name])
			}
		}
		h2, err := New(name, back)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		byName := map[string]Tensor{}
		for _, tn := range Tensors(h, "member1/", theta) {
			byName[tn.Name] = tn
		}
		got, err := Theta(h2, "member1/", byName)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(got, theta) {
			t.Errorf("%s: weights changed in the round trip", name)
		}
		if _, err := Theta(h2, "member2/", byName); err == nil || !strings.Contains(err.Error(), "no tensor") {
			t.Errorf("%s: wrong prefix: error %v, want a missing tensor", name, err)
		}
		if len(k.Options) > 0 {
			missing := cfg.Meta()
			delete(missing, k.Options[0].Name)
			if _, err := ConfigFromMeta(name, missing); err == nil || !strings.Contains(err.Error(), "metadata has no "+k.Options[0].Name) {
				t.Errorf("%s: metadata without %s: error %v", name, k.Options[0].Name, err)
			}
		}
	}
}

func TestCodecErrors(t *testing.T) {
	h, _ := NewDRA(3, 2, 1)
	theta := h.Init(rand.New(rand.NewPCG(3, 4)))
	byName := map[string]Tensor{}
	for _, tn := range Tensors(h, "", theta) {
		byName[tn.Name] = tn
	}
	other, _ := NewDRA(4, 2, 1)
	if _, err := Theta(other, "", byName); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("4-channel head from 3-channel tensors: error %v, want a shape error", err)
	}
	short := byName["seen.bias"]
	short.Values = nil
	byName["seen.bias"] = short
	if _, err := Theta(h, "", byName); err == nil || !strings.Contains(err.Error(), "holds 0 values") {
		t.Errorf("a tensor without values: error %v", err)
	}
	for _, meta := range []map[string]string{
		{"channels": "x", OptCompositeWidth: "2", OptCompositeStride: "1"},
		{OptCompositeWidth: "2", OptCompositeStride: "1"},
	} {
		if _, err := ConfigFromMeta("dra", meta); err == nil || !strings.Contains(err.Error(), "channels") {
			t.Errorf("ConfigFromMeta(%v): error %v, want one naming channels", meta, err)
		}
	}
	if _, err := ConfigFromMeta("resnet", map[string]string{"channels": "3"}); err == nil {
		t.Error("ConfigFromMeta accepted an unregistered head")
	}
}

// plainHead is a devnet head without the gorgonia hook, as a head from elsewhere would be.
type plainHead struct{ h *DevNet }

func (p plainHead) Name() string                           { return "plain" }
func (p plainHead) Layout() []Spec                         { return p.h.Layout() }
func (p plainHead) Init(rng *rand.Rand) []float32          { return p.h.Init(rng) }
func (p plainHead) Scores(th []float32, b Batch) []float32 { return p.h.Scores(th, b) }
func (p plainHead) LossGrad(th []float32, b Batch, pr Prior, g []float32) float32 {
	return p.h.LossGrad(th, b, pr, g)
}

func TestGorgoniaNoReference(t *testing.T) {
	dn, _ := NewDevNet(6)
	h := plainHead{dn}
	b := testBatch(17, 4, 6, 7, 4, []int{0, 1, 2, 0})
	theta := h.Init(newRand(1))
	_, err := GorgoniaLossGrad(h, theta, b, NewPrior(newRand(2)), make([]float32, len(theta)))
	if err == nil || !strings.Contains(err.Error(), `no gorgonia reference for head "plain"`) {
		t.Errorf("head without a graph: error %v", err)
	}
	// Without a Checker, CheckBatch applies only the generic rules: 5 channels pass.
	if err := CheckBatch(h, testBatch(18, 2, 5, 6, 3, []int{0, 1}), true); err != nil {
		t.Errorf("plain head, 5-channel batch: %v", err)
	}
}
