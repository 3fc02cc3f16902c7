package pipeline

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/pipe-ahl/pipe/artifacts"
)

// SchemaVersion is the first line of every cache key. Bump it when the key's layout or the
// meaning of a manifest changes, which invalidates every cached stage at once.
const SchemaVersion = 1

// ExternalInput is the pseudo-input name under which a stage's kind.Fingerprinter value
// enters its key and manifest.
const ExternalInput = "external"

// KeyParts is everything a cache key is computed from (docs/design.md, "Cache keys"). The parts
// are stored in the manifest so that a miss can be explained.
type KeyParts struct {
	Kind    string
	Version int
	// Params is the canonical resolved params (defaults filled in).
	Params map[string]any
	Seed   uint64
	// Inputs maps "stage[instance]/output" (or ExternalInput) to the content digest.
	Inputs map[string]artifacts.Digest
}

// Lines returns the lines the key hashes, one per part, inputs sorted by name.
func (k KeyParts) Lines() []string {
	params, err := json.Marshal(k.Params)
	if err != nil { // canonical params come from json.Marshal already; cannot fail
		panic(err)
	}
	lines := []string{
		fmt.Sprintf("pipe-key %d", SchemaVersion),
		"kind " + k.Kind,
		fmt.Sprintf("version %d", k.Version),
		"params " + string(params),
		fmt.Sprintf("seed %d", k.Seed),
	}
	for _, name := range sortedKeys(k.Inputs) {
		lines = append(lines, "input "+name+" "+string(k.Inputs[name]))
	}
	return lines
}

// Key returns the cache key: the hex sha256 of Lines joined by newlines.
func (k KeyParts) Key() string {
	h := sha256.New()
	for _, l := range k.Lines() {
		h.Write([]byte(l))
		h.Write([]byte{'\n'})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// inputName names one upstream output in key parts and manifests.
func inputName(stage, label, output string) string {
	if label == "" {
		return stage + "/" + output
	}
	return stage + "[" + label + "]/" + output
}

// PartsOf returns the key parts recorded in a manifest.
func PartsOf(m artifacts.Manifest) KeyParts {
	return KeyParts{Kind: m.Kind, Version: m.Version, Params: m.Params, Seed: m.Seed, Inputs: m.Inputs}
}

// Explain says why the key parts now differ from those of the manifest last stored for the
// same stage instance: "param T: 7 -> 5", "input features/features changed", "code version
// 2 -> 3". It returns "key schema changed" when only the schema version differs.
func Explain(old, now KeyParts) string {
	var why []string
	if old.Kind != now.Kind {
		why = append(why, fmt.Sprintf("kind %s -> %s", old.Kind, now.Kind))
	}
	if old.Version != now.Version {
		why = append(why, fmt.Sprintf("code version %d -> %d", old.Version, now.Version))
	}
	names := map[string]bool{}
	for k := range old.Params {
		names[k] = true
	}
	for k := range now.Params {
		names[k] = true
	}
	for _, k := range sortedKeys(names) {
		a, aok := old.Params[k]
		b, bok := now.Params[k]
		switch {
		case !aok:
			why = append(why, fmt.Sprintf("new param %s: %s", k, jsonString(b)))
		case !bok:
			why = append(why, fmt.Sprintf("param %s removed", k))
		case jsonString(a) != jsonString(b):
			why = append(why, fmt.Sprintf("param %s: %s -> %s", k, jsonString(a), jsonString(b)))
		}
	}
	if old.Seed != now.Seed {
		why = append(why, fmt.Sprintf("seed %d -> %d", old.Seed, now.Seed))
	}
	var changed, added, removed []string
	for _, k := range sortedKeys(now.Inputs) {
		d, ok := old.Inputs[k]
		switch {
		case !ok:
			added = append(added, k)
		case d != now.Inputs[k]:
			changed = append(changed, k)
		}
	}
	for _, k := range sortedKeys(old.Inputs) {
		if _, ok := now.Inputs[k]; !ok {
			removed = append(removed, k)
		}
	}
	for _, k := range changed {
		if k == ExternalInput {
			why = append(why, "external files changed")
			continue
		}
		why = append(why, "input "+k+" changed")
	}
	if len(added) > 0 {
		why = append(why, "new inputs "+strings.Join(added, ", "))
	}
	if len(removed) > 0 {
		why = append(why, "inputs removed "+strings.Join(removed, ", "))
	}
	if len(why) == 0 {
		return "key schema changed"
	}
	return strings.Join(why, "; ")
}

func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}
