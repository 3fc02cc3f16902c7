package pipeline

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/pipe-ahl/pipe/kind"
	"go.yaml.in/yaml/v3"
)

// Plan is a DAG expanded into stage instances, in topological order.
type Plan struct {
	DAG       string
	File      string
	Seed      uint64
	Instances []*Instance
}

// Instance is one stage instance: a stage at one assignment of the matrix variables it
// depends on (none for a shared instance).
type Instance struct {
	Stage string
	Kind  string
	// Label names the matrix assignment, "x=a,y=b" in matrix order; "" when shared.
	Label string
	// Matrix holds the assignment the label names.
	Matrix map[string]string
	Def    kind.Definition
	// Params is the resolved params struct (defaults filled in), or nil for a kind without
	// params; CanonParams its canonical JSON form as a map, stored in the manifest.
	Params      any
	CanonParams map[string]any
	Seed        uint64
	Gather      bool
	// Deps lists the upstream instances in `needs` order (every instance of a need for a
	// gather stage).
	Deps []*Instance
	// Resources is the stage's `resources:` block (nil when it has none): what a cluster
	// executor asks for each instance. It enters no cache key; local runs ignore it.
	Resources *Resources

	index int
	spec  *StageSpec // the stage as written (lines, raw params), for preflight's messages
	// inputOnly marks an instance of an Only plan that is there as an input only.
	inputOnly bool
}

// ID names the instance in logs and input names: "stage" or "stage[label]".
func (in *Instance) ID() string {
	if in.Label == "" {
		return in.Stage
	}
	return in.Stage + "[" + in.Label + "]"
}

// Set is one `--set NAME=VALUE` override: a DAG var (NAME), a stage param (stage.param), or
// the values of a matrix variable (matrix.x=V or matrix.x=[V1, V2]).
type Set struct {
	Name  string
	Value any
	// Raw is the text after '='.
	Raw string
}

// ParseSet parses NAME=VALUE. The value is read as a YAML scalar, so `T=5` sets the int 5 and
// `name=abc` the string "abc".
func ParseSet(s string) (Set, error) {
	name, val, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return Set{}, fmt.Errorf("--set %q: want NAME=VALUE or STAGE.PARAM=VALUE", s)
	}
	var v any
	if err := yaml.Unmarshal([]byte(val), &v); err != nil {
		v = val
	}
	switch v.(type) {
	case map[string]any, []any:
		v = val
	case nil:
		if val != "null" && val != "~" {
			v = val
		}
	}
	return Set{Name: name, Value: v, Raw: val}, nil
}

// Compile validates f, applies the overrides and expands the matrix into a plan. Every
// problem found is returned (joined) once, even when several matrix instances of a stage
// share it; each is an *Error naming file, line, stage and field.
//
// It runs as named steps: apply the --set overrides, check kinds and needs, order the
// stages, find each stage's matrix variables, then expand every stage into instances
// (resolve vars, decode params, check the contract, derive the seed, wire the inputs).
func Compile(f *File, sets []Set) (*Plan, error) {
	c := newCompiler(f)
	c.applySets(sets)
	c.checkKindsAndNeeds()
	if err := c.err(); err != nil {
		return nil, err
	}
	order, err := topoSort(f)
	if err != nil {
		return nil, err
	}
	c.resolveMatrixDeps(order)
	if err := c.err(); err != nil {
		return nil, err
	}
	for _, s := range order {
		c.expandStage(s)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	return c.plan, nil
}

// compiler holds Compile's state between its steps.
type compiler struct {
	f      *File
	errs   []error
	seen   map[Error]bool
	vars   map[string]any
	byName map[string]*StageSpec
	// stageSets holds the --set STAGE.PARAM overrides, by stage and param.
	stageSets map[string]map[string]any
	matrix    []MatrixVar
	// matrixDeps holds, by stage, the matrix variables its instances differ by.
	matrixDeps map[string]map[string]bool
	plan       *Plan
	// instances lists each stage's instances; byLabel finds one by "stage\x00label".
	instances map[string][]*Instance
	byLabel   map[string]*Instance
}

func newCompiler(f *File) *compiler {
	c := &compiler{f: f, seen: map[Error]bool{}, vars: make(map[string]any, len(f.Vars)),
		byName: map[string]*StageSpec{}, stageSets: map[string]map[string]any{},
		matrix: append([]MatrixVar(nil), f.Matrix...), matrixDeps: map[string]map[string]bool{},
		plan:      &Plan{DAG: f.Name, File: f.Path, Seed: f.Seed},
		instances: map[string][]*Instance{}, byLabel: map[string]*Instance{}}
	for k, v := range f.Vars {
		c.vars[k] = v
	}
	for _, s := range f.Stages {
		c.byName[s.Name] = s
	}
	return c
}

// fail records a validation error once.
func (c *compiler) fail(line int, stage, field, format string, a ...any) {
	e := Error{File: c.f.Path, Line: line, Stage: stage, Field: field, Msg: fmt.Sprintf(format, a...)}
	if !c.seen[e] {
		c.seen[e] = true
		c.errs = append(c.errs, &e)
	}
}

// err returns the errors recorded so far, joined, or nil.
func (c *compiler) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return errors.Join(c.errs...)
}

// applySets applies the --set overrides: matrix.x=V (the values of a matrix variable),
// STAGE.PARAM=V (a stage param, applied when the stage's params are decoded) and NAME=V (a
// DAG var).
func (c *compiler) applySets(sets []Set) {
	for _, st := range sets {
		if mv, ok := strings.CutPrefix(st.Name, "matrix."); ok {
			c.setMatrix(st, mv)
			continue
		}
		if stage, param, ok := strings.Cut(st.Name, "."); ok {
			if c.byName[stage] == nil {
				c.fail(0, stage, "--set "+st.Name, "no stage named %q in the DAG", stage)
				continue
			}
			if c.stageSets[stage] == nil {
				c.stageSets[stage] = map[string]any{}
			}
			c.stageSets[stage][param] = st.Value
			continue
		}
		if _, ok := c.vars[st.Name]; !ok {
			c.fail(0, "", "--set "+st.Name, "undefined variable %q (vars: %s)", st.Name, strings.Join(sortedKeys(c.vars), ", "))
			continue
		}
		c.vars[st.Name] = st.Value
	}
}

// setMatrix replaces the values of matrix variable name with st's value or list.
func (c *compiler) setMatrix(st Set, name string) {
	i := slices.IndexFunc(c.matrix, func(m MatrixVar) bool { return m.Name == name })
	if i < 0 {
		c.fail(0, "", "--set "+st.Name, "undefined matrix variable %q", name)
		return
	}
	var vals any
	if err := yaml.Unmarshal([]byte(st.Raw), &vals); err != nil {
		vals = st.Raw
	}
	list, isList := vals.([]any)
	if !isList {
		list = []any{vals}
	}
	if len(list) == 0 {
		c.fail(0, "", "--set "+st.Name, "want a value or a non-empty list [a, b]")
		return
	}
	c.matrix[i].Values = list
}

// checkKindsAndNeeds checks that every stage's kind is registered and its needs name other
// stages of the DAG, once each.
func (c *compiler) checkKindsAndNeeds() {
	known := strings.Join(kind.Kinds(), ", ")
	for _, s := range c.f.Stages {
		if _, ok := kind.Lookup(s.Kind); !ok {
			c.fail(s.fieldLine("kind"), s.Name, "kind", "unknown kind %q (known kinds: %s)", s.Kind, known)
		}
		seenNeed := map[string]bool{}
		for _, n := range s.Needs {
			line := s.fieldLine("needs")
			switch {
			case seenNeed[n]:
				c.fail(line, s.Name, "needs", "input stage %q is listed twice", n)
			case c.byName[n] == nil:
				c.fail(line, s.Name, "needs", "unknown input stage %q", n)
			case n == s.Name:
				c.fail(line, s.Name, "needs", "a stage cannot need itself")
			}
			seenNeed[n] = true
		}
	}
}

// resolveMatrixDeps finds the matrix variables each stage's instances differ by: those its
// params and seed reference, plus those of its inputs unless it gathers them. It checks
// every ${var} and ${matrix.var} reference on the way, at the line of the field that
// holds it.
func (c *compiler) resolveMatrixDeps(order []*StageSpec) {
	names := map[string]bool{}
	for _, m := range c.matrix {
		names[m.Name] = true
	}
	for _, s := range order {
		d := map[string]bool{}
		for _, r := range append(refs(s.With), refs(s.Seed)...) {
			field := refField(s, r)
			line := s.fieldLine(field)
			switch {
			case !r.Matrix:
				if _, ok := c.vars[r.Name]; !ok {
					c.fail(line, s.Name, field, "undefined variable ${%s}", r.Name)
				}
			case !names[r.Name]:
				c.fail(line, s.Name, field, "undefined matrix variable ${matrix.%s}", r.Name)
			case s.Gather:
				c.fail(line, s.Name, field, "a gather stage cannot reference ${matrix.%s}: it is one instance over all of them", r.Name)
			default:
				d[r.Name] = true
			}
		}
		if !s.Gather {
			for _, n := range s.Needs {
				for k := range c.matrixDeps[n] {
					d[k] = true
				}
			}
		}
		c.matrixDeps[s.Name] = d
	}
}

// expandStage adds one instance of s per assignment of the matrix variables it depends on.
func (c *compiler) expandStage(s *StageSpec) {
	def, _ := kind.Lookup(s.Kind)
	var dims []MatrixVar
	for _, m := range c.matrix {
		if c.matrixDeps[s.Name][m.Name] {
			dims = append(dims, m)
		}
	}
	for _, assign := range product(dims) {
		in := &Instance{Stage: s.Name, Kind: s.Kind, Def: def, Gather: s.Gather, Matrix: map[string]string{}, Resources: s.Resources, spec: s}
		var labels []string
		for _, m := range dims {
			v := fmt.Sprint(assign[m.Name])
			in.Matrix[m.Name] = v
			labels = append(labels, m.Name+"="+v)
		}
		in.Label = strings.Join(labels, ",")
		lookup := func(r ref) (any, bool) {
			if r.Matrix {
				v, ok := assign[r.Name]
				return v, ok
			}
			v, ok := c.vars[r.Name]
			return v, ok
		}
		var ok bool
		if in.Params, in.CanonParams, ok = c.decodeParams(s, def, lookup); !ok {
			continue
		}
		c.checkContract(s, def, in.Params)
		if in.Seed, ok = c.deriveSeed(s, dims, in.Matrix, lookup); !ok {
			continue
		}
		c.wireInputs(s, in)
		in.index = len(c.plan.Instances)
		c.plan.Instances = append(c.plan.Instances, in)
		c.instances[s.Name] = append(c.instances[s.Name], in)
		c.byLabel[s.Name+"\x00"+in.Label] = in
	}
}

// decodeParams resolves the vars in s's `with`, applies the --set overrides of s and decodes
// the result into the kind's params struct. A problem is recorded at the line of the param
// (or of the --set flag) and reported as ok false.
func (c *compiler) decodeParams(s *StageSpec, def kind.Definition, lookup func(ref) (any, bool)) (params any, canon map[string]any, ok bool) {
	with, err := substitute(s.With, lookup)
	if err != nil {
		c.fail(s.fieldLine("with"), s.Name, "with", "%v", err)
		return nil, nil, false
	}
	wm := with.(map[string]any)
	for k, v := range c.stageSets[s.Name] {
		wm[k] = v
	}
	params, canon, err = decodeParams(def, wm)
	if err == nil {
		return params, canon, true
	}
	var pe *paramError
	if !errors.As(err, &pe) {
		c.fail(s.fieldLine("with"), s.Name, "with", "%v", err)
		return nil, nil, false
	}
	field := "with"
	if pe.field != "" {
		field += "." + pe.field // else Validate rejected the params as a whole
	}
	line, msg := s.fieldLine(field), pe.msg
	if v, ok := c.stageSets[s.Name][pe.field]; ok {
		field, line = "--set "+s.Name+"."+pe.field, 0
		if str, ok := v.(string); ok && (strings.HasPrefix(str, "[") || strings.HasPrefix(str, "{")) {
			msg += " (--set values are YAML scalars; set a list or mapping param in the DAG file)"
		}
	}
	c.fail(line, s.Name, field, "%s", msg)
	return nil, nil, false
}

// deriveSeed returns the instance's seed: derived from the stage's own seed when it sets one,
// else from the DAG seed (see DeriveSeed).
func (c *compiler) deriveSeed(s *StageSpec, dims []MatrixVar, assign map[string]string, lookup func(ref) (any, bool)) (uint64, bool) {
	base := c.f.Seed
	if s.Seed != nil {
		sv, err := substitute(s.Seed, lookup)
		if err == nil {
			base, err = toUint64(sv)
		}
		if err != nil {
			c.fail(s.fieldLine("seed"), s.Name, "seed", "%v", err)
			return 0, false
		}
	}
	return DeriveSeed(base, s.Name, dims, assign), true
}

// wireInputs sets in's Deps: for each stage in needs, the instance with the same values of
// the matrix variables that stage depends on, or every instance of it when in gathers.
func (c *compiler) wireInputs(s *StageSpec, in *Instance) {
	for _, n := range s.Needs {
		if s.Gather {
			in.Deps = append(in.Deps, c.instances[n]...)
			continue
		}
		var nl []string
		for _, m := range c.matrix {
			if c.matrixDeps[n][m.Name] {
				nl = append(nl, m.Name+"="+in.Matrix[m.Name])
			}
		}
		dep := c.byLabel[n+"\x00"+strings.Join(nl, ",")]
		if dep == nil { // an upstream instance failed to compile; already reported
			continue
		}
		in.Deps = append(in.Deps, dep)
	}
}

// checkContract reports each table that the stage's kind requires (given its params) but
// that no stage in its needs declares among its outputs, and each table it reads from one
// input that several of its needs make (it could not tell which to read). The check uses
// the kinds' declarations only, so it runs before anything does.
func (c *compiler) checkContract(s *StageSpec, def kind.Definition, params any) {
	required := slices.Clone(def.Inputs.Required)
	if r, ok := params.(kind.Requirer); ok {
		required = append(required, r.RequiredInputs()...)
	}
	makers := func(table string) []string {
		var from []string
		for _, n := range s.Needs {
			if nd, ok := kind.Lookup(c.byName[n].Kind); ok && slices.Contains(nd.Outputs, table) {
				from = append(from, n)
			}
		}
		return from
	}
	needs := strings.Join(s.Needs, ", ")
	if needs == "" {
		needs = "none"
	}
	for _, table := range required {
		if len(makers(table)) > 0 {
			continue
		}
		hint := "no registered kind makes it"
		if ks := kind.Providers(table); len(ks) > 0 {
			hint = "add a stage of kind " + strings.Join(ks, " or ") + " to needs"
		}
		c.fail(s.fieldLine("needs"), s.Name, "needs", "kind %s reads table %q, which no stage in needs makes (needs: %s); %s",
			def.Kind, table, needs, hint)
	}
	if s.Gather || def.Inputs.Each {
		return
	}
	for _, table := range append(slices.Clone(def.Inputs.Required), def.Inputs.Optional...) {
		if from := makers(table); len(from) > 1 {
			c.fail(s.fieldLine("needs"), s.Name, "needs", "stages %s all make table %q, which kind %s reads from one input; keep one of them in needs",
				strings.Join(from, " and "), table, def.Kind)
		}
	}
}

// refField names the field in which a stage references r, for error messages.
func refField(s *StageSpec, r ref) string {
	needle := "${" + r.Name + "}"
	if r.Matrix {
		needle = "${matrix." + r.Name + "}"
	}
	found := ""
	walkStrings(s.Seed, func(str string) {
		if strings.Contains(str, needle) {
			found = "seed"
		}
	})
	for _, k := range sortedKeys(s.With) {
		walkStrings(s.With[k], func(str string) {
			if found == "" && strings.Contains(str, needle) {
				found = "with." + k
			}
		})
	}
	return found
}

// product returns every assignment of the given matrix variables (the cartesian product, the
// first variable varying slowest); one empty assignment when there are none.
func product(dims []MatrixVar) []map[string]any {
	out := []map[string]any{{}}
	for _, d := range dims {
		var next []map[string]any
		for _, a := range out {
			for _, v := range d.Values {
				b := make(map[string]any, len(a)+1)
				for k, x := range a {
					b[k] = x
				}
				b[d.Name] = v
				next = append(next, b)
			}
		}
		out = next
	}
	return out
}

// topoSort orders the stages so that every stage follows its needs, keeping file order
// where the graph allows; a cycle is an error that names it.
func topoSort(f *File) ([]*StageSpec, error) {
	byName := map[string]*StageSpec{}
	for _, s := range f.Stages {
		byName[s.Name] = s
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var order []*StageSpec
	var stack []string
	var visit func(s *StageSpec) error
	visit = func(s *StageSpec) error {
		switch color[s.Name] {
		case black:
			return nil
		case grey:
			i := len(stack) - 1
			for stack[i] != s.Name {
				i--
			}
			cycle := append(append([]string{}, stack[i:]...), s.Name)
			return &Error{File: f.Path, Line: s.fieldLine("needs"), Stage: s.Name, Field: "needs",
				Msg: "cycle: " + strings.Join(cycle, " -> ")}
		}
		color[s.Name] = grey
		stack = append(stack, s.Name)
		for _, n := range s.Needs {
			if err := visit(byName[n]); err != nil {
				return err
			}
		}
		stack = stack[:len(stack)-1]
		color[s.Name] = black
		order = append(order, s)
		return nil
	}
	for _, s := range f.Stages {
		if err := visit(s); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// DeriveSeed derives an instance seed from a base seed (the DAG seed unless the stage sets
// its own), the stage name and the instance's matrix values, so that instances differ and a
// rerun reproduces them: the first 8 bytes of sha256("seed\n<base>\n<stage>\n<var>=<value>\n...").
// A matrix variable named `seed` therefore feeds the derivation like any other.
func DeriveSeed(base uint64, stage string, dims []MatrixVar, assign map[string]string) uint64 {
	h := sha256.New()
	fmt.Fprintf(h, "seed\n%d\n%s\n", base, stage)
	for _, d := range dims {
		fmt.Fprintf(h, "%s=%s\n", d.Name, assign[d.Name])
	}
	return binary.BigEndian.Uint64(h.Sum(nil)[:8])
}

func toUint64(v any) (uint64, error) {
	switch x := v.(type) {
	case int:
		if x >= 0 {
			return uint64(x), nil
		}
	case uint64:
		return x, nil
	case string:
		if u, err := strconv.ParseUint(x, 10, 64); err == nil {
			return u, nil
		}
	}
	return 0, fmt.Errorf("want a non-negative integer, got %v", v)
}

// paramError is a problem with one param of a stage.
type paramError struct {
	field string
	msg   string
}

func (e *paramError) Error() string { return e.field + ": " + e.msg }

// decodeParams decodes with into a fresh params struct of def strictly (names are the
// struct's json tags; an unknown name or a wrong type is an error), validates it, and returns
// it with its canonical form (a map whose JSON encoding has sorted keys).
func decodeParams(def kind.Definition, with map[string]any) (any, map[string]any, error) {
	if def.Params == nil {
		if len(with) > 0 {
			k := sortedKeys(with)[0]
			return nil, nil, &paramError{k, fmt.Sprintf("unknown param %q: kind %s takes no params", k, def.Kind)}
		}
		return nil, map[string]any{}, nil
	}
	p := def.Params()
	names := jsonFieldNames(p)
	for _, k := range sortedKeys(with) {
		if _, ok := names[k]; !ok {
			return nil, nil, &paramError{k, fmt.Sprintf("unknown param %q for kind %s (params: %s)", k, def.Kind, strings.Join(sortedKeys(names), ", "))}
		}
	}
	for _, k := range sortedKeys(with) {
		b, err := json.Marshal(map[string]any{k: with[k]})
		if err != nil {
			return nil, nil, &paramError{k, fmt.Sprintf("cannot encode value %v: %v", with[k], err)}
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(p); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return nil, nil, &paramError{k, fmt.Sprintf("wrong type: want %s, got %s %s", typeName(names[k]), te.Value, compact(with[k]))}
			}
			return nil, nil, &paramError{k, err.Error()}
		}
	}
	if v, ok := p.(kind.Validator); ok {
		if err := v.Validate(); err != nil {
			return nil, nil, &paramError{"", err.Error()}
		}
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, nil, fmt.Errorf("encode params: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var canon map[string]any
	if err := dec.Decode(&canon); err != nil {
		return nil, nil, fmt.Errorf("canonical params: %w", err)
	}
	return p, canon, nil
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list of " + strings.TrimPrefix(typeName(t.Elem()), "a ")
	}
	return t.String()
}

// jsonFieldNames maps the json names of a struct's exported fields to their types.
func jsonFieldNames(p any) map[string]reflect.Type {
	t := reflect.TypeOf(p)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	out := map[string]reflect.Type{}
	if t.Kind() != reflect.Struct {
		return out
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := f.Name
		if tag, ok := f.Tag.Lookup("json"); ok {
			n, _, _ := strings.Cut(tag, ",")
			if n == "-" {
				continue
			}
			if n != "" {
				name = n
			}
		}
		out[name] = f.Type
	}
	return out
}
