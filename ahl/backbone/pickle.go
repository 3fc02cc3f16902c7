package backbone

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// This file is a restricted reader of Python's pickle format, the encoding torch.save uses
// (protocol 2 by default, up to 4 when asked). It builds plain values only: None, bool,
// int64 (or *big.Int past 64 bits), float64, string, []byte, pyTuple, *pyList and *pyDict.
// Every class or function a pickle names goes through the caller's find, which must refuse
// what it does not know; a REDUCE or NEWOBJ applies one of those through the caller's call.
// Nothing in the pickle is ever executed. Every length is checked against the bytes left,
// so memory stays proportional to the input.

// pyTuple is a Python tuple.
type pyTuple []any

// pyList is a Python list (a pointer, as pickles mutate lists after memoising them).
type pyList struct{ items []any }

// pyDict is a Python dict or OrderedDict, in insertion order. String keys are indexed so
// that a repeated key replaces its value, as in Python; other keys are kept as they come.
type pyDict struct {
	keys, vals []any
	index      map[string]int
}

func newPyDict() *pyDict { return &pyDict{index: map[string]int{}} }

func (d *pyDict) set(k, v any) {
	if s, ok := k.(string); ok {
		if i, ok := d.index[s]; ok {
			d.vals[i] = v
			return
		}
		d.index[s] = len(d.keys)
	}
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
}

// get returns the value under the string key k.
func (d *pyDict) get(k string) (any, bool) {
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// unpickler runs a pickle program over data with caller-supplied hooks.
type unpickler struct {
	data []byte
	pos  int
	// stack and marks are the pickle machine's stack and its saved stacks (MARK pushes the
	// current stack onto marks and starts an empty one).
	stack []any
	marks [][]any
	memo  map[int64]any

	// find resolves a GLOBAL or STACK_GLOBAL; it returns an error for anything not allowed
	// (nil: every global is refused).
	find func(module, name string) (any, error)
	// call applies a value find returned to arguments (REDUCE, NEWOBJ; nil: refused).
	call func(fn any, args pyTuple) (any, error)
	// build applies BUILD's state to obj (nil: BUILD is refused).
	build func(obj, state any) error
	// persistentLoad resolves a BINPERSID id (nil: persistent ids are refused).
	persistentLoad func(pid any) (any, error)
}

// argSize is the size in bytes of the little-endian integer argument of the opcodes that
// take one: a length (LONG1, LONG4, the string and bytes opcodes) or a memo index.
var argSize = map[byte]int{
	0x8a: 1, 0x8b: 4, // LONG1, LONG4
	'X': 4, 0x8c: 1, 0x8d: 8, 'T': 4, 'U': 1, // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINSTRING, SHORT_BINSTRING
	'B': 4, 'C': 1, 0x8e: 8, // BINBYTES, SHORT_BINBYTES, BINBYTES8
	'h': 1, 'j': 4, 'q': 1, 'r': 4, // BINGET, LONG_BINGET, BINPUT, LONG_BINPUT
}

// maxPickleProtocol is the highest pickle protocol read; 5 adds out-of-band buffers, which
// torch.save never writes.
const maxPickleProtocol = 5

// load runs the program from u.pos to its STOP and returns the value it leaves; u.pos is
// then just past the STOP, where a legacy torch file continues.
func (u *unpickler) load() (any, error) {
	u.stack, u.marks = nil, nil
	if u.memo == nil {
		u.memo = map[int64]any{}
	}
	for {
		at := u.pos
		op, err := u.byte1()
		if err != nil {
			return nil, err
		}
		done, err := u.step(op)
		if err != nil {
			return nil, fmt.Errorf("pickle: opcode 0x%02x at byte %d: %w", op, at, err)
		}
		if done {
			if len(u.stack) != 1 || len(u.marks) != 0 {
				return nil, fmt.Errorf("pickle: STOP at byte %d leaves %d values and %d marks, want 1 and 0", at, len(u.stack), len(u.marks))
			}
			return u.stack[0], nil
		}
	}
}

// step runs one opcode; done reports STOP.
func (u *unpickler) step(op byte) (done bool, err error) {
	switch op {
	case 0x80: // PROTO
		v, err := u.byte1()
		if err != nil {
			return false, err
		}
		if v > maxPickleProtocol {
			return false, fmt.Errorf("pickle protocol %d, this reader knows up to %d", v, maxPickleProtocol)
		}
	case 0x95: // FRAME: a length hint; the whole input is in memory already
		n, err := u.uint(8)
		if err != nil {
			return false, err
		}
		if n > uint64(len(u.data)-u.pos) {
			return false, fmt.Errorf("frame of %d bytes, %d left", n, len(u.data)-u.pos)
		}
	case '.': // STOP
		return true, nil
	case '(': // MARK
		u.marks = append(u.marks, u.stack)
		u.stack = nil
	case '0': // POP
		_, err = u.pop()
	case '1': // POP_MARK
		_, err = u.popMark()
	case '2': // DUP
		var v any
		if v, err = u.top(); err == nil {
			u.push(v)
		}
	case 'N':
		u.push(nil)
	case 0x88:
		u.push(true)
	case 0x89:
		u.push(false)
	case 'J': // BININT
		var n uint64
		if n, err = u.uint(4); err == nil {
			u.push(int64(int32(uint32(n))))
		}
	case 'K': // BININT1
		var n uint64
		if n, err = u.uint(1); err == nil {
			u.push(int64(n))
		}
	case 'M': // BININT2
		var n uint64
		if n, err = u.uint(2); err == nil {
			u.push(int64(n))
		}
	case 0x8a, 0x8b: // LONG1, LONG4
		var n uint64
		if n, err = u.uint(argSize[op]); err != nil {
			return false, err
		}
		var b []byte
		if b, err = u.bytes(n); err == nil {
			u.push(decodeLong(b))
		}
	case 'G': // BINFLOAT (big-endian)
		var b []byte
		if b, err = u.bytes(8); err == nil {
			u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
		}
	case 'X', 0x8c, 0x8d, 'T', 'U': // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8, BINSTRING, SHORT_BINSTRING
		var b []byte
		if b, err = u.counted(argSize[op]); err == nil {
			u.push(string(b))
		}
	case 'B', 'C', 0x8e: // BINBYTES, SHORT_BINBYTES, BINBYTES8
		var b []byte
		if b, err = u.counted(argSize[op]); err == nil {
			u.push(b)
		}
	case ']': // EMPTY_LIST
		u.push(&pyList{})
	case 'l': // LIST
		var items []any
		if items, err = u.popMark(); err == nil {
			u.push(&pyList{items: items})
		}
	case 'a': // APPEND
		var v any
		if v, err = u.pop(); err != nil {
			return false, err
		}
		var l *pyList
		if l, err = u.topList(); err == nil {
			l.items = append(l.items, v)
		}
	case 'e': // APPENDS
		var items []any
		if items, err = u.popMark(); err != nil {
			return false, err
		}
		var l *pyList
		if l, err = u.topList(); err == nil {
			l.items = append(l.items, items...)
		}
	case ')': // EMPTY_TUPLE
		u.push(pyTuple{})
	case 't': // TUPLE
		var items []any
		if items, err = u.popMark(); err == nil {
			u.push(pyTuple(items))
		}
	case 0x85, 0x86, 0x87: // TUPLE1, TUPLE2, TUPLE3
		n := int(op-0x85) + 1
		if len(u.stack) < n {
			return false, fmt.Errorf("TUPLE%d with %d values on the stack", n, len(u.stack))
		}
		t := append(pyTuple(nil), u.stack[len(u.stack)-n:]...)
		u.stack = u.stack[:len(u.stack)-n]
		u.push(t)
	case '}': // EMPTY_DICT
		u.push(newPyDict())
	case 'd': // DICT
		var items []any
		if items, err = u.popMark(); err != nil {
			return false, err
		}
		d := newPyDict()
		if err = setItems(d, items); err == nil {
			u.push(d)
		}
	case 's': // SETITEM
		if len(u.stack) < 3 {
			return false, fmt.Errorf("SETITEM with %d values on the stack", len(u.stack))
		}
		k, v := u.stack[len(u.stack)-2], u.stack[len(u.stack)-1]
		u.stack = u.stack[:len(u.stack)-2]
		if !hashable(k) {
			return false, fmt.Errorf("dict key of type %s", pyType(k))
		}
		var d *pyDict
		if d, err = u.topDict(); err == nil {
			d.set(k, v)
		}
	case 'u': // SETITEMS
		var items []any
		if items, err = u.popMark(); err != nil {
			return false, err
		}
		var d *pyDict
		if d, err = u.topDict(); err == nil {
			err = setItems(d, items)
		}
	case 'c': // GLOBAL "module\nname\n"
		var mod, name string
		if mod, err = u.line(); err != nil {
			return false, err
		}
		if name, err = u.line(); err != nil {
			return false, err
		}
		var v any
		if v, err = u.global(mod, name); err == nil {
			u.push(v)
		}
	case 0x93: // STACK_GLOBAL
		var name, mod any
		if name, err = u.pop(); err != nil {
			return false, err
		}
		if mod, err = u.pop(); err != nil {
			return false, err
		}
		ms, ok1 := mod.(string)
		ns, ok2 := name.(string)
		if !ok1 || !ok2 {
			return false, fmt.Errorf("STACK_GLOBAL of types %s and %s, want two strings", pyType(mod), pyType(name))
		}
		var v any
		if v, err = u.global(ms, ns); err == nil {
			u.push(v)
		}
	case 'R', 0x81: // REDUCE (callable, args), NEWOBJ (class, args)
		var args, fn any
		if args, err = u.pop(); err != nil {
			return false, err
		}
		if fn, err = u.pop(); err != nil {
			return false, err
		}
		t, ok := args.(pyTuple)
		if !ok {
			return false, fmt.Errorf("arguments have type %s, want a tuple", pyType(args))
		}
		if u.call == nil {
			return false, fmt.Errorf("calling a value of type %s where no call belongs", pyType(fn))
		}
		var v any
		if v, err = u.call(fn, t); err == nil {
			u.push(v)
		}
	case 'b': // BUILD
		var state, obj any
		if state, err = u.pop(); err != nil {
			return false, err
		}
		if obj, err = u.top(); err != nil {
			return false, err
		}
		if u.build == nil {
			return false, fmt.Errorf("BUILD is not allowed")
		}
		err = u.build(obj, state)
	case 'Q': // BINPERSID
		var pid any
		if pid, err = u.pop(); err != nil {
			return false, err
		}
		if u.persistentLoad == nil {
			return false, fmt.Errorf("persistent id %s outside a PyTorch checkpoint", pyRepr(pid))
		}
		var v any
		if v, err = u.persistentLoad(pid); err == nil {
			u.push(v)
		}
	case 'h', 'j': // BINGET, LONG_BINGET
		var i uint64
		if i, err = u.uint(argSize[op]); err != nil {
			return false, err
		}
		v, ok := u.memo[int64(i)]
		if !ok {
			return false, fmt.Errorf("memo %d was never stored", i)
		}
		u.push(v)
	case 'q', 'r': // BINPUT, LONG_BINPUT
		var i uint64
		if i, err = u.uint(argSize[op]); err != nil {
			return false, err
		}
		var v any
		if v, err = u.top(); err == nil {
			u.memo[int64(i)] = v
		}
	case 0x94: // MEMOIZE
		var v any
		if v, err = u.top(); err == nil {
			u.memo[int64(len(u.memo))] = v
		}
	default:
		return false, fmt.Errorf("unsupported opcode (torch.save writes binary pickles of protocol 2 to 4)")
	}
	return false, err
}

// global resolves a class or function name through find.
func (u *unpickler) global(module, name string) (any, error) {
	if u.find == nil {
		return nil, fmt.Errorf("the pickle names %s.%s where no class belongs", module, name)
	}
	return u.find(module, name)
}

func setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return fmt.Errorf("%d values for key-value pairs", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		if !hashable(items[i]) {
			return fmt.Errorf("dict key of type %s", pyType(items[i]))
		}
		d.set(items[i], items[i+1])
	}
	return nil
}

// hashable reports whether v may be a dict key (a list or dict may not, as in Python).
func hashable(v any) bool {
	switch v.(type) {
	case *pyList, *pyDict:
		return false
	}
	return true
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 {
		return nil, fmt.Errorf("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 {
		return nil, fmt.Errorf("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

func (u *unpickler) topList() (*pyList, error) {
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	l, ok := v.(*pyList)
	if !ok {
		return nil, fmt.Errorf("appending to a value of type %s, want a list", pyType(v))
	}
	return l, nil
}

func (u *unpickler) topDict() (*pyDict, error) {
	v, err := u.top()
	if err != nil {
		return nil, err
	}
	d, ok := v.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("setting items of type %s, want a dict", pyType(v))
	}
	return d, nil
}

// popMark returns the values pushed since the last MARK and restores the stack before it.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, fmt.Errorf("no MARK to pop")
	}
	items := u.stack
	u.stack = u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	return items, nil
}

func (u *unpickler) byte1() (byte, error) {
	if u.pos >= len(u.data) {
		return 0, fmt.Errorf("pickle: input ends at byte %d before STOP", u.pos)
	}
	u.pos++
	return u.data[u.pos-1], nil
}

// bytes returns the next n bytes (a view of the input).
func (u *unpickler) bytes(n uint64) ([]byte, error) {
	if n > uint64(len(u.data)-u.pos) {
		return nil, fmt.Errorf("%d bytes wanted, %d left", n, len(u.data)-u.pos)
	}
	b := u.data[u.pos : u.pos+int(n)]
	u.pos += int(n)
	return b, nil
}

// uint reads a little-endian unsigned integer of size bytes (1, 2, 4 or 8).
func (u *unpickler) uint(size int) (uint64, error) {
	b, err := u.bytes(uint64(size))
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := size - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// counted reads a length of lenSize bytes, then that many bytes.
func (u *unpickler) counted(lenSize int) ([]byte, error) {
	n, err := u.uint(lenSize)
	if err != nil {
		return nil, err
	}
	return u.bytes(n)
}

// maxLine bounds a GLOBAL's module or name line.
const maxLine = 256

// line reads up to a newline (GLOBAL's text arguments).
func (u *unpickler) line() (string, error) {
	for i := u.pos; i < len(u.data) && i-u.pos <= maxLine; i++ {
		if u.data[i] == '\n' {
			s := string(u.data[u.pos:i])
			u.pos = i + 1
			return s, nil
		}
	}
	if len(u.data)-u.pos <= maxLine {
		return "", fmt.Errorf("input ends at byte %d within a GLOBAL name", len(u.data))
	}
	return "", fmt.Errorf("no newline within %d bytes for a GLOBAL name", maxLine)
}

// decodeLong decodes LONG1/LONG4's little-endian two's complement bytes: an int64 when it
// fits, a *big.Int otherwise.
func decodeLong(b []byte) any {
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
			v |= ^uint64(0) << (8 * len(b)) // sign-extend
		}
		return int64(v)
	}
	be := make([]byte, len(b))
	for i, c := range b {
		be[len(b)-1-i] = c
	}
	n := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return n
}

// pyType names v's Python type, for errors.
func pyType(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64, *big.Int:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case *ptStorage:
		return "storage"
	case *ptTensor:
		return "tensor"
	case ptGlobal:
		return string(v)
	case ptStorageType:
		return "torch." + v.name
	}
	return fmt.Sprintf("%T", v)
}

// maxRepr bounds pyRepr's text.
const maxRepr = 120

// pyRepr formats a pickled value for an error message, Python-like and cut to about
// maxRepr bytes: through the memo a pickle can share values so that their full text would
// be exponentially long.
func pyRepr(v any) string {
	var b strings.Builder
	writeRepr(&b, v, 0)
	if b.Len() > maxRepr {
		return b.String()[:maxRepr] + "..."
	}
	return b.String()
}

func writeRepr(b *strings.Builder, v any, depth int) {
	if b.Len() > maxRepr {
		return
	}
	if depth > 4 {
		b.WriteString("...")
		return
	}
	seq := func(open, close string, items []any) {
		b.WriteString(open)
		for i, x := range items {
			if i > 0 {
				b.WriteString(", ")
			}
			if b.Len() > maxRepr {
				b.WriteString("...")
				break
			}
			writeRepr(b, x, depth+1)
		}
		b.WriteString(close)
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		b.WriteString(map[bool]string{true: "True", false: "False"}[x])
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case *big.Int:
		if x.BitLen() > 128 {
			fmt.Fprintf(b, "<int of %d bits>", x.BitLen())
		} else {
			b.WriteString(x.String())
		}
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case string:
		if len(x) > maxRepr {
			x = x[:maxRepr]
		}
		b.WriteString(strconv.Quote(x))
	case []byte:
		fmt.Fprintf(b, "<%d bytes>", len(x))
	case pyTuple:
		seq("(", ")", x)
	case *pyList:
		seq("[", "]", x.items)
	case *pyDict:
		b.WriteString("{")
		for i := range x.keys {
			if i > 0 {
				b.WriteString(", ")
			}
			if b.Len() > maxRepr {
				b.WriteString("...")
				break
			}
			writeRepr(b, x.keys[i], depth+1)
			b.WriteString(": ")
			writeRepr(b, x.vals[i], depth+1)
		}
		b.WriteString("}")
	case *ptStorage:
		fmt.Fprintf(b, "<storage %q>", x.key)
	default:
		b.WriteString(pyType(v))
	}
}
