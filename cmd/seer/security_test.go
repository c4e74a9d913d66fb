package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
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

// syncBuffer is a log sink safe for the goroutines that write to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestSecretsStayHidden runs serve with debug logs on the secure Kafka
// listener (SCRAM password), Redis as its own ACL user (password) and
// ClickHouse as the writer (password), drives it with seer loadtest as its
// own Kafka principal (debug logs too) and reads /metrics; then starts
// serve with a wrong password for each service. No log line, no
// error and no metric carries any of the passwords.
func TestSecretsStayHidden(t *testing.T) {
	cfg, _ := integrationConfig(t)
	s := testenv.Secure(t)
	grantACLs(t, cfg, s)
	onSASL(t, &cfg.Kafka, s, "serve")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	redisPW, _ := asUsers(t, &cfg, s, "reader-"+cfg.Kafka.Group, featurestore.ReaderRules(cfg.Redis.KeyPrefix), "seer_writer")
	cfg.LogLevel, cfg.HTTP = "debug", "127.0.0.1:0"
	secrets := []string{s.Password(t, "serve"), redisPW.Reveal(), cfg.ClickHouse.Password.Reveal()}

	var logs syncBuffer
	logger := newLogger(&logs, "debug", "text")
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- serve(sctx, cfg, logger) }()
	var addr string
	for deadline := time.Now().Add(60 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if _, rest, ok := strings.Cut(logs.String(), `msg="http listening" addr=`); ok {
			addr, _, _ = strings.Cut(rest, "\n")
		}
	}
	if addr == "" {
		t.Fatalf("serve did not listen:\n%s", logs.String())
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if r, err := http.Get("http://" + addr + "/readyz"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				break
			}
		}
	}
	gen, err := loadtest.NewGenerator(mustSchema(t, cfg), mustManifest(t, cfg), 20, 1)
	if err != nil {
		t.Fatal(err)
	}
	// The traffic is seer loadtest's, as its own principal: it writes the
	// input topic and reads predictions and dead letters under its ACLs.
	lt := cfg.Kafka
	onSASL(t, &lt, s, "loadtest")
	secrets = append(secrets, s.Password(t, "loadtest"))
	rep, err := loadtest.Run(ctx, loadtest.RunConfig{InputTopic: cfg.Kafka.InputTopic, PredictionsTopic: cfg.Kafka.PredictionsTopic, DLQTopic: cfg.Kafka.DLQTopic,
		Preload: 50, MalformedShare: 0.1, DrainTimeout: 30 * time.Second, Partitions: 3, ClientOpts: kafkaOpts(lt, "loadtest", logger, nil)}, gen)
	if err != nil || rep.Sent != 50 || rep.Predicted+rep.DeadLettered != rep.Sent || rep.DeadLettered == 0 {
		t.Errorf("loadtest over SASL_SSL as loadtest: %+v, %v; want 50 events, each predicted or dead-lettered", rep, err)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	stop()
	if err := <-served; err != nil {
		t.Errorf("serve: %v", err)
	}

	// Each service with a wrong password: the start fails, naming the
	// service, not the password.
	var errs []string
	for _, wrong := range []func(c *Config){
		func(c *Config) {
			c.Kafka.SASL.Password = "kafka-wrong-" + schemas.Secret(ksuid.New().String())
			c.Kafka.StartupTimeout = 3 * time.Second
		},
		func(c *Config) { c.Redis.Password = "redis-wrong-" + schemas.Secret(ksuid.New().String()) },
		func(c *Config) { c.ClickHouse.Password = "ch-wrong-" + schemas.Secret(ksuid.New().String()) },
	} {
		c := cfg
		wrong(&c)
		secrets = append(secrets, c.Kafka.SASL.Password.Reveal(), c.Redis.Password.Reveal(), c.ClickHouse.Password.Reveal())
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := serve(wctx, c, logger)
		cancel()
		if err == nil {
			t.Errorf("serve started with a wrong password")
			continue
		}
		errs = append(errs, err.Error())
	}
	for i, want := range []string{"refused kafka.sasl", "WRONGPASS", "Wrong password"} {
		if i < len(errs) && !strings.Contains(errs[i], want) {
			t.Errorf("start with a wrong password: %q; want it to say %q", errs[i], want)
		}
	}
	t.Logf("the starts with a wrong password failed with: %q", errs)
	for _, sec := range secrets {
		for what, text := range map[string]string{"logs": logs.String(), "errors": strings.Join(errs, "\n"), "/metrics": string(metrics)} {
			if sec != "" && strings.Contains(text, sec) {
				t.Errorf("a password appears in the %s", what)
			}
		}
	}
	if !strings.Contains(logs.String(), "level=DEBUG") || len(metrics) == 0 {
		t.Errorf("the test saw no debug logs (%d bytes) or no metrics (%d bytes)", len(logs.String()), len(metrics))
	}
}

func mustSchema(t *testing.T, cfg Config) *schemas.InputSchema {
	t.Helper()
	s, err := schemas.LoadInputSchema(cfg.Kafka.InputSchema)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustManifest(t *testing.T, cfg Config) *schemas.Manifest {
	t.Helper()
	m, err := schemas.LoadManifest(cfg.Scoring.Package)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMonitorAsItsPrincipals runs seer monitor with debug logs as its own
// principals — Kafka's monitor (SASL_SSL, under the ACLs seer acls makes),
// Redis's monitor user (its leases only) and ClickHouse's seer_monitor —
// until it holds its lease and has evaluated windows: nothing it does is
// refused, and no password reaches its logs.
func TestMonitorAsItsPrincipals(t *testing.T) {
	cfg, _ := integrationConfig(t)
	cfg.Registry.Topic, cfg.Monitor.AlertsTopic = "it-registry-"+cfg.Kafka.Group, "it-alerts-"+cfg.Kafka.Group
	cfg.Registry.Store = "file://" + t.TempDir()
	s := testenv.Secure(t)
	grantACLs(t, cfg, s)
	t.Cleanup(func() {
		k := cfg.Kafka
		onSASL(t, &k, s, "admin")
		kadm.NewClient(secureClient(t, k)).DeleteTopics(context.Background(), cfg.Registry.Topic, registry.LoadsTopic(cfg.Registry.Topic), cfg.Monitor.AlertsTopic)
	})
	onSASL(t, &cfg.Kafka, s, "monitor")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	redisPW, _ := asUsers(t, &cfg, s, "monitor-"+cfg.Kafka.Group, featurestore.MonitorRules(cfg.Redis.KeyPrefix), "seer_monitor")
	cfg.Monitor.Window, cfg.Monitor.Lateness, cfg.Monitor.LeaseTTL = 2*time.Second, 0, time.Second
	cfg.Rollout.Interval = time.Second

	var logs syncBuffer
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- runMonitor(mctx, cfg, newLogger(&logs, "debug", "text")) }()
wait:
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-done: // it stopped by itself
			done <- err
			break wait
		default:
		}
		if strings.Count(logs.String(), `msg="window evaluated"`) >= 2 {
			break
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("monitor as its principals: %v\n%s", err, logs.String())
	}
	out := logs.String()
	if !strings.Contains(out, "holding the monitor lease") || strings.Count(out, `msg="window evaluated"`) < 2 {
		t.Fatalf("the monitor did not hold its lease and evaluate windows:\n%s", out)
	}
	for _, refused := range []string{"AUTHORIZATION_FAILED", "NOPERM", "Access denied", "readonly"} {
		if strings.Contains(out, refused) {
			t.Errorf("the monitor was refused something (%s):\n%s", refused, out)
		}
	}
	for _, sec := range []string{s.Password(t, "monitor"), redisPW.Reveal(), cfg.ClickHouse.Password.Reveal()} {
		if strings.Contains(out, sec) {
			t.Error("a password appears in the monitor's logs")
		}
	}
}

// TestRegistryAsItsPrincipal runs the registry commands over SASL_SSL as
// the registry principal, under the ACLs seer acls makes: register a
// version, move the alias, start a rollout, read its status (the group's
// live members) and abort it. Nothing is refused. Neither the loadtest
// principal nor serve's may move an alias; serve records its loads on the
// loads topic, and a read of the registry sees them.
func TestRegistryAsItsPrincipal(t *testing.T) {
	cfg, _ := integrationConfig(t)
	cfg.Registry.Topic = "it-registry-" + cfg.Kafka.Group
	s := testenv.Secure(t)
	grantACLs(t, cfg, s)
	t.Cleanup(func() {
		k := cfg.Kafka
		onSASL(t, &k, s, "admin")
		kadm.NewClient(secureClient(t, k)).DeleteTopics(context.Background(), cfg.Registry.Topic, registry.LoadsTopic(cfg.Registry.Topic))
	})
	env := map[string]string{"SEER_KAFKA_BROKERS": s.SASL, "SEER_KAFKA_GROUP": cfg.Kafka.Group, "SEER_KAFKA_TLS_CA_FILE": s.CA(),
		"SEER_KAFKA_SASL_MECHANISM": stream.ScramSHA512, "SEER_KAFKA_SASL_USERNAME": "registry",
		"SEER_KAFKA_SASL_PASSWORD_FILE": filepath.Join(s.Dir, "registry.password"), "SEER_ONNXRUNTIME_LIB": cfg.OnnxRuntimeLib,
		"SEER_REGISTRY_TOPIC": cfg.Registry.Topic, "SEER_REGISTRY_STORE": "file://" + t.TempDir()}
	for k, v := range env {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	seer := func(args ...string) (string, error) { return runSeer(ctx, args...) }
	for _, args := range [][]string{
		{"models", "register", cfg.Scoring.Package, "--reason", "first"},
		{"models", "register", filepath.Join("..", "..", "deploy", "examples", "card-fraud-1.1.0"), "--reason", "better"},
		{"models", "alias", "set", "card-fraud", "champion", "1.0.0", "--reason", "first champion"},
		{"rollout", "start", "card-fraud", "1.1.0", "--steps", "shadow,50", "--reason", "try it"},
		{"rollout", "status", "card-fraud"},
		{"rollout", "abort", "card-fraud", "--reason", "done"},
	} {
		if out, err := seer(args...); err != nil {
			t.Fatalf("seer %s as the registry principal: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, who := range []string{"loadtest", "serve"} {
		t.Setenv("SEER_KAFKA_SASL_USERNAME", who)
		t.Setenv("SEER_KAFKA_SASL_PASSWORD_FILE", filepath.Join(s.Dir, who+".password"))
		out, err := seer("models", "alias", "set", "card-fraud", "champion", "1.1.0", "--reason", who+" may not")
		if err == nil || !strings.Contains(out+err.Error(), "AUTHORIZATION_FAILED") {
			t.Errorf("the %s principal moving an alias: %v\n%s; want an authorization failure", who, err, out)
		}
	}
	// serve records its loads, on the loads topic, and the registry sees them.
	k := cfg.Kafka
	onSASL(t, &k, s, "serve")
	log, err := registry.NewLog(kafkaOpts(k, "serve-registry", slog.New(slog.DiscardHandler), nil), cfg.Registry.Topic)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	e := registry.Event{ID: registry.NewID(), Type: registry.VersionLoaded, Model: "card-fraud", Version: "1.0.0", Actor: "serve-x", Instance: "serve-x", Time: time.Now().UTC()}
	if err := log.Append(ctx, e); err != nil {
		t.Fatalf("serve recording a load: %v", err)
	}
	if st, _, err := log.Read(ctx); err != nil || !st.Applied(e.ID) {
		t.Errorf("serve's load event read back: %v; want it applied", err)
	}
}

// asUsers points cfg at Redis as a new user of the test (rules, a random
// password) and at ClickHouse as chUser of the local stack, in database
// seer_leak (dropped afterwards); it returns both passwords.
func asUsers(t *testing.T, cfg *Config, s testenv.SecureKafka, redisUser string, rules []string, chUser string) (redisPW, chPW schemas.Secret) {
	t.Helper()
	ctx := context.Background()
	rdb := featurestore.NewClient(cfg.Redis)
	t.Cleanup(func() { rdb.Do(context.Background(), "ACL", "DELUSER", redisUser); rdb.Close() })
	redisPW = schemas.Secret("redis-secret-" + ksuid.New().String())
	if err := featurestore.SetUser(ctx, rdb, redisUser, redisPW, rules); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, chUser+".password"))
	if err != nil {
		t.Fatal(err)
	}
	chPW = schemas.Secret(strings.TrimSpace(string(b)))
	cfg.Redis.Username, cfg.Redis.Password = redisUser, redisPW
	cfg.ClickHouse.Username, cfg.ClickHouse.Password, cfg.ClickHouse.Database = chUser, chPW, "seer_leak"
	addr := cfg.ClickHouse.Addr
	t.Cleanup(func() {
		c := drift.DefaultConfig()
		c.Addr = addr
		if admin, err := drift.Open(context.Background(), c); err == nil {
			admin.Exec(context.Background(), "DROP DATABASE IF EXISTS seer_leak")
			admin.Close()
		}
	})
	return redisPW, chPW
}
