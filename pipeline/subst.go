package pipeline

import (
	"fmt"
	"regexp"
	"strings"
)

// refPattern matches a ${NAME} or ${matrix.NAME} reference.
var refPattern = regexp.MustCompile(`\$\{([A-Za-z0-9_.]*)\}`)

// ref is one ${...} reference: a DAG var, or a matrix variable when Matrix is true.
type ref struct {
	Name   string
	Matrix bool
}

func parseRef(s string) ref {
	if m, ok := strings.CutPrefix(s, "matrix."); ok {
		return ref{Name: m, Matrix: true}
	}
	return ref{Name: s}
}

// refs lists every reference in a value (strings inside maps and lists included).
func refs(v any) []ref {
	var out []ref
	walkStrings(v, func(s string) {
		for _, m := range refPattern.FindAllStringSubmatch(s, -1) {
			out = append(out, parseRef(m[1]))
		}
	})
	return out
}

func walkStrings(v any, fn func(string)) {
	switch x := v.(type) {
	case string:
		fn(x)
	case map[string]any:
		for _, k := range sortedKeys(x) {
			walkStrings(x[k], fn)
		}
	case []any:
		for _, e := range x {
			walkStrings(e, fn)
		}
	}
}

// substitute replaces references in v. A string that is exactly one reference takes the
// referenced value with its type (so `"${M}"` with M: 10 is the int 10); references inside a
// longer string are formatted into it. lookup reports an unknown reference with ok false.
func substitute(v any, lookup func(ref) (any, bool)) (any, error) {
	switch x := v.(type) {
	case string:
		if m := refPattern.FindStringSubmatch(x); m != nil && m[0] == x {
			r := parseRef(m[1])
			val, ok := lookup(r)
			if !ok {
				return nil, undefinedRef(r)
			}
			return val, nil
		}
		var err error
		out := refPattern.ReplaceAllStringFunc(x, func(s string) string {
			r := parseRef(s[2 : len(s)-1])
			val, ok := lookup(r)
			if !ok {
				if err == nil {
					err = undefinedRef(r)
				}
				return s
			}
			return fmt.Sprint(val)
		})
		return out, err
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			s, err := substitute(e, lookup)
			if err != nil {
				return nil, err
			}
			out[k] = s
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			s, err := substitute(e, lookup)
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	return v, nil
}

type undefinedRefError struct{ r ref }

func (e undefinedRefError) Error() string {
	if e.r.Matrix {
		return fmt.Sprintf("undefined matrix variable ${matrix.%s}", e.r.Name)
	}
	return fmt.Sprintf("undefined variable ${%s}", e.r.Name)
}

func undefinedRef(r ref) error { return undefinedRefError{r} }
