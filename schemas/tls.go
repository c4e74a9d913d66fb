package schemas

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// TLS is the TLS section of a client's config (kafka.tls, redis.tls,
// clickhouse.tls). It is on when Enabled or any file is set.
type TLS struct {
	Enabled    bool   `yaml:"enabled"`     // TLS with the system roots when no file is given
	CAFile     string `yaml:"ca_file"`     // PEM bundle the server's certificate must chain to (default: the system roots)
	CertFile   string `yaml:"cert_file"`   // client certificate for mutual TLS, with key_file
	KeyFile    string `yaml:"key_file"`    // its private key (PEM)
	ServerName string `yaml:"server_name"` // the name the server's certificate must carry (default: the host dialled)

	key    string      // the config section, for errors
	loaded *tls.Config // by Load
}

// On reports whether TLS is configured.
func (t TLS) On() bool {
	return t.Enabled || t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != ""
}

// Load reads the files, once, for Dialer; it does nothing when TLS is off.
// key names the section in errors ("kafka.tls"), so that each error names
// the field and the file: a file that cannot be read, a CA file without a
// certificate, an expired or not yet valid certificate, a key that does not
// match its certificate. Dialer names the CA file when it does not verify
// a server at the handshake.
func (t *TLS) Load(key string, now time.Time) error {
	t.key, t.loaded = key, nil
	if !t.On() {
		return nil
	}
	cfg, err := t.config(now)
	t.loaded = cfg
	return err
}

func (t *TLS) config(now time.Time) (*tls.Config, error) {
	key := t.key
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, fmt.Errorf("%s: cert_file and key_file go together", key)
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%s.cert_file %s with key_file %s: %w", key, t.CertFile, t.KeyFile, err)
		}
		if err := checkValidity(pair.Leaf, now); err != nil {
			return nil, fmt.Errorf("%s.cert_file %s: %w", key, t.CertFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if t.CAFile == "" {
		return cfg, nil
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%s.ca_file: %w", key, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s.ca_file %s: no PEM certificate in it", key, t.CAFile)
	}
	cfg.RootCAs = pool
	return cfg, nil
}

// Dialer returns a dial function over TLS with what Load read, or nil when
// TLS is off or not loaded: the server name defaults to the host dialled,
// and a server certificate that the CA file does not verify is reported
// with the file's name. Every client takes it (kgo.Dialer, go-redis
// Options.Dialer, clickhouse-go Options.DialContext), so that each error
// names what to fix.
func (t TLS) Dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if t.loaded == nil {
		return nil
	}
	key := t.key
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}, Config: t.loaded}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		var unknown x509.UnknownAuthorityError
		var host x509.HostnameError
		var invalid x509.CertificateInvalidError
		if errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) {
			ca := "the system roots"
			if t.CAFile != "" {
				ca = key + ".ca_file " + t.CAFile
			}
			return nil, fmt.Errorf("%s: %s does not verify the certificate of %s: %w", key, ca, addr, err)
		}
		return c, err
	}
}

// checkValidity names an expired or not yet valid certificate.
func checkValidity(c *x509.Certificate, now time.Time) error {
	if c == nil {
		return errors.New("no certificate")
	}
	switch {
	case now.After(c.NotAfter):
		return fmt.Errorf("certificate %q expired on %s", c.Subject, c.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(c.NotBefore):
		return fmt.Errorf("certificate %q is not valid before %s", c.Subject, c.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}
