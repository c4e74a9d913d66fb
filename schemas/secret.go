package schemas

import (
	"fmt"
	"log/slog"
	"os"
	"regexp"
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

// secretKey matches attribute keys that name a secret.
var secretKey = regexp.MustCompile(`(?i)(password|passwd|secret|token|credential|api_?key)`)

// urlUserinfo matches the password of a URL's user-info (scheme://user:pw@).
var urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/@\s:]*):[^/@\s]*@`)

// Redact removes the password of every URL user-info in s.
func Redact(s string) string { return urlUserinfo.ReplaceAllString(s, "$1:"+redacted+"@") }

// RedactAttr is the slog HandlerOptions.ReplaceAttr of every seer logger:
// an attribute whose key names a secret logs as "<secret>", and the
// password of a URL user-info in any string or error is removed.
func RedactAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() != slog.KindGroup && secretKey.MatchString(a.Key) {
		return slog.String(a.Key, redacted)
	}
	switch a.Value.Kind() {
	case slog.KindString:
		if s := a.Value.String(); strings.Contains(s, "@") {
			return slog.String(a.Key, Redact(s))
		}
	case slog.KindAny:
		if err, ok := a.Value.Any().(error); ok && strings.Contains(err.Error(), "@") {
			return slog.String(a.Key, Redact(err.Error()))
		}
	}
	return a
}
