package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// MissingRootHelp tells a user whose dataset folder is absent where the data comes from.
const MissingRootHelp = "MVTec AD is downloaded from its publisher, MVTec Software GmbH " +
	"(https://www.mvtec.com/company/research/datasets/mvtec-ad, CC BY-NC-SA 4.0); point root at one " +
	"category folder (the one holding train/ and test/). To try pipe without it, run `make demo` " +
	"(embedded Fashion-MNIST)"

// imageExt reports whether a file name has an image extension pipe reads.
func imageExt(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// checkRoot reports a helpful error when root is not a dataset folder.
func checkRoot(root string) error {
	st, err := os.Stat(root)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("dataset folder %s does not exist. %s", root, MissingRootHelp)
	}
	if err != nil {
		return fmt.Errorf("dataset folder %s: %w", root, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("dataset root %s is not a folder. %s", root, MissingRootHelp)
	}
	if st, err := os.Stat(filepath.Join(root, "train", Good)); err != nil || !st.IsDir() {
		return fmt.Errorf("dataset folder %s has no train/good folder (MVTec layout: train/good, test/good, test/<class>). %s", root, MissingRootHelp)
	}
	return nil
}

// listImages returns the image files directly in root/rel as slash-separated IDs, sorted.
// Other files (READMEs, .DS_Store) and subfolders are skipped.
func listImages(root, rel string) ([]string, error) {
	des, err := os.ReadDir(filepath.Join(root, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, de := range des {
		if isDir(filepath.Join(root, filepath.FromSlash(rel)), de) || !imageExt(de.Name()) {
			continue
		}
		ids = append(ids, path.Join(rel, de.Name()))
	}
	sort.Strings(ids)
	return ids, nil
}

// isDir reports whether the entry de of folder dir is a folder, following a symbolic link.
func isDir(dir string, de fs.DirEntry) bool {
	if de.Type()&fs.ModeSymlink == 0 {
		return de.IsDir()
	}
	st, err := os.Stat(filepath.Join(dir, de.Name()))
	return err == nil && st.IsDir()
}

// OpenMVTec lists a dataset folder in the MVTec AD layout: root/train/good (required),
// root/test/good (optional) and root/test/<class> for each anomaly class. PNG and JPEG files
// count as images. An empty class folder is an error.
func OpenMVTec(root string) (Pool, error) {
	if err := checkRoot(root); err != nil {
		return Pool{}, err
	}
	p := Pool{Name: root, Anomalies: map[string][]Entry{}}
	entries := func(ids []string, class string) []Entry {
		es := make([]Entry, len(ids))
		for i, id := range ids {
			es[i] = Entry{ID: id, Class: class}
		}
		return es
	}
	ids, err := listImages(root, "train/good")
	if err != nil {
		return Pool{}, err
	}
	if len(ids) == 0 {
		return Pool{}, fmt.Errorf("dataset folder %s: train/good holds no PNG or JPEG images", root)
	}
	p.TrainNormals = entries(ids, Good)
	des, err := os.ReadDir(filepath.Join(root, "test"))
	if errors.Is(err, fs.ErrNotExist) {
		return Pool{}, fmt.Errorf("dataset folder %s has no test folder (MVTec layout: test/<anomaly class>)", root)
	}
	if err != nil {
		return Pool{}, err
	}
	for _, de := range des {
		if !isDir(filepath.Join(root, "test"), de) {
			continue
		}
		rel := "test/" + de.Name()
		ids, err := listImages(root, rel)
		if err != nil {
			return Pool{}, err
		}
		if len(ids) == 0 {
			return Pool{}, fmt.Errorf("dataset folder %s: class folder %s holds no PNG or JPEG images", root, rel)
		}
		if de.Name() == Good {
			p.TestNormals = entries(ids, Good)
		} else {
			p.Anomalies[de.Name()] = entries(ids, de.Name())
		}
	}
	if len(p.Anomalies) == 0 {
		return Pool{}, fmt.Errorf("dataset folder %s: no anomaly class folders under test/ (MVTec layout: test/<class>)", root)
	}
	p.Read = func(id string) ([]byte, error) {
		return os.ReadFile(filepath.Join(root, filepath.FromSlash(id)))
	}
	return p, nil
}

// FingerprintMVTec digests what OpenMVTec and reading the images would see: one line per
// image file of train/good and the test/ class folders with its relative path, size and
// modification time (of the target, for symbolic links). A changed, added or removed image
// changes the fingerprint; no image is read.
func FingerprintMVTec(root string) (string, error) {
	if err := checkRoot(root); err != nil {
		return "", err
	}
	dirs := []string{"train/good"}
	des, err := os.ReadDir(filepath.Join(root, "test"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("fingerprint of %s: %w", root, err)
	}
	for _, de := range des {
		if isDir(filepath.Join(root, "test"), de) {
			dirs = append(dirs, "test/"+de.Name())
		}
	}
	h := sha256.New()
	for _, dir := range dirs {
		ids, err := listImages(root, dir)
		if err != nil {
			return "", fmt.Errorf("fingerprint of %s: %w", root, err)
		}
		for _, id := range ids {
			info, err := os.Stat(filepath.Join(root, filepath.FromSlash(id)))
			if err != nil {
				return "", fmt.Errorf("fingerprint of %s: %w", root, err)
			}
			fmt.Fprintf(h, "%s %d %d\n", id, info.Size(), info.ModTime().UnixNano())
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
