package backbone

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"path"
	"sort"
	"strings"
)

// This file reads PyTorch checkpoints (torch.save of a state dict) without Python: the zip
// format of torch >= 1.6 (<name>/data.pkl, a pickle whose tensors refer to storages stored as
// <name>/data/<key>) and the legacy format (the _use_new_zipfile_serialization=False one:
// five pickles and the raw storages in one stream). The pickle is read by the restricted
// unpickler of pickle.go with the torch and collections names a state dict needs; any other
// class is refused by name, so a checkpoint cannot run code.

// ReadWeights reads the tensors of a weights file, told apart by content (not by extension):
// a PyTorch checkpoint (zip or legacy, see ParsePyTorch) or a safetensors file (see
// ParseSafetensors). Errors name the file.
func ReadWeights(path string) ([]Tensor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backbone: weights file: %w", err)
	}
	var ts []Tensor
	switch weightsFormat(data) {
	case "pytorch":
		ts, err = ParsePyTorch(data)
	case "safetensors":
		ts, err = ParseSafetensors(data)
	default:
		n := min(len(data), 8)
		err = fmt.Errorf("not a weights file: it starts % x, which is neither safetensors (an 8-byte header length, then JSON), "+
			"a PyTorch zip checkpoint (PK) nor a legacy PyTorch checkpoint (a pickle, 0x80)", data[:n])
	}
	if err != nil {
		return nil, fmt.Errorf("backbone: weights file %s: %w", path, err)
	}
	return ts, nil
}

// weightsFormat tells the formats ReadWeights reads apart by their first bytes: "pytorch"
// (a zip archive, or a pickle as the legacy format starts with), "safetensors" (JSON after
// the 8-byte header length) or "" (neither).
func weightsFormat(data []byte) string {
	switch {
	case bytes.HasPrefix(data, []byte("PK\x03\x04")) || bytes.HasPrefix(data, []byte("PK\x05\x06")):
		return "pytorch"
	case len(data) > 8 && data[8] == '{':
		return "safetensors"
	case len(data) > 1 && data[0] == 0x80: // pickle PROTO
		return "pytorch"
	}
	return ""
}

// ReadPyTorch reads a PyTorch checkpoint file (see ParsePyTorch); errors name the file.
func ReadPyTorch(path string) ([]Tensor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("backbone: weights file: %w", err)
	}
	ts, err := ParsePyTorch(data)
	if err != nil {
		return nil, fmt.Errorf("backbone: weights file %s: %w", path, err)
	}
	return ts, nil
}

// ParsePyTorch decodes the bytes of a torch.save checkpoint, zip or legacy format, and
// returns its state dict's tensors as float32, sorted by name. The checkpoint holds the state
// dict itself (a dict or OrderedDict of tensors, as model.state_dict() gives) or a dict that
// wraps it under "state_dict", "model" or "model_state_dict". float16, bfloat16 and float64
// tensors are converted to float32; views (a storage offset, non-contiguous or zero strides)
// are copied out in row-major order. Integer tensors named *num_batches_tracked (batch norm
// counters) are skipped; other integer tensors are an error naming them.
func ParsePyTorch(data []byte) ([]Tensor, error) {
	c := &checkpoint{budget: int64(len(data)) + 1<<20}
	var top any
	var err error
	if bytes.HasPrefix(data, []byte("PK")) {
		top, err = c.readZip(data)
	} else {
		top, err = c.readLegacy(data)
	}
	if err != nil {
		return nil, err
	}
	sd, err := stateDict(top)
	if err != nil {
		return nil, err
	}
	out := make([]Tensor, 0, len(sd.keys))
	for i, k := range sd.keys {
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("state dict key %s has type %s, want a string", pyRepr(k), pyType(k))
		}
		t, ok := sd.vals[i].(*ptTensor)
		if !ok {
			return nil, fmt.Errorf("state dict entry %q has type %s, want a tensor", name, pyType(sd.vals[i]))
		}
		if !t.st.dt.float {
			if strings.HasSuffix(name, "num_batches_tracked") {
				continue
			}
			return nil, fmt.Errorf("tensor %q has dtype %s; only floating point tensors (float32, float16, bfloat16, float64) are read", name, t.st.dt.name)
		}
		x, err := c.materialize(t)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		x.Name = name
		out = append(out, x)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// wrapperKeys are the keys under which training scripts commonly store the state dict
// beside other checkpoint entries (epoch, optimizer state, ...).
var wrapperKeys = []string{"state_dict", "model", "model_state_dict"}

// stateDict finds the state dict in a checkpoint's top value.
func stateDict(top any) (*pyDict, error) {
	d, ok := top.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("the checkpoint holds a value of type %s, not a state dict (save model.state_dict())", pyType(top))
	}
	allTensors := true
	for _, v := range d.vals {
		if _, ok := v.(*ptTensor); !ok {
			allTensors = false
			break
		}
	}
	if allTensors {
		return d, nil
	}
	for _, k := range wrapperKeys {
		if v, ok := d.get(k); ok {
			if inner, ok := v.(*pyDict); ok {
				return inner, nil
			}
		}
	}
	for i, v := range d.vals {
		if _, ok := v.(*ptTensor); !ok {
			return nil, fmt.Errorf("the checkpoint's entry %v has type %s: it is neither a state dict (all tensors) nor a dict holding one under %q",
				pyRepr(d.keys[i]), pyType(v), wrapperKeys)
		}
	}
	return d, nil // unreachable: some value is not a tensor
}

// dtype is a storage's element type.
type dtype struct {
	name  string
	size  int  // bytes per element
	float bool // converted to float32; integer tensors are not read
}

// storageTypes maps torch's storage classes (as a checkpoint names them: torch.FloatStorage)
// to their element types.
var storageTypes = map[string]dtype{
	"FloatStorage":    {"float32", 4, true},
	"HalfStorage":     {"float16", 2, true},
	"BFloat16Storage": {"bfloat16", 2, true},
	"DoubleStorage":   {"float64", 8, true},
	"LongStorage":     {"int64", 8, false},
	"IntStorage":      {"int32", 4, false},
	"ShortStorage":    {"int16", 2, false},
	"CharStorage":     {"int8", 1, false},
	"ByteStorage":     {"uint8", 1, false},
	"BoolStorage":     {"bool", 1, false},
}

// ptGlobal is an allowed class or function, "module.name".
type ptGlobal string

// The allowed functions and classes besides the storage types.
const (
	globalOrderedDict     ptGlobal = "collections.OrderedDict"
	globalRebuildTensorV2 ptGlobal = "torch._utils._rebuild_tensor_v2"
	globalRebuildTensor   ptGlobal = "torch._utils._rebuild_tensor"
	globalRebuildParam    ptGlobal = "torch._utils._rebuild_parameter"
)

// ptStorageType is a torch storage class named in a persistent id.
type ptStorageType struct {
	name string
	dt   dtype
}

// ptStorage is one storage: numel elements of dt. A legacy view refers to a parent's
// elements from offset on.
type ptStorage struct {
	key    string
	dt     dtype
	numel  int64
	data   []byte // numel * dt.size bytes, once read
	parent *ptStorage
	offset int64
}

// bytes returns the storage's bytes, resolving a view.
func (s *ptStorage) bytes() ([]byte, error) {
	if s.parent == nil {
		if int64(len(s.data)) != s.numel*int64(s.dt.size) {
			return nil, fmt.Errorf("storage %q has %d bytes, want %d elements of %s", s.key, len(s.data), s.numel, s.dt.name)
		}
		return s.data, nil
	}
	p, err := s.parent.bytes()
	if err != nil {
		return nil, err
	}
	lo := s.offset * int64(s.dt.size)
	hi := lo + s.numel*int64(s.dt.size)
	if s.offset < 0 || hi > int64(len(p)) {
		return nil, fmt.Errorf("storage view %q [%d, %d) outside storage %q of %d elements", s.key, s.offset, s.offset+s.numel, s.parent.key, s.parent.numel)
	}
	return p[lo:hi], nil
}

// ptTensor is a tensor as _rebuild_tensor_v2 describes it: a view of a storage.
type ptTensor struct {
	st     *ptStorage
	offset int64
	size   []int64
	stride []int64
}

// checkpoint holds the state of one ParsePyTorch call.
type checkpoint struct {
	storages map[string]*ptStorage
	// budget bounds the elements all tensors may materialise (the input's length plus a
	// margin): a real state dict holds at most one element per byte it stores, and a forged
	// one cannot make zero-stride views allocate without bound.
	budget int64
}

// find allows the few names a state dict's pickle uses.
func (c *checkpoint) find(module, name string) (any, error) {
	g := ptGlobal(module + "." + name)
	switch g {
	case globalOrderedDict, globalRebuildTensorV2, globalRebuildTensor, globalRebuildParam:
		return g, nil
	}
	if module == "torch" {
		if dt, ok := storageTypes[name]; ok {
			return ptStorageType{name: name, dt: dt}, nil
		}
	}
	return nil, fmt.Errorf("the pickle names %s.%s, which is not allowed: a state dict needs only torch tensors and storages "+
		"and collections.OrderedDict, and pipe runs no other pickled code (save model.state_dict(), with plain values beside it)", module, name)
}

// call applies an allowed function.
func (c *checkpoint) call(fn any, args pyTuple) (any, error) {
	g, ok := fn.(ptGlobal)
	if !ok {
		return nil, fmt.Errorf("calling a value of type %s", pyType(fn))
	}
	switch g {
	case globalOrderedDict:
		if len(args) != 0 {
			return nil, fmt.Errorf("%s with %d arguments, want none", g, len(args))
		}
		return newPyDict(), nil
	case globalRebuildTensorV2, globalRebuildTensor:
		// _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
		// backward_hooks[, metadata]); _rebuild_tensor(storage, storage_offset, size, stride).
		if n := len(args); (g == globalRebuildTensor && n != 4) || (g == globalRebuildTensorV2 && n != 6 && n != 7) {
			return nil, fmt.Errorf("%s with %d arguments", g, n)
		}
		st, ok := args[0].(*ptStorage)
		if !ok {
			return nil, fmt.Errorf("%s of type %s, want a storage", g, pyType(args[0]))
		}
		off, ok := args[1].(int64)
		if !ok {
			return nil, fmt.Errorf("%s: storage offset has type %s, want an int", g, pyType(args[1]))
		}
		size, err1 := intTuple(args[2])
		stride, err2 := intTuple(args[3])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s: size %s, stride %s: want tuples of ints", g, pyRepr(args[2]), pyRepr(args[3]))
		}
		return &ptTensor{st: st, offset: off, size: size, stride: stride}, nil
	case globalRebuildParam:
		// _rebuild_parameter(data, requires_grad, backward_hooks): the parameter's tensor.
		if len(args) != 3 {
			return nil, fmt.Errorf("%s with %d arguments, want 3", g, len(args))
		}
		t, ok := args[0].(*ptTensor)
		if !ok {
			return nil, fmt.Errorf("%s of type %s, want a tensor", g, pyType(args[0]))
		}
		return t, nil
	}
	return nil, fmt.Errorf("calling %s", g)
}

// build accepts BUILD on a dict (an OrderedDict's attributes, such as a state dict's
// _metadata, which holds no weights) and refuses it elsewhere.
func (c *checkpoint) build(obj, state any) error {
	if _, ok := obj.(*pyDict); ok {
		return nil
	}
	return fmt.Errorf("BUILD on a value of type %s", pyType(obj))
}

func intTuple(v any) ([]int64, error) {
	t, ok := v.(pyTuple)
	if !ok {
		return nil, fmt.Errorf("a %s, want a tuple", pyType(v))
	}
	out := make([]int64, len(t))
	for i, x := range t {
		n, ok := x.(int64)
		if !ok {
			return nil, fmt.Errorf("element %d has type %s", i, pyType(x))
		}
		out[i] = n
	}
	return out, nil
}

// storageID parses the common head of a persistent id, ('storage', storage type, key,
// location, numel, ...), and returns the storage for key, made on first sight; n is the
// tuple's length the format requires.
func (c *checkpoint) storageID(pid any, n int) (*ptStorage, pyTuple, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) == 0 {
		return nil, nil, fmt.Errorf("persistent id %s, want a tuple ('storage', ...)", pyRepr(pid))
	}
	if kind, _ := t[0].(string); kind != "storage" {
		if kind == "module" {
			return nil, nil, fmt.Errorf("the checkpoint pickles a whole nn.Module; save model.state_dict() instead")
		}
		return nil, nil, fmt.Errorf("persistent id of kind %s, want 'storage'", pyRepr(t[0]))
	}
	if len(t) != n {
		return nil, nil, fmt.Errorf("storage persistent id with %d fields, want %d", len(t), n)
	}
	typ, ok1 := t[1].(ptStorageType)
	key, ok2 := t[2].(string)
	numel, ok3 := t[4].(int64)
	if !ok1 || !ok2 || !ok3 || numel < 0 {
		return nil, nil, fmt.Errorf("storage persistent id %s, want (storage type, key, location, numel >= 0)", pyRepr(t[1:5]))
	}
	if c.storages == nil {
		c.storages = map[string]*ptStorage{}
	}
	if s, ok := c.storages[key]; ok {
		if s.dt != typ.dt || s.numel != numel {
			return nil, nil, fmt.Errorf("storage %q seen as %d %s and as %d %s", key, s.numel, s.dt.name, numel, typ.dt.name)
		}
		return s, t, nil
	}
	s := &ptStorage{key: key, dt: typ.dt, numel: numel}
	c.storages[key] = s
	return s, t, nil
}

// readZip reads the zip format: <name>/data.pkl, the storages <name>/data/<key>, and
// <name>/byteorder when torch wrote it.
func (c *checkpoint) readZip(data []byte) (any, error) {
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, fmt.Errorf("PyTorch zip checkpoint: %w", err)
	}
	records := map[string]*zip.File{}
	var pkl []string
	for _, f := range zr.File {
		records[f.Name] = f
		dir, base := path.Split(f.Name)
		if base == "data.pkl" && strings.Count(dir, "/") == 1 {
			pkl = append(pkl, f.Name)
		}
		if base == "constants.pkl" {
			return nil, fmt.Errorf("a TorchScript archive (it has %s), not a torch.save checkpoint: save the model's state_dict() with torch.save", f.Name)
		}
	}
	if len(pkl) != 1 {
		return nil, fmt.Errorf("PyTorch zip checkpoint: %d <name>/data.pkl records %v, want exactly 1", len(pkl), pkl)
	}
	prefix := strings.TrimSuffix(pkl[0], "data.pkl")
	if f, ok := records[prefix+"byteorder"]; ok {
		b, err := readRecord(f, int64(len(data)))
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("record %s says %q; only little-endian checkpoints are read", f.Name, b)
		}
	}
	p, err := readRecord(records[pkl[0]], int64(len(data)))
	if err != nil {
		return nil, err
	}
	u := &unpickler{data: p, find: c.find, call: c.call, build: c.build}
	u.persistentLoad = func(pid any) (any, error) {
		// ('storage', storage type, key, location, numel); the data is <name>/data/<key>.
		s, _, err := c.storageID(pid, 5)
		if err != nil || s.data != nil {
			return s, err
		}
		name := prefix + "data/" + s.key
		f, ok := records[name]
		if !ok {
			return nil, fmt.Errorf("storage %q: record %s missing", s.key, name)
		}
		if s.numel > int64(len(data))/int64(s.dt.size) {
			return nil, fmt.Errorf("storage %q: %d elements of %s cannot fit in a %d-byte file", s.key, s.numel, s.dt.name, len(data))
		}
		b, err := readRecord(f, int64(len(data)))
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != s.numel*int64(s.dt.size) {
			return nil, fmt.Errorf("storage %q: record %s has %d bytes, want %d elements of %s", s.key, name, len(b), s.numel, s.dt.name)
		}
		s.data = b
		return s, nil
	}
	top, err := u.load()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkl[0], err)
	}
	return top, nil
}

// readRecord returns a zip record's bytes. torch.save stores records uncompressed; a
// compressed one is refused, so that what is read never exceeds the file (limit).
func readRecord(f *zip.File, limit int64) ([]byte, error) {
	if f.Method != zip.Store {
		return nil, fmt.Errorf("record %s is compressed (method %d); torch.save stores records uncompressed", f.Name, f.Method)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, err)
	}
	defer func() { _ = rc.Close() }() // a record read only: nothing to flush
	b, err := io.ReadAll(io.LimitReader(rc, limit))
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", f.Name, err)
	}
	return b, nil
}

// legacyMagic is the legacy format's magic number, 0x1950a86a20f9469cfc6c, and
// legacyProtocol its protocol version.
var legacyMagic, _ = new(big.Int).SetString("1950a86a20f9469cfc6c", 16)

const legacyProtocol = 1001

// readLegacy reads the legacy format: pickles of the magic number, the protocol version,
// sys_info and the object (whose persistent ids name storages: ('storage', storage type,
// root key, location, numel, view metadata)), then a pickle of the storage keys, then for
// each key in that order its element count as a little-endian int64 and its raw bytes.
func (c *checkpoint) readLegacy(data []byte) (any, error) {
	plain := func(u *unpickler, what string) (any, error) {
		v, err := u.load()
		if err != nil {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: %s: %w", what, err)
		}
		return v, nil
	}
	u := &unpickler{data: data} // the header pickles hold plain values only
	magic, err := plain(u, "magic number")
	if err != nil {
		return nil, err
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, fmt.Errorf("not a PyTorch checkpoint: the first pickle holds %s, not the magic number 0x%x", pyRepr(magic), legacyMagic)
	}
	proto, err := plain(u, "protocol version")
	if err != nil {
		return nil, err
	}
	if n, ok := proto.(int64); !ok || n != legacyProtocol {
		return nil, fmt.Errorf("legacy PyTorch checkpoint: protocol version %s, want %d", pyRepr(proto), legacyProtocol)
	}
	info, err := plain(u, "sys_info")
	if err != nil {
		return nil, err
	}
	if d, ok := info.(*pyDict); ok {
		if le, ok := d.get("little_endian"); ok && le != true {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: written on a big-endian machine; only little-endian checkpoints are read")
		}
	}

	u.find, u.call, u.build = c.find, c.call, c.build
	views := map[string]*ptStorage{}
	u.persistentLoad = func(pid any) (any, error) {
		s, t, err := c.storageID(pid, 6)
		if err != nil || t[5] == nil {
			return s, err
		}
		// View metadata (view key, offset, view numel): a slice of the root storage, from
		// torch versions before 1.0.
		vm, ok := t[5].(pyTuple)
		if !ok || len(vm) != 3 {
			return nil, fmt.Errorf("storage %q: view metadata %s, want (key, offset, numel)", s.key, pyRepr(t[5]))
		}
		key, ok1 := vm[0].(string)
		off, ok2 := vm[1].(int64)
		n, ok3 := vm[2].(int64)
		if !ok1 || !ok2 || !ok3 || off < 0 || n < 0 || off > s.numel || n > s.numel-off {
			return nil, fmt.Errorf("storage %q: view metadata %s outside its %d elements", s.key, pyRepr(t[5]), s.numel)
		}
		if v, ok := views[key]; ok {
			return v, nil
		}
		v := &ptStorage{key: key, dt: s.dt, numel: n, parent: s, offset: off}
		views[key] = v
		return v, nil
	}
	top, err := plain(u, "object")
	if err != nil {
		return nil, err
	}
	u.find, u.call, u.build, u.persistentLoad = nil, nil, nil, nil
	keysV, err := plain(u, "storage keys")
	if err != nil {
		return nil, err
	}
	keys, ok := keysV.(*pyList)
	if !ok {
		return nil, fmt.Errorf("legacy PyTorch checkpoint: storage keys have type %s, want a list", pyType(keysV))
	}
	pos := u.pos
	for _, kv := range keys.items {
		key, ok := kv.(string)
		if !ok {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: storage key %s has type %s, want a string", pyRepr(kv), pyType(kv))
		}
		s, ok := c.storages[key]
		if !ok {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: storage %q is stored but no tensor uses it", key)
		}
		if s.data != nil {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: storage %q is stored twice", key)
		}
		if len(data)-pos < 8 {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: storage %q: file ends at byte %d before its element count", key, len(data))
		}
		numel := int64(binary.LittleEndian.Uint64(data[pos:]))
		pos += 8
		if numel != s.numel {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: storage %q holds %d elements, its tensors say %d", key, numel, s.numel)
		}
		if s.numel > int64(len(data)-pos)/int64(s.dt.size) {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: storage %q: %d elements of %s, but only %d bytes are left", key, s.numel, s.dt.name, len(data)-pos)
		}
		n := int(s.numel) * s.dt.size
		s.data = data[pos : pos+n : pos+n]
		pos += n
	}
	for key, s := range c.storages {
		if s.data == nil {
			return nil, fmt.Errorf("legacy PyTorch checkpoint: storage %q is used but not stored", key)
		}
	}
	return top, nil
}

// maxDims bounds a tensor's dimensions (torch itself allows 64).
const maxDims = 64

// materialize copies a tensor's elements out of its storage in row-major order, as float32.
func (c *checkpoint) materialize(t *ptTensor) (Tensor, error) {
	if len(t.size) > maxDims || len(t.size) != len(t.stride) {
		return Tensor{}, fmt.Errorf("%d sizes and %d strides, want as many of each, at most %d", len(t.size), len(t.stride), maxDims)
	}
	if t.offset < 0 {
		return Tensor{}, fmt.Errorf("storage offset %d", t.offset)
	}
	raw, err := t.st.bytes()
	if err != nil {
		return Tensor{}, err
	}
	numel := int64(1)
	var span int64 // the highest storage element the view reads, less its offset
	past := t.offset > t.st.numel
	for i, d := range t.size {
		if d < 0 || t.stride[i] < 0 {
			return Tensor{}, fmt.Errorf("size %v, stride %v: negative entry", t.size, t.stride)
		}
		if d == 0 {
			numel = 0
			continue
		}
		if numel > c.budget/d {
			return Tensor{}, fmt.Errorf("size %v: more elements than the file can describe", t.size)
		}
		numel *= d
		if s := t.stride[i]; s > 0 {
			if d-1 > t.st.numel/s {
				past = true
			} else {
				span += (d - 1) * s // each term <= numel, so at most maxDims * numel in all
			}
		}
	}
	if numel > 0 && (past || t.offset+span >= t.st.numel) {
		return Tensor{}, fmt.Errorf("view (offset %d, size %v, stride %v) reads past its storage of %d elements", t.offset, t.size, t.stride, t.st.numel)
	}
	if numel > c.budget {
		return Tensor{}, fmt.Errorf("size %v: more elements than the file can describe", t.size)
	}
	c.budget -= numel
	shape := make([]int, len(t.size))
	for i, d := range t.size {
		shape[i] = int(d)
	}
	vals := make([]float32, numel)
	if numel == 0 {
		return Tensor{Shape: shape, Values: vals}, nil
	}
	decode := decoder(t.st.dt.name)
	es := int64(t.st.dt.size)
	// Walk the index odometer-fashion; idx is the storage element of the current entry.
	nd := len(t.size)
	ctr := make([]int64, nd)
	idx := t.offset
	for k := range vals {
		vals[k] = decode(raw[idx*es:])
		for d := nd - 1; d >= 0; d-- {
			ctr[d]++
			idx += t.stride[d]
			if ctr[d] < t.size[d] {
				break
			}
			idx -= ctr[d] * t.stride[d]
			ctr[d] = 0
		}
	}
	return Tensor{Shape: shape, Values: vals}, nil
}

// decoder returns the function that reads one little-endian element of a floating dtype
// as float32.
func decoder(name string) func([]byte) float32 {
	switch name {
	case "float16":
		return func(b []byte) float32 { return halfToFloat32(binary.LittleEndian.Uint16(b)) }
	case "bfloat16":
		return func(b []byte) float32 { return math.Float32frombits(uint32(binary.LittleEndian.Uint16(b)) << 16) }
	case "float64":
		return func(b []byte) float32 { return float32(math.Float64frombits(binary.LittleEndian.Uint64(b))) }
	}
	return func(b []byte) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b)) }
}

// halfToFloat32 converts IEEE 754 binary16 bits to float32 exactly (subnormals, infinities
// and NaNs included).
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf or NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
	case frac == 0: // signed zero
		return math.Float32frombits(sign)
	}
	// Subnormal: frac * 2^-24.
	v := float32(frac) / (1 << 24)
	if sign != 0 {
		v = -v
	}
	return v
}
