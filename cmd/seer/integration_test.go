package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/featurestore/ingest"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
	"github.com/seer-ml/seer/stream"
)

// TestEndToEndRealServices runs the serve pipeline against the real Kafka
// broker, Redis, ClickHouse and ONNX Runtime: N events of which k are
// malformed must give exactly N−k predictions with the right ids and scores
// (checked against an independent Python reference), exactly k DLQ records
// with the right reasons, and exactly N−k inference_log rows.
func TestEndToEndRealServices(t *testing.T) {
	cfg, admin := integrationConfig(t)
	endToEnd(t, cfg, admin, cfg.Kafka.Brokers[0])
}

// endToEnd is TestEndToEndRealServices on cfg; admin produces the events
// and brokers (plaintext) is where the outputs are read back.
func endToEnd(t *testing.T, cfg Config, admin *kgo.Client, brokers string) {
	const n, every = 400, 16 // every 16th event is malformed
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := buildApp(ctx, cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupApp(cfg, a) })
	gen, features := loadFeatures(ctx, t, a)

	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(pctx) }()

	valid := map[string]loadtest.Event{}
	badReason := map[string]schemas.Reason{} // by value
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		ev := gen.Next(time.Now(), i%every == every-1)
		if ev.Malformed == "" {
			valid[ev.ID] = ev
		} else {
			for _, m := range loadtest.Malformations {
				if m.Name == ev.Malformed {
					badReason[string(ev.Value)] = m.Reason
				}
			}
		}
		recs = append(recs, &kgo.Record{Topic: cfg.Kafka.InputTopic, Key: ev.Key, Value: ev.Value})
	}
	k := n - len(valid)
	if k != n/every || len(badReason) != k {
		t.Fatalf("generated %d malformed events (%d distinct), want %d", k, len(badReason), n/every)
	}
	if err := admin.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	preds := consume(ctx, t, brokers, cfg.Kafka.PredictionsTopic, n-k)
	dlq := consume(ctx, t, brokers, cfg.Kafka.DLQTopic, k)
	db := cfg.ClickHouse.Database
	var rows, dead uint64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err := a.ch.QueryRow(ctx, "SELECT count() FROM "+db+".inference_log FINAL").Scan(&rows); err != nil {
			t.Fatal(err)
		}
		if err := a.ch.QueryRow(ctx, "SELECT count() FROM "+db+".dead_letters FINAL").Scan(&dead); err != nil {
			t.Fatal(err)
		}
		if rows >= uint64(n-k) && dead >= uint64(k) {
			break
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("pipeline: %v", err)
	}

	// The monitor's consumer-lag reading (kadm) sees the group caught up.
	lagCl, err := kgo.NewClient(kafkaOpts(cfg.Kafka, "test-lag", slog.New(slog.DiscardHandler), nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer lagCl.Close()
	if l, err := stream.NewGroupLag(lagCl, cfg.Kafka.Group).Total(ctx); err != nil || l != 0 {
		t.Errorf("consumer lag after the run = %d, %v; want 0", l, err)
	}
	if len(preds) != n-k {
		t.Errorf("predictions = %d, want %d", len(preds), n-k)
	}
	if len(dlq) != k {
		t.Errorf("DLQ records = %d, want %d", len(dlq), k)
	}
	if rows != uint64(n-k) || dead != uint64(k) {
		t.Errorf("clickhouse inference_log = %d rows, dead_letters = %d; want %d and %d", rows, dead, n-k, k)
	}

	var cases []testenv.RefCase
	var got []schemas.Prediction
	seen := map[string]bool{}
	for _, r := range preds {
		var p schemas.Prediction
		if err := json.Unmarshal(r.Value, &p); err != nil {
			t.Fatalf("prediction %q: %v", r.Value, err)
		}
		ev, ok := valid[p.EventID]
		if !ok || seen[p.EventID] {
			t.Errorf("prediction for unexpected or repeated event %s", p.EventID)
			continue
		}
		seen[p.EventID] = true
		if p.EntityID != string(ev.Key) || string(r.Key) != string(ev.Key) || p.Route != schemas.RouteProduction {
			t.Errorf("event %s: entity %q key %q route %q, want %q/production", p.EventID, p.EntityID, r.Key, p.Route, ev.Key)
		}
		if _, err := ksuid.Parse(p.PredictionID); err != nil {
			t.Errorf("event %s: prediction_id %q is not a ksuid", p.EventID, p.PredictionID)
		}
		var obj map[string]any
		json.Unmarshal(ev.Value, &obj)
		c := testenv.RefCase{Event: obj}
		if f, ok := features["user_stats"][string(ev.Key)]; ok {
			c.Features = map[string]map[string]string{"user_stats": f}
		}
		cases = append(cases, c)
		got = append(got, p)
	}
	if len(seen) != len(valid) {
		t.Errorf("%d of %d valid events got a prediction", len(seen), len(valid))
	}
	want := testenv.ReferenceScores(t, cfg.Scoring.Package, cases)
	for i, p := range got {
		if d := math.Abs(float64(p.Score) - want[i]); d > 1e-5 {
			t.Errorf("event %s: score %v, reference %v", p.EventID, p.Score, want[i])
		}
	}
	for _, r := range dlq {
		reason, ok := badReason[string(r.Value)]
		if !ok {
			t.Errorf("DLQ record with unexpected value %.60q", r.Value)
			continue
		}
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		if h[schemas.HeaderError] != string(reason) || h[schemas.HeaderSourceTopic] != cfg.Kafka.InputTopic || h[schemas.HeaderStage] == "" || h[schemas.HeaderSourceOffset] == "" {
			t.Errorf("DLQ headers %v, want seer-error=%s and the source position", h, reason)
		}
	}
}

// consume reads want records from topic (read_committed), then keeps
// polling briefly to catch extras.
func consume(ctx context.Context, t *testing.T, brokers, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var out []*kgo.Record
	deadline := time.Now().Add(60 * time.Second)
	extra := time.Time{}
	for time.Now().Before(deadline) {
		if len(out) >= want {
			if extra.IsZero() {
				extra = time.Now().Add(time.Second)
			} else if time.Now().After(extra) {
				break
			}
		}
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		out = append(out, fs.Records()...)
	}
	return out
}

// integrationConfig returns a config on the real services with unique
// topics (created, and deleted afterwards), consumer group, Redis prefix,
// ClickHouse database and spool folder, and an admin client.
func integrationConfig(t *testing.T) (Config, *kgo.Client) {
	t.Helper()
	return integrationConfigOn(t, testenv.Kafka(t))
}

// integrationConfigOn is integrationConfig on the given broker.
func integrationConfigOn(t *testing.T, brokers string) (Config, *kgo.Client) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Kafka.Brokers = []string{brokers}
	cfg.Redis.Addr = testenv.Redis(t)
	cfg.ClickHouse.Addr = testenv.ClickHouse(t)
	cfg.OnnxRuntimeLib = testenv.OnnxRuntime(t)
	cfg.Scoring.Package = testenv.ExamplePackage(t)
	run := strings.ToLower(ksuid.New().String()[:12])
	cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic = "it-"+run+".events", "it-"+run+".predictions", "it-"+run+".dlq"
	cfg.Kafka.Group = "it-" + run
	cfg.Redis.KeyPrefix = "it-" + run
	cfg.ClickHouse.Database = "seer_it_" + run
	cfg.ClickHouse.SpoolDir = t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	admin, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	adm := kadm.NewClient(admin)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopics(ctx, 3, 1, nil, cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		adm.DeleteTopics(context.Background(), cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic)
	})
	return cfg, admin
}

// testDB opens the config's ClickHouse database for a test (dropped
// afterwards) and, when migrated, migrates it.
func testDB(ctx context.Context, t *testing.T, cfg Config, migrated bool) driver.Conn {
	t.Helper()
	conn, err := drift.Open(ctx, cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.ClickHouse.Database)
		conn.Close()
	})
	if migrated {
		if err := drift.Migrate(ctx, conn, cfg.ClickHouse, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Fatal(err)
		}
	}
	return conn
}

// withRegistry gives the test a registry topic of its own (deleted
// afterwards, with its loads topic) and an artifact store in a temporary
// folder.
func withRegistry(t *testing.T, cfg *Config, admin *kgo.Client) {
	t.Helper()
	cfg.Registry.Topic = "it-registry-" + cfg.Kafka.Group
	cfg.Registry.Store = "file://" + t.TempDir()
	t.Cleanup(func() {
		kadm.NewClient(admin).DeleteTopics(context.Background(), cfg.Registry.Topic, registry.LoadsTopic(cfg.Registry.Topic))
	})
}

// cleanupApp drops the test's database and Redis keys and closes the app.
func cleanupApp(cfg Config, a *app) {
	ctx := context.Background()
	a.ch.Exec(ctx, "DROP DATABASE IF EXISTS "+cfg.ClickHouse.Database)
	if keys, _ := a.rdb.Keys(ctx, cfg.Redis.KeyPrefix+":*").Result(); len(keys) > 0 {
		a.rdb.Del(ctx, keys...)
	}
	a.Close()
}

// loadFeatures writes generated user features (every 10th user left out)
// and returns the generator and what it wrote.
func loadFeatures(ctx context.Context, t *testing.T, a *app) (*loadtest.Generator, map[string]map[string]map[string]string) {
	t.Helper()
	gen, err := loadtest.NewGenerator(a.schema, a.manifest, 50, 7)
	if err != nil {
		t.Fatal(err)
	}
	features := gen.FeatureRows(10)
	if err := ingest.New(a.rdb, a.store.Prefix()).PutViews(ctx, features, time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	return gen, features
}
