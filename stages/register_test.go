package stages

import (
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/kind"
)

// TestDeclaredTablesMatchTablesMD checks each kind's declared outputs against the tables
// stages/TABLES.md lists for it, and that every table a kind reads is some kind's output.
func TestDeclaredTablesMatchTablesMD(t *testing.T) {
	md, err := os.ReadFile("TABLES.md")
	if err != nil {
		t.Fatal(err)
	}
	defs := map[string]kind.Definition{}
	for _, d := range Definitions() {
		defs[d.Kind] = d
	}
	// A row is "| stage (kinds or methods) | output | columns |"; its kind is whichever of
	// the stage name and the parenthesised names is a kind of this package.
	row := regexp.MustCompile(`(?m)^\| (\w+)(?: \(([^)]*)\))? \| (\w+) \|`)
	documented := map[string][]string{}
	for _, m := range row.FindAllStringSubmatch(string(md), -1) {
		if m[1] == "stage" { // the header
			continue
		}
		var k string
		for _, name := range append([]string{m[1]}, strings.Split(m[2], ", ")...) {
			if _, ok := defs[name]; ok {
				k = name
			}
		}
		if k == "" {
			t.Errorf("TABLES.md row %q names no kind of this package", m[0])
			continue
		}
		documented[k] = append(documented[k], m[3])
	}
	outputs := map[string]bool{}
	for name, d := range defs {
		got := slices.Clone(d.Outputs)
		sort.Strings(got)
		want := documented[name]
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("kind %s declares outputs %v, TABLES.md lists %v", name, got, want)
		}
		for _, o := range d.Outputs {
			outputs[o] = true
		}
	}
	for name, d := range defs {
		for _, in := range append(slices.Clone(d.Inputs.Required), d.Inputs.Optional...) {
			if !outputs[in] {
				t.Errorf("kind %s reads table %q, which no kind writes", name, in)
			}
		}
	}
	if len(defs) != 9 {
		t.Errorf("%d kinds, want the 9 of TABLES.md", len(defs))
	}
}
