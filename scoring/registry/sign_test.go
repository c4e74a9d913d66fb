package registry

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/seer-ml/seer/internal/testenv"
)

// copyPackage copies the example package into a temporary folder.
func copyPackage(t *testing.T) string {
	t.Helper()
	src := testenv.ExamplePackage(t)
	dst := t.TempDir()
	for _, name := range []string{"model.onnx", "model.yaml", "examples.jsonl"} {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// keyFiles writes a fresh key pair and returns the paths.
func keyFiles(t *testing.T, alg string) (priv, pub string) {
	t.Helper()
	p, q, err := GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	priv, pub = filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	os.WriteFile(priv, p, 0o600)
	os.WriteFile(pub, q, 0o644)
	return priv, pub
}

// TestSignVerifyAndEveryRefusal: a signed package verifies with its key;
// a changed, missing or extra file, another key, an unsigned package and
// a malformed envelope are each refused with their own error.
func TestSignVerifyAndEveryRefusal(t *testing.T) {
	ctx := context.Background()
	for _, alg := range []string{"ed25519", "ecdsa-p256"} {
		t.Run(alg, func(t *testing.T) {
			privPath, pubPath := keyFiles(t, alg)
			signer, err := LoadPrivateKey(privPath)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := LoadPublicKey(pubPath)
			if err != nil {
				t.Fatal(err)
			}
			_, otherPubPath := keyFiles(t, alg)
			other, _ := LoadPublicKey(otherPubPath)

			fresh := func() string {
				dir := copyPackage(t)
				if _, err := Sign(ctx, dir, "card-fraud", "1.0.0", signer); err != nil {
					t.Fatal(err)
				}
				return dir
			}
			dir := fresh()
			st, keyID, err := Verify(ctx, dir, other, pub)
			if err != nil {
				t.Fatalf("Verify of a freshly signed package: %v", err)
			}
			wantID, _ := pub.KeyID()
			if keyID != wantID || len(st.Subject) != 3 || st.Predicate.Model != "card-fraud" {
				t.Errorf("Verify = key %s (want %s), %+v", keyID, wantID, st)
			}

			refused := func(name, dir string, want error, key dsse.Verifier) {
				t.Helper()
				if _, _, err := Verify(ctx, dir, key); !errors.Is(err, want) {
					t.Errorf("%s: err = %v, want %v", name, err, want)
				}
			}
			d := fresh()
			os.WriteFile(filepath.Join(d, "model.yaml"), []byte("owner: mallory\n"), 0o644)
			refused("changed file", d, ErrFileChanged, pub)
			d = fresh()
			os.Remove(filepath.Join(d, "examples.jsonl"))
			refused("missing file", d, ErrFileMissing, pub)
			d = fresh()
			os.WriteFile(filepath.Join(d, "extra.onnx"), []byte("x"), 0o644)
			refused("extra file", d, ErrFileUnlisted, pub)
			refused("wrong key", fresh(), ErrUntrustedKey, other)
			refused("unsigned", copyPackage(t), ErrUnsigned, pub)
			for _, garbage := range []string{
				`not json`,
				`{"payloadType":"text/plain","payload":"e30=","signatures":[{"keyid":"k","sig":"AA=="}]}`,
				`{"payloadType":"application/vnd.in-toto+json","payload":"%%%","signatures":[{"keyid":"k","sig":"AA=="}]}`,
				`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[]}`,
				`{"payloadType":"application/vnd.in-toto+json","payload":"` + base64.StdEncoding.EncodeToString([]byte(`{"_type":"x"}`)) + `","signatures":[{"keyid":"k","sig":"AA=="}]}`,
			} {
				d = copyPackage(t)
				os.WriteFile(filepath.Join(d, SignatureFile), []byte(garbage), 0o644)
				refused("malformed "+garbage[:min(len(garbage), 30)], d, ErrMalformedSignature, pub)
			}
		})
	}
	if _, _, err := GenerateKey("rsa"); err == nil || !strings.Contains(err.Error(), "rsa") {
		t.Errorf("GenerateKey(rsa) = %v", err)
	}
}

// FuzzParseSignature: the envelope decoder never panics, and what it
// accepts has the in-toto payload type, a signature, and unique subjects
// with sha256 digests.
func FuzzParseSignature(f *testing.F) {
	st := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"model.onnx","digest":{"sha256":"` + strings.Repeat("a", 64) + `"}}],"predicateType":"https://seer-ml.dev/model-package/v1","predicate":{"model":"m","version":"1"}}`
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"` + base64.StdEncoding.EncodeToString([]byte(st)) + `","signatures":[{"keyid":"k","sig":"AA=="}]}`))
	f.Add([]byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, st, err := ParseSignature(data)
		if err != nil {
			if !errors.Is(err, ErrMalformedSignature) {
				t.Fatalf("error %v is not ErrMalformedSignature", err)
			}
			return
		}
		if env.PayloadType != PayloadType || len(env.Signatures) == 0 || len(st.Subject) == 0 {
			t.Fatalf("accepted %+v %+v", env, st)
		}
		seen := map[string]bool{}
		for _, s := range st.Subject {
			if seen[s.Name] || len(s.Digest["sha256"]) != 64 {
				t.Fatalf("accepted subject %+v", s)
			}
			seen[s.Name] = true
		}
	})
}
