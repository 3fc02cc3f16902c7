package stages

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/pipe-ahl/pipe/ahl/fusion"
	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/ahl/knn"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// Schema metadata of the model table (stages/TABLES.md) beyond tables.MethodKey and
// tables.HeadKey. A head's config is stored under metaPrefix + its heads.Config.Meta keys
// (pipe.channels, pipe.composite_width, ...).
const (
	metaPrefix        = "pipe."
	modelMembersKey   = "pipe.members"    // ensemble: number of member heads
	modelNeighbourKey = "pipe.neighbours" // knn: k
	knnTensor         = "knn.train"       // knn (and a head fused with knn): N x D pooled training normals
	// A head fused with knn (train.fusion: knn) keeps knn's tensor and k beside its own
	// weights, and the fusion's weight and the two scales (stages/TABLES.md).
	modelFusionKey       = tables.FusionKey
	modelFusionWeightKey = "pipe.fusion.head_weight"
	modelFusionHeadKey   = "pipe.fusion.head_scale" // "mean std" of the head's scores on held-out normals
	modelFusionKNNKey    = "pipe.fusion.knn_scale"  // the same for knn's distances
)

// model is the train stage's model table as Go values: a knn model, or a registered head's
// kind and config with one weight vector per head (ahl and devnet one, an ensemble one per
// member). A head model with Fusion set scores by fusing its heads' scores with KNN's
// (train.fusion: knn; ahl/fusion).
type model struct {
	Method string
	Head   string       // the head's registered kind; "" for knn
	Config heads.Config // the head's config, as given to heads.New
	Thetas [][]float32
	KNN    knn.Model
	Fusion *fusion.Fusion
	// FusionMode is how Fusion combines the scores: FusionKNN (the weighted sum of the
	// standardised scores) or FusionResidual (the head's score plus knn's standardised
	// distance; head weight 1, or 0 when the head was dropped).
	FusionMode string
}

// newHead builds m's head through the heads registry.
func (m *model) newHead() (heads.Head, error) { return heads.New(m.Head, m.Config) }

// memberPrefix is the tensor name prefix of head i: "member<i>/" in an ensemble, else "".
func (m *model) memberPrefix(i int) string {
	if m.Method == MethodEnsemble {
		return fmt.Sprintf("member%d/", i)
	}
	return ""
}

// meta is the model's schema metadata, which the train stage also puts on its log table.
func (m *model) meta() tables.Meta {
	meta := tables.Meta{tables.MethodKey: m.Method}
	if m.Method == MethodKNN {
		meta[modelNeighbourKey] = strconv.Itoa(m.KNN.K)
		return meta
	}
	meta[tables.HeadKey] = m.Head
	for k, v := range m.Config.Meta() {
		meta[metaPrefix+k] = v
	}
	if m.Method == MethodEnsemble {
		meta[modelMembersKey] = strconv.Itoa(len(m.Thetas))
	}
	if f := m.Fusion; f != nil {
		meta[modelFusionKey] = m.FusionMode
		meta[modelNeighbourKey] = strconv.Itoa(m.KNN.K)
		meta[modelFusionWeightKey] = formatFloat(f.HeadWeight)
		meta[modelFusionHeadKey] = formatFloat(f.Head.Mean) + " " + formatFloat(f.Head.Std)
		meta[modelFusionKNNKey] = formatFloat(f.KNN.Mean) + " " + formatFloat(f.KNN.Std)
	}
	return meta
}

// formatFloat writes v so that strconv.ParseFloat gives v back exactly.
func formatFloat(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// encode returns m as the model table's content: named tensors (the values alias m) and
// m.meta().
func (m *model) encode() (tables.Model, error) {
	var ts []artifacts.Tensor
	if m.Method == MethodKNN || m.Fusion != nil {
		ts = append(ts, artifacts.Tensor{Name: knnTensor, Shape: []int64{int64(m.KNN.N), int64(m.KNN.D)}, Values: m.KNN.Train})
	}
	if m.Method != MethodKNN {
		h, err := m.newHead()
		if err != nil {
			return tables.Model{}, err
		}
		for i, theta := range m.Thetas {
			for _, t := range heads.Tensors(h, m.memberPrefix(i), theta) {
				shape := make([]int64, len(t.Shape))
				for j, d := range t.Shape {
					shape[j] = int64(d)
				}
				ts = append(ts, artifacts.Tensor{Name: t.Name, Shape: shape, Values: t.Values})
			}
		}
	}
	return tables.Model{Tensors: ts, Meta: m.meta()}, nil
}

// decodeModel reads the model table's content back: the method, and the head through the
// heads registry (kind from pipe.head, config from the heads codec's keys) with its weights,
// or the knn model. The result shares no memory with t's tensors beyond the knn matrix.
func decodeModel(t tables.Model) (*model, error) {
	m := &model{Method: t.Meta[tables.MethodKey]}
	if m.Method == "" {
		return nil, fmt.Errorf("model table has no %s metadata (not written by the train stage?)", tables.MethodKey)
	}
	byName := make(map[string]heads.Tensor, len(t.Tensors))
	for _, at := range t.Tensors {
		shape := make([]int, len(at.Shape))
		for j, d := range at.Shape {
			shape[j] = int(d)
		}
		byName[at.Name] = heads.Tensor{Name: at.Name, Shape: shape, Values: at.Values}
	}
	atoi := func(key string) (int, error) {
		v, err := strconv.Atoi(t.Meta[key])
		if err != nil {
			return 0, fmt.Errorf("model metadata %s: %q is not an integer", key, t.Meta[key])
		}
		return v, nil
	}
	decodeKNN := func() error {
		kt, ok := byName[knnTensor]
		if !ok || len(kt.Shape) != 2 || len(kt.Values) != kt.Shape[0]*kt.Shape[1] {
			return fmt.Errorf("knn model has no 2-d tensor %s", knnTensor)
		}
		k, err := atoi(modelNeighbourKey)
		if err != nil {
			return err
		}
		m.KNN = knn.Model{K: k, N: kt.Shape[0], D: kt.Shape[1], Train: kt.Values}
		return nil
	}
	if m.Method == MethodKNN {
		if err := decodeKNN(); err != nil {
			return nil, err
		}
		return m, nil
	}
	if f, ok := t.Meta[modelFusionKey]; ok {
		if f != FusionKNN && f != FusionResidual {
			return nil, fmt.Errorf("model metadata %s: %q, want %s or %s", modelFusionKey, f, FusionKNN, FusionResidual)
		}
		m.FusionMode = f
		if err := decodeKNN(); err != nil {
			return nil, fmt.Errorf("model fused with knn: %w", err)
		}
		fu, err := decodeFusion(t.Meta)
		if err != nil {
			return nil, err
		}
		m.Fusion = &fu
	}
	meta := map[string]string{}
	for k, v := range t.Meta {
		if name, ok := strings.CutPrefix(k, metaPrefix); ok {
			meta[name] = v
		}
	}
	var err error
	m.Head = t.Meta[tables.HeadKey]
	if m.Config, err = heads.ConfigFromMeta(m.Head, meta); err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	h, err := m.newHead()
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	members := 1
	if m.Method == MethodEnsemble {
		if members, err = atoi(modelMembersKey); err != nil {
			return nil, err
		}
	}
	for i := 0; i < members; i++ {
		theta, err := heads.Theta(h, m.memberPrefix(i), byName)
		if err != nil {
			return nil, fmt.Errorf("model: %w", err)
		}
		m.Thetas = append(m.Thetas, theta)
	}
	return m, nil
}

// decodeFusion reads a fused model's weight and scales from its metadata.
func decodeFusion(meta tables.Meta) (fusion.Fusion, error) {
	var f fusion.Fusion
	w, err := strconv.ParseFloat(meta[modelFusionWeightKey], 64)
	if err != nil {
		return f, fmt.Errorf("model metadata %s: %q is not a number", modelFusionWeightKey, meta[modelFusionWeightKey])
	}
	f.HeadWeight = w
	for _, s := range []struct {
		key string
		sc  *fusion.Scale
	}{{modelFusionHeadKey, &f.Head}, {modelFusionKNNKey, &f.KNN}} {
		mean, std, ok := strings.Cut(meta[s.key], " ")
		var err1, err2 error
		if ok {
			s.sc.Mean, err1 = strconv.ParseFloat(mean, 64)
			s.sc.Std, err2 = strconv.ParseFloat(std, 64)
		}
		if !ok || err1 != nil || err2 != nil {
			return f, fmt.Errorf("model metadata %s: %q, want \"MEAN STD\"", s.key, meta[s.key])
		}
	}
	if err := f.Check(); err != nil {
		return f, fmt.Errorf("model metadata: %w", err)
	}
	return f, nil
}

// summary describes m for the log: "knn (k = 5 over 120 normals)" or "ahl with 1 dra head(s)
// {channels: 512, composite_stride: 3, composite_width: 512}".
func (m *model) summary() string {
	if m.Method == MethodKNN {
		return fmt.Sprintf("knn (k = %d over %d normals)", m.KNN.K, m.KNN.N)
	}
	cfg := m.Config.Meta()
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		kv = append(kv, k+": "+cfg[k])
	}
	return fmt.Sprintf("%s with %d %s head(s) {%s}", m.Method, len(m.Thetas), m.Head, strings.Join(kv, ", "))
}
