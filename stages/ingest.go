package stages

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/pipe-ahl/pipe/ahl/dataset"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// ingestVersion is the ingest stage's code version (part of its cache key).
const ingestVersion = 1

// Dataset formats of the ingest stage.
const (
	FormatMVTec    = "mvtec"
	FormatEmbedded = "embedded"
)

// IngestParams configures the ingest stage: which dataset, and which protocol draws the
// labelled training anomalies (docs/algorithm.md, "The problem: open-set protocols").
type IngestParams struct {
	// Format is mvtec (a folder in the MVTec AD layout) or embedded (the Fashion-MNIST
	// subset compiled into pipe).
	Format string `json:"format"`
	// Root is the dataset folder (mvtec only): root/{train/good, test/good, test/<class>}.
	Root string `json:"root"`
	// Protocol is general (anomalies from all classes) or hard (from seen_class only; the
	// seen class is then absent from the test set).
	Protocol string `json:"protocol"`
	// SeenClass is the hard protocol's training anomaly class.
	SeenClass string `json:"seen_class"`
	// Anomalies is M, the number of labelled training anomalies (paper: 1 or 10).
	Anomalies int `json:"anomalies"`
	// NormalTestFraction is the share of normals held out for testing when the dataset has
	// no test/good folder (0.25: the benchmarks' 3:1 split).
	NormalTestFraction float64 `json:"normal_test_fraction"`
	// NormalClass is the embedded set's normal class; "" means dataset.DefaultFashionNormal
	// (trouser). The other nine classes are the anomaly classes.
	NormalClass string `json:"normal_class"`
	// Validation is the fraction of the training split held out as split val (0: none):
	// that share of the training normals and of the M labelled anomalies (at least one stays
	// in training), drawn with the seed (dataset.CarveValidation). No stage trains on val;
	// train scores it to give each model a validation AUROC, so that choices can be made
	// without the test labels.
	Validation float64 `json:"validation,omitempty"`
}

func init() {
	register(kind.Definition{
		Kind:    "ingest",
		Version: ingestVersion,
		Params: func() any {
			return &IngestParams{Format: FormatEmbedded, Protocol: dataset.General, Anomalies: 10, NormalTestFraction: 0.25}
		},
		Outputs: []string{"images"},
		Run:     runIngest,
	})
}

// Validate checks what can be checked without reading the disk.
func (p *IngestParams) Validate() error {
	switch p.Format {
	case FormatMVTec:
		if p.Root == "" {
			return fmt.Errorf("root: required for format mvtec (the folder holding train/ and test/)")
		}
		if p.NormalClass != "" {
			return fmt.Errorf("normal_class %q: only format embedded uses it (mvtec's normals are train/good)", p.NormalClass)
		}
	case FormatEmbedded:
		if p.Root != "" {
			return fmt.Errorf("root %q: format embedded reads no folder (set format: mvtec to use one)", p.Root)
		}
		if err := dataset.ValidFashionClass(p.normalClass()); err != nil {
			return fmt.Errorf("normal_class: %w", err)
		}
	default:
		return fmt.Errorf("format %q, want %s or %s", p.Format, FormatMVTec, FormatEmbedded)
	}
	switch p.Protocol {
	case dataset.General:
		if p.SeenClass != "" {
			return fmt.Errorf("seen_class %q: only protocol hard uses a seen class", p.SeenClass)
		}
	case dataset.Hard:
		if p.SeenClass == "" {
			return fmt.Errorf("seen_class: required for protocol hard")
		}
		if p.Format == FormatEmbedded {
			if err := dataset.ValidFashionClass(p.SeenClass); err != nil {
				return fmt.Errorf("seen_class: %w", err)
			}
			if p.SeenClass == p.normalClass() {
				return fmt.Errorf("seen_class %q is the normal class; pick one of the other nine", p.SeenClass)
			}
		}
	default:
		return fmt.Errorf("protocol %q, want %s or %s", p.Protocol, dataset.General, dataset.Hard)
	}
	if p.Anomalies < 1 {
		return fmt.Errorf("anomalies: %d, want at least 1 (the paper uses 1 or 10)", p.Anomalies)
	}
	if p.Validation < 0 || p.Validation >= 1 {
		return fmt.Errorf("validation: %g, want a fraction in [0, 1) of the training split (0: no validation split)", p.Validation)
	}
	if p.NormalTestFraction <= 0 || p.NormalTestFraction >= 1 {
		return fmt.Errorf("normal_test_fraction: %g, want a value in (0, 1)", p.NormalTestFraction)
	}
	return nil
}

func (p *IngestParams) normalClass() string {
	if p.NormalClass == "" {
		return dataset.DefaultFashionNormal
	}
	return p.NormalClass
}

// Fingerprint digests the dataset files the stage will read (relative path, size and
// modification time of every image), or the embedded set's bytes; the pipeline adds it to
// the cache key (stages.Fingerprinter).
func (p *IngestParams) Fingerprint(ctx context.Context) (string, error) {
	if p.Format == FormatMVTec {
		return dataset.FingerprintMVTec(p.Root)
	}
	return dataset.FingerprintFashion()
}

// open returns the dataset pool the params name.
func (p *IngestParams) open() (dataset.Pool, error) {
	if p.Format == FormatMVTec {
		return dataset.OpenMVTec(p.Root)
	}
	return dataset.OpenFashion(p.normalClass())
}

// runIngest lists the dataset, applies the protocol with the stage's seed, reads and decodes
// every chosen image (a corrupt one fails the stage, naming the file) and writes the images
// table with the encoded bytes, so no later stage reads the disk (stages/TABLES.md).
func runIngest(ctx context.Context, env *kind.Env) error {
	p, ok := env.Params.(*IngestParams)
	if !ok {
		return fmt.Errorf("params are %T, want *IngestParams", env.Params)
	}
	pool, err := p.open()
	if err != nil {
		return err
	}
	items, err := dataset.Protocol{
		Name: p.Protocol, SeenClass: p.SeenClass, Anomalies: p.Anomalies, NormalTestFraction: p.NormalTestFraction,
	}.Assign(pool, env.Seed)
	if err != nil {
		return err
	}
	if items, err = dataset.CarveValidation(items, p.Validation, env.Seed); err != nil {
		return fmt.Errorf("%s: %w", pool.Name, err)
	}
	data, err := readImages(ctx, env, pool, items)
	if err != nil {
		return err
	}
	rows := make([]tables.Image, len(items))
	for i, it := range items {
		rows[i] = tables.Image{ID: it.ID, Split: it.Split, Label: int64(it.Label), Class: it.Class, Bytes: data[i]}
	}
	if env.Log != nil {
		fmt.Fprintf(env.Log, "%s, protocol %s, M = %d: %s\n", pool.Name, p.Protocol, p.Anomalies, summarize(items))
	}
	return tables.WriteImages(env, rows)
}

// readImages reads the bytes of every item and decodes them once, in parallel, to catch
// corrupt and oversized files here rather than in a later stage (imgs.Check: without the
// float image, so a huge photo costs only its decoder's 8-bit image).
func readImages(ctx context.Context, env *kind.Env, pool dataset.Pool, items []dataset.Item) ([][]byte, error) {
	data := make([][]byte, len(items))
	errs := make([]error, len(items))
	next := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				b, err := pool.Read(items[i].ID)
				if err == nil {
					err = imgs.Check(b)
				}
				if err != nil {
					errs[i] = fmt.Errorf("image %s in %s: %w", items[i].ID, pool.Name, err)
				}
				data[i] = b
				mu.Lock()
				done++
				if env.Progress != nil {
					env.Progress(done, len(items))
				}
				mu.Unlock()
			}
		}()
	}
	var err error
feed:
	for i := range items {
		select {
		case next <- i:
		case <-ctx.Done():
			err = ctx.Err()
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	for _, e := range errs {
		if e != nil {
			return nil, e
		}
	}
	return data, nil
}

// summarize counts images per split and class, e.g. "train: good 12, crack 10; test: ...".
func summarize(items []dataset.Item) string {
	counts := map[string]map[string]int{}
	for _, it := range items {
		if counts[it.Split] == nil {
			counts[it.Split] = map[string]int{}
		}
		counts[it.Split][it.Class]++
	}
	var parts []string
	for _, split := range []string{"train", dataset.Validation, "test"} {
		if split == dataset.Validation && counts[split] == nil {
			continue
		}
		var cs []string
		for c := range counts[split] {
			cs = append(cs, c)
		}
		sort.Strings(cs)
		var s []string
		for _, c := range cs {
			s = append(s, fmt.Sprintf("%s %d", c, counts[split][c]))
		}
		parts = append(parts, split+": "+strings.Join(s, ", "))
	}
	return strings.Join(parts, "; ")
}

// ExternalPaths implements kind.Externals: an mvtec ingest reads its dataset folder.
func (p *IngestParams) ExternalPaths() []kind.ExternalPath {
	if p.Format != FormatMVTec || p.Root == "" {
		return nil
	}
	return []kind.ExternalPath{{Param: "root", Path: p.Root, Dir: true}}
}
