// Package stages holds pipe's stage kinds: thin adapters that turn input tables and params
// into output tables by calling ahl/. Each kind is a kind.Definition (package kind holds the
// contract and the registry); Register adds them all to the registry.
package stages

import (
	"sync"

	"github.com/pipe-ahl/pipe/kind"
)

var (
	definitions  []kind.Definition
	registerOnce sync.Once
)

// register records a kind defined in this package; each kind's file calls it from init.
func register(d kind.Definition) { definitions = append(definitions, d) }

// Register adds every kind of this package to the registry of package kind. A program that
// runs DAGs calls it once before compiling one (cmd/pipe does so in Main); further calls do
// nothing. The call is explicit, rather than a side effect of importing the package, so
// that what a binary registers is visible where it starts.
func Register() {
	registerOnce.Do(func() {
		for _, d := range definitions {
			kind.Register(d)
		}
	})
}

// Definitions returns the kinds of this package, in registration order.
func Definitions() []kind.Definition { return append([]kind.Definition(nil), definitions...) }

// lookup returns the definition of one of this package's kinds.
func lookup(name string) (kind.Definition, bool) {
	for _, d := range definitions {
		if d.Kind == name {
			return d, true
		}
	}
	return kind.Definition{}, false
}
