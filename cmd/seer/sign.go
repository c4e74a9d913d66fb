package main

import (
	"fmt"
	"os"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
)

func newModelsKeygenCmd(g *globals) *cobra.Command {
	var out, algorithm string
	cmd := &cobra.Command{
		Use:   "keygen --out PREFIX",
		Short: "Make a key pair for signing model packages",
		Long: `keygen writes PREFIX.key (the private key, PKCS #8 PEM, mode 0600) and
PREFIX.pub (the public key, PKIX PEM) for --algorithm ed25519 (default) or
ecdsa-p256. Keep the private key where your release job signs; give the
public key to every seer that must trust the packages.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			priv, pub, err := registry.GenerateKey(algorithm)
			if err != nil {
				return fmt.Errorf("--algorithm: %w", err)
			}
			if err := os.WriteFile(out+".key", priv, 0o600); err != nil {
				return err
			}
			if err := os.WriteFile(out+".pub", pub, 0o644); err != nil {
				return err
			}
			v, err := registry.LoadPublicKey(out + ".pub")
			if err != nil {
				return err
			}
			id, _ := v.KeyID()
			fmt.Fprintf(g.stdout, "wrote %s.key and %s.pub (%s, key id %s)\n", out, out, algorithm, id)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "path prefix of the key files (required)")
	cmd.Flags().StringVar(&algorithm, "algorithm", "ed25519", "ed25519 or ecdsa-p256")
	cmd.MarkFlagRequired("out")
	return cmd
}

func newModelsSignCmd(g *globals) *cobra.Command {
	var keyPath string
	cmd := &cobra.Command{
		Use:   "sign PACKAGE_DIR --key KEY",
		Short: "Sign a model package (writes signature.json)",
		Long: `sign lists every file of the package with its sha256 in an in-toto
statement and signs it with --key (a PEM private key from seer models
keygen) as a DSSE envelope in PACKAGE_DIR/signature.json. Sign after the
package is final: any later change to a file, or a new file, makes the
signature fail to verify.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := schemas.LoadManifest(args[0])
			if err != nil {
				return err
			}
			signer, err := registry.LoadPrivateKey(keyPath)
			if err != nil {
				return fmt.Errorf("--key: %w", err)
			}
			st, err := registry.Sign(cmd.Context(), args[0], m.Name, m.Version, signer)
			if err != nil {
				return err
			}
			id, _ := signer.KeyID()
			fmt.Fprintf(g.stdout, "signed %s %s: %d files, key id %s\n", m.Name, m.Version, len(st.Subject), id)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "private key file (required)")
	cmd.MarkFlagRequired("key")
	return cmd
}

func newModelsVerifyCmd(g *globals) *cobra.Command {
	var keys []string
	cmd := &cobra.Command{
		Use:   "verify PACKAGE_DIR --key PUB [--key PUB...]",
		Short: "Verify a model package's signature against trusted public keys",
		Long: `verify checks PACKAGE_DIR/signature.json: the envelope verifies with one of
the --key public keys, and every file of the package has the sha256 it was
signed with — no file changed, missing or added. Each refusal says which.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			trusted, err := loadTrustedKeys(keys)
			if err != nil {
				return err
			}
			st, id, err := registry.Verify(cmd.Context(), args[0], trusted...)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "ok %s: %s %s, %d files, signed by key %s\n", args[0], st.Predicate.Model, st.Predicate.Version, len(st.Subject), id)
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&keys, "key", nil, "trusted public key file (repeatable; required)")
	cmd.MarkFlagRequired("key")
	return cmd
}

func loadTrustedKeys(paths []string) ([]dsse.Verifier, error) {
	var out []dsse.Verifier
	for _, p := range paths {
		v, err := registry.LoadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("--key: %w", err)
		}
		out = append(out, v)
	}
	return out, nil
}
