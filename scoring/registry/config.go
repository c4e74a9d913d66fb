package registry

import (
	"errors"
	"net/url"
)

// Config configures the registry.
type Config struct {
	Topic            string   `yaml:"topic"`             // the registry log
	Store            string   `yaml:"store"`             // artifact bucket URL: file:///dir, s3://…, gs://…, azblob://… ("" : file://<cwd>/.cache/artifacts)
	RequireSignature bool     `yaml:"require_signature"` // refuse unsigned packages
	TrustedKeys      []string `yaml:"trusted_keys"`      // public key files whose signatures are trusted
}

// DefaultConfig: topic seer.registry, the local artifact folder, signatures
// advised but not required.
func DefaultConfig() Config { return Config{Topic: "seer.registry"} }

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.Topic == "" {
		return errors.New("registry.topic: required")
	}
	if c.Store != "" {
		if u, err := url.Parse(c.Store); err != nil || u.Scheme == "" {
			return errors.New("registry.store: want a bucket URL such as file:///var/lib/seer/artifacts or s3://bucket/prefix")
		}
	}
	if c.RequireSignature && len(c.TrustedKeys) == 0 {
		return errors.New("registry.trusted_keys: required with registry.require_signature")
	}
	return nil
}
