package stages

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/pipe-ahl/pipe/ahl/heads"
	"github.com/pipe-ahl/pipe/ahl/knn"
	"github.com/pipe-ahl/pipe/artifacts"
)

// Schema metadata of the model table (stages/TABLES.md) beyond modelMethodKey and
// modelHeadKey. A head's config is stored under metaPrefix + its heads.Config.Meta keys
// (pipe.channels, pipe.composite_width, ...).
const (
	metaPrefix        = "pipe."
	modelMembersKey   = "pipe.members"    // ensemble: number of member heads
	modelNeighbourKey = "pipe.neighbours" // knn: k
	knnTensor         = "knn.train"       // knn: N x D pooled training normals
)

// model is the train stage's model table as Go values: a knn model, or a registered head's
// kind and config with one weight vector per head (ahl and devnet one, an ensemble one per
// member).
type model struct {
	Method string
	Head   string       // the head's registered kind; "" for knn
	Config heads.Config // the head's config, as given to heads.New
	Thetas [][]float32
	KNN    knn.Model
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
func (m *model) meta() map[string]string {
	meta := map[string]string{modelMethodKey: m.Method}
	if m.Method == MethodKNN {
		meta[modelNeighbourKey] = strconv.Itoa(m.KNN.K)
		return meta
	}
	meta[modelHeadKey] = m.Head
	for k, v := range m.Config.Meta() {
		meta[metaPrefix+k] = v
	}
	if m.Method == MethodEnsemble {
		meta[modelMembersKey] = strconv.Itoa(len(m.Thetas))
	}
	return meta
}

// table writes m as a tensor table with m.meta() as schema metadata.
func (m *model) table() (arrow.RecordBatch, error) {
	var ts []artifacts.Tensor
	if m.Method == MethodKNN {
		ts = append(ts, artifacts.Tensor{Name: knnTensor, Shape: []int64{int64(m.KNN.N), int64(m.KNN.D)}, Values: m.KNN.Train})
	} else {
		h, err := m.newHead()
		if err != nil {
			return nil, err
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
	rec, err := artifacts.TensorTable(ts)
	if err != nil {
		return nil, err
	}
	return withMeta(rec, m.meta()), nil
}

// readModel reads a model table written by the train stage into Go-owned values: the caller
// may release rec as soon as it returns.
func readModel(rec arrow.RecordBatch) (*model, error) {
	m := &model{Method: schemaMeta(rec, modelMethodKey)}
	if m.Method == "" {
		return nil, fmt.Errorf("model table has no %s metadata (not written by the train stage?)", modelMethodKey)
	}
	ts, err := artifacts.ReadTensors(rec)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]heads.Tensor, len(ts))
	for _, t := range ts {
		shape := make([]int, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int(d)
		}
		byName[t.Name] = heads.Tensor{Name: t.Name, Shape: shape, Values: t.Values}
	}
	meta := map[string]string{}
	md := rec.Schema().Metadata()
	for i, k := range md.Keys() {
		if name, ok := strings.CutPrefix(k, metaPrefix); ok {
			meta[name] = md.Values()[i]
		}
	}
	atoi := func(key string) (int, error) {
		v, err := strconv.Atoi(schemaMeta(rec, key))
		if err != nil {
			return 0, fmt.Errorf("model metadata %s: %q is not an integer", key, schemaMeta(rec, key))
		}
		return v, nil
	}
	if m.Method == MethodKNN {
		t, ok := byName[knnTensor]
		if !ok || len(t.Shape) != 2 || len(t.Values) != t.Shape[0]*t.Shape[1] {
			return nil, fmt.Errorf("knn model has no 2-d tensor %s", knnTensor)
		}
		k, err := atoi(modelNeighbourKey)
		if err != nil {
			return nil, err
		}
		m.KNN = knn.Model{K: k, N: t.Shape[0], D: t.Shape[1], Train: slices.Clone(t.Values)}
		return m, nil
	}
	m.Head = schemaMeta(rec, modelHeadKey)
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
