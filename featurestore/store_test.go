package featurestore

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// newStore returns a Store on the real Redis with a unique key prefix, and
// deletes its keys afterwards.
func newStore(t testing.TB, views []ViewConfig) *Store {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Addr = testenv.Redis(t)
	cfg.KeyPrefix = "seertest-" + ksuid.New().String()
	cfg.Views = views
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rdb := NewClient(cfg)
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := rdb.Keys(ctx, cfg.KeyPrefix+":*").Result()
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		rdb.Close()
	})
	return New(cfg, rdb, []string{"user", "merchant"},
		map[string][]string{"user": {"count", "avg"}, "merchant": {"risk"}},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
}

func TestEnrich(t *testing.T) {
	s := newStore(t, []ViewConfig{{Name: "merchant", MaxAge: time.Hour, OnStale: PolicyDLQ, OnMissing: PolicyDefault}})
	ctx := context.Background()
	now := time.Now()
	fresh := now.Add(-time.Minute).UnixMilli()
	old := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	for key, fields := range map[string][]any{
		Key(s.prefix, "user", "u1"):     {"count", "3", "avg", "40.5", TimestampField, fresh},
		Key(s.prefix, "user", "u2"):     {"count", "7", TimestampField, old},
		Key(s.prefix, "merchant", "u1"): {"risk", "0.7", TimestampField, fresh},
		Key(s.prefix, "merchant", "u2"): {"risk", "0.1", TimestampField, old},
	} {
		if err := s.rdb.HSet(ctx, key, fields...).Err(); err != nil {
			t.Fatal(err)
		}
	}

	items := []schemas.Item{
		{Event: schemas.Event{EntityID: "u1"}},
		{Event: schemas.Event{EntityID: "u2"}},
		{Event: schemas.Event{EntityID: "u3"}},
		{Event: schemas.Event{EntityID: "u1"}, Reject: &schemas.DecodeError{Reason: schemas.ReasonInvalidJSON}},
	}
	if err := s.Enrich(ctx, items); err != nil {
		t.Fatal(err)
	}
	u1 := items[0].Features
	if len(u1) != 2 || u1[0].View != "user" || u1[0].Values[0].Num != 3 || u1[0].Values[1].Num != 40.5 {
		t.Fatalf("u1 user features = %+v", u1)
	}
	if u1[0].Missing || u1[0].Stale || u1[0].AgeMs < 60_000 || u1[0].AgeMs > 120_000 {
		t.Errorf("u1 user freshness = %+v, want fresh, age about 60s", u1[0])
	}
	if u1[1].Values[0].Num != 0.7 || items[0].Reject != nil {
		t.Errorf("u1 merchant = %+v reject %v", u1[1], items[0].Reject)
	}
	// u2: user view has no max_age (never stale) but avg is absent; the
	// merchant view is older than its max_age with policy dlq.
	u2 := items[1]
	if u2.Features[0].Stale || u2.Features[0].Values[1].Kind != schemas.KindAbsent || !u2.Features[0].Flagged {
		t.Errorf("u2 user = %+v, want not stale, avg absent and flagged", u2.Features[0])
	}
	if !u2.Features[1].Stale || u2.Reject == nil || u2.Reject.Reason != schemas.ReasonFeatureStale || u2.Reject.Field != "merchant" {
		t.Errorf("u2 = %+v, want merchant stale and rejected with feature_stale", u2)
	}
	// u3: nothing in Redis; default policy flags it and keeps scoring.
	u3 := items[2]
	if !u3.Features[0].Missing || !u3.Features[0].Flagged || u3.Features[0].AgeMs != -1 || u3.Reject != nil {
		t.Errorf("u3 = %+v, want missing, flagged, not rejected", u3)
	}
	if items[3].Features != nil {
		t.Errorf("rejected item was enriched: %+v", items[3].Features)
	}
}

func TestMissingPolicyDLQ(t *testing.T) {
	s := newStore(t, []ViewConfig{{Name: "user", OnMissing: PolicyDLQ}})
	items := []schemas.Item{{Event: schemas.Event{EntityID: "nobody"}}}
	if err := s.Enrich(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	if items[0].Reject == nil || items[0].Reject.Reason != schemas.ReasonFeatureMissing || items[0].Reject.Stage != schemas.StageEnrich {
		t.Errorf("reject = %+v, want feature_missing at enrich", items[0].Reject)
	}
}

func TestEnrichReportsRedisDown(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Addr = "127.0.0.1:1" // nothing listens on port 1
	cfg.Timeout = 200 * time.Millisecond
	rdb := NewClient(cfg)
	defer rdb.Close()
	s := New(cfg, rdb, []string{"user"}, map[string][]string{"user": {"a"}}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	items := []schemas.Item{{Event: schemas.Event{EntityID: "u"}}}
	if err := s.Enrich(context.Background(), items); err == nil {
		t.Fatal("Enrich succeeded with Redis down")
	}
	if items[0].Features != nil || items[0].Reject != nil {
		t.Errorf("batch changed on error: %+v", items[0])
	}
}

// TestEnrichOnRedisCluster: on a three-primary Redis Cluster, the views of
// 300 entities spread over every primary; one Enrich of them all reads
// every value back, with one pipelined round trip per primary, and the
// ACL user reaches every node.
func TestEnrichOnRedisCluster(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Mode, cfg.Addrs = ModeCluster, testenv.RedisCluster(t)
	cfg.KeyPrefix = "seertest-" + ksuid.New().String()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	rdb := NewClient(cfg)
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		t.Fatalf("mode cluster gave a %T", rdb)
	}
	ctx := context.Background()
	t.Cleanup(func() {
		cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			keys, _ := node.Keys(ctx, cfg.KeyPrefix+":*").Result()
			for _, k := range keys {
				node.Del(ctx, k)
			}
			return nil
		})
		rdb.Close()
	})
	now := time.Now().UnixMilli()
	items := make([]schemas.Item, 300)
	for i := range items {
		e := fmt.Sprintf("u%d", i)
		items[i].Event.EntityID = e
		if err := rdb.HSet(ctx, Key(cfg.KeyPrefix, "user", e), "count", i, "avg", float64(i)/2, TimestampField, now).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.HSet(ctx, Key(cfg.KeyPrefix, "merchant", e), "risk", float64(i)/1000, TimestampField, now).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var holding atomic.Int32 // primaries holding some of the keys
	if err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		n, err := node.DBSize(ctx).Result()
		if n > 0 {
			holding.Add(1)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if holding.Load() < 3 {
		t.Fatalf("keys on %d primaries, want all 3 (is the cluster's slot map complete?)", holding.Load())
	}
	var pipelines pipelineCounter
	cc.OnNewNode(func(node *redis.Client) { node.AddHook(&pipelines) })
	cc.ForEachShard(ctx, func(_ context.Context, node *redis.Client) error { node.AddHook(&pipelines); return nil })
	s := New(cfg, rdb, []string{"user", "merchant"}, map[string][]string{"user": {"count", "avg"}, "merchant": {"risk"}},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err := s.Enrich(ctx, items); err != nil {
		t.Fatal(err)
	}
	for i, it := range items {
		f := it.Features
		if len(f) != 2 || f[0].Missing || f[1].Missing || f[0].Values[0].Num != float64(i) || f[0].Values[1].Num != float64(i)/2 || f[1].Values[0].Num != float64(i)/1000 {
			t.Fatalf("entity u%d features = %+v", i, f)
		}
	}
	if n := pipelines.n.Load(); n < 1 || n > 3 {
		t.Errorf("one Enrich of 600 lookups took %d pipelined round trips, want one per primary (at most 3)", n)
	}
	// The ACL user exists on every node, so a reader can log in to any.
	pw := schemas.Secret("reader-" + ksuid.New().String())
	if err := SetUser(ctx, rdb, "seertest-reader", pw, ReaderRules(cfg.KeyPrefix)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
			return node.Do(ctx, "ACL", "DELUSER", "seertest-reader").Err()
		})
	})
	if err := cc.ForEachShard(ctx, func(ctx context.Context, node *redis.Client) error {
		return node.Do(ctx, "AUTH", "seertest-reader", pw.Reveal()).Err()
	}); err != nil {
		t.Errorf("the reader cannot log in to every node: %v", err)
	}
}

// pipelineCounter counts pipelined round trips of HMGETs through a
// go-redis hook.
type pipelineCounter struct{ n atomic.Int32 }

func (c *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (c *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "hmget" { // not a new connection's handshake
			c.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// TestConfigModes: each Redis mode names the key it is missing.
func TestConfigModes(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		want   string // in the error; "" for valid
	}{
		{func(c *Config) {}, ""},
		{func(c *Config) { c.Addr = "" }, "redis.addr"},
		{func(c *Config) { c.Mode = "replicated" }, "redis.mode"},
		{func(c *Config) { c.Mode = ModeCluster }, "redis.addrs"},
		{func(c *Config) { c.Mode, c.Addrs, c.DB = ModeCluster, []string{"h:7001"}, 2 }, "redis.db"},
		{func(c *Config) { c.Mode, c.Addrs = ModeCluster, []string{"h:7001"} }, ""},
		{func(c *Config) { c.Mode, c.Addrs = ModeSentinel, []string{"h:26379"} }, "redis.master_name"},
		{func(c *Config) { c.Mode, c.Addrs, c.MasterName = ModeSentinel, []string{"h:26379"}, "main" }, ""},
	} {
		c := DefaultConfig()
		tc.mutate(&c)
		err := c.Validate()
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("mode %q: Validate() = %v, want an error naming %q", c.Mode, err, tc.want)
		}
	}
}

// BenchmarkEnrich enriches batches of 500 events from two views on the real
// Redis, one pipelined round trip per batch: the client's cost per event
// (ns/op, B/op and allocs/op are per event; client-cpu-ns/event is this
// process's CPU, apart from Redis's on the same cores).
func BenchmarkEnrich(b *testing.B) {
	const batch, entities = 500, 1000
	s := newStore(b, nil)
	ctx := context.Background()
	ts := time.Now().Add(-time.Minute).UnixMilli()
	pipe := s.rdb.Pipeline()
	ids := make([]string, entities)
	for e := range entities {
		id := fmt.Sprint("u", e)
		ids[e] = id
		pipe.HSet(ctx, Key(s.prefix, "user", id), "count", e, "avg", float64(e)/7, TimestampField, ts)
		pipe.HSet(ctx, Key(s.prefix, "merchant", id), "risk", float64(e)/entities, TimestampField, ts)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	items := make([]schemas.Item, batch)
	b.ReportAllocs()
	cpu0 := testenv.ProcessCPU(b)
	b.ResetTimer()
	for done := 0; done < b.N; done += batch {
		for i := range items {
			items[i] = schemas.Item{Event: schemas.Event{EntityID: ids[(done+i)%entities]}}
		}
		if err := s.Enrich(ctx, items); err != nil {
			b.Fatal(err)
		}
		if f := items[batch-1].Features; len(f) != 2 || f[0].Missing || f[1].Missing {
			b.Fatalf("last item's features %+v; want both views found", f)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "client-cpu-ns/event")
}
