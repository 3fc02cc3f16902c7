// Package pipeline turns a YAML DAG file into a plan of stage instances (variables, matrix
// expansion, cache keys) and executes it against an artifacts.Store. See docs/design.md and
// docs/architecture.md.
package pipeline

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// File is a parsed DAG file, before variable substitution and matrix expansion.
type File struct {
	// Path is the file the DAG was read from (as given by the user).
	Path string
	// Name is the DAG's name: the `name:` field, or the file's base name without extension.
	Name string
	// Seed is the DAG seed every instance seed derives from.
	Seed uint64
	// Vars holds the `vars:` values, typed as YAML decoded them.
	Vars map[string]any
	// Matrix lists the matrix variables in file order.
	Matrix []MatrixVar
	// Stages lists the stages in file order.
	Stages []*StageSpec

	varLines map[string]int
}

// MatrixVar is one matrix dimension.
type MatrixVar struct {
	Name   string
	Values []any
	Line   int
}

// StageSpec is one stage as written in the file.
type StageSpec struct {
	Name   string
	Kind   string
	Needs  []string
	Gather bool
	// Seed, when set, replaces the DAG seed in this stage's seed derivation; it may be a
	// reference such as "${matrix.seed}", which makes the stage vary with that matrix variable.
	Seed any
	// With holds the stage's params as written, before substitution.
	With map[string]any
	// Resources is the `resources:` block, or nil when the stage has none.
	Resources *Resources
	// Line is the line of the stage's name; fieldLines the lines of its fields and params.
	Line       int
	fieldLines map[string]int
}

// fieldLine returns the line of a stage field (kind, needs, with.T, ...), or the stage's line.
func (s *StageSpec) fieldLine(field string) int {
	if l, ok := s.fieldLines[field]; ok {
		return l
	}
	return s.Line
}

// Error is a DAG validation error. It names the file, the line, the stage and the field.
type Error struct {
	File  string
	Line  int
	Stage string
	Field string
	Msg   string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Stage != "" {
		fmt.Fprintf(&b, "stage %s: ", e.Stage)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, "field %s: ", e.Field)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// IsInvalid reports whether err contains a DAG validation error (exit code 2).
func IsInvalid(err error) bool {
	var e *Error
	var pe *PreflightError
	var ue *UnknownInstanceError
	return errors.As(err, &e) || errors.As(err, &pe) || errors.As(err, &ue)
}

// ReadFile reads and parses a DAG file.
func ReadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: err.Error()}
	}
	return Parse(path, data)
}

// Parse parses DAG YAML. path names the file in errors.
func Parse(path string, data []byte) (*File, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &Error{File: path, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: path, Msg: "empty DAG file"}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, &Error{File: path, Line: root.Line, Msg: "a DAG file is a mapping with name, seed, vars, matrix and stages"}
	}
	f := &File{Path: path, Vars: map[string]any{}, varLines: map[string]int{}}
	base := filepath.Base(path)
	f.Name = strings.TrimSuffix(base, filepath.Ext(base))
	errf := func(line int, field, format string, a ...any) error {
		return &Error{File: path, Line: line, Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	var stagesNode *yaml.Node
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch k.Value {
		case "name":
			if v.Kind != yaml.ScalarNode || v.Value == "" || strings.ContainsAny(v.Value, ":/ ") {
				return nil, errf(v.Line, "name", "want a word without ':', '/' or spaces, got %q", v.Value)
			}
			f.Name = v.Value
		case "seed":
			s, err := strconv.ParseUint(v.Value, 10, 64)
			if v.Kind != yaml.ScalarNode || err != nil {
				return nil, errf(v.Line, "seed", "want a non-negative integer, got %q", v.Value)
			}
			f.Seed = s
		case "vars":
			if v.Kind != yaml.MappingNode {
				return nil, errf(v.Line, "vars", "want a mapping NAME: value")
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				name := v.Content[j].Value
				if !validVarName(name) {
					return nil, errf(v.Content[j].Line, "vars."+name, "a variable name is letters, digits and '_'")
				}
				var val any
				if err := v.Content[j+1].Decode(&val); err != nil {
					return nil, errf(v.Content[j+1].Line, "vars."+name, "%v", err)
				}
				if len(refs(val)) > 0 {
					return nil, errf(v.Content[j+1].Line, "vars."+name, "a var's value cannot reference other variables")
				}
				f.Vars[name] = val
				f.varLines[name] = v.Content[j].Line
			}
		case "matrix":
			if v.Kind != yaml.MappingNode {
				return nil, errf(v.Line, "matrix", "want a mapping NAME: [values]")
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				name, list := v.Content[j].Value, v.Content[j+1]
				if !validVarName(name) {
					return nil, errf(v.Content[j].Line, "matrix."+name, "a matrix variable name is letters, digits and '_'")
				}
				var vals []any
				if list.Kind != yaml.SequenceNode || list.Decode(&vals) != nil || len(vals) == 0 {
					return nil, errf(list.Line, "matrix."+name, "want a non-empty list of values")
				}
				seen := map[string]bool{}
				for _, x := range vals {
					switch x.(type) {
					case map[string]any, []any, nil:
						return nil, errf(list.Line, "matrix."+name, "matrix values must be scalars, got %v", x)
					}
					s := fmt.Sprint(x)
					if seen[s] {
						return nil, errf(list.Line, "matrix."+name, "duplicate value %q", s)
					}
					seen[s] = true
				}
				f.Matrix = append(f.Matrix, MatrixVar{Name: name, Values: vals, Line: v.Content[j].Line})
			}
		case "stages":
			stagesNode = v
		default:
			return nil, errf(k.Line, k.Value, "unknown top-level field (want name, seed, vars, matrix, stages)")
		}
	}
	if stagesNode == nil || stagesNode.Kind != yaml.MappingNode || len(stagesNode.Content) == 0 {
		line := root.Line
		if stagesNode != nil {
			line = stagesNode.Line
		}
		return nil, errf(line, "stages", "want a non-empty mapping of stage name to {kind, needs, with}")
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(stagesNode.Content); i += 2 {
		s, err := parseStage(path, stagesNode.Content[i], stagesNode.Content[i+1])
		if err != nil {
			return nil, err
		}
		if seen[s.Name] {
			return nil, &Error{File: path, Line: s.Line, Stage: s.Name, Msg: "duplicate stage name"}
		}
		seen[s.Name] = true
		f.Stages = append(f.Stages, s)
	}
	return f, nil
}

func parseStage(path string, k, v *yaml.Node) (*StageSpec, error) {
	s := &StageSpec{Name: k.Value, Line: k.Line, With: map[string]any{}, fieldLines: map[string]int{}}
	errf := func(line int, field, format string, a ...any) error {
		return &Error{File: path, Line: line, Stage: s.Name, Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	if !validStageName(s.Name) {
		return nil, errf(k.Line, "", "a stage name is letters, digits, '_' and '-'")
	}
	if v.Kind != yaml.MappingNode {
		return nil, errf(v.Line, "", "want a mapping {kind, needs, with, gather, seed, resources}")
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		fk, fv := v.Content[i], v.Content[i+1]
		s.fieldLines[fk.Value] = fk.Line
		switch fk.Value {
		case "kind":
			if fv.Kind != yaml.ScalarNode || fv.Value == "" {
				return nil, errf(fv.Line, "kind", "want a stage kind name")
			}
			s.Kind = fv.Value
		case "needs":
			if fv.Kind == yaml.ScalarNode {
				s.Needs = []string{fv.Value}
				break
			}
			if fv.Kind != yaml.SequenceNode || fv.Decode(&s.Needs) != nil {
				return nil, errf(fv.Line, "needs", "want a list of stage names")
			}
		case "gather":
			if fv.Kind != yaml.ScalarNode || fv.Decode(&s.Gather) != nil {
				return nil, errf(fv.Line, "gather", "want true or false, got %q", fv.Value)
			}
		case "seed":
			if fv.Kind != yaml.ScalarNode || fv.Decode(&s.Seed) != nil {
				return nil, errf(fv.Line, "seed", "want an integer or a ${...} reference")
			}
		case "with":
			if fv.Kind != yaml.MappingNode {
				if fv.Tag == "!!null" {
					break
				}
				return nil, errf(fv.Line, "with", "want a mapping of params")
			}
			for j := 0; j+1 < len(fv.Content); j += 2 {
				pk, pv := fv.Content[j], fv.Content[j+1]
				var val any
				if err := pv.Decode(&val); err != nil {
					return nil, errf(pv.Line, "with."+pk.Value, "%v", err)
				}
				s.With[pk.Value] = val
				s.fieldLines["with."+pk.Value] = pk.Line
			}
		case "resources":
			r, err := parseResources(fv, s.fieldLines, errf)
			if err != nil {
				return nil, err
			}
			s.Resources = r
		default:
			return nil, errf(fk.Line, fk.Value, "unknown stage field (want kind, needs, with, gather, seed, resources)")
		}
	}
	if s.Kind == "" {
		return nil, errf(s.Line, "kind", "missing kind")
	}
	return s, nil
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r != '_' && !isASCIIAlnum(r) {
			return false
		}
	}
	return true
}

func validStageName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r != '_' && r != '-' && !isASCIIAlnum(r) {
			return false
		}
	}
	return true
}

// isASCIIAlnum reports whether r is an ASCII letter or digit.
func isASCIIAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

// sortedKeys returns the keys of m, sorted (nil for an empty map).
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
