package heads

import (
	"fmt"
	"slices"
	"strconv"
)

// The model codec: a trained head is its kind's name, its Config and its flat weight vector.
// The Config travels as string metadata (Meta, ConfigFromMeta) and the weights as the
// layout's named tensors (Tensors, Theta); where they are stored is the caller's business.

// Meta returns cfg as string metadata: "channels" and every option of cfg.Options, in
// decimal.
func (cfg Config) Meta() map[string]string {
	m := map[string]string{"channels": strconv.Itoa(cfg.Channels)}
	for k, v := range cfg.Options {
		m[k] = strconv.Itoa(v)
	}
	return m
}

// ConfigFromMeta reads back what Meta wrote for a head of the kind registered as name: the
// channel count and every option the kind declares (each one required, since Meta writes
// them all). It checks only that the values are integers; New checks their ranges.
func ConfigFromMeta(name string, meta map[string]string) (Config, error) {
	k, err := Lookup(name)
	if err != nil {
		return Config{}, err
	}
	atoi := func(key string) (int, error) {
		s, ok := meta[key]
		if !ok {
			return 0, fmt.Errorf("heads %s: metadata has no %s", name, key)
		}
		v, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("heads %s: metadata %s = %q, want an integer", name, key, s)
		}
		return v, nil
	}
	cfg := Config{Options: map[string]int{}}
	if cfg.Channels, err = atoi("channels"); err != nil {
		return Config{}, err
	}
	for _, o := range k.Options {
		if cfg.Options[o.Name], err = atoi(o.Name); err != nil {
			return Config{}, err
		}
	}
	return cfg, nil
}

// Tensor is one named weight tensor of a head.
type Tensor struct {
	Name   string
	Shape  []int
	Values []float32
}

// Tensors splits theta into h's named tensors, in layout order, each name prefixed with
// prefix (an ensemble stores member i under "member<i>/"). The values alias theta.
func Tensors(h Head, prefix string, theta []float32) []Tensor {
	specs := h.Layout()
	out := make([]Tensor, len(specs))
	for i, s := range specs {
		out[i] = Tensor{Name: prefix + s.Name, Shape: slices.Clone(s.Shape), Values: theta[s.Offset : s.Offset+specSize(s)]}
	}
	return out
}

// Theta assembles h's flat weight vector from the tensors named prefix + the layout's names,
// checking each one's shape and length; tensors of other names are ignored.
func Theta(h Head, prefix string, byName map[string]Tensor) ([]float32, error) {
	specs := h.Layout()
	size := 0
	for _, s := range specs {
		size = max(size, s.Offset+specSize(s))
	}
	theta := make([]float32, size)
	for _, s := range specs {
		t, ok := byName[prefix+s.Name]
		if !ok {
			return nil, fmt.Errorf("heads %s: model has no tensor %q", h.Name(), prefix+s.Name)
		}
		if !slices.Equal(t.Shape, s.Shape) {
			return nil, fmt.Errorf("heads %s: tensor %q has shape %v, the head wants %v", h.Name(), t.Name, t.Shape, s.Shape)
		}
		if len(t.Values) != specSize(s) {
			return nil, fmt.Errorf("heads %s: tensor %q holds %d values, its shape %v takes %d", h.Name(), t.Name, len(t.Values), s.Shape, specSize(s))
		}
		copy(theta[s.Offset:], t.Values)
	}
	return theta, nil
}
