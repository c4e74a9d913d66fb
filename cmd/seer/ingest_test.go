package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/judge"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
)

// ingestTopics creates a one-partition topic and its DLQ for the test.
func ingestTopics(t *testing.T, admin *kgo.Client, topic string) {
	t.Helper()
	adm := kadm.NewClient(admin)
	if _, err := adm.CreateTopics(context.Background(), 1, 1, nil, topic, topic+".dlq"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), topic, topic+".dlq") })
}

// produce writes values (and keys, when given) to topic, in order.
func produce(ctx context.Context, t *testing.T, admin *kgo.Client, topic string, keys []string, values []string) {
	t.Helper()
	recs := make([]*kgo.Record, len(values))
	for i, v := range values {
		recs[i] = &kgo.Record{Topic: topic, Value: []byte(v)}
		if i < len(keys) {
			recs[i].Key = []byte(keys[i])
		}
	}
	if err := admin.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// deadReasons returns the seer-error header of each DLQ record.
func deadReasons(ctx context.Context, t *testing.T, brokers, topic string, want int) []string {
	t.Helper()
	var out []string
	for _, r := range consume(ctx, t, brokers, topic, want) {
		for _, h := range r.Headers {
			if h.Key == schemas.HeaderError {
				out = append(out, string(h.Value))
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestLabelsOnTheBrokerToWindowMetrics on the real broker and ClickHouse:
// seer labels ingest takes the labels of 90% of a window's scored events
// from the labels topic (bad records to the DLQ with their reasons, the
// offsets committed: a second run finds nothing), then seer monitor
// --once backfills the window, whose performance comes out mature, with
// the coverage and an AUC.
func TestLabelsOnTheBrokerToWindowMetrics(t *testing.T) {
	cfg, admin := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := "it-labels-" + cfg.Kafka.Group
	ingestTopics(t, admin, topic)
	conn := testDB(ctx, t, cfg, true)
	m := mustManifest(t, cfg)
	t0 := time.Now().Add(-time.Hour).Truncate(time.Minute)
	r := rand.New(rand.NewPCG(9, 10))
	var rows []inferencelog.LogRow
	var values []string
	for i := range 2000 {
		id := fmt.Sprintf("ev-%d", i)
		s := r.Float32()
		rows = append(rows, inferencelog.LogRow{PredictionID: "p" + id, EventID: id, EntityID: "u", Model: m.Name, ModelVersion: m.Version, Route: "production",
			EventTimeMs: t0.UnixMilli() + int64(i), ScoredTimeMs: t0.UnixMilli() + int64(i) + 3, Score: s})
		if i%10 == 0 {
			continue
		}
		y := 0
		if s > 0.8 || r.IntN(20) == 0 {
			y = 1
		}
		values = append(values, fmt.Sprintf(`{"event_id":%q,"label":%d,"label_time":%d}`, id, y, t0.Add(10*time.Minute).UnixMilli()))
	}
	if err := inferencelog.NewSink(conn, cfg.ClickHouse.Database).Insert(ctx, &inferencelog.Batch{Log: rows}); err != nil {
		t.Fatal(err)
	}
	values = append(values, `{"event_id":"x","label":2,"label_time":1}`, `{"label":1,"label_time":1}`, `not json`)
	produce(ctx, t, admin, topic, nil, values)
	for k, v := range map[string]string{"SEER_KAFKA_BROKERS": cfg.Kafka.Brokers[0], "SEER_CLICKHOUSE_DATABASE": cfg.ClickHouse.Database,
		"SEER_INGEST_LABELS_TOPIC": topic, "SEER_INGEST_LABELS_DLQ_TOPIC": topic + ".dlq", "SEER_INGEST_GROUP": cfg.Kafka.Group,
		"SEER_SCORING_PACKAGE": cfg.Scoring.Package, "SEER_MONITOR_WINDOW": "1m", "SEER_MONITOR_LEASE_TTL": "10s", "SEER_MONITOR_LABEL_DELAY": "5m"} {
		t.Setenv(k, v)
	}
	out, err := runSeer(ctx, "labels", "ingest", "--until-idle", "3s", "--http=")
	if err != nil || !strings.Contains(out, "1800 written, 0 skipped as stale, 3 to "+topic+".dlq") {
		t.Fatalf("labels ingest: %v\n%s", err, out)
	}
	if got := deadReasons(ctx, t, cfg.Kafka.Brokers[0], topic+".dlq", 3); strings.Join(got, ",") != "invalid_json,missing_field,out_of_bounds" {
		t.Errorf("label dead letters: %v", got)
	}
	if out, err := runSeer(ctx, "labels", "ingest", "--until-idle", "2s", "--http="); err != nil || !strings.Contains(out, "0 written") {
		t.Errorf("a second ingest in the same group: %v\n%s (want nothing: the offsets were committed)", err, out)
	}
	out, err = runSeer(ctx, "monitor", "--once", "--from", t0.Format(time.RFC3339), "--to", t0.Add(time.Minute).Format(time.RFC3339))
	if err != nil || !strings.Contains(out, "backfilled 1 windows") {
		t.Fatalf("monitor --once: %v\n%s", err, out)
	}
	figures := map[string]float64{}
	q, err := conn.Query(ctx, "SELECT metric, value FROM "+cfg.ClickHouse.Database+".window_metrics FINAL WHERE family = 'performance' AND window_start = toDateTime("+fmt.Sprint(t0.Unix())+")")
	if err != nil {
		t.Fatal(err)
	}
	for q.Next() {
		var name string
		var v float64
		q.Scan(&name, &v)
		figures[name] = v
	}
	q.Close()
	if figures["mature"] != 1 || figures["label_coverage"] != 0.9 || figures["labeled"] != 1800 || figures["auc"] < 0.85 {
		t.Errorf("the window's performance: %v; want mature, coverage 0.9 on 1800 labels, an AUC above 0.85", figures)
	}
}

// TestFeaturesIngestOutOfOrder on the real broker and Redis: seer
// features ingest writes a topic of updates, where some come after newer
// ones (skipped as stale) and some are bad (to the DLQ with their
// reasons); an entity may come from the record key.
func TestFeaturesIngestOutOfOrder(t *testing.T) {
	cfg, admin := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topic := "it-features-" + cfg.Kafka.Group
	ingestTopics(t, admin, topic)
	rdb := featurestore.NewClient(cfg.Redis)
	defer rdb.Close()
	t.Cleanup(func() {
		if keys, _ := rdb.Keys(context.Background(), cfg.Redis.KeyPrefix+":*").Result(); len(keys) > 0 {
			rdb.Del(context.Background(), keys...)
		}
	})
	produce(ctx, t, admin, topic, []string{"", "", "", "", "u3", "", "", ""}, []string{
		`{"entity_id":"u1","event_time":2000,"count":5}`,
		`{"entity_id":"u1","event_time":1000,"count":1}`,
		`{"entity_id":"u2","event_time":1000,"count":2}`,
		`{"entity_id":"u2","event_time":"1970-01-01T00:00:03Z","count":7,"tier":"gold"}`,
		`{"event_time":1500,"count":3}`,
		`{"entity_id":"u4","count":1}`,
		`{"entity_id":"u5","event_time":1,"count":1e999}`,
		`{"entity_id":"u6","event_time":1,"count":{"a":1}}`,
	})
	for k, v := range map[string]string{"SEER_KAFKA_BROKERS": cfg.Kafka.Brokers[0], "SEER_REDIS_KEY_PREFIX": cfg.Redis.KeyPrefix,
		"SEER_INGEST_FEATURES_DLQ_TOPIC": topic + ".dlq", "SEER_INGEST_GROUP": cfg.Kafka.Group} {
		t.Setenv(k, v)
	}
	out, err := runSeer(ctx, "features", "ingest", "--view", "user", "--topic", topic, "--until-idle", "3s", "--http=")
	if err != nil || !strings.Contains(out, "4 written, 1 skipped as stale, 3 to "+topic+".dlq") {
		t.Fatalf("features ingest: %v\n%s", err, out)
	}
	for entity, want := range map[string]string{"u1": "count=5 _ts=2000", "u2": "count=7 tier=gold _ts=3000", "u3": "count=3 _ts=1500"} {
		h := rdb.HGetAll(ctx, featurestore.Key(cfg.Redis.KeyPrefix, "user", entity)).Val()
		var got []string
		for _, f := range []string{"count", "tier", featurestore.TimestampField} {
			if v, ok := h[f]; ok {
				got = append(got, f+"="+v)
			}
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s = %v, want %s", entity, h, want)
		}
	}
	if got := deadReasons(ctx, t, cfg.Kafka.Brokers[0], topic+".dlq", 3); strings.Join(got, ",") != "missing_field,not_finite,wrong_type" {
		t.Errorf("feature dead letters: %v", got)
	}
}

// profileScores draws n scores from a score profile: a bin by its count,
// then uniformly inside it.
func profileScores(r *rand.Rand, p schemas.ColumnProfile, n int) []float32 {
	var total int64
	for _, c := range p.Counts {
		total += c
	}
	out := make([]float32, n)
	for i := range out {
		k := r.Int64N(total)
		for b, c := range p.Counts {
			if k < c {
				out[i] = float32(p.Edges[b] + r.Float64()*(p.Edges[b+1]-p.Edges[b]))
				break
			}
			k -= c
		}
	}
	return out
}

// TestPerformanceGateRollsBack on the real broker and ClickHouse: a
// canary whose outputs look fine — healthy, its scores distributed as its
// own profile says — but whose labels say it ranks no better than a coin
// is rolled back by the controller at the performance gate (auc); the same
// candidate with labels as good as production's is promoted.
func TestPerformanceGateRollsBack(t *testing.T) {
	cfg, admin := integrationConfig(t)
	withRegistry(t, &cfg, admin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	pkgs, closePkgs, err := openPackages(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer closePkgs()
	candDir := filepath.Join("..", "..", "deploy", "examples", "card-fraud-1.1.0")
	if _, err := demoRegister(ctx, &globals{stdout: io.Discard, stderr: io.Discard}, cfg, pkgs.log, pkgs.store, []string{cfg.Scoring.Package, candDir}); err != nil {
		t.Fatal(err)
	}
	if _, err := pkgs.log.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "ci", "first"); err != nil {
		t.Fatal(err)
	}
	conn := testDB(ctx, t, cfg, true)
	cand, err := schemas.LoadManifest(candDir)
	if err != nil {
		t.Fatal(err)
	}
	gates := cfg.RolloutGates
	gates.MinSamples, gates.LabelDelay = 300, time.Second
	ctl := newController(cfg, "card-fraud", pkgs.log, judge.Judge{Conn: conn, Database: cfg.ClickHouse.Database, Config: gates}, pkgs, admin, nil, quiet)
	ctl.Fleet = nil // no serve instance runs here: steps are judged from their start (the fleet's wait is TestControllerWaitsForEveryInstance's)
	r := rand.New(rand.NewPCG(11, 12))
	// rollout starts a one-step canary of 1.1.0, then logs and labels 2000
	// events of each route: production's labels follow its scores, the
	// canary's follow them when informative, else a coin.
	rollout := func(informative bool) *registry.Event {
		t.Helper()
		if _, err := pkgs.log.StartRollout(ctx, "card-fraud", "1.1.0", "champion", []string{"25"}, time.Second, "ci", "performance gate test"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		now := time.Now()
		var rows []inferencelog.LogRow
		var ls []labels.Label
		for _, route := range []struct {
			version, route string
			informative    bool
		}{{"1.0.0", "production", true}, {"1.1.0", "canary", informative}} {
			for i, s := range profileScores(r, cand.Profile.Outputs["score"], 2000) {
				id := fmt.Sprintf("%s-%d-%d", route.route, now.UnixNano(), i)
				rows = append(rows, inferencelog.LogRow{PredictionID: "p" + id, EventID: id, EntityID: "u", Model: "card-fraud", ModelVersion: route.version,
					Route: route.route, EventTimeMs: now.UnixMilli(), ScoredTimeMs: now.UnixMilli() + 1, Score: s, ScoringUs: 100})
				y := uint8(0)
				if (route.informative && s > 0.3) || (!route.informative && r.IntN(10) == 0) {
					y = 1
				}
				ls = append(ls, labels.Label{EventID: id, Label: y, Time: now.Add(500 * time.Millisecond)})
			}
		}
		if err := inferencelog.NewSink(conn, cfg.ClickHouse.Database).Insert(ctx, &inferencelog.Batch{Log: rows}); err != nil {
			t.Fatal(err)
		}
		if err := (labels.Writer{Conn: conn, Database: cfg.ClickHouse.Database}).Write(ctx, ls); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1500 * time.Millisecond) // the step falls due, the labels mature
		e, err := ctl.Step(ctx)
		if err != nil || e == nil {
			t.Fatalf("controller step: %v, %v", e, err)
		}
		return e
	}
	back := rollout(false)
	if back.Type != registry.RolloutRolledBack || back.Gate != "auc" || back.Figures["auc"] > 0.6 || back.Figures["production_auc"] < 0.9 {
		t.Fatalf("the coin-flip canary: %s at gate %q, figures %v; want rolled back at auc", back.Type, back.Gate, back.Figures)
	}
	if back.Figures["score_drift_pvalue"] < 0.01 || back.Figures["error_rate"] != 0 {
		t.Errorf("its outputs should look fine: figures %v", back.Figures)
	}
	if done := rollout(true); done.Type != registry.RolloutPromoted {
		t.Errorf("the good canary: %s at gate %q, figures %v; want promoted", done.Type, done.Gate, done.Figures)
	}
}

// TestLabelsLoad on the real ClickHouse: seer labels load reads a Parquet
// file (a timestamp column) and a CSV file whose bad rows go, with their
// row numbers and reasons, to the rejects file while the good ones load;
// a label loaded again with a later label_time wins.
func TestLabelsLoad(t *testing.T) {
	cfg, _ := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := testDB(ctx, t, cfg, false)
	t.Setenv("SEER_CLICKHOUSE_DATABASE", cfg.ClickHouse.Database)
	dir := t.TempDir()
	type row struct {
		EventID   string    `parquet:"event_id"`
		Label     int64     `parquet:"label"`
		LabelTime time.Time `parquet:"label_time,timestamp(millisecond)"`
		Value     *float64  `parquet:"value,optional"`
	}
	amount := 42.5
	t1 := time.Date(2026, 11, 20, 8, 0, 0, 0, time.UTC)
	pq := filepath.Join(dir, "labels.parquet")
	if err := parquet.WriteFile(pq, []row{{"e1", 1, t1, &amount}, {"e2", 0, t1, nil}, {"e3", 1, t1, nil}}); err != nil {
		t.Fatal(err)
	}
	if out, err := runSeer(ctx, "labels", "load", pq); err != nil || !strings.Contains(out, "loaded 3 labels") || !strings.Contains(out, "0 rejected") {
		t.Fatalf("labels load parquet: %v\n%s", err, out)
	}
	csvFile := filepath.Join(dir, "labels.csv")
	later := t1.Add(time.Hour).Format(time.RFC3339)
	csv := "event_id,label,label_time,value\ne1,0," + later + ",\ne4,true,1795700000000,3\ne5,2," + later + ",\n,1," + later + ",\ne6,1,tomorrow,\n"
	if err := os.WriteFile(csvFile, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runSeer(ctx, "labels", "load", csvFile)
	if err != nil || !strings.Contains(out, "loaded 2 labels") || !strings.Contains(out, "3 rejected") {
		t.Fatalf("labels load csv: %v\n%s", err, out)
	}
	rejects, err := os.ReadFile(csvFile + ".rejects.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"row":3`, `column label`, `"row":4`, `column event_id`, `"row":5`, `column label_time`} {
		if !strings.Contains(string(rejects), want) {
			t.Errorf("rejects file lacks %s:\n%s", want, rejects)
		}
	}
	got := map[string]string{}
	q, err := conn.Query(ctx, "SELECT event_id, toString(argMax(label, (label_time_ms, ingested_ms))), toString(argMax(value, (label_time_ms, ingested_ms))), toString(max(label_time)) FROM "+
		cfg.ClickHouse.Database+".labels GROUP BY event_id")
	if err != nil {
		t.Fatal(err)
	}
	for q.Next() {
		var id, l, v, lt string
		q.Scan(&id, &l, &v, &lt)
		got[id] = l + "/" + v + "/" + lt
	}
	q.Close()
	want := map[string]string{"e1": "0/0/2026-11-20 09:00:00", "e2": "0/0/2026-11-20 08:00:00", "e3": "1/0/2026-11-20 08:00:00", "e4": "1/3/2026-11-26 13:33:20"}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("label of %s = %q, want %q (all: %v)", id, got[id], w, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("labels %v, want %v", got, want)
	}
}
