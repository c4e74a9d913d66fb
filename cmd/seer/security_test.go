package main

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/stream"
)

// onSASL points k at the local broker's SASL_SSL listener as principal.
func onSASL(t *testing.T, k *stream.Config, s testenv.SecureKafka, principal string) {
	t.Helper()
	k.Brokers = []string{s.SASL}
	k.TLS = schemas.TLS{CAFile: s.CA()}
	k.SASL = stream.SASL{Mechanism: stream.ScramSHA512, Username: principal, Password: schemas.Secret(s.Password(t, principal))}
	if err := k.TLS.Load("kafka.tls", time.Now()); err != nil {
		t.Fatal(err)
	}
}

// secureClient is a client of k (kafkaOpts) with extra options.
func secureClient(t *testing.T, k stream.Config, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(kafkaOpts(k, "test", slog.New(slog.DiscardHandler), nil), append(opts, kgo.RequestRetries(1), kgo.RetryTimeout(5*time.Second))...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// grantACLs creates, as the admin principal, the ACLs of cfg's principals.
func grantACLs(t *testing.T, cfg Config, s testenv.SecureKafka) {
	t.Helper()
	k := cfg.Kafka
	onSASL(t, &k, s, "admin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out strings.Builder
	cl, grants := secureClient(t, k), kafkaACLs(cfg, defaultPrincipals())
	if err := applyACLs(ctx, cl, grants, &out); err != nil {
		t.Fatalf("creating the ACLs: %v\n%s", err, out.String())
	}
	t.Cleanup(func() {
		adm := kadm.NewClient(cl)
		for _, g := range grants {
			adm.DeleteACLs(context.Background(), g.builder())
		}
	})
}

// TestKafkaRefusals on the local broker's secure listeners: no
// credentials, a wrong password and a certificate from another CA are
// refused; serve's principal, with the ACLs seer acls makes, may write its
// predictions but not its input topic, may not read another topic (its
// dead letters) and may not join another group. serve's own client
// certificate on the mutual-TLS listener is the same principal.
func TestKafkaRefusals(t *testing.T) {
	cfg, _ := integrationConfig(t)
	s := testenv.Secure(t)
	grantACLs(t, cfg, s)
	ping := func(k stream.Config) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return secureClient(t, k).Ping(ctx)
	}

	anon := cfg.Kafka
	onSASL(t, &anon, s, "serve")
	anon.SASL = stream.SASL{}
	err := ping(anon)
	t.Logf("no credentials: %v", err)
	if err == nil {
		t.Error("a client without credentials was let in on SASL_SSL")
	}
	wrong := cfg.Kafka
	onSASL(t, &wrong, s, "serve")
	wrong.SASL.Password = "not-the-password"
	err = ping(wrong)
	t.Logf("wrong password: %v", err)
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Errorf("a wrong password: %v; want SASL_AUTHENTICATION_FAILED", err)
	}
	mtls := func(dir string) stream.Config {
		k := cfg.Kafka
		k.Brokers = []string{s.MTLS}
		k.TLS = schemas.TLS{CAFile: s.CA(), CertFile: filepath.Join(dir, "serve.crt"), KeyFile: filepath.Join(dir, "serve.key")}
		if err := k.TLS.Load("kafka.tls", time.Now()); err != nil {
			t.Fatal(err)
		}
		return k
	}
	err = ping(mtls(filepath.Join(s.Dir, "impostor")))
	t.Logf("impostor certificate: %v", err)
	if err == nil {
		t.Error("a client certificate from another CA was let in on the mutual-TLS listener")
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, k := range map[string]stream.Config{"SASL_SSL": func() stream.Config { k := cfg.Kafka; onSASL(t, &k, s, "serve"); return k }(), "mTLS": mtls(s.Dir)} {
		cl := secureClient(t, k)
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: k.PredictionsTopic, Value: []byte("{}")}).FirstErr(); err != nil {
			t.Errorf("%s: serve writing its predictions topic: %v", name, err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: k.InputTopic, Value: []byte("{}")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Errorf("%s: serve writing its input topic: %v; want TOPIC_AUTHORIZATION_FAILED", name, err)
		}
		other := secureClient(t, k, kgo.ConsumeTopics(k.DLQTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err := firstFetchErr(ctx, other); !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Errorf("%s: serve reading its dead letters: %v; want TOPIC_AUTHORIZATION_FAILED", name, err)
		}
		group := secureClient(t, k, kgo.ConsumeTopics(k.InputTopic), kgo.ConsumerGroup(k.Group+"-other"))
		if err := firstFetchErr(ctx, group); !errors.Is(err, kerr.GroupAuthorizationFailed) {
			t.Errorf("%s: serve joining another group: %v; want GROUP_AUTHORIZATION_FAILED", name, err)
		}
	}
}

// firstFetchErr polls until a fetch reports an error (or ctx ends).
func firstFetchErr(ctx context.Context, cl *kgo.Client) error {
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		for _, e := range fs.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) && !errors.Is(e.Err, context.Canceled) {
				return e.Err
			}
		}
	}
	return ctx.Err()
}

// TestEndToEndOverSASL is the end-to-end test with serve on the SASL_SSL
// listener as its own principal, under the ACLs seer acls makes: the same
// exact counts as on plaintext; and once more with exactly-once delivery,
// whose transactional id the ACLs cover by prefix.
func TestEndToEndOverSASL(t *testing.T) {
	for _, delivery := range []string{stream.AtLeastOnce, stream.ExactlyOnce} {
		t.Run(delivery, func(t *testing.T) {
			cfg, admin := integrationConfig(t)
			plain := cfg.Kafka.Brokers[0]
			s := testenv.Secure(t)
			if delivery == stream.ExactlyOnce {
				cfg.Kafka.Delivery, cfg.Kafka.TransactionalID = stream.ExactlyOnce, cfg.Kafka.Group+"-tx"
			}
			grantACLs(t, cfg, s)
			onSASL(t, &cfg.Kafka, s, "serve")
			endToEnd(t, cfg, admin, plain)
		})
	}
}
