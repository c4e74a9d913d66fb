package schemas

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a CA that issues certificates for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a certificate for cn (valid from nb to na, for 127.0.0.1)
// and its key into dir, returning their paths.
func (ca *testCA) issue(t *testing.T, dir, cn string, nb, na time.Time) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestTLSConfigErrorsNameTheFile: every way a TLS section can be wrong
// gives an error naming the field and the file — an unreadable or empty
// CA file, a key that does not match its certificate, an expired or not
// yet valid certificate, and a server that the CA file does not verify;
// the right CA connects.
func TestTLSConfigErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	ca, other := newCA(t, "seer-test-ca"), newCA(t, "other-ca")
	caFile, otherFile, empty := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "other.pem"), filepath.Join(dir, "empty.pem")
	os.WriteFile(caFile, ca.pem, 0o600)
	os.WriteFile(otherFile, other.pem, 0o600)
	os.WriteFile(empty, []byte("not a certificate\n"), 0o600)
	srvCert, srvKey := ca.issue(t, dir, "server", now.Add(-time.Hour), now.Add(time.Hour))
	client, clientKey := ca.issue(t, dir, "client", now.Add(-time.Hour), now.Add(time.Hour))
	expired, expiredKey := ca.issue(t, dir, "expired", now.Add(-2*time.Hour), now.Add(-time.Hour))
	future, futureKey := ca.issue(t, dir, "future", now.Add(time.Hour), now.Add(2*time.Hour))

	for _, c := range []struct {
		name string
		tls  TLS
		want []string
	}{
		{"missing CA", TLS{CAFile: filepath.Join(dir, "nope.pem")}, []string{"kafka.tls.ca_file", "nope.pem"}},
		{"empty CA", TLS{CAFile: empty}, []string{"kafka.tls.ca_file", "empty.pem", "no PEM certificate"}},
		{"cert without key", TLS{CertFile: client}, []string{"cert_file and key_file go together"}},
		{"key of another cert", TLS{CertFile: client, KeyFile: expiredKey}, []string{"kafka.tls.cert_file", "client.crt", "expired.key", "private key does not match"}},
		{"expired", TLS{CertFile: expired, KeyFile: expiredKey}, []string{"kafka.tls.cert_file", "expired.crt", "expired on"}},
		{"not yet valid", TLS{CertFile: future, KeyFile: futureKey}, []string{"kafka.tls.cert_file", "future.crt", "not valid before"}},
	} {
		err := c.tls.Load("kafka.tls", now)
		for _, w := range c.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %v; want it to say %q", c.name, err, w)
			}
		}
	}
	var off TLS
	if err := off.Load("kafka.tls", now); err != nil || off.Dialer() != nil {
		t.Errorf("no TLS section: %v, dialer %v; want no error and no TLS dialer", err, off.Dialer() != nil)
	}

	// A TLS server with a certificate from ca, asking for a client certificate.
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(s TLS) error {
		if err := s.Load("kafka.tls", now); err != nil {
			return err
		}
		c, err := s.Dialer()(context.Background(), "tcp", ln.Addr().String())
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(TLS{CAFile: caFile, CertFile: client, KeyFile: clientKey}); err != nil {
		t.Errorf("the right CA and a client certificate: %v", err)
	}
	err = dial(TLS{CAFile: otherFile, CertFile: client, KeyFile: clientKey})
	if err == nil || !strings.Contains(err.Error(), "kafka.tls.ca_file "+otherFile+" does not verify the certificate of 127.0.0.1") {
		t.Errorf("another CA: %v; want the CA file named", err)
	}
	err = dial(TLS{CAFile: caFile, CertFile: client, KeyFile: clientKey, ServerName: "broker.example.com"})
	if err == nil || !strings.Contains(err.Error(), "broker.example.com") {
		t.Errorf("a server name the certificate lacks: %v; want it named", err)
	}
}

// TestRedactAttr: secret-named attributes and URL passwords never reach a
// log line; everything else passes unchanged.
func TestRedactAttr(t *testing.T) {
	var b strings.Builder
	log := slog.New(slog.NewTextHandler(&b, &slog.HandlerOptions{ReplaceAttr: RedactAttr}))
	log.Info("connecting", "password", "hunter2", "sasl_password", Secret("hunter3"), "store", "s3://AKIA:hunter4@bucket/x",
		"err", errors.New("dial redis://seer:hunter5@127.0.0.1:6379: refused"), "addr", "user@example.com", "rows", 3)
	out := b.String()
	for _, leaked := range []string{"hunter2", "hunter3", "hunter4", "hunter5"} {
		if strings.Contains(out, leaked) {
			t.Errorf("%s leaked: %s", leaked, out)
		}
	}
	for _, kept := range []string{"s3://AKIA:<secret>@bucket/x", "redis://seer:<secret>@127.0.0.1:6379", "user@example.com", "rows=3"} {
		if !strings.Contains(out, kept) {
			t.Errorf("%q missing from %s", kept, out)
		}
	}
}
