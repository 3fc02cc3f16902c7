package stages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/pipe-ahl/pipe/ahl/augment"
	"github.com/pipe-ahl/pipe/ahl/backbone"
	"github.com/pipe-ahl/pipe/ahl/imgs"
	"github.com/pipe-ahl/pipe/kind"
	"github.com/pipe-ahl/pipe/stages/tables"
)

// augmentVersion is the augment stage's code version (part of its cache key).
const augmentVersion = 1

// augmentChunk is how many training normals are augmented and passed through the backbone at
// once: their augmented copies (chunk x generators images at S x S) are the stage's peak
// memory besides the output.
const augmentChunk = 8

// AugmentParams configures the augment stage (docs/algorithm.md, "Pseudo anomalies").
type AugmentParams struct {
	// Generators lists the pseudo-anomaly generators to run (default: all three).
	Generators []string `json:"generators"`
	// Source is a folder of images (PNG or JPEG, e.g. DTD textures) draem takes its anomaly
	// sources from; "" generates textures in code.
	Source string `json:"source"`
	// Preview is a folder the stage writes the first PreviewCount training normals'
	// augmented copies to, as PNG (<source id with / as _>#<generator>.png), for a person to
	// look at. Written only when the stage runs (not when it is cached).
	Preview string `json:"preview"`
	// PreviewCount is how many training normals get previews (default 4).
	PreviewCount int `json:"preview_count"`
}

func init() {
	register(kind.Definition{
		Kind:    "augment",
		Version: augmentVersion,
		Params: func() any {
			return &AugmentParams{Generators: slices.Clone(augment.Generators), PreviewCount: 4}
		},
		Inputs:  kind.Inputs{Required: []string{"backbone", "images"}},
		Outputs: []string{"pseudo"},
		Run:     runAugment,
	})
}

// Validate checks the generator names and counts.
func (p *AugmentParams) Validate() error {
	if len(p.Generators) == 0 {
		return fmt.Errorf("generators: empty, want some of %s", strings.Join(augment.Generators, ", "))
	}
	seen := map[string]bool{}
	for _, g := range p.Generators {
		if err := augment.Valid(g); err != nil {
			return fmt.Errorf("generators: %w", err)
		}
		if seen[g] {
			return fmt.Errorf("generators: %q listed twice", g)
		}
		seen[g] = true
	}
	if p.PreviewCount < 0 {
		return fmt.Errorf("preview_count: %d, want >= 0", p.PreviewCount)
	}
	return nil
}

// Fingerprint digests the draem source folder's images (relative path, size, modification
// time), so changed textures make the stage stale; without a source it is a constant.
func (p *AugmentParams) Fingerprint(ctx context.Context) (string, error) {
	if p.Source == "" {
		return "generated textures", nil
	}
	files, err := sourceFiles(p.Source)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range files {
		info, err := os.Stat(filepath.Join(p.Source, f))
		if err != nil {
			return "", fmt.Errorf("source: %w", err)
		}
		fmt.Fprintf(h, "%s %d %d\n", f, info.Size(), info.ModTime().UnixNano())
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// augmentBackbone rebuilds the frozen backbone from the features stage's backbone table. It is
// a variable so the tests can run the stage on a small stand-in backbone.
var augmentBackbone = tables.BackboneTensors.Build

// runAugment makes one pseudo anomaly per training normal per generator (each from its own
// seeded stream, so the copies do not depend on the order or set of generators), passes them
// through the frozen backbone at both scales and writes the pseudo table (stages/TABLES.md).
// The augmentation runs at the backbone's input size S, as the reference code resizes before
// augmenting.
func runAugment(ctx context.Context, env *kind.Env) error {
	p, ok := env.Params.(*AugmentParams)
	if !ok {
		return fmt.Errorf("params are %T, want *AugmentParams", env.Params)
	}

	bb, resize, err := openBackbone(ctx, env)
	if err != nil {
		return err
	}
	s := bb.Size()
	ids, normals, nTrain, err := trainingNormals(ctx, env, s, resize)
	if err != nil {
		return err
	}
	if nTrain < 2 && slices.Contains(p.Generators, "cutmix") {
		return fmt.Errorf("cutmix needs at least two training normals, have %d", nTrain)
	}
	aug := augment.Augmenter{}
	if p.Source != "" {
		if aug.Textures, err = loadSource(p.Source, s); err != nil {
			return err
		}
	}
	if p.Preview != "" {
		if err := os.MkdirAll(p.Preview, 0o755); err != nil {
			return fmt.Errorf("preview: %w", err)
		}
	}

	total := len(normals) * len(p.Generators)
	rows := tables.MapWriter{Images: total} // the value buffer is allocated once, at its final size
	for lo := 0; lo < len(normals); lo += augmentChunk {
		if err := ctx.Err(); err != nil {
			return err
		}
		hi := min(lo+augmentChunk, len(normals))
		batch, err := makePseudo(aug, p.Generators, normals, ids, nTrain, lo, hi, env.Seed)
		if err != nil {
			return err
		}
		var batchID, batchSrc, batchGen []string
		for i := lo; i < hi; i++ {
			for gi, g := range p.Generators {
				if p.Preview != "" && i < p.PreviewCount {
					if err := writePreview(p.Preview, ids[i], g, batch[(i-lo)*len(p.Generators)+gi]); err != nil {
						return err
					}
				}
				batchID = append(batchID, ids[i]+"#"+g)
				batchSrc = append(batchSrc, ids[i])
				batchGen = append(batchGen, g)
			}
		}
		ms, err := bb.Extract(ctx, batch)
		if err != nil {
			return err
		}
		err = rows.Add(batchID, ms, tables.PerImage{Name: "source", Values: batchSrc}, tables.PerImage{Name: "generator", Values: batchGen})
		if err != nil {
			return err
		}
		env.Progress(hi*len(p.Generators), total)
	}
	if env.Log != nil {
		fmt.Fprintf(env.Log, "%d pseudo anomalies (%s) of %d training normals at %dx%d\n",
			nTrain*len(p.Generators), strings.Join(p.Generators, ", "), nTrain, s, s)
		if nTrain < len(normals) {
			fmt.Fprintf(env.Log, "and %d of the %d validation normals (split val; no stage trains on them)\n",
				(len(normals)-nTrain)*len(p.Generators), len(normals)-nTrain)
		}
	}
	return rows.Write(env, "pseudo")
}

// makePseudo makes the pseudo anomalies of normals lo .. hi-1, one per generator each, in
// that order (normal by normal, generators in the given order). Each copy draws from its own
// stream (augmentStream), so the normals are shared out over GOMAXPROCS goroutines with the
// same result as one. cutmix pastes from the other training normals (the first nTrain of
// normals) only, so that no training pseudo anomaly holds part of a validation normal. An
// error names the image (ids, parallel to normals) of the lowest failing normal.
func makePseudo(aug augment.Augmenter, gens []string, normals []imgs.Image, ids []string, nTrain, lo, hi int, seed uint64) ([]imgs.Image, error) {
	out := make([]imgs.Image, (hi-lo)*len(gens))
	others := make([][]imgs.Image, runtime.GOMAXPROCS(0)) // each worker's cutmix pool
	err := forEachParallel(hi-lo, func(w, k int) error {
		i := lo + k
		if i < nTrain {
			others[w] = append(append(others[w][:0], normals[:i]...), normals[i+1:nTrain]...)
		} else {
			others[w] = append(others[w][:0], normals[:nTrain]...)
		}
		for gi, g := range gens {
			rng := rand.New(rand.NewPCG(seed, augmentStream(i, g)))
			im, err := aug.Apply(g, normals[i], others[w], rng)
			if err != nil {
				return fmt.Errorf("image %s: %w", ids[i], err)
			}
			out[k*len(gens)+gi] = im
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// augmentStream is the random stream of training normal i's copy by generator g: the
// generator's position in augment.Generators keeps a copy the same when the params list
// other generators.
func augmentStream(i int, g string) uint64 {
	return uint64(i)<<8 | uint64(slices.Index(augment.Generators, g))
}

// openBackbone reads the backbone table of the input that has one: the network, and how
// the features stage made images S x S (its resize mode).
func openBackbone(ctx context.Context, env *kind.Env) (backbone.Backbone, string, error) {
	bt, err := tables.ReadBackboneTensors(ctx, env)
	if err != nil {
		return nil, "", err
	}
	bb, err := augmentBackbone(bt)
	return bb, bt.Resize, err
}

// trainingNormals decodes the training normals (split train, label 0) of the images input,
// then the validation normals (split val, label 0), each in table order, made s x s as the
// features stage's resize mode says (imgs.DecodeFit; squash: DecodeResized);
// nTrain is how many of them are training normals. Validation normals get pseudo anomalies
// too, so that train can validate on them.
func trainingNormals(ctx context.Context, env *kind.Env, s int, resize string) (ids []string, out []imgs.Image, nTrain int, err error) {
	images, err := tables.OpenImages(ctx, env)
	if err != nil {
		return nil, nil, 0, err
	}
	defer images.Close()
	for _, split := range []string{"train", "val"} {
		for i, id := range images.IDs {
			if images.Split[i] != split || images.Label[i] != 0 {
				continue
			}
			b, err := images.Bytes(ctx, i)
			if err != nil {
				return nil, nil, 0, err
			}
			var im imgs.Image
			if resize == imgs.Squash {
				var ims []imgs.Image
				if ims, err = imgs.DecodeResized(b, imgs.Size{H: s, W: s}); err == nil {
					im = ims[0]
				}
			} else {
				im, err = imgs.DecodeFit(b, resize, s)
			}
			if err != nil {
				return nil, nil, 0, fmt.Errorf("%s: id %q: %w", images.Input, id, err)
			}
			ids = append(ids, id)
			out = append(out, im)
		}
		if split == "train" {
			nTrain = len(out)
		}
	}
	if nTrain == 0 {
		return nil, nil, 0, fmt.Errorf("%s has no training normals (split train, label 0)", images.Input)
	}
	return ids, out, nTrain, nil
}

// sourceFiles lists the image files under dir (recursively, as DTD nests them by class),
// slash-separated relative paths, sorted.
func sourceFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(p)) {
		case ".png", ".jpg", ".jpeg":
			if !d.IsDir() {
				rel, err := filepath.Rel(dir, p)
				if err != nil {
					return err
				}
				files = append(files, filepath.ToSlash(rel))
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("source %s: no PNG or JPEG images", dir)
	}
	sort.Strings(files)
	return files, nil
}

// loadSource decodes the draem source images, resized to s x s.
func loadSource(dir string, s int) ([]imgs.Image, error) {
	files, err := sourceFiles(dir)
	if err != nil {
		return nil, err
	}
	out := make([]imgs.Image, len(files))
	for i, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(f)))
		if err != nil {
			return nil, fmt.Errorf("source: %w", err)
		}
		ims, err := imgs.DecodeResized(data, imgs.Size{H: s, W: s}) // = Resize(Decode(data))
		if err != nil {
			return nil, fmt.Errorf("source image %s: %w", filepath.Join(dir, f), err)
		}
		out[i] = ims[0]
	}
	return out, nil
}

// writePreview writes one augmented image as PNG into dir.
func writePreview(dir, id, generator string, img imgs.Image) error {
	data, err := imgs.EncodePNG(img)
	if err != nil {
		return fmt.Errorf("preview: %w", err)
	}
	name := strings.ReplaceAll(id, "/", "_")
	name = strings.TrimSuffix(name, filepath.Ext(name)) + "#" + generator + ".png"
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		return fmt.Errorf("preview: %w", err)
	}
	return nil
}

// ExternalPaths implements kind.Externals: draem reads the source folder when one is given.
func (p *AugmentParams) ExternalPaths() []kind.ExternalPath {
	if p.Source == "" {
		return nil
	}
	return []kind.ExternalPath{{Param: "source", Path: p.Source, Dir: true}}
}
