package dataset

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pipe-ahl/pipe/ahl/imgs"
)

// writeTree writes a small MVTec-layout dataset of 8 x 8 grey PNGs: counts maps a folder
// (train/good, test/good, test/<class>) to its number of images.
func writeTree(t *testing.T, counts map[string]int) string {
	t.Helper()
	root := t.TempDir()
	for dir, n := range counts {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			m := image.NewGray(image.Rect(0, 0, 8, 8))
			m.SetGray(i%8, 0, color.Gray{Y: uint8(10 * i)})
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

var tree = map[string]int{"train/good": 12, "test/good": 4, "test/crack": 12, "test/hole": 6, "test/scratch": 5}

// tally counts items per "split/class/label".
func tally(items []Item) map[string]int {
	out := map[string]int{}
	for _, it := range items {
		out[it.Split+"/"+it.Class+"/"+string(rune('0'+it.Label))]++
	}
	return out
}

func equalCounts(t *testing.T, name string, got, want map[string]int) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %s = %d, want %d (all: %v)", name, k, got[k], v, got)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok && v != 0 {
			t.Errorf("%s: unexpected %s = %d (all: %v)", name, k, v, got)
		}
	}
}

func TestOpenMVTec(t *testing.T) {
	root := writeTree(t, tree)
	// Non-image files and the ground_truth folder are not images of the dataset.
	must(t, os.WriteFile(filepath.Join(root, "test", "crack", "README.txt"), []byte("x"), 0o644))
	must(t, os.MkdirAll(filepath.Join(root, "ground_truth", "crack"), 0o755))
	p, err := OpenMVTec(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.TrainNormals) != 12 || len(p.TestNormals) != 4 {
		t.Fatalf("normals %d/%d, want 12/4", len(p.TrainNormals), len(p.TestNormals))
	}
	if got := strings.Join(p.Classes(), ","); got != "crack,hole,scratch" {
		t.Fatalf("classes %s", got)
	}
	if len(p.Anomalies["crack"]) != 12 || p.Anomalies["hole"][0].ID != "test/hole/a0.png" {
		t.Fatalf("crack %d, first hole %+v", len(p.Anomalies["crack"]), p.Anomalies["hole"][0])
	}
	data, err := p.Read("test/hole/a3.png")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := imgs.Decode(data); err != nil {
		t.Fatal(err)
	}
}

func TestProtocolCounts(t *testing.T) {
	p, err := OpenMVTec(writeTree(t, tree))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		proto Protocol
		want  map[string]int
	}{
		{"general M=1", Protocol{Name: General, Anomalies: 1}, nil},
		{"general M=10", Protocol{Name: General, Anomalies: 10}, nil},
		{"hard crack M=1", Protocol{Name: Hard, SeenClass: "crack", Anomalies: 1},
			map[string]int{"train/good/0": 12, "train/crack/1": 1, "test/good/0": 4, "test/hole/1": 6, "test/scratch/1": 5}},
		{"hard crack M=10", Protocol{Name: Hard, SeenClass: "crack", Anomalies: 10},
			map[string]int{"train/good/0": 12, "train/crack/1": 10, "test/good/0": 4, "test/hole/1": 6, "test/scratch/1": 5}},
		{"hard scratch M=5", Protocol{Name: Hard, SeenClass: "scratch", Anomalies: 5},
			map[string]int{"train/good/0": 12, "train/scratch/1": 5, "test/good/0": 4, "test/hole/1": 6, "test/crack/1": 12}},
	}
	for _, c := range cases {
		items, err := c.proto.Assign(p, 42)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := tally(items)
		if c.want != nil {
			equalCounts(t, c.name, got, c.want)
		} else {
			// General: M training anomalies from any class, all 23 anomalies used once.
			var trainAnom, testAnom int
			for k, v := range got {
				if strings.HasSuffix(k, "/1") {
					if strings.HasPrefix(k, "train/") {
						trainAnom += v
					} else {
						testAnom += v
					}
				}
			}
			if trainAnom != c.proto.Anomalies || trainAnom+testAnom != 23 || got["train/good/0"] != 12 || got["test/good/0"] != 4 {
				t.Errorf("%s: %v", c.name, got)
			}
		}
		// Training images come first, each split sorted by ID, and no image twice.
		seen := map[string]bool{}
		for i, it := range items {
			if seen[it.ID] {
				t.Fatalf("%s: %s twice", c.name, it.ID)
			}
			seen[it.ID] = true
			if i > 0 {
				prev := items[i-1]
				if prev.Split == "test" && it.Split == "train" || prev.Split == it.Split && prev.ID >= it.ID {
					t.Fatalf("%s: order %s/%s before %s/%s", c.name, prev.Split, prev.ID, it.Split, it.ID)
				}
			}
		}
	}
}

// trainAnomalies returns the IDs of the training anomalies.
func trainAnomalies(items []Item) string {
	var ids []string
	for _, it := range items {
		if it.Split == "train" && it.Label == 1 {
			ids = append(ids, it.ID)
		}
	}
	return strings.Join(ids, " ")
}

func TestProtocolSeeded(t *testing.T) {
	p, err := OpenMVTec(writeTree(t, tree))
	if err != nil {
		t.Fatal(err)
	}
	proto := Protocol{Name: General, Anomalies: 3}
	a, _ := proto.Assign(p, 1)
	b, _ := proto.Assign(p, 1)
	if trainAnomalies(a) != trainAnomalies(b) {
		t.Fatal("same seed drew different anomalies")
	}
	distinct := map[string]bool{}
	for seed := uint64(0); seed < 10; seed++ {
		c, _ := proto.Assign(p, seed)
		distinct[trainAnomalies(c)] = true
	}
	if len(distinct) < 5 {
		t.Fatalf("10 seeds drew only %d distinct anomaly sets", len(distinct))
	}
	// The draw follows docs/algorithm.md: sorted by path, shuffled with the seed, first M.
	all := append(append(append([]Entry{}, p.Anomalies["crack"]...), p.Anomalies["hole"]...), p.Anomalies["scratch"]...)
	want := shuffled(all, 1, streamAnomalies)[:3]
	got := strings.Fields(trainAnomalies(a))
	wantIDs := map[string]bool{want[0].ID: true, want[1].ID: true, want[2].ID: true}
	for _, id := range got {
		if !wantIDs[id] {
			t.Fatalf("training anomalies %v, want the first three of the shuffled list %v", got, want)
		}
	}
}

func TestProtocolNoTestGood(t *testing.T) {
	p, err := OpenMVTec(writeTree(t, map[string]int{"train/good": 20, "test/crack": 4, "test/hole": 4}))
	if err != nil {
		t.Fatal(err)
	}
	items, err := Protocol{Name: General, Anomalies: 2, NormalTestFraction: 0.25}.Assign(p, 7)
	if err != nil {
		t.Fatal(err)
	}
	got := tally(items)
	if got["train/good/0"] != 15 || got["test/good/0"] != 5 {
		t.Fatalf("3:1 split of 20 normals: %v", got)
	}
	other, _ := Protocol{Name: General, Anomalies: 2, NormalTestFraction: 0.25}.Assign(p, 8)
	testNormals := func(items []Item) string {
		var s []string
		for _, it := range items {
			if it.Split == "test" && it.Label == 0 {
				s = append(s, it.ID)
			}
		}
		return strings.Join(s, " ")
	}
	if testNormals(items) == testNormals(other) {
		t.Error("seeds 7 and 8 chose the same test normals")
	}
	if _, err := (Protocol{Name: General, Anomalies: 2, NormalTestFraction: 0}).Assign(p, 7); err == nil {
		t.Error("fraction 0 without test/good gave no error")
	}
}

func TestErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "carpet")
	_, err := OpenMVTec(missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "MVTec") || !strings.Contains(err.Error(), "make demo") {
		t.Errorf("missing root: %v", err)
	}
	if _, err := FingerprintMVTec(missing); err == nil {
		t.Error("fingerprint of a missing root gave no error")
	}
	empty := writeTree(t, map[string]int{"train/good": 3, "test/crack": 2})
	must(t, os.MkdirAll(filepath.Join(empty, "test", "hole"), 0o755))
	if _, err := OpenMVTec(empty); err == nil || !strings.Contains(err.Error(), "test/hole") {
		t.Errorf("empty class: %v", err)
	}
	noTrain := writeTree(t, map[string]int{"test/crack": 2})
	if _, err := OpenMVTec(noTrain); err == nil || !strings.Contains(err.Error(), "train/good") {
		t.Errorf("no train/good: %v", err)
	}

	p, err := OpenMVTec(writeTree(t, tree))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		proto Protocol
		want  string
	}{
		{Protocol{Name: General, Anomalies: 23}, "23 anomaly images"},
		{Protocol{Name: General, Anomalies: 50}, "M = 50"},
		{Protocol{Name: Hard, SeenClass: "hole", Anomalies: 7}, "only 6 images"},
		{Protocol{Name: Hard, SeenClass: "dent", Anomalies: 1}, "valid: crack, hole, scratch"},
		{Protocol{Name: General, SeenClass: "hole", Anomalies: 1}, "only protocol hard"},
		{Protocol{Name: "open", Anomalies: 1}, "want general or hard"},
		{Protocol{Name: General, Anomalies: 0}, "at least 1"},
	} {
		if _, err := c.proto.Assign(p, 1); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", c.proto, err, c.want)
		}
	}
	one, err := OpenMVTec(writeTree(t, map[string]int{"train/good": 3, "test/good": 1, "test/bleed": 4}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := (Protocol{Name: Hard, SeenClass: "bleed", Anomalies: 1}).Assign(one, 1); err == nil || !strings.Contains(err.Error(), "one anomaly class") {
		t.Errorf("hard with one class: %v", err)
	}
}

func TestFingerprintMVTec(t *testing.T) {
	root := writeTree(t, tree)
	a, err := FingerprintMVTec(root)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := FingerprintMVTec(root); a != b {
		t.Fatal("fingerprint not stable")
	}
	// A file outside train/ and test/ does not count; a touched image does.
	must(t, os.WriteFile(filepath.Join(root, "license.txt"), []byte("x"), 0o644))
	if b, _ := FingerprintMVTec(root); a != b {
		t.Fatal("a file outside train/test changed the fingerprint")
	}
	img := filepath.Join(root, "test", "hole", "a1.png")
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(img, later, later); err != nil {
		t.Fatal(err)
	}
	b, _ := FingerprintMVTec(root)
	if a == b {
		t.Fatal("changing a file's modification time left the fingerprint unchanged")
	}
	must(t, os.Rename(img, filepath.Join(root, "test", "hole", "z1.png")))
	if c, _ := FingerprintMVTec(root); c == b {
		t.Fatal("renaming a file left the fingerprint unchanged")
	}
}

func TestFashion(t *testing.T) {
	p, err := OpenFashion(DefaultFashionNormal)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.TrainNormals) != 300 || len(p.TestNormals) != 100 {
		t.Fatalf("normals %d/%d, want 300/100", len(p.TrainNormals), len(p.TestNormals))
	}
	classes := p.Classes()
	if len(classes) != 9 {
		t.Fatalf("classes %v, want the nine others", classes)
	}
	for _, c := range classes {
		if c == DefaultFashionNormal || len(p.Anomalies[c]) != 100 {
			t.Fatalf("class %s has %d images", c, len(p.Anomalies[c]))
		}
	}
	if e := p.Anomalies["t-shirt/top"][3]; e.ID != "test/t-shirt_top/0003.png" || e.Class != "t-shirt/top" {
		t.Fatalf("entry %+v", e)
	}
	data, err := p.Read(p.Anomalies["bag"][0].ID)
	if err != nil {
		t.Fatal(err)
	}
	img, err := imgs.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	var sum float32
	for _, v := range img.Pix {
		sum += v
	}
	if img.H != 28 || img.W != 28 || sum == 0 {
		t.Fatalf("bag image %dx%d, sum %v", img.H, img.W, sum)
	}
	items, err := Protocol{Name: Hard, SeenClass: "bag", Anomalies: 10}.Assign(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	got := tally(items)
	if got["train/good/0"] != 300 || got["train/bag/1"] != 10 || got["test/bag/1"] != 0 || got["test/sandal/1"] != 100 {
		t.Fatalf("hard bag: %v", got)
	}
	if _, err := OpenFashion("hat"); err == nil || !strings.Contains(err.Error(), "ankle boot") {
		t.Fatalf("unknown normal class: %v", err)
	}
	fp, err := FingerprintFashion()
	if err != nil || len(fp) != 64 {
		t.Fatalf("fingerprint %q, %v", fp, err)
	}
}

// TestSymlinkedClass checks that a class folder linked from elsewhere is listed and
// fingerprinted like a real one.
func TestSymlinkedClass(t *testing.T) {
	root := writeTree(t, map[string]int{"train/good": 3, "test/crack": 2})
	elsewhere := writeTree(t, map[string]int{"dent": 4})
	if err := os.Symlink(filepath.Join(elsewhere, "dent"), filepath.Join(root, "test", "dent")); err != nil {
		t.Skipf("no symbolic links here: %v", err)
	}
	p, err := OpenMVTec(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Anomalies["dent"]) != 4 {
		t.Fatalf("linked class dent has %d images, want 4", len(p.Anomalies["dent"]))
	}
	a, err := FingerprintMVTec(root)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	must(t, os.Chtimes(filepath.Join(elsewhere, "dent", "a1.png"), later, later))
	if b, _ := FingerprintMVTec(root); a == b {
		t.Fatal("touching an image in the linked class left the fingerprint unchanged")
	}
}

func TestCarveValidation(t *testing.T) {
	p, err := OpenMVTec(writeTree(t, tree))
	if err != nil {
		t.Fatal(err)
	}
	items, err := Protocol{Name: Hard, SeenClass: "crack", Anomalies: 10}.Assign(p, 42)
	if err != nil {
		t.Fatal(err)
	}
	same, err := CarveValidation(items, 0, 42)
	if err != nil || len(same) != len(items) || tally(same)["val/good/0"] != 0 {
		t.Fatalf("fraction 0: %v, %v; want items unchanged", tally(same), err)
	}
	got, err := CarveValidation(items, 0.25, 42)
	if err != nil {
		t.Fatal(err)
	}
	// 12 normals: round(3) held out; 10 crack: floor(2.5) = 2; the test split is untouched.
	equalCounts(t, "validation 0.25", tally(got), map[string]int{"train/good/0": 9, "val/good/0": 3,
		"train/crack/1": 8, "val/crack/1": 2, "test/good/0": 4, "test/hole/1": 6, "test/scratch/1": 5})
	for i, it := range got {
		if i > 0 && got[i-1].Split == "test" && it.Split != "test" {
			t.Fatalf("item %d (%s) is %s after a test item; want training, validation, test", i, it.ID, it.Split)
		}
	}
	again, _ := CarveValidation(items, 0.25, 42)
	other, _ := CarveValidation(items, 0.25, 7)
	valIDs := func(s []Item) (ids []string) {
		for _, it := range s {
			if it.Split == Validation {
				ids = append(ids, it.ID)
			}
		}
		return ids
	}
	if strings.Join(valIDs(again), " ") != strings.Join(valIDs(got), " ") {
		t.Errorf("same seed, different validation split: %v vs %v", valIDs(again), valIDs(got))
	}
	if strings.Join(valIDs(other), " ") == strings.Join(valIDs(got), " ") {
		t.Errorf("seeds 42 and 7 hold out the same images %v", valIDs(got))
	}

	// M = 1 keeps its one anomaly in training.
	one, _ := Protocol{Name: Hard, SeenClass: "crack", Anomalies: 1}.Assign(p, 42)
	got, err = CarveValidation(one, 0.5, 42)
	if err != nil || tally(got)["train/crack/1"] != 1 || tally(got)["val/good/0"] != 6 {
		t.Errorf("M = 1, fraction 0.5: %v, %v; want the anomaly in training and 6 validation normals", tally(got), err)
	}
	for _, f := range []float64{-0.1, 1, 0.96} {
		if _, err := CarveValidation(items, f, 42); err == nil || !strings.Contains(err.Error(), "validation") {
			t.Errorf("fraction %g: err %v, want a validation error", f, err)
		}
	}
}

// must fails the test at once when a fixture step fails.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
