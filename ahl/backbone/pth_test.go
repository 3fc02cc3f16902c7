package backbone

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// The fixtures under testdata/pth were written by testdata/mkpth.py with Debian's
// python3-torch 1.13.1 and python3-torchvision 0.14.1; the script says what each holds.

// pthFixtureDirs lists the resnet18 fixture folders: the committed narrow one, and every
// folder holding a ref.safetensors under $PIPE_PTH_FIXTURES (mkpth.py --full writes
// torchvision's full-width resnet18 there; too big to commit).
func pthFixtureDirs(t *testing.T) []string {
	dirs := []string{filepath.Join("testdata", "pth", "resnet18_w4")}
	if extra := os.Getenv("PIPE_PTH_FIXTURES"); extra != "" {
		found, err := filepath.Glob(filepath.Join(extra, "*", "ref.safetensors"))
		if err != nil || len(found) == 0 {
			t.Fatalf("PIPE_PTH_FIXTURES=%s: no */ref.safetensors (%v)", extra, err)
		}
		for _, f := range found {
			dirs = append(dirs, filepath.Dir(f))
		}
	}
	return dirs
}

// relTol is the agreement asked of pipe's resnet18 with torchvision's: the largest
// difference over the largest magnitude of torch's features (element-wise relative
// differences are meaningless where a post-ReLU value is near zero).
const relTol = 1e-4

// TestPyTorchResNet18 reads torchvision resnet18 state dicts in both torch.save formats (the
// legacy one with channels_last, i.e. non-contiguous, weights) and checks that pipe's
// resnet18 computes torchvision's features (torch's own forward, in ref.safetensors).
func TestPyTorchResNet18(t *testing.T) {
	for _, dir := range pthFixtureDirs(t) {
		ref, err := ReadSafetensors(filepath.Join(dir, "ref.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		rm := tensorMap(ref)
		in, want := rm["input"], rm["features"]
		if len(in.Shape) != 4 || len(want.Shape) != 4 {
			t.Fatalf("%s: input %v, features %v, want 4-d", dir, in.Shape, want.Shape)
		}
		b, s := in.Shape[0], in.Shape[2]
		images := make([]imgs.Image, b)
		for i := range images {
			images[i] = imgs.Image{H: s, W: s, Pix: in.Values[i*3*s*s : (i+1)*3*s*s]}
		}
		var first []Tensor
		for _, file := range []string{"zip.pth", "legacy.pt"} {
			path := filepath.Join(dir, file)
			ts, err := ReadWeights(path)
			if err != nil {
				t.Fatal(err)
			}
			m := tensorMap(ts)
			width := m["conv1.weight"].Shape[0]
			r, err := newResNet18(s, width, ts)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			x, err := prepare(images, s)
			if err != nil {
				t.Fatal(err)
			}
			got := toMaps(r.forward(x))
			if g := []int{got.N, got.C, got.H, got.W}; !equalShape(g, want.Shape) {
				t.Fatalf("%s: features %v, torch's %v", path, g, want.Shape)
			}
			var maxDiff, maxRef float64
			for i, w := range want.Values {
				maxDiff = math.Max(maxDiff, math.Abs(float64(got.Data[i]-w)))
				maxRef = math.Max(maxRef, math.Abs(float64(w)))
			}
			rel := maxDiff / maxRef
			t.Logf("%s (width %d, %d images at %d): max |pipe - torch| %.3g, max |torch| %.4g, relative %.3g", path, width, b, s, maxDiff, maxRef, rel)
			if !(rel <= relTol) {
				t.Errorf("%s: features differ from torchvision's by %.3g relative, want <= %g", path, rel, relTol)
			}
			// Both formats hold the same weights: the reader must return the same tensors.
			if first == nil {
				first = ts
				continue
			}
			if len(ts) != len(first) {
				t.Fatalf("%s: %d tensors, zip.pth has %d", path, len(ts), len(first))
			}
			for i := range ts {
				if ts[i].Name != first[i].Name || !equalShape(ts[i].Shape, first[i].Shape) {
					t.Fatalf("%s: tensor %d is %s %v, zip.pth's %s %v", path, i, ts[i].Name, ts[i].Shape, first[i].Name, first[i].Shape)
				}
				checkValues(t, path+" "+ts[i].Name, ts[i].Values, first[i].Values)
			}
		}
	}
}

// TestPyTorchTensors reads the odd tensors of a state dict (offset and strided views, zero
// strides, float16, bfloat16, float64, 0-d, empty, an int64 num_batches_tracked) from both
// formats (each wrapped in a checkpoint dict) and from a protocol 4 pickle, and compares
// them bit for bit with torch's float32 values.
func TestPyTorchTensors(t *testing.T) {
	dir := filepath.Join("testdata", "pth", "tensors")
	ref, err := ReadSafetensors(filepath.Join(dir, "ref.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"zip.pth", "legacy.pt", "proto4.pth"} {
		ts, err := ReadPyTorch(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != len(ref) {
			names := []string{}
			for _, x := range ts {
				names = append(names, x.Name)
			}
			t.Fatalf("%s: %d tensors %v, want %d (num_batches_tracked skipped)", file, len(ts), names, len(ref))
		}
		for i, want := range ref {
			got := ts[i]
			if got.Name != want.Name || !equalShape(got.Shape, want.Shape) {
				t.Fatalf("%s: tensor %d is %s %v, want %s %v", file, i, got.Name, got.Shape, want.Name, want.Shape)
			}
			for j := range want.Values {
				if math.Float32bits(got.Values[j]) != math.Float32bits(want.Values[j]) {
					t.Errorf("%s: %s[%d] = %g, torch says %g", file, got.Name, j, got.Values[j], want.Values[j])
				}
			}
		}
	}
}

// TestLoadResNet18ReadsPyTorch checks that the backbone loader reads checkpoints: the narrow
// fixture loads as far as its first tensor, whose shape is not torchvision's.
func TestLoadResNet18ReadsPyTorch(t *testing.T) {
	for _, file := range []string{"zip.pth", "legacy.pt"} {
		path := filepath.Join("testdata", "pth", "resnet18_w4", file)
		_, err := LoadResNet18(path, 64)
		want := `tensor "conv1.weight" has shape [4 3 7 7], expected [64 3 7 7]`
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file and containing %q", file, err, want)
		}
	}
}

// TestReadWeightsByContent checks that the format comes from the bytes, not the name.
func TestReadWeightsByContent(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "pth", "tensors", "zip.pth"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	disguised := filepath.Join(dir, "weights.safetensors")
	if err := os.WriteFile(disguised, src, 0o644); err != nil {
		t.Fatal(err)
	}
	if ts, err := ReadWeights(disguised); err != nil || len(ts) != 9 {
		t.Fatalf("a zip checkpoint named .safetensors: %d tensors, %v", len(ts), err)
	}
	st := filepath.Join(dir, "weights.pth")
	if err := WriteSafetensors(st, []Tensor{{Name: "x", Shape: []int{1}, Values: []float32{3}}}); err != nil {
		t.Fatal(err)
	}
	if ts, err := ReadWeights(st); err != nil || len(ts) != 1 || ts[0].Values[0] != 3 {
		t.Fatalf("a safetensors file named .pth: %v, %v", ts, err)
	}
	junk := filepath.Join(dir, "junk.pth")
	if err := os.WriteFile(junk, []byte("hello, world"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadWeights(junk); err == nil || !strings.Contains(err.Error(), junk) || !strings.Contains(err.Error(), "not a weights file") {
		t.Fatalf("junk: error %v, want one naming the file and saying it is not a weights file", err)
	}
}

// TestPyTorchRefused checks that classes beyond a state dict's are refused by name, with
// the file named, and that TorchScript archives and pickled modules are told apart.
func TestPyTorchRefused(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"namespace.pth", "argparse.Namespace, which is not allowed"},
		{"torchscript.pt", "TorchScript archive"},
	} {
		path := filepath.Join("testdata", "pth", "refused", tc.file)
		_, err := ReadWeights(path)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming the file and containing %q", tc.file, err, tc.want)
		}
	}
}

// pk builds pickle opcodes by hand, for inputs torch would not write.
type pk struct{ b []byte }

func (p *pk) op(ops ...byte) *pk { p.b = append(p.b, ops...); return p }
func (p *pk) str(s string) *pk {
	p.b = append(p.b, 'X')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(len(s)))
	p.b = append(p.b, s...)
	return p
}
func (p *pk) int(n int64) *pk {
	if n < 0 || n > math.MaxInt32 {
		p.b = append(p.b, 0x8a, 8) // LONG1 of 8 bytes
		p.b = binary.LittleEndian.AppendUint64(p.b, uint64(n))
		return p
	}
	p.b = append(p.b, 'J')
	p.b = binary.LittleEndian.AppendUint32(p.b, uint32(n))
	return p
}
func (p *pk) global(mod, name string) *pk { return p.op('c').op([]byte(mod + "\n" + name + "\n")...) }
func (p *pk) ints(v ...int64) *pk {
	p.op('(')
	for _, x := range v {
		p.int(x)
	}
	return p.op('t')
}

// tensor pushes _rebuild_tensor_v2 of a view of the legacy storage key.
func (p *pk) tensor(key, storage string, numel, offset int64, size, stride []int64) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2").op('(', '(').str("storage").global("torch", storage).str(key).str("cpu").int(numel).op('N', 't', 'Q')
	return p.int(offset).ints(size...).ints(stride...).op(0x89, '}', 't', 'R')
}

// viewTensor pushes _rebuild_tensor_v2 of a legacy storage view: elements [off, off+n) of
// root storage key, as torch before 1.0 wrote them.
func (p *pk) viewTensor(key string, numel int64, view string, off, n int64, size, stride []int64) *pk {
	p.global("torch._utils", "_rebuild_tensor_v2").op('(', '(').str("storage").global("torch", "FloatStorage").str(key).str("cpu").int(numel)
	p.op('(').str(view).int(off).int(n).op('t', 't', 'Q')
	return p.int(0).ints(size...).ints(stride...).op(0x89, '}', 't', 'R')
}

// legacyFile assembles a legacy checkpoint: the header pickles, obj (a pickle body without
// PROTO or STOP), the storage keys and each storage as (count, float32 values).
func legacyFile(obj []byte, keys []string, storages ...[]float32) []byte {
	var out []byte
	out = append(out, 0x80, 2, 0x8a, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.') // magic
	out = append(out, 0x80, 2, 'M', 0xe9, 0x03, '.')                                                      // 1001
	out = append(out, 0x80, 2, '}', '.')                                                                  // sys_info
	out = append(append(append(out, 0x80, 2), obj...), '.')
	kp := (&pk{}).op(0x80, 2, '(')
	for _, k := range keys {
		kp.str(k)
	}
	out = append(out, kp.op('l', '.').b...)
	for _, s := range storages {
		out = binary.LittleEndian.AppendUint64(out, uint64(len(s)))
		for _, v := range s {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return out
}

// TestPyTorchHandMade runs hand-built legacy checkpoints: views read right (independently
// of torch), and every malformed or hostile input gives an error that names what is wrong.
func TestPyTorchHandMade(t *testing.T) {
	st := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	one := func(value *pk) []byte { // {"w": value}, storage "s" of st
		return legacyFile((&pk{}).op('}').str("w").op(value.b...).op('s').b, []string{"s"}, st)
	}
	// A transposed view from offset 1: [[1, 4], [2, 5], [3, 6]] with strides (1, 3).
	ts, err := ParsePyTorch(one((&pk{}).tensor("s", "FloatStorage", 8, 1, []int64{3, 2}, []int64{1, 3})))
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 1 || ts[0].Name != "w" || !equalShape(ts[0].Shape, []int{3, 2}) {
		t.Fatalf("view: %+v", ts)
	}
	checkValues(t, "transposed view", ts[0].Values, []float32{1, 4, 2, 5, 3, 6})
	// A legacy storage view of elements 2..5, read from its start with stride 2: [2, 4].
	ts, err = ParsePyTorch(one((&pk{}).viewTensor("s", 8, "v", 2, 4, []int64{2}, []int64{2})))
	if err != nil {
		t.Fatal(err)
	}
	checkValues(t, "storage view", ts[0].Values, []float32{2, 4})

	// memo 0 = None, then 60 times memo 0 = (memo 0, memo 0); then memo 0 as a persistent id.
	shared := append([]byte{'N', 'q', 0, '0'}, bytes.Repeat([]byte{'h', 0, 'h', 0, 0x86, 'q', 0, '0'}, 60)...)
	shared = append(shared, 'h', 0, 'Q')
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"view past the storage", one((&pk{}).tensor("s", "FloatStorage", 8, 3, []int64{2, 3}, []int64{3, 1})),
			`tensor "w": view (offset 3, size [2 3], stride [3 1]) reads past its storage of 8 elements`},
		{"storage view past its root", one((&pk{}).viewTensor("s", 8, "v", 6, 4, []int64{2}, []int64{1})),
			`storage "s": view metadata ("v", 6, 4) outside its 8 elements`},
		{"tensor past its storage view", one((&pk{}).viewTensor("s", 8, "v", 2, 4, []int64{3}, []int64{2})),
			`tensor "w": view (offset 0, size [3], stride [2]) reads past its storage of 4 elements`},
		{"zero strides without bound", one((&pk{}).tensor("s", "FloatStorage", 8, 0, []int64{1 << 40, 1 << 20}, []int64{0, 0})),
			`tensor "w": size [1099511627776 1048576]: more elements than the file can describe`},
		{"int tensor", legacyFile((&pk{}).op('}').str("w").tensor("s", "IntStorage", 2, 0, []int64{2}, []int64{1}).op('s').b, []string{"s"}, []float32{1, 2}),
			`tensor "w" has dtype int32`},
		{"os.system", one((&pk{}).global("posix", "system").op('(').str("echo pwned").op('t', 'R')),
			"posix.system, which is not allowed"},
		{"builtins.eval by STACK_GLOBAL", one((&pk{}).str("builtins").str("eval").op(0x93)),
			"builtins.eval, which is not allowed"},
		{"a list, not a state dict", legacyFile((&pk{}).op(']').b, nil), "holds a value of type list, not a state dict"},
		{"a mixed dict", legacyFile((&pk{}).op('}').str("epoch").int(3).op('s').b, nil),
			`entry "epoch" has type int: it is neither a state dict`},
		{"a pickled module", one((&pk{}).op('(').str("module").str("Net").op('t', 'Q')), "pickles a whole nn.Module"},
		{"stored count differs", legacyFile((&pk{}).op('}').str("w").tensor("s", "FloatStorage", 9, 0, []int64{2}, []int64{1}).op('s').b, []string{"s"}, st),
			`storage "s" holds 8 elements, its tensors say 9`},
		{"storage never stored", legacyFile((&pk{}).op('}').str("w").tensor("s", "FloatStorage", 8, 0, []int64{2}, []int64{1}).op('s').b, nil),
			`storage "s" is used but not stored`},
		{"storage truncated", one((&pk{}).tensor("s", "FloatStorage", 8, 0, []int64{2}, []int64{1}))[:100],
			"input ends"},
		{"unknown opcode", legacyFile([]byte{0xff}, nil), "opcode 0xff"},
		{"huge string length", legacyFile([]byte{0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, nil), "bytes wanted"},
		{"not a checkpoint", []byte{0x80, 2, 'K', 1, '.'}, "not the magic number"},
		// A value shared through the memo 2^60 times, printed in an error: the text is cut.
		{"exponential sharing", legacyFile(shared, nil), "persistent id of kind ((((("},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePyTorch(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if len(err.Error()) > 1000 {
				t.Fatalf("error of %d bytes", len(err.Error()))
			}
		})
	}
	// A storage cut short by 4 bytes: the error says which storage and by how much.
	full := one((&pk{}).tensor("s", "FloatStorage", 8, 0, []int64{2}, []int64{1}))
	if _, err := ParsePyTorch(full[:len(full)-4]); err == nil || !strings.Contains(err.Error(), `storage "s": 8 elements of float32, but only 28 bytes are left`) {
		t.Fatalf("short storage: error %v", err)
	}
}

func TestHalfToFloat32(t *testing.T) {
	for _, tc := range []struct {
		h    uint16
		want float64
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x3555, 0.333251953125},
		{0x0001, math.Ldexp(1, -24)}, {0x03ff, 1023 * math.Ldexp(1, -24)}, {0x0400, math.Ldexp(1, -14)},
		{0x8001, -math.Ldexp(1, -24)}, {0x7c00, math.Inf(1)}, {0xfc00, math.Inf(-1)}, {0x0000, 0},
	} {
		if got := halfToFloat32(tc.h); float64(got) != tc.want {
			t.Errorf("half 0x%04x = %g, want %g", tc.h, got, tc.want)
		}
	}
	if got := halfToFloat32(0x8000); got != 0 || !math.Signbit(float64(got)) {
		t.Errorf("half 0x8000 = %g, want -0", got)
	}
	if got := halfToFloat32(0x7e00); !math.IsNaN(float64(got)) {
		t.Errorf("half 0x7e00 = %g, want NaN", got)
	}
}

// FuzzParsePyTorch feeds arbitrary bytes to the reader: it must return tensors whose values
// match their shapes, or an error, and never panic or allocate beyond the input's size.
func FuzzParsePyTorch(f *testing.F) {
	for _, p := range []string{"tensors/zip.pth", "tensors/legacy.pt", "tensors/proto4.pth", "refused/namespace.pth"} {
		data, err := os.ReadFile(filepath.Join("testdata", "pth", p))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	st := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	f.Add(legacyFile((&pk{}).op('}').str("w").tensor("s", "HalfStorage", 8, 1, []int64{3, 2}, []int64{1, 3}).op('s').b, []string{"s"}, st))
	f.Add(legacyFile((&pk{}).op('}').str("w").viewTensor("s", 8, "v", 2, 4, []int64{2}, []int64{2}).op('s').b, []string{"s"}, st))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<16 {
			return
		}
		ts, err := ParsePyTorch(data)
		if err != nil {
			return
		}
		total := 0
		for _, x := range ts {
			n := 1
			for _, d := range x.Shape {
				n *= d
			}
			if n != len(x.Values) {
				t.Fatalf("tensor %q: shape %v with %d values", x.Name, x.Shape, len(x.Values))
			}
			total += n
		}
		if total > len(data)+1<<20 {
			t.Fatalf("%d elements from %d bytes", total, len(data))
		}
	})
}
