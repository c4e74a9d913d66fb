// Package registry is seer's model registry. This file holds signed
// packages: a package's signature (signature.json) is a DSSE envelope over
// an in-toto Statement whose subjects are every file of the package with
// its sha256 — the shape of OpenSSF model signing — signed with an Ed25519
// or ECDSA P-256 key. Verification re-hashes every file and refuses a
// changed, missing or unlisted file, an untrusted key and a malformed
// envelope, each with an error of its own. All functions are safe for
// concurrent use.
package registry

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
)

// The contract of a package signature.
const (
	SignatureFile = "signature.json"
	PayloadType   = "application/vnd.in-toto+json"
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://seer-ml.dev/model-package/v1"
)

// Errors of Verify; each wraps the details.
var (
	// ErrUnsigned: the package has no signature.json.
	ErrUnsigned = errors.New("package is not signed")
	// ErrMalformedSignature: signature.json is not a DSSE envelope over an
	// in-toto statement of a seer package.
	ErrMalformedSignature = errors.New("malformed package signature")
	// ErrUntrustedKey: no trusted key verifies the envelope's signature.
	ErrUntrustedKey = errors.New("signature does not verify with a trusted key")
	// ErrFileChanged: a listed file's sha256 differs from the statement's.
	ErrFileChanged = errors.New("package file changed since signing")
	// ErrFileMissing: a listed file is not in the package.
	ErrFileMissing = errors.New("package file missing")
	// ErrFileUnlisted: the package holds a file the statement does not list.
	ErrFileUnlisted = errors.New("package file not covered by the signature")
)

// Statement is the in-toto statement a package signature carries.
type Statement struct {
	Type          string    `json:"_type"`
	Subject       []Subject `json:"subject"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// Subject is one signed file: its path in the package and its digest.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// Predicate names the model version that was signed.
type Predicate struct {
	Model   string `json:"model"`
	Version string `json:"version"`
}

// GenerateKey makes a key pair for algorithm ed25519 or ecdsa-p256 and
// returns the private key as PKCS #8 PEM and the public key as PKIX PEM.
func GenerateKey(algorithm string) (private, public []byte, err error) {
	var priv crypto.Signer
	switch algorithm {
	case "ed25519":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa-p256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, nil, fmt.Errorf("algorithm %q is not ed25519 or ecdsa-p256", algorithm)
	}
	if err != nil {
		return nil, nil, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), nil
}

// key signs or verifies DSSE's pre-authentication encoding with an Ed25519
// or ECDSA P-256 key (ECDSA over its sha256, ASN.1 signatures).
type key struct {
	priv crypto.Signer // nil for a public key
	pub  crypto.PublicKey
	id   string
}

var _ dsse.SignerVerifier = (*key)(nil)

func newKey(priv crypto.Signer, pub crypto.PublicKey) (*key, error) {
	switch k := pub.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("ECDSA keys must be on P-256")
		}
	default:
		return nil, fmt.Errorf("%T keys are not supported (want Ed25519 or ECDSA P-256)", pub)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return &key{priv: priv, pub: pub, id: hex.EncodeToString(sum[:])}, nil
}

func (k *key) Sign(_ context.Context, data []byte) ([]byte, error) {
	if k.priv == nil {
		return nil, errors.New("a public key cannot sign")
	}
	if _, ok := k.pub.(ed25519.PublicKey); ok {
		return k.priv.Sign(rand.Reader, data, crypto.Hash(0))
	}
	sum := sha256.Sum256(data)
	return k.priv.Sign(rand.Reader, sum[:], crypto.SHA256)
}

func (k *key) Verify(_ context.Context, data, sig []byte) error {
	switch pub := k.pub.(type) {
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, data, sig) {
			return errors.New("ed25519: bad signature")
		}
	case *ecdsa.PublicKey:
		sum := sha256.Sum256(data)
		if !ecdsa.VerifyASN1(pub, sum[:], sig) {
			return errors.New("ecdsa: bad signature")
		}
	}
	return nil
}

func (k *key) KeyID() (string, error)   { return k.id, nil }
func (k *key) Public() crypto.PublicKey { return k.pub }

// LoadPrivateKey reads a PKCS #8 PEM private key file (GenerateKey's).
func LoadPrivateKey(path string) (dsse.SignerVerifier, error) {
	block, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	priv, ok := parsed.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: %T cannot sign", path, parsed)
	}
	k, err := newKey(priv, priv.Public())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadPublicKey reads a PKIX PEM public key file (GenerateKey's).
func LoadPublicKey(path string) (dsse.Verifier, error) {
	block, err := readPEM(path, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	k, err := newKey(nil, pub)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func readPEM(path, want string) (*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != want {
		return nil, fmt.Errorf("%s: not a PEM %q block", path, want)
	}
	return block, nil
}

// hashFiles returns every regular file of the package but the signature,
// by slash-separated path, with its sha256.
func hashFiles(dir string) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		rel = filepath.ToSlash(rel)
		switch {
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			return fmt.Errorf("%s: %s is not a regular file", dir, rel)
		case rel == SignatureFile:
			return nil
		}
		sum, err := fileSHA256(path)
		out[rel] = sum
		return err
	})
	return out, err
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Sign writes dir/signature.json: a statement listing every file of the
// package (model, version from its manifest) signed by signer.
func Sign(ctx context.Context, dir, model, version string, signer dsse.Signer) (*Statement, error) {
	files, err := hashFiles(dir)
	if err != nil {
		return nil, err
	}
	st := Statement{Type: StatementType, PredicateType: PredicateType, Predicate: Predicate{Model: model, Version: version}}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		st.Subject = append(st.Subject, Subject{Name: name, Digest: map[string]string{"sha256": files[name]}})
	}
	body, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	es, err := dsse.NewEnvelopeSigner(signer)
	if err != nil {
		return nil, err
	}
	env, err := es.SignPayload(ctx, PayloadType, body)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", dir, err)
	}
	out, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, SignatureFile), append(out, '\n'), 0o644); err != nil {
		return nil, err
	}
	return &st, nil
}

// ParseSignature decodes a signature.json strictly: a DSSE envelope with
// the in-toto payload type, at least one signature, and a payload that is
// a seer package statement. It does not verify the signature.
func ParseSignature(data []byte) (*dsse.Envelope, *Statement, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrMalformedSignature, fmt.Sprintf(format, args...))
	}
	var env dsse.Envelope
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&env); err != nil {
		return nil, nil, bad("not a DSSE envelope: %v", err)
	}
	if env.PayloadType != PayloadType {
		return nil, nil, bad("payloadType %q, want %q", env.PayloadType, PayloadType)
	}
	if len(env.Signatures) == 0 {
		return nil, nil, bad("no signatures")
	}
	body, err := env.DecodeB64Payload()
	if err != nil {
		return nil, nil, bad("payload is not base64: %v", err)
	}
	var st Statement
	sdec := json.NewDecoder(strings.NewReader(string(body)))
	sdec.DisallowUnknownFields()
	if err := sdec.Decode(&st); err != nil {
		return nil, nil, bad("payload is not an in-toto statement: %v", err)
	}
	switch {
	case st.Type != StatementType:
		return nil, nil, bad("statement _type %q, want %q", st.Type, StatementType)
	case st.PredicateType != PredicateType:
		return nil, nil, bad("predicateType %q, want %q", st.PredicateType, PredicateType)
	case len(st.Subject) == 0:
		return nil, nil, bad("the statement lists no files")
	}
	seen := map[string]bool{}
	for _, s := range st.Subject {
		if s.Name == "" || seen[s.Name] || len(s.Digest["sha256"]) != 64 {
			return nil, nil, bad("subject %q: want a unique name and a sha256 digest", s.Name)
		}
		seen[s.Name] = true
	}
	return &env, &st, nil
}

// Verify checks dir/signature.json against the trusted keys and re-hashes
// every file of the package. It returns the statement and the id of the
// key that verified it.
func Verify(ctx context.Context, dir string, trusted ...dsse.Verifier) (*Statement, string, error) {
	data, err := os.ReadFile(filepath.Join(dir, SignatureFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, "", fmt.Errorf("%w: %s has no %s", ErrUnsigned, dir, SignatureFile)
	}
	if err != nil {
		return nil, "", err
	}
	env, st, err := ParseSignature(data)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", filepath.Join(dir, SignatureFile), err)
	}
	if len(trusted) == 0 {
		return nil, "", fmt.Errorf("%w: no trusted keys given", ErrUntrustedKey)
	}
	ev, err := dsse.NewEnvelopeVerifier(trusted...)
	if err != nil {
		return nil, "", err
	}
	accepted, err := ev.Verify(ctx, env)
	if err != nil || len(accepted) == 0 {
		ids := make([]string, len(env.Signatures))
		for i, s := range env.Signatures {
			ids[i] = s.KeyID
		}
		return nil, "", fmt.Errorf("%w: signed by key %v", ErrUntrustedKey, ids)
	}
	files, err := hashFiles(dir)
	if err != nil {
		return nil, "", err
	}
	var errs []error
	for _, s := range st.Subject {
		got, ok := files[s.Name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%w: %s", ErrFileMissing, s.Name))
		case got != s.Digest["sha256"]:
			errs = append(errs, fmt.Errorf("%w: %s has sha256 %s, signed %s", ErrFileChanged, s.Name, got[:12], s.Digest["sha256"][:12]))
		}
		delete(files, s.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		errs = append(errs, fmt.Errorf("%w: %s", ErrFileUnlisted, name))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, "", fmt.Errorf("%s: %w", dir, err)
	}
	return st, accepted[0].KeyID, nil
}
