package heads

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Config is what a head is built from.
type Config struct {
	// Channels is C, the channel count of the feature maps the head scores (the same at every
	// scale: all scales come from one backbone).
	Channels int
	// Options are head settings by name, spelt as the train stage's params spell them
	// (composite_width, composite_stride). A kind reads the options it declares, taking the
	// default for a missing one, and ignores the others: the train stage passes every option
	// its params hold to whichever head it builds.
	Options map[string]int
}

// Option declares one integer setting a kind of head reads from Config.Options.
type Option struct {
	Name    string
	Default int
	Min     int // the smallest accepted value
}

// Kind is one registered kind of head: its name, its options and its constructor.
type Kind struct {
	// Name is how params, DAG files and model metadata name the head ("devnet").
	Name string
	// Options are the settings the head reads from Config.Options.
	Options []Option
	// Build returns the head for cfg, whose Options hold a value of at least Min for every
	// declared option (New fills in defaults and checks bounds before it calls Build).
	Build func(cfg Config) (Head, error)
}

var (
	registryMu sync.RWMutex
	registry   = map[string]Kind{}
)

// Register adds a kind of head. Each head's file registers its kind from an init function;
// a test may register a kind of its own. Register panics on an empty or repeated name, a
// missing Build function or an option whose default is below its Min: all programming errors.
func Register(k Kind) {
	if k.Name == "" || k.Build == nil {
		panic(fmt.Sprintf("heads: Register(%q): a kind needs a name and a Build function", k.Name))
	}
	for _, o := range k.Options {
		if o.Default < o.Min {
			panic(fmt.Sprintf("heads: Register(%q): option %s defaults to %d, below its minimum %d", k.Name, o.Name, o.Default, o.Min))
		}
	}
	registryMu.Lock()
	defer registryMu.Unlock()
	if _, dup := registry[k.Name]; dup {
		panic(fmt.Sprintf("heads: Register(%q): a kind of that name is already registered", k.Name))
	}
	k.Options = slices.Clone(k.Options)
	registry[k.Name] = k
}

// Names returns the registered kinds' names, sorted.
func Names() []string {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return sortedNames()
}

// sortedNames returns the registered names, sorted; the caller holds registryMu.
func sortedNames() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Lookup returns the kind registered as name, or an error that lists the registered names.
func Lookup(name string) (Kind, error) {
	registryMu.RLock()
	k, ok := registry[name]
	registryMu.RUnlock()
	if !ok {
		return Kind{}, fmt.Errorf("head: %q, want %s", name, orList(Names()))
	}
	return k, nil
}

// New returns a head of the kind registered as name for cfg: the options the kind declares
// take their defaults where cfg lacks them and must be at least their Min; cfg.Channels must
// be positive.
func New(name string, cfg Config) (Head, error) {
	k, err := Lookup(name)
	if err != nil {
		return nil, err
	}
	if cfg.Channels <= 0 {
		return nil, fmt.Errorf("heads %s: channels = %d, want > 0", name, cfg.Channels)
	}
	opts := make(map[string]int, len(k.Options))
	for _, o := range k.Options {
		v, ok := cfg.Options[o.Name]
		if !ok {
			v = o.Default
		}
		if v < o.Min {
			return nil, fmt.Errorf("heads %s: %s = %d, want >= %d", name, o.Name, v, o.Min)
		}
		opts[o.Name] = v
	}
	return k.Build(Config{Channels: cfg.Channels, Options: opts})
}

// CheckOptions reports, as "option: value, want >= min", the first option in opts (in name
// order) that no registered kind declares or that is below the Min of a kind declaring it,
// and an unregistered head name. It validates params before the channel count is known.
func CheckOptions(name string, opts map[string]int) error {
	if _, err := Lookup(name); err != nil {
		return err
	}
	registryMu.RLock()
	defer registryMu.RUnlock()
	keys := make([]string, 0, len(opts))
	for o := range opts {
		keys = append(keys, o)
	}
	sort.Strings(keys)
	for _, o := range keys {
		declared := false
		for _, k := range registry {
			for _, d := range k.Options {
				if d.Name != o {
					continue
				}
				declared = true
				if opts[o] < d.Min {
					return fmt.Errorf("%s: %d, want >= %d", o, opts[o], d.Min)
				}
			}
		}
		if !declared {
			return fmt.Errorf("%s: no registered head (%s) takes this option", o, strings.Join(sortedNames(), ", "))
		}
	}
	return nil
}

// orList spells names as "a, b or c".
func orList(names []string) string {
	switch len(names) {
	case 0:
		return "a registered head (none is)"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
