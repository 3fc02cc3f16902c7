package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pipe-ahl/pipe/kind"
)

// MissingInput is one outside path (a dataset folder, a weights file, a source folder) that
// some stage instances of a plan would read but that is absent or of the wrong type.
type MissingInput struct {
	File  string // the DAG file
	Line  int    // the line of the param (or of the stage when the param is a default)
	Stage string
	Param string
	// Written is the param as written in the DAG file when it differs from Path (a var
	// reference such as "${data}"), else "".
	Written  string
	Path     string // the path as the params hold it
	Resolved string // the absolute path that was checked
	Problem  string // "does not exist", "is not a folder", ...
	// Instances counts the stage's instances that read the path.
	Instances int
}

// PreflightError lists every missing outside input of a plan. It counts as a DAG validation
// error (IsInvalid, exit code 2): nothing ran.
type PreflightError struct {
	Missing []MissingInput
}

func (e *PreflightError) Error() string {
	var b strings.Builder
	n := len(e.Missing)
	if n == 1 {
		b.WriteString("1 outside input is missing (checked before anything runs):")
	} else {
		fmt.Fprintf(&b, "%d outside inputs are missing (checked before anything runs):", n)
	}
	for _, m := range e.Missing {
		fmt.Fprintf(&b, "\n  %s:%d: stage %s: param %s: ", m.File, m.Line, m.Stage, m.Param)
		if m.Written != "" {
			fmt.Fprintf(&b, "%s = ", m.Written)
		}
		fmt.Fprintf(&b, "%q (%s) %s", m.Path, m.Resolved, m.Problem)
		if m.Instances > 1 {
			fmt.Fprintf(&b, " [read by %d instances]", m.Instances)
		}
	}
	return b.String()
}

// Preflight checks every outside path that the plan's instances would read (params that
// implement kind.Externals), once per distinct path and stage param, and returns a
// *PreflightError listing all that are missing, or nil. It reads no file contents.
func Preflight(p *Plan) error {
	type key struct{ stage, param, path string }
	seen := map[key]*MissingInput{}
	checked := map[string]string{} // resolved path and kind -> problem ("" when fine)
	var order []key
	for _, in := range p.Instances {
		ex, ok := in.Params.(kind.Externals)
		if !ok {
			continue
		}
		for _, x := range ex.ExternalPaths() {
			k := key{in.Stage, x.Param, x.Path}
			if m, ok := seen[k]; ok {
				if m != nil {
					m.Instances++
				}
				continue
			}
			resolved, err := filepath.Abs(x.Path)
			if err != nil {
				resolved = x.Path
			}
			ck := fmt.Sprintf("%s\x00%v", resolved, x.Dir)
			problem, done := checked[ck]
			if !done {
				problem = checkPath(resolved, x.Dir)
				checked[ck] = problem
			}
			if problem == "" {
				seen[k] = nil
				continue
			}
			m := &MissingInput{File: p.File, Stage: in.Stage, Param: x.Param, Path: x.Path,
				Resolved: resolved, Problem: problem, Instances: 1}
			if in.spec != nil {
				m.Line = in.spec.fieldLine("with." + x.Param)
				if w, ok := in.spec.With[x.Param].(string); ok && w != x.Path {
					m.Written = w
				}
			}
			seen[k] = m
			order = append(order, k)
		}
	}
	if len(order) == 0 {
		return nil
	}
	e := &PreflightError{}
	for _, k := range order {
		e.Missing = append(e.Missing, *seen[k])
	}
	return e
}

// checkPath says what is wrong with path ("" when it is a folder, or a regular file, as
// wanted).
func checkPath(path string, dir bool) string {
	st, err := os.Stat(path)
	switch {
	case os.IsNotExist(err):
		return "does not exist"
	case err != nil:
		return "cannot be read: " + err.Error()
	case dir && !st.IsDir():
		return "is not a folder"
	case !dir && st.IsDir():
		return "is a folder, want a file"
	}
	return ""
}
