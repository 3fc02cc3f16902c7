package dataset

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"image"
	"image/png"
	"io"
	"strings"
	"sync"
)

// FashionClasses are Fashion-MNIST's class names, indexed by label.
var FashionClasses = []string{"t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"}

// DefaultFashionNormal is the embedded set's default normal class. Trousers are a compact,
// well-defined normal class whose anomaly classes range from easy (bags, footwear) to close
// (dresses), so a short demo run shows both clear and hard cases; the upper-body classes
// (t-shirt/top, pullover, coat, shirt) are near duplicates of one another, which makes any of
// them a much harder, noisier default.
const DefaultFashionNormal = "trouser"

//go:embed fashionmnist/*.gz
var fashionFS embed.FS

// fashionSet is the decoded embedded subset (see fashionmnist/README.md).
type fashionSet struct {
	train, test []fashionImage
	digest      string
}

type fashionImage struct {
	label int
	pix   []byte // 28 x 28 grey
}

var fashionOnce = sync.OnceValues(loadFashion)

func loadFashion() (*fashionSet, error) {
	s := &fashionSet{}
	h := sha256.New()
	for _, part := range []struct {
		prefix string
		dst    *[]fashionImage
	}{{"train", &s.train}, {"t10k", &s.test}} {
		images, dims, err := readEmbeddedIDX("fashionmnist/"+part.prefix+"-images-idx3-ubyte.gz", 0x803, h)
		if err != nil {
			return nil, err
		}
		labels, _, err := readEmbeddedIDX("fashionmnist/"+part.prefix+"-labels-idx1-ubyte.gz", 0x801, h)
		if err != nil {
			return nil, err
		}
		n, size := int(dims[0]), int(dims[1]*dims[2])
		if len(images) != n*size || len(labels) != n {
			return nil, fmt.Errorf("embedded fashion-mnist %s: %d labels, %d image bytes for %d images", part.prefix, len(labels), len(images), n)
		}
		for i := 0; i < n; i++ {
			*part.dst = append(*part.dst, fashionImage{label: int(labels[i]), pix: images[i*size : (i+1)*size]})
		}
	}
	s.digest = hex.EncodeToString(h.Sum(nil))
	return s, nil
}

// readEmbeddedIDX decompresses an embedded IDX file, hashes its raw bytes into h and returns
// the payload and dimensions.
func readEmbeddedIDX(name string, magic uint32, h io.Writer) ([]byte, []uint32, error) {
	f, err := fashionFS.Open(name)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = f.Close() }() // an embedded file: nothing to flush
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded %s: %w", name, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded %s: %w", name, err)
	}
	h.Write(data) //nolint:errcheck // hash.Hash.Write never fails
	nd := int(magic & 0xff)
	if len(data) < 4+4*nd || binary.BigEndian.Uint32(data) != magic {
		return nil, nil, fmt.Errorf("embedded %s: not an IDX file with magic %#x", name, magic)
	}
	dims := make([]uint32, nd)
	for i := range dims {
		dims[i] = binary.BigEndian.Uint32(data[4+4*i:])
	}
	return data[4+4*nd:], dims, nil
}

// FashionClassDir is the folder name of a class in IDs: "t-shirt/top" becomes "t-shirt_top".
func FashionClassDir(class string) string { return strings.ReplaceAll(class, "/", "_") }

// validFashion reports an error listing the classes when class is not one of them.
func validFashion(field, class string) error {
	for _, c := range FashionClasses {
		if c == class {
			return nil
		}
	}
	return fmt.Errorf("%s %q is not a Fashion-MNIST class (valid: %s)", field, class, strings.Join(FashionClasses, ", "))
}

// ValidFashionClass reports an error naming the valid classes when class is not one.
func ValidFashionClass(class string) error { return validFashion("class", class) }

// OpenFashion returns the embedded Fashion-MNIST subset as a pool in the MVTec layout: the
// 300 training images of normalClass are train/good, its 100 test images test/good, and
// the 100 test images of each other class form that anomaly class (IDs like
// test/sandal/0042.png, numbered within the class).
func OpenFashion(normalClass string) (Pool, error) {
	if err := validFashion("normal_class", normalClass); err != nil {
		return Pool{}, err
	}
	set, err := fashionOnce()
	if err != nil {
		return Pool{}, err
	}
	normal := -1
	for i, c := range FashionClasses {
		if c == normalClass {
			normal = i
		}
	}
	pix := map[string][]byte{}
	p := Pool{Name: "embedded fashion-mnist (normal class " + normalClass + ")", Anomalies: map[string][]Entry{}}
	count := map[string]int{}
	addImage := func(dir, class string, img fashionImage) Entry {
		id := fmt.Sprintf("%s/%04d.png", dir, count[dir])
		count[dir]++
		pix[id] = img.pix
		return Entry{ID: id, Class: class}
	}
	for _, img := range set.train {
		if img.label == normal {
			p.TrainNormals = append(p.TrainNormals, addImage("train/good", Good, img))
		}
	}
	for _, img := range set.test {
		if img.label == normal {
			p.TestNormals = append(p.TestNormals, addImage("test/good", Good, img))
			continue
		}
		c := FashionClasses[img.label]
		p.Anomalies[c] = append(p.Anomalies[c], addImage("test/"+FashionClassDir(c), c, img))
	}
	p.Read = func(id string) ([]byte, error) {
		px, ok := pix[id]
		if !ok {
			return nil, fmt.Errorf("embedded fashion-mnist: no image %s", id)
		}
		m := &image.Gray{Pix: px, Stride: 28, Rect: image.Rect(0, 0, 28, 28)}
		var buf bytes.Buffer
		if err := png.Encode(&buf, m); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	return p, nil
}

// FingerprintFashion digests the embedded subset's bytes.
func FingerprintFashion() (string, error) {
	set, err := fashionOnce()
	if err != nil {
		return "", err
	}
	return set.digest, nil
}
