package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/segmentio/ksuid"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets; s3://, gs:// and azblob:// register the same way

	"github.com/seer-ml/seer/schemas"
)

// NewID returns a new event id (a ksuid).
func NewID() string { return ksuid.New().String() }

// Store is the artifact store: a gocloud.dev/blob bucket holding every
// registered package under MODEL/DIGEST/FILE. Content addressing makes a
// stored package immutable. A Store is safe for concurrent use.
type Store struct {
	bucket *blob.Bucket
	url    string
}

// OpenStore opens the bucket at url (file:///dir, s3://…, gs://…,
// azblob://…).
func OpenStore(ctx context.Context, url string) (*Store, error) {
	b, err := blob.OpenBucket(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("registry.store %s: %w", url, err)
	}
	return &Store{bucket: b, url: url}, nil
}

// Close releases the bucket.
func (s *Store) Close() error { return s.bucket.Close() }

// Digest is a package's identity: the sha256 over its files' paths and
// sha256s, in path order.
func Digest(files map[string]string) string {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(files)) {
		fmt.Fprintf(h, "%s\x00%s\n", name, files[name])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Put copies the files of the package in dir to MODEL/DIGEST/ and returns
// that prefix. Files already there (the same content) are kept.
func (s *Store) Put(ctx context.Context, model, digest, dir string, files map[string]string) (string, error) {
	prefix := path.Join(model, digest)
	for name := range files {
		data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return "", err
		}
		if err := s.bucket.WriteAll(ctx, path.Join(prefix, name), data, nil); err != nil {
			return "", fmt.Errorf("storing %s: %w", path.Join(prefix, name), err)
		}
	}
	return prefix, nil
}

// Fetch copies the package stored under prefix into dir and checks every
// file against its recorded sha256.
func (s *Store) Fetch(ctx context.Context, prefix, dir string, files map[string]string) error {
	for name, want := range files {
		data, err := s.bucket.ReadAll(ctx, path.Join(prefix, name))
		if err != nil {
			return fmt.Errorf("fetching %s: %w", path.Join(prefix, name), err)
		}
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want {
			return fmt.Errorf("%w: stored %s has sha256 %s…, registered %s…", ErrFileChanged, path.Join(prefix, name), got[:12], want[:12])
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if !strings.HasPrefix(filepath.Clean(dst), filepath.Clean(dir)+string(filepath.Separator)) {
			return fmt.Errorf("stored file name %q leaves the package folder", name)
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Materialize returns the folder under cacheDir holding the package of a
// registered version (cacheDir/MODEL/DIGEST), fetching and checking it
// from the store the first time. A fetch is written to a temporary folder
// and renamed, so a folder that exists is complete.
func (s *Store) Materialize(ctx context.Context, e *Event, cacheDir string) (string, error) {
	dir := filepath.Join(cacheDir, e.Model, e.Digest)
	if _, err := os.Stat(filepath.Join(dir, schemas.ManifestFile)); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".fetch-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if err := s.Fetch(ctx, e.Artifact, tmp, e.Package.Files); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, os.ErrExist) {
		if _, serr := os.Stat(filepath.Join(dir, schemas.ManifestFile)); serr != nil { // not a concurrent fetch that won
			return "", err
		}
	}
	return dir, nil
}
