package backbone

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
)

// maxHeaderBytes bounds the safetensors JSON header (the format's own limit is 100 MB); a
// larger length means the file is not a safetensors file.
const maxHeaderBytes = 100 << 20

// safetensorsEntry is one tensor's record in a safetensors header.
type safetensorsEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// ReadSafetensors reads every tensor of a safetensors file: an 8-byte little-endian header
// length n, n bytes of JSON {name: {dtype, shape, data_offsets}} (plus an optional
// "__metadata__" entry, ignored), then the raw little-endian data, offsets relative to its
// start. Only F32 tensors are accepted; the error names the file, the tensor and its dtype
// otherwise. Tensors named *num_batches_tracked (torchvision's int64 batch norm counters)
// are skipped. Tensors are returned sorted by name.
func ReadSafetensors(path string) ([]Tensor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backbone: weights file: %w", err)
	}
	ts, err := ParseSafetensors(data)
	if err != nil {
		return nil, fmt.Errorf("backbone: weights file %s: %w", path, err)
	}
	return ts, nil
}

// ParseSafetensors decodes safetensors bytes (see ReadSafetensors).
func ParseSafetensors(data []byte) ([]Tensor, error) {
	if len(data) < 8 {
		return nil, fmt.Errorf("not a safetensors file: %d bytes, need at least 8 for the header length", len(data))
	}
	n := binary.LittleEndian.Uint64(data[:8])
	if n > maxHeaderBytes || n > uint64(len(data)-8) {
		return nil, fmt.Errorf("not a safetensors file: header length %d exceeds the file (%d bytes)", n, len(data))
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &header); err != nil {
		return nil, fmt.Errorf("not a safetensors file: header is not JSON: %v", err)
	}
	body := data[8+n:]
	names := make([]string, 0, len(header))
	for name := range header {
		// torchvision's batch norm step counters (int64) carry no weights; skipping them
		// lets a state dict be saved as it is.
		if name != "__metadata__" && !strings.HasSuffix(name, "num_batches_tracked") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	out := make([]Tensor, 0, len(names))
	for _, name := range names {
		var e safetensorsEntry
		if err := json.Unmarshal(header[name], &e); err != nil {
			return nil, fmt.Errorf("tensor %q: bad header entry: %v", name, err)
		}
		if e.DType != "F32" {
			return nil, fmt.Errorf("tensor %q has dtype %s; only F32 is supported (save the state dict with .float())", name, e.DType)
		}
		count := 1
		for _, d := range e.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %q: negative dimension in shape %v", name, e.Shape)
			}
			count *= d
		}
		lo, hi := e.DataOffsets[0], e.DataOffsets[1]
		if lo < 0 || hi < lo || hi > int64(len(body)) {
			return nil, fmt.Errorf("tensor %q: data offsets [%d, %d] outside the %d data bytes", name, lo, hi, len(body))
		}
		if hi-lo != int64(4*count) {
			return nil, fmt.Errorf("tensor %q: shape %v needs %d bytes, data offsets give %d", name, e.Shape, 4*count, hi-lo)
		}
		vals := make([]float32, count)
		raw := body[lo:hi]
		for i := range vals {
			vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
		out = append(out, Tensor{Name: name, Shape: append([]int(nil), e.Shape...), Values: vals})
	}
	return out, nil
}

// WriteSafetensors writes F32 tensors as a safetensors file (header padded with spaces to a
// multiple of 8 bytes, as the reference implementation does). Tests use it to make weight
// files; it also lets a user store a trained convnet for reuse.
func WriteSafetensors(path string, ts []Tensor) error {
	return os.WriteFile(path, EncodeSafetensors(ts), 0o644)
}

// EncodeSafetensors returns the safetensors bytes of ts (see WriteSafetensors).
func EncodeSafetensors(ts []Tensor) []byte {
	header := map[string]any{}
	var off int64
	for _, t := range ts {
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		n := int64(4 * len(t.Values))
		header[t.Name] = safetensorsEntry{DType: "F32", Shape: shape, DataOffsets: [2]int64{off, off + n}}
		off += n
	}
	hj, _ := json.Marshal(header) // maps of plain values always marshal
	for len(hj)%8 != 0 {
		hj = append(hj, ' ')
	}
	out := make([]byte, 8, 8+len(hj)+int(off))
	binary.LittleEndian.PutUint64(out, uint64(len(hj)))
	out = append(out, hj...)
	for _, t := range ts {
		for _, v := range t.Values {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return out
}
