package ingest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// newWriter returns a Writer on the real Redis under a unique prefix, as
// user (rules) when given, and the admin client; the keys go afterwards.
func newWriter(t *testing.T, rules []string) (*Writer, redis.UniversalClient) {
	t.Helper()
	cfg := featurestore.DefaultConfig()
	cfg.Addr = testenv.Redis(t)
	cfg.KeyPrefix = "seertest-" + ksuid.New().String()
	admin := featurestore.NewClient(cfg)
	ctx := context.Background()
	t.Cleanup(func() {
		if keys, _ := admin.Keys(ctx, cfg.KeyPrefix+":*").Result(); len(keys) > 0 {
			admin.Del(ctx, keys...)
		}
		admin.Close()
	})
	if rules != nil {
		user, pw := "ingest-"+strings.ToLower(ksuid.New().String()[:10]), schemas.Secret("pw-"+ksuid.New().String())
		if err := featurestore.SetUser(ctx, admin, user, pw, rules); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
		cfg.Username, cfg.Password = user, pw
	}
	rdb := featurestore.NewClient(cfg)
	t.Cleanup(func() { rdb.Close() })
	return New(rdb, cfg.KeyPrefix), admin
}

// TestApplyOutOfOrder on the real Redis, as the loader user: an update
// older than the stored one is skipped, wherever it comes in a batch or
// across batches; one as old is written again (a replay); each hash is
// replaced whole, with the TTL; after a SCRIPT FLUSH (a Redis restart)
// the script is loaded again.
func TestApplyOutOfOrder(t *testing.T) {
	w, admin := newWriter(t, featurestore.LoaderRules("seertest-*"))
	ctx := context.Background()
	row := func(entity string, ts int64, count string) Row {
		return Row{Entity: entity, TsMs: ts, Values: map[string]string{"count": count}}
	}
	skipped, err := w.Apply(ctx, "user", []Row{row("u1", 2000, "5"), row("u1", 1000, "1"), row("u2", 1000, "2"), row("u2", 3000, "7")}, time.Hour)
	if err != nil || skipped != 1 {
		t.Fatalf("Apply = %d skipped, %v; want 1 (u1's older update)", skipped, err)
	}
	get := func(entity string) map[string]string {
		t.Helper()
		v, err := admin.HGetAll(ctx, featurestore.Key(w.prefix, "user", entity)).Result()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if u1, u2 := get("u1"), get("u2"); u1["count"] != "5" || u1["_ts"] != "2000" || u2["count"] != "7" || u2["_ts"] != "3000" {
		t.Errorf("after the first batch u1 = %v, u2 = %v; want the newest of each", u1, u2)
	}
	if ttl := admin.PTTL(ctx, featurestore.Key(w.prefix, "user", "u1")).Val(); ttl <= 0 || ttl > time.Hour {
		t.Errorf("u1's TTL is %v, want up to 1h", ttl)
	}
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	skipped, err = w.Apply(ctx, "user", []Row{row("u1", 1500, "9"), row("u2", 3000, "8"), {Entity: "u3", TsMs: 10, Values: map[string]string{"avg": "1.5"}}}, 0)
	if err != nil || skipped != 1 {
		t.Fatalf("second Apply = %d skipped, %v; want 1", skipped, err)
	}
	if u1, u2, u3 := get("u1"), get("u2"), get("u3"); u1["count"] != "5" || u2["count"] != "8" || u3["avg"] != "1.5" || u3["_ts"] != "10" {
		t.Errorf("after the second batch u1 = %v, u2 = %v, u3 = %v", u1, u2, u3)
	}
}

// TestLoad reads CSV and JSON Lines into whole hashes, with progress.
func TestLoad(t *testing.T) {
	w, admin := newWriter(t, nil)
	ctx := context.Background()
	fresh := time.Now().Add(-time.Minute).UnixMilli()
	csv := "user_id,count,avg,updated\nu1,3,40.5," + strconv.FormatInt(fresh, 10) + "\nu2,7,,2020-01-01T00:00:00Z\n"
	var progress []int
	n, err := w.Load(ctx, strings.NewReader(csv), LoadOptions{View: "user", Format: "csv", EntityColumn: "user_id", TimeColumn: "updated", BatchSize: 1, Progress: func(n int) { progress = append(progress, n) }})
	if err != nil || n != 2 {
		t.Fatalf("Load csv = %d, %v; want 2 rows", n, err)
	}
	if len(progress) != 2 || progress[1] != 2 {
		t.Errorf("progress = %v, want [1 2]", progress)
	}
	jsonl := `{"merchant":"m1","risk":0.7,"ts":` + strconv.FormatInt(fresh, 10) + "}\n\n" + `{"merchant":"m2","risk":0.1,"ts":"2020-01-01T00:00:00Z"}` + "\n"
	if n, err := w.Load(ctx, strings.NewReader(jsonl), LoadOptions{View: "merchant", Format: "jsonl", EntityColumn: "merchant", TimeColumn: "ts"}); err != nil || n != 2 {
		t.Fatalf("Load jsonl = %d, %v; want 2 rows", n, err)
	}
	u2 := admin.HGetAll(ctx, featurestore.Key(w.prefix, "user", "u2")).Val()
	if _, ok := u2["avg"]; ok || u2["count"] != "7" || u2["_ts"] != "1577836800000" {
		t.Errorf("u2 = %v: want count 7, no avg (empty cell), _ts of 2020-01-01", u2)
	}
	if m1 := admin.HGetAll(ctx, featurestore.Key(w.prefix, "merchant", "m1")).Val(); m1["risk"] != "0.7" || m1["_ts"] != strconv.FormatInt(fresh, 10) {
		t.Errorf("m1 = %v", m1)
	}
}

func TestLoadErrorsNameTheLine(t *testing.T) {
	w, _ := newWriter(t, nil)
	f := func(format, body, want string) {
		t.Helper()
		_, err := w.Load(context.Background(), strings.NewReader(body), LoadOptions{View: "user", Format: format, EntityColumn: "id"})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%s %q) error = %v, want %q", format, body, err, want)
		}
	}
	f("csv", "name,count\nx,1\n", `no entity column "id"`)
	f("csv", "id,count\nx,1\ny,NaN\n", `line 3: column "count"`)
	f("csv", "id,count\n,1\n", "line 2")
	f("jsonl", `{"id":"a","v":1}`+"\n"+`{"id":"b","v":[1]}`, `line 2: wrong_type: field "v"`)
	f("jsonl", `{"v":1}`, "line 1")
	f("jsonl", `not json`, "line 1: invalid_json")
	f("jsonl", `{"id":"a","id":"b"}`, "line 1: invalid_json")
	f("parquet", "", `format: "parquet"`)
}

// TestDecodeUpdates: the feature-update contract's checks, with the
// reason codes of the DLQ.
func TestDecodeUpdates(t *testing.T) {
	var u Updates
	row, derr := u.Decode([]byte("u9"), []byte(`{"event_time":"2026-11-26T10:00:00Z","count":3,"tier":"gold","vip":true,"gone":null}`))
	if derr != nil || row.Entity != "u9" || row.TsMs != 1795687200000 || row.Values["count"] != "3" || row.Values["tier"] != "gold" || row.Values["vip"] != "true" || len(row.Values) != 3 {
		t.Fatalf("Decode = %+v, %v", row, derr)
	}
	for body, reason := range map[string]schemas.Reason{
		`{"entity_id":"u","count":1}`:                      schemas.ReasonMissingField,
		`{"event_time":1,"count":1}`:                       schemas.ReasonMissingField,
		`{"entity_id":"u","event_time":"soon"}`:            schemas.ReasonWrongType,
		`{"entity_id":"u","event_time":1,"count":[1]}`:     schemas.ReasonWrongType,
		`{"entity_id":"u","event_time":1,"count":1e999}`:   schemas.ReasonNotFinite,
		`{"entity_id":"a:b","event_time":1}`:               schemas.ReasonWrongType,
		`{"entity_id":"u","entity_id":"v","event_time":1}`: schemas.ReasonInvalidJSON,
		`not json`: schemas.ReasonInvalidJSON,
	} {
		if _, derr := u.Decode(nil, []byte(body)); derr == nil || derr.Reason != reason {
			t.Errorf("Decode(%s) = %v, want %s", body, derr, reason)
		}
	}
	if _, derr := (Updates{MaxBytes: 10}).Decode(nil, []byte(`{"entity_id":"u","event_time":1}`)); derr == nil || derr.Reason != schemas.ReasonOversize {
		t.Errorf("an oversize update: %v", derr)
	}
}

// FuzzDecodeUpdates: any bytes get an update or a reason, never a panic;
// a decoded update has an entity fit for a key and a time.
func FuzzDecodeUpdates(f *testing.F) {
	f.Add([]byte(`{"entity_id":"u1","event_time":1700000000000,"count":3}`), []byte(""))
	f.Add([]byte(`{"event_time":"2026-11-26T10:00:00Z","x":"y"}`), []byte("u2"))
	f.Fuzz(func(t *testing.T, value, key []byte) {
		row, derr := Updates{}.Decode(key, value)
		if derr != nil {
			if derr.Reason == "" {
				t.Fatalf("a rejection without a reason: %v", derr)
			}
			return
		}
		if row.Entity == "" || strings.ContainsAny(row.Entity, " :") || row.TsMs <= 0 {
			t.Fatalf("decoded outside the contract: %+v", row)
		}
	})
}
