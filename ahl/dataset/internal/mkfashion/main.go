// Command mkfashion writes the Fashion-MNIST subset that package dataset embeds: for each of
// the ten classes, the first 300 images of the training file and the first 100 of the test
// file (file order), as gzipped IDX files in ahl/dataset/fashionmnist. It reads the full set
// that Debian's dataset-fashion-mnist package installs:
//
//	apt-get install dataset-fashion-mnist
//	go run ./ahl/dataset/internal/mkfashion [-src /usr/share/datasets/fashion-mnist] [-dst ahl/dataset/fashionmnist]
//
// The output is deterministic (gzip level 9, no name or time in the header), so running it
// again reproduces the committed files byte for byte.
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Per-class counts: enough training normals for any class to serve as the normal one, and
// 100 test images per class (test normals or an anomaly class's pool).
const (
	trainPerClass = 300
	testPerClass  = 100
	classes       = 10
	side          = 28
)

func main() {
	src := flag.String("src", "/usr/share/datasets/fashion-mnist", "folder with the Fashion-MNIST idx .gz files")
	dst := flag.String("dst", "ahl/dataset/fashionmnist", "output folder")
	flag.Parse()
	for _, set := range []struct {
		prefix string
		per    int
	}{{"train", trainPerClass}, {"t10k", testPerClass}} {
		if err := subset(*src, *dst, set.prefix, set.per); err != nil {
			fmt.Fprintln(os.Stderr, "mkfashion:", err)
			os.Exit(1)
		}
	}
}

// subset keeps the first per images of every class from prefix-{images,labels} and writes
// them, in file order, to dst.
func subset(src, dst, prefix string, per int) error {
	images, err := readIDX(filepath.Join(src, prefix+"-images-idx3-ubyte.gz"), 0x803)
	if err != nil {
		return err
	}
	labels, err := readIDX(filepath.Join(src, prefix+"-labels-idx1-ubyte.gz"), 0x801)
	if err != nil {
		return err
	}
	if len(images) != len(labels)*side*side {
		return fmt.Errorf("%s: %d image bytes for %d labels", prefix, len(images), len(labels))
	}
	var keptImg, keptLab []byte
	count := make([]int, classes)
	for i, l := range labels {
		if int(l) >= classes {
			return fmt.Errorf("%s: label %d out of range", prefix, l)
		}
		if count[l] < per {
			count[l]++
			keptLab = append(keptLab, l)
			keptImg = append(keptImg, images[i*side*side:(i+1)*side*side]...)
		}
	}
	for c, n := range count {
		if n < per {
			return fmt.Errorf("%s: class %d has only %d images", prefix, c, n)
		}
	}
	n := uint32(len(keptLab))
	if err := writeIDX(filepath.Join(dst, prefix+"-images-idx3-ubyte.gz"), 0x803, []uint32{n, side, side}, keptImg); err != nil {
		return err
	}
	return writeIDX(filepath.Join(dst, prefix+"-labels-idx1-ubyte.gz"), 0x801, []uint32{n}, keptLab)
}

// readIDX returns the payload of a gzipped IDX file after checking its magic number.
func readIDX(path string, magic uint32) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w (install Debian's dataset-fashion-mnist or pass -src)", err)
	}
	defer func() { _ = f.Close() }() // read only
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) < 4 || binary.BigEndian.Uint32(data) != magic {
		return nil, fmt.Errorf("%s: not an IDX file with magic %#x", path, magic)
	}
	dims := int(magic & 0xff)
	return data[4+4*dims:], nil
}

// writeIDX writes a gzipped IDX file deterministically.
func writeIDX(path string, magic uint32, dims []uint32, payload []byte) error {
	var raw bytes.Buffer
	// Writes to a bytes.Buffer cannot fail.
	raw.Write(binary.BigEndian.AppendUint32(nil, magic))
	for _, d := range dims {
		raw.Write(binary.BigEndian.AppendUint32(nil, d))
	}
	raw.Write(payload)
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, gz.Bytes(), 0o644)
}
