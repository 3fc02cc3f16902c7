package stages

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/artifacts"
	"github.com/pipe-ahl/pipe/kind"
)

// writeMVTecTree writes 8 x 8 grey PNGs in the MVTec layout under a temporary root; counts
// maps a folder (train/good, test/<class>) to its number of images.
func writeMVTecTree(t *testing.T, counts map[string]int) string {
	t.Helper()
	root := t.TempDir()
	for dir, n := range counts {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			m := image.NewGray(image.Rect(0, 0, 8, 8))
			m.SetGray(i%8, i%5, color.Gray{Y: uint8(20 * i)})
			var buf bytes.Buffer
			if err := png.Encode(&buf, m); err != nil {
				t.Fatal(err)
			}
			name := filepath.Join(root, dir, string(rune('a'+i/10))+string(rune('0'+i%10))+".png")
			if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return root
}

var ingestTree = map[string]int{"train/good": 12, "test/good": 4, "test/crack": 12, "test/hole": 6, "test/scratch": 5}

// ingestParams returns defaults with the changes applied.
func ingestParams(change func(p *IngestParams)) *IngestParams {
	d, _ := lookup("ingest")
	p := d.Params().(*IngestParams)
	change(p)
	return p
}

// runIngestFor validates p and runs the stage, returning the env.
func runIngestFor(t *testing.T, p *IngestParams, seed uint64) (*kind.Env, error) {
	t.Helper()
	if err := p.Validate(); err != nil {
		return nil, err
	}
	env := &kind.Env{Stage: "ingest", Params: p, Seed: seed, Log: &bytes.Buffer{}, Progress: func(int, int) {}}
	return env, runIngest(context.Background(), env)
}

// imagesCounts reads the images table and counts rows per "split/class/label".
func imagesCounts(t *testing.T, env *kind.Env) (map[string]int, [][]byte, []string) {
	t.Helper()
	rec, ok := env.Outputs()["images"]
	if !ok {
		t.Fatal("no images output")
	}
	ids, e1 := artifacts.StringCol(rec, "id")
	splits, e2 := artifacts.StringCol(rec, "split")
	labels, e3 := artifacts.Int64Col(rec, "label")
	classes, e4 := artifacts.StringCol(rec, "class")
	data, e5 := artifacts.BinaryCol(rec, "bytes")
	for _, err := range []error{e1, e2, e3, e4, e5} {
		if err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]int{}
	for i := range ids {
		out[splits[i]+"/"+classes[i]+"/"+string(rune('0'+labels[i]))]++
	}
	return out, data, ids
}

func TestIngestMVTecProtocols(t *testing.T) {
	root := writeMVTecTree(t, ingestTree)
	cases := []struct {
		name string
		p    func(p *IngestParams)
		want map[string]int
	}{
		{"hard crack M=1", func(p *IngestParams) { p.Protocol, p.SeenClass, p.Anomalies = "hard", "crack", 1 },
			map[string]int{"train/good/0": 12, "train/crack/1": 1, "test/good/0": 4, "test/hole/1": 6, "test/scratch/1": 5}},
		{"hard crack M=10", func(p *IngestParams) { p.Protocol, p.SeenClass, p.Anomalies = "hard", "crack", 10 },
			map[string]int{"train/good/0": 12, "train/crack/1": 10, "test/good/0": 4, "test/hole/1": 6, "test/scratch/1": 5}},
		{"general M=1", func(p *IngestParams) { p.Anomalies = 1 }, nil},
		{"general M=10", func(p *IngestParams) { p.Anomalies = 10 }, nil},
	}
	for _, c := range cases {
		p := ingestParams(func(p *IngestParams) { p.Format, p.Root = "mvtec", root; c.p(p) })
		env, err := runIngestFor(t, p, 42)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, data, ids := imagesCounts(t, env)
		if c.want != nil {
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("%s: %s = %d, want %d (%v)", c.name, k, got[k], v, got)
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("%s: groups %v, want %v", c.name, got, c.want)
			}
		} else {
			train := got["train/crack/1"] + got["train/hole/1"] + got["train/scratch/1"]
			test := got["test/crack/1"] + got["test/hole/1"] + got["test/scratch/1"]
			if train != p.Anomalies || train+test != 23 || got["train/good/0"] != 12 || got["test/good/0"] != 4 {
				t.Errorf("%s: %v", c.name, got)
			}
		}
		// The bytes are the files' bytes.
		for i, id := range ids {
			want, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(id)))
			if err != nil || !bytes.Equal(data[i], want) {
				t.Fatalf("%s: row %s: bytes differ from the file (%v)", c.name, id, err)
			}
		}
	}
}

// TestIngestDeterministic checks that the same seed gives the same table and another seed
// other training anomalies.
func TestIngestDeterministic(t *testing.T) {
	root := writeMVTecTree(t, ingestTree)
	ids := func(seed uint64) string {
		env, err := runIngestFor(t, ingestParams(func(p *IngestParams) { p.Format, p.Root, p.Anomalies = "mvtec", root, 3 }), seed)
		if err != nil {
			t.Fatal(err)
		}
		id, _ := artifacts.StringCol(env.Outputs()["images"], "id")
		return strings.Join(id, " ")
	}
	if a, b := ids(1), ids(1); a != b {
		t.Fatal("same seed, different tables")
	}
	if ids(1) == ids(2) && ids(1) == ids(3) {
		t.Fatal("three seeds gave the same tables")
	}
}

// hugeHeaderPNG returns an 8 x 8 grey PNG whose header is patched to say w x h pixels.
func hugeHeaderPNG(t *testing.T, w, h uint32) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 8, 8))); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	// IHDR: length (4), "IHDR" (4), width (4), height (4), ..., CRC over type and data.
	const ihdr = 8
	binary.BigEndian.PutUint32(data[ihdr+8:], w)
	binary.BigEndian.PutUint32(data[ihdr+12:], h)
	binary.BigEndian.PutUint32(data[ihdr+8+13:], crc32.ChecksumIEEE(data[ihdr+4:ihdr+8+13]))
	return data
}

func TestIngestErrors(t *testing.T) {
	root := writeMVTecTree(t, ingestTree)
	emptyClass := writeMVTecTree(t, map[string]int{"train/good": 3, "test/crack": 2})
	if err := os.MkdirAll(filepath.Join(emptyClass, "test", "hole"), 0o755); err != nil {
		t.Fatal(err)
	}
	corrupt := writeMVTecTree(t, ingestTree)
	if err := os.WriteFile(filepath.Join(corrupt, "test", "hole", "a2.png"), []byte("\x89PNG\r\n\x1a\nbroken"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A PNG whose header says 9000 x 8000 (72 M pixels, over the 8192 x 8192 limit).
	huge := writeMVTecTree(t, ingestTree)
	if err := os.WriteFile(filepath.Join(huge, "train", "good", "a3.png"), hugeHeaderPNG(t, 9000, 8000), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "carpet")
	cases := []struct {
		name string
		p    func(p *IngestParams)
		want []string
	}{
		{"missing root", func(p *IngestParams) { p.Root = missing }, []string{missing, "MVTec", "make demo"}},
		{"empty class", func(p *IngestParams) { p.Root = emptyClass }, []string{"test/hole", "no PNG or JPEG"}},
		{"M larger than the class", func(p *IngestParams) { p.Protocol, p.SeenClass, p.Anomalies = "hard", "hole", 7 }, []string{"M = 7", "hole", "6 images"}},
		{"M larger than the pool", func(p *IngestParams) { p.Anomalies = 40 }, []string{"M = 40", "23 anomaly images"}},
		{"corrupt image", func(p *IngestParams) { p.Root, p.Anomalies = corrupt, 1 }, []string{"test/hole/a2.png", corrupt}},
		{"image over the pixel limit", func(p *IngestParams) { p.Root = huge }, []string{"train/good/a3.png", "9000x8000", "8192 x 8192"}},
		{"unknown seen class", func(p *IngestParams) { p.Protocol, p.SeenClass = "hard", "dent" }, []string{`"dent"`, "crack, hole, scratch"}},
	}
	for _, c := range cases {
		p := ingestParams(func(p *IngestParams) { p.Format, p.Root = "mvtec", root; c.p(p) })
		env, err := runIngestFor(t, p, 1)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %q", c.name, err, w)
			}
		}
		if env != nil && len(env.Outputs()) != 0 {
			t.Errorf("%s: an output was written despite the error", c.name)
		}
	}
	// The missing root also fails the fingerprint, before the stage would run.
	if _, err := ingestParams(func(p *IngestParams) { p.Format, p.Root = "mvtec", missing }).Fingerprint(context.Background()); err == nil ||
		!strings.Contains(err.Error(), "make demo") {
		t.Errorf("fingerprint of a missing root: %v", err)
	}
}

func TestIngestValidate(t *testing.T) {
	cases := []struct {
		p    func(p *IngestParams)
		want string
	}{
		{func(p *IngestParams) { p.Format = "coco" }, "format"},
		{func(p *IngestParams) { p.Format = "mvtec" }, "root"},
		{func(p *IngestParams) { p.Root = "data" }, "root"},
		{func(p *IngestParams) { p.Protocol = "open" }, "protocol"},
		{func(p *IngestParams) { p.Protocol = "hard" }, "seen_class"},
		{func(p *IngestParams) { p.SeenClass = "bag" }, "only protocol hard"},
		{func(p *IngestParams) { p.Protocol, p.SeenClass = "hard", "hat" }, "ankle boot"},
		{func(p *IngestParams) { p.Protocol, p.SeenClass = "hard", "trouser" }, "normal class"},
		{func(p *IngestParams) { p.NormalClass = "hat" }, "normal_class"},
		{func(p *IngestParams) { p.Format, p.Root, p.NormalClass = "mvtec", "x", "bag" }, "normal_class"},
		{func(p *IngestParams) { p.Anomalies = 0 }, "anomalies"},
		{func(p *IngestParams) { p.NormalTestFraction = 1 }, "normal_test_fraction"},
		{func(p *IngestParams) { p.Validation = 1 }, "validation: 1"},
		{func(p *IngestParams) { p.Validation = -0.1 }, "validation: -0.1"},
	}
	for i, c := range cases {
		err := ingestParams(c.p).Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("case %d: error %v, want one mentioning %q", i, err, c.want)
		}
	}
	if err := ingestParams(func(*IngestParams) {}).Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
}

func TestIngestEmbedded(t *testing.T) {
	p := ingestParams(func(p *IngestParams) { p.Protocol, p.SeenClass, p.Anomalies = "hard", "bag", 10 })
	env, err := runIngestFor(t, p, 5)
	if err != nil {
		t.Fatal(err)
	}
	got, data, _ := imagesCounts(t, env)
	if got["train/good/0"] != 300 || got["train/bag/1"] != 10 || got["test/good/0"] != 100 || got["test/bag/1"] != 0 ||
		got["test/sandal/1"] != 100 || got["test/t-shirt/top/1"] != 100 || len(got) != 11 {
		t.Fatalf("counts %v", got)
	}
	img, err := imgs.Decode(data[len(data)-1])
	if err != nil || img.H != 28 || img.W != 28 {
		t.Fatalf("last image: %v, %dx%d", err, img.H, img.W)
	}
	a, err1 := p.Fingerprint(context.Background())
	b, err2 := ingestParams(func(p *IngestParams) { p.NormalClass = "bag" }).Fingerprint(context.Background())
	if err1 != nil || err2 != nil || a != b || a == "" {
		t.Fatalf("embedded fingerprints %q %q (%v %v): want one stable digest", a, b, err1, err2)
	}
}

func TestIngestFingerprintChanges(t *testing.T) {
	root := writeMVTecTree(t, ingestTree)
	p := ingestParams(func(p *IngestParams) { p.Format, p.Root = "mvtec", root })
	a, err := p.Fingerprint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "test", "hole", "z9.png"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := p.Fingerprint(context.Background()); err != nil || a == b {
		t.Fatalf("adding an image: fingerprint %q, %v; want one other than %q", b, err, a)
	}
}
