package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/internal/testenv"
)

// TestDoctor on the real broker, Redis and ClickHouse: a config whose
// topics, schema, model and features are in place passes every check; one
// with a missing topic, an unmigrated database and an empty key prefix
// fails exactly those three, each with a fix, and exits non-zero; as an
// admin, the ACL check compares serve's ACLs with what seer acls grants.
func TestDoctor(t *testing.T) {
	cfg, _ := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	testDB(ctx, t, cfg, true)
	rdb := featurestore.NewClient(cfg.Redis)
	defer rdb.Close()
	key := featurestore.Key(cfg.Redis.KeyPrefix, "user_stats", "u1")
	if err := rdb.HSet(ctx, key, "txn_count_24h", "3", featurestore.TimestampField, time.Now().UnixMilli()).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Del(context.Background(), key) })
	env := map[string]string{"SEER_KAFKA_BROKERS": cfg.Kafka.Brokers[0], "SEER_KAFKA_INPUT_TOPIC": cfg.Kafka.InputTopic,
		"SEER_KAFKA_PREDICTIONS_TOPIC": cfg.Kafka.PredictionsTopic, "SEER_KAFKA_DLQ_TOPIC": cfg.Kafka.DLQTopic, "SEER_KAFKA_GROUP": cfg.Kafka.Group,
		"SEER_REDIS_KEY_PREFIX": cfg.Redis.KeyPrefix, "SEER_CLICKHOUSE_DATABASE": cfg.ClickHouse.Database, "SEER_SCORING_PACKAGE": cfg.Scoring.Package, "SEER_ONNXRUNTIME_LIB": cfg.OnnxRuntimeLib}
	for k, v := range env {
		t.Setenv(k, v)
	}
	lines := func(out string) map[string]string { // "area name" → status
		m := map[string]string{}
		for _, l := range regexp.MustCompile(`(?m)^(ok|FAIL|skip)\s+(\S+)\s+(\S+)`).FindAllStringSubmatch(out, -1) {
			m[l[2]+" "+l[3]] = l[1]
		}
		return m
	}
	out, err := runSeer(ctx, "doctor")
	if err != nil {
		t.Fatalf("doctor on a good config: %v\n%s", err, out)
	}
	got := lines(out)
	for _, c := range []string{"kafka brokers", "kafka topics", "kafka group", "clickhouse server", "clickhouse cluster", "clickhouse schema", "model package", "redis server", "redis views"} {
		if got[c] != "ok" {
			t.Errorf("%s: %q, want ok\n%s", c, got[c], out)
		}
	}
	if got["kafka acls"] != "skip" || got["registry alias"] != "skip" {
		t.Errorf("acls %q, registry %q: want skipped (no SASL principal, no registry)\n%s", got["kafka acls"], got["registry alias"], out)
	}

	t.Setenv("SEER_KAFKA_DLQ_TOPIC", cfg.Kafka.DLQTopic+"-missing")
	t.Setenv("SEER_CLICKHOUSE_DATABASE", cfg.ClickHouse.Database+"_empty")
	t.Setenv("SEER_REDIS_KEY_PREFIX", cfg.Redis.KeyPrefix+"-empty")
	t.Setenv("SEER_CLICKHOUSE_CLUSTER", "nosuch")
	out, err = runSeer(ctx, "doctor")
	if err == nil || !strings.Contains(err.Error(), "4 of 11 checks failed") {
		t.Fatalf("doctor on a broken config: %v\n%s", err, out)
	}
	got = lines(out)
	for _, c := range []string{"kafka topics", "clickhouse cluster", "clickhouse schema", "redis views"} {
		if got[c] != "FAIL" {
			t.Errorf("%s: %q, want FAIL\n%s", c, got[c], out)
		}
	}
	for _, want := range []string{cfg.Kafka.DLQTopic + "-missing is missing", "has 0 of", `no cluster "nosuch" in its remote_servers`, "has no keys under", "fix: run seer migrate", "fix: load the views"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor's output lacks %q:\n%s", want, out)
		}
	}

	// As the admin over SASL_SSL, serve's ACLs for the stack's default
	// config are complete; for this test's topics they are not.
	s := testenv.Secure(t)
	for k, v := range map[string]string{"SEER_KAFKA_BROKERS": s.SASL, "SEER_KAFKA_TLS_CA_FILE": s.CA(), "SEER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
		"SEER_KAFKA_SASL_USERNAME": "admin", "SEER_KAFKA_SASL_PASSWORD_FILE": filepath.Join(s.Dir, "admin.password")} {
		t.Setenv(k, v)
	}
	out, _ = runSeer(ctx, "doctor", "--principal", "User:serve")
	if lines(out)["kafka acls"] != "FAIL" || !strings.Contains(out, "READ on topic "+cfg.Kafka.InputTopic+",") {
		t.Errorf("serve's ACLs for the test's topics: want missing READ on %s\n%s", cfg.Kafka.InputTopic, out)
	}
	d := DefaultConfig().Kafka
	t.Setenv("SEER_KAFKA_INPUT_TOPIC", d.InputTopic)
	t.Setenv("SEER_KAFKA_PREDICTIONS_TOPIC", d.PredictionsTopic)
	t.Setenv("SEER_KAFKA_DLQ_TOPIC", d.DLQTopic)
	t.Setenv("SEER_KAFKA_GROUP", d.Group)
	out, _ = runSeer(ctx, "doctor", "--principal", "User:serve")
	if lines(out)["kafka acls"] != "ok" {
		t.Errorf("serve's ACLs for the default config (made by the stack): want ok\n%s", out)
	}
}
