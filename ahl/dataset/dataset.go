// Package dataset lists anomaly-detection datasets in the MVTec AD layout (or the embedded
// Fashion-MNIST subset) and applies the open-set protocols of docs/algorithm.md ("The problem:
// open-set protocols"): which images are training normals, training anomalies and test images.
package dataset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
)

// Good is the class name of normal images (the MVTec folder name).
const Good = "good"

// Entry is one image of a dataset before a protocol assigns it a split.
type Entry struct {
	ID    string // path relative to the dataset root, slash-separated, e.g. test/crack/000.png
	Class string // Good or the anomaly class
}

// Pool is a dataset in the MVTec layout: root/{train/good, test/good, test/<class>}.
type Pool struct {
	// Name says where the pool came from, for messages (a folder or "embedded ...").
	Name         string
	TrainNormals []Entry            // train/good, sorted by ID
	TestNormals  []Entry            // test/good, sorted by ID; empty when the dataset has none
	Anomalies    map[string][]Entry // test/<class> by class, each sorted by ID
	// Read returns the encoded bytes (PNG or JPEG) of an entry.
	Read func(id string) ([]byte, error)
}

// Classes returns the anomaly classes, sorted.
func (p Pool) Classes() []string {
	cs := make([]string, 0, len(p.Anomalies))
	for c := range p.Anomalies {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	return cs
}

// Item is an image with the split and label a protocol gave it.
type Item struct {
	Entry
	Split string // "train", "test", or Validation ("val") after CarveValidation
	Label int    // 0 normal, 1 anomaly
}

// Protocol names.
const (
	General = "general"
	Hard    = "hard"
)

// Protocol says how training anomalies are drawn (docs/algorithm.md, "The problem: open-set
// protocols").
type Protocol struct {
	Name      string // General or Hard
	SeenClass string // Hard: the class the training anomalies come from
	Anomalies int    // M, the number of labelled training anomalies
	// NormalTestFraction is the share of normals that go to the test set when the dataset
	// has no test/good folder (0.25: the 3:1 split of the DRA/AHL benchmarks).
	NormalTestFraction float64
}

// Random streams of the protocol's draws (the seed is the run's).
const (
	streamAnomalies = 1
	streamNormals   = 2
)

// Assign applies the protocol to pool with the run seed and returns the images that take
// part, training images first, each split sorted by ID.
//
// Anomalies: general lists every class's anomaly files sorted by path, shuffles them with the
// seed and takes the first M for training; the rest are test images. Hard does the same with
// the seen class's files only and leaves the rest out; every other class is test data.
// Normals: train/good trains and test/good tests; without test/good, the training normals are
// shuffled with the seed and a NormalTestFraction of them become test normals.
func (p Protocol) Assign(pool Pool, seed uint64) ([]Item, error) {
	if p.Anomalies < 1 {
		return nil, fmt.Errorf("anomalies: %d, want at least 1", p.Anomalies)
	}
	classes := pool.Classes()
	if len(classes) == 0 {
		return nil, fmt.Errorf("%s: no anomaly classes (test/<class> folders)", pool.Name)
	}
	var train, test []Item
	add := func(dst *[]Item, es []Entry, split string, label int) {
		for _, e := range es {
			*dst = append(*dst, Item{Entry: e, Split: split, Label: label})
		}
	}

	// Normals.
	if len(pool.TrainNormals) == 0 {
		return nil, fmt.Errorf("%s: no training normals (train/good is empty)", pool.Name)
	}
	if len(pool.TestNormals) > 0 {
		add(&train, pool.TrainNormals, "train", 0)
		add(&test, pool.TestNormals, "test", 0)
	} else {
		f := p.NormalTestFraction
		n := len(pool.TrainNormals)
		k := int(math.Round(f * float64(n)))
		if f <= 0 || f >= 1 || k < 1 || k >= n {
			return nil, fmt.Errorf("%s has no test/good: normal_test_fraction %g of %d normals leaves %d for test, want between 1 and %d",
				pool.Name, f, n, k, n-1)
		}
		normals := shuffled(pool.TrainNormals, seed, streamNormals)
		add(&test, normals[:k], "test", 0)
		add(&train, normals[k:], "train", 0)
	}

	// Anomalies.
	switch p.Name {
	case General:
		if p.SeenClass != "" {
			return nil, fmt.Errorf("seen_class %q: only protocol hard uses a seen class", p.SeenClass)
		}
		var all []Entry
		for _, c := range classes {
			all = append(all, pool.Anomalies[c]...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
		if p.Anomalies >= len(all) {
			return nil, fmt.Errorf("anomalies: M = %d but %s has %d anomaly images (classes %s); M must leave some for testing",
				p.Anomalies, pool.Name, len(all), strings.Join(classes, ", "))
		}
		all = shuffled(all, seed, streamAnomalies)
		add(&train, all[:p.Anomalies], "train", 1)
		add(&test, all[p.Anomalies:], "test", 1)
	case Hard:
		seen, ok := pool.Anomalies[p.SeenClass]
		if !ok {
			return nil, fmt.Errorf("seen_class %q is not an anomaly class of %s (valid: %s)", p.SeenClass, pool.Name, strings.Join(classes, ", "))
		}
		if len(classes) < 2 {
			return nil, fmt.Errorf("protocol hard: %s has one anomaly class (%s), so no unseen class is left to test; use protocol general",
				pool.Name, classes[0])
		}
		if p.Anomalies > len(seen) {
			return nil, fmt.Errorf("anomalies: M = %d but class %q of %s has only %d images", p.Anomalies, p.SeenClass, pool.Name, len(seen))
		}
		seen = shuffled(seen, seed, streamAnomalies)
		add(&train, seen[:p.Anomalies], "train", 1)
		for _, c := range classes {
			if c != p.SeenClass {
				add(&test, pool.Anomalies[c], "test", 1)
			}
		}
	default:
		return nil, fmt.Errorf("protocol %q, want general or hard", p.Name)
	}
	byID := func(s []Item) { sort.Slice(s, func(i, j int) bool { return s[i].ID < s[j].ID }) }
	byID(train)
	byID(test)
	return append(train, test...), nil
}

// shuffled returns a copy of es, sorted by ID and then shuffled with the seed's stream.
func shuffled(es []Entry, seed, stream uint64) []Entry {
	out := append([]Entry(nil), es...)
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	rng := rand.New(rand.NewPCG(seed, stream))
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

// Validation is the split of the training images held out for validation.
const Validation = "val"

// streamValidation is the random stream of CarveValidation's draws.
const streamValidation = 3

// CarveValidation moves a fraction of the training images of items (as Assign returns them)
// to the split Validation, with the run seed: round(fraction x n) of the n training normals
// and floor(fraction x M) of the M labelled anomalies, each drawn from its own sorted and
// shuffled list. At least one training anomaly and two training normals stay in training, so
// M = 1 holds out no anomaly. Fraction 0 returns items unchanged. No test image moves: a
// validation split is made of training data only, so choices made on it never see the test
// labels. The result keeps Assign's order (training, validation, test; each by ID).
func CarveValidation(items []Item, fraction float64, seed uint64) ([]Item, error) {
	if fraction < 0 || fraction >= 1 {
		return nil, fmt.Errorf("validation: %g, want a fraction in [0, 1)", fraction)
	}
	if fraction == 0 {
		return items, nil
	}
	var normals, anomalies []Entry
	for _, it := range items {
		if it.Split == "train" && it.Label == 0 {
			normals = append(normals, it.Entry)
		} else if it.Split == "train" {
			anomalies = append(anomalies, it.Entry)
		}
	}
	kn := int(math.Round(fraction * float64(len(normals))))
	if kn < 1 || len(normals)-kn < 2 {
		return nil, fmt.Errorf("validation: %g of %d training normals holds out %d, want between 1 and %d",
			fraction, len(normals), kn, len(normals)-2)
	}
	ka := min(int(fraction*float64(len(anomalies))), len(anomalies)-1)
	held := map[string]bool{}
	for _, e := range shuffled(normals, seed, streamValidation)[:kn] {
		held[e.ID] = true
	}
	for _, e := range shuffled(anomalies, seed, streamValidation)[:max(ka, 0)] {
		held[e.ID] = true
	}
	var train, val, test []Item
	for _, it := range items {
		switch {
		case it.Split == "train" && held[it.ID]:
			it.Split = Validation
			val = append(val, it)
		case it.Split == "train":
			train = append(train, it)
		default:
			test = append(test, it)
		}
	}
	return append(append(train, val...), test...), nil
}
