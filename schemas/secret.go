package schemas

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
)

// Secret is a password or token. It prints, logs and marshals as
// "<secret>"; only Reveal gives the value, for the client that needs it.
type Secret string

const redacted = "<secret>"

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (s Secret) Reveal() string             { return string(s) }

// LoadSecret is the one way seer reads a secret: from the environment
// variable env (in environ, os.Environ's KEY=value form) or, when that is
// unset, from file (its content, trimmed). fileKey names the config key of
// file for errors. Neither set gives "".
func LoadSecret(environ []string, env, file, fileKey string) (Secret, error) {
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && k == env {
			return Secret(v), nil
		}
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", fileKey, err)
	}
	return Secret(strings.TrimSpace(string(b))), nil
}
