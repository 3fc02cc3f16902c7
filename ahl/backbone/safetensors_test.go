package backbone

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	ts := []Tensor{
		{Name: "b", Shape: []int{2, 3}, Values: []float32{1, 2, 3, 4, 5, -6.5}},
		{Name: "a", Shape: []int{1}, Values: []float32{0.25}},
		{Name: "scalar", Shape: []int{}, Values: []float32{7}},
	}
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := WriteSafetensors(path, ts); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Tensor{}
	for _, x := range ts {
		want[x.Name] = x
	}
	if len(got) != len(ts) {
		t.Fatalf("read %d tensors, want %d", len(got), len(ts))
	}
	for i, g := range got {
		if i > 0 && got[i-1].Name >= g.Name {
			t.Errorf("tensors not sorted by name: %q before %q", got[i-1].Name, g.Name)
		}
		w := want[g.Name]
		if !equalShape(g.Shape, w.Shape) {
			t.Errorf("%s: shape %v, want %v", g.Name, g.Shape, w.Shape)
		}
		checkValues(t, g.Name, g.Values, w.Values)
	}
}

// rawSafetensors builds a file from a literal JSON header and data bytes.
func rawSafetensors(header string, data []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(out, header...), data...)
}

func TestSafetensorsErrors(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"short", "need at least 8", []byte{1, 2, 3}},
		{"header too long", "header length 1000 exceeds", binary.LittleEndian.AppendUint64(nil, 1000)},
		{"not json", "header is not JSON", rawSafetensors("{nope", nil)},
		{"wrong dtype", `tensor "x" has dtype F16; only F32`, rawSafetensors(`{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4))},
		{"offsets past the data", "outside the 4 data bytes", rawSafetensors(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4))},
		{"shape and offsets disagree", "shape [3] needs 12 bytes, data offsets give 8", rawSafetensors(`{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			_, err := ParseSafetensors(data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// A metadata entry is skipped, not read as a tensor.
	ts, err := ParseSafetensors(rawSafetensors(`{"__metadata__":{"format":"pt"},"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	if err != nil || len(ts) != 1 || ts[0].Name != "x" {
		t.Fatalf("with __metadata__: %v, %v", ts, err)
	}
}

func TestReadSafetensorsNamesTheFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "absent.safetensors")
	if _, err := ReadSafetensors(missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("missing file: error %v, want one naming %s", err, missing)
	}
	bad := filepath.Join(dir, "bad.safetensors")
	if err := os.WriteFile(bad, rawSafetensors(`{"x":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}`, make([]byte, 2)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := ReadSafetensors(bad)
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "BF16") {
		t.Fatalf("bf16 file: error %v, want one naming the file and the dtype", err)
	}
}
