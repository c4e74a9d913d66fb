package featurestore

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// newStore returns a Store on the real Redis with a unique key prefix, and
// deletes its keys afterwards.
func newStore(t *testing.T, views []ViewConfig) *Store {
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
