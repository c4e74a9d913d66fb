package drift

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/schemas/testenv"
)

func win(rows uint64, v float64) *Window {
	return &Window{Model: "m", Version: "1", Start: time.Unix(1000, 0), Rows: rows,
		Metrics: []Metric{{Family: FamilyDrift, Feature: "amount", Name: "pvalue_adjusted", Value: v}}}
}

func TestEvaluatorStateMachine(t *testing.T) {
	healthy := 0.05
	e, err := NewEvaluator([]Rule{{Name: "drift", Family: FamilyDrift, Metric: "pvalue_adjusted", Feature: "*", Op: "<", Threshold: 0.01,
		Resolve: &healthy, For: 2, MinSamples: 100, Cooldown: 1, Severity: "warning"}})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		rows  uint64
		v     float64
		state string // emitted, "" for none
	}{
		{1000, 0.5, ""},          // healthy
		{1000, 0.001, "pending"}, // first breach
		{50, 0.9, ""},            // too few rows: ignored
		{1000, 0.001, "firing"},  // second consecutive breach
		{1000, 0.02, ""},         // between threshold and resolve: hysteresis keeps it firing
		{1000, 0.2, "resolved"},  // healthy
		{1000, 0.001, "pending"}, // breach during cooldown: pending only
		{1000, 0.001, "firing"},  // cooldown over and two breaches
	}
	var id string
	for i, s := range steps {
		out := e.Evaluate(win(s.rows, s.v))
		got := ""
		if len(out) > 1 {
			t.Fatalf("step %d: %d alerts", i, len(out))
		}
		if len(out) == 1 {
			got = out[0].State
			if out[0].DedupKey != "drift|m|1|amount" || out[0].Feature != "amount" || out[0].Value != s.v {
				t.Errorf("step %d: alert %+v", i, out[0])
			}
			if i == 3 {
				id = out[0].ID
			}
			if i == 5 && out[0].ID != id {
				t.Errorf("resolved alert id %s differs from firing %s", out[0].ID, id)
			}
		}
		if got != s.state {
			t.Errorf("step %d (rows %d, value %v): emitted %q, want %q", i, s.rows, s.v, got, s.state)
		}
	}
	if _, err := NewEvaluator([]Rule{{Name: "x", Family: "drift", Metric: "psi", Op: ">=", Severity: "page"}}); err == nil || !strings.Contains(err.Error(), "op") {
		t.Errorf("bad op accepted: %v", err)
	}
}

// TestDriftAlertRates: over 1000 windows of 10,000 events drawn from the
// example model's reference profile, under 1% raise a drift alert; a 0.5σ
// mean shift in one input is alerted in the first window.
func TestDriftAlertRates(t *testing.T) {
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(21, 22))
	rule := DefaultMonitorConfig().Rules[0]
	window := func(shift float64) *Window {
		w := &Window{Model: m.Name, Version: m.Version, Rows: 10000}
		add := func(f, feat, name string, v float64) { w.Metrics = append(w.Metrics, Metric{f, feat, name, v}) }
		var pvals []float64
		var feats []string
		for _, in := range m.Inputs {
			p := m.Profile.Features[in.Name]
			var pv float64
			if p.Kind == KindNumeric {
				bins := map[int]float64{}
				for i := 0; i < 10000; i++ {
					v, _ := sampleColumn(r, p)
					if in.Name == "amount" {
						v += shift * p.Std
					}
					k := 0
					for k < len(p.Edges) && v >= p.Edges[k] {
						k++
					}
					switch {
					case k == 0:
						bins[1]++
					case k == len(p.Edges):
						bins[0]++
					default:
						bins[k+1]++
					}
				}
				pv, _ = numericDrift(in.Name, p, bins, add)
			} else {
				cats := map[string]float64{}
				for i := 0; i < 10000; i++ {
					_, c := sampleColumn(r, p)
					cats[c]++
				}
				pv, _ = categoricalDrift(in.Name, p, cats, add)
			}
			pvals, feats = append(pvals, pv), append(feats, in.Name)
		}
		for i, adj := range BenjaminiHochberg(pvals) {
			add(FamilyDrift, feats[i], "pvalue_adjusted", adj)
		}
		return w
	}
	alerted := 0
	for i := 0; i < 1000; i++ {
		e, _ := NewEvaluator([]Rule{rule})
		if len(e.Evaluate(window(0))) > 0 {
			alerted++
		}
	}
	t.Logf("no-drift windows with a drift alert: %d/1000", alerted)
	if alerted >= 10 {
		t.Errorf("%d of 1000 no-drift windows raised a drift alert, want under 1%%", alerted)
	}
	e, _ := NewEvaluator([]Rule{rule})
	out := e.Evaluate(window(0.5))
	if len(out) != 1 || out[0].Feature != "amount" || out[0].State != StateFiring {
		t.Errorf("0.5σ shift in amount: alerts %+v, want amount firing", out)
	}
}

func TestWebhookSinkAlertmanagerFormat(t *testing.T) {
	var got []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &got); err != nil {
			t.Errorf("webhook body %s: %v", b, err)
		}
	}))
	defer srv.Close()
	now := time.Now().UTC()
	alerts := []Alert{
		{ID: "a1", Rule: "feature-drift", State: StateFiring, Severity: "warning", Model: "m", Version: "1", Feature: "amount", Family: FamilyDrift, StartsAt: now, At: now, Summary: "s", Labels: map[string]string{"team": "risk"}},
		{ID: "a2", Rule: "feature-drift", State: StatePending, Model: "m"},
		{ID: "a3", Rule: "no-data", State: StateResolved, Severity: "page", Model: "m", Family: FamilyQuality, StartsAt: now, At: now.Add(time.Minute)},
	}
	if err := (WebhookSink{URL: srv.URL}).Send(context.Background(), alerts); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 {
		t.Fatalf("webhook got %d alerts, want 2 (pending is not sent)", len(got))
	}
	labels := got[0]["labels"].(map[string]any)
	if labels["alertname"] != "feature-drift" || labels["team"] != "risk" || labels["severity"] != "warning" || got[0]["startsAt"] == nil || got[0]["endsAt"] != nil {
		t.Errorf("firing alert as sent: %v", got[0])
	}
	if got[1]["endsAt"] == nil {
		t.Errorf("resolved alert has no endsAt: %v", got[1])
	}
}

func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// TestLeaseFailover: one holder at a time; when the holder stops renewing,
// a standby takes over with a newer fencing token and the old token is no
// longer current.
func TestLeaseFailover(t *testing.T) {
	rdb := redisClient(t)
	ctx := context.Background()
	prefix := "seertest-" + ksuid.New().String()
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	a := NewLease(rdb, prefix, "monitor", "a", time.Second)
	b := NewLease(rdb, prefix, "monitor", "b", time.Second)
	okA, tokA, err := a.Hold(ctx)
	if err != nil || !okA {
		t.Fatalf("a.Hold = %v, %v", okA, err)
	}
	if okB, _, _ := b.Hold(ctx); okB {
		t.Fatal("b acquired a held lease")
	}
	if ok, _, _ := a.Hold(ctx); !ok {
		t.Fatal("a could not renew its lease")
	}
	time.Sleep(1200 * time.Millisecond) // a stops renewing (a pause, a crash)
	okB, tokB, err := b.Hold(ctx)
	if err != nil || !okB || tokB <= tokA {
		t.Fatalf("b.Hold after expiry = %v, token %d (a had %d), %v", okB, tokB, tokA, err)
	}
	if cur, _ := a.Current(ctx, tokA); cur {
		t.Error("a's token is still current after b took over")
	}
	if ok, _, _ := a.Hold(ctx); ok {
		t.Error("a renewed a lease b holds")
	}
}

// TestMonitorFiresAndResolves runs the monitor over three stored windows
// — normal, amount shifted by 0.5σ, normal — on the real ClickHouse and
// Redis: the drift alert fires on the second and resolves on the third,
// in the alerts table and at the webhook.
func TestMonitorFiresAndResolves(t *testing.T) {
	conn, db, _, job, t0 := threeWindows(t, 31, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	const w = windowLen
	var hooks []string
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks = append(hooks, string(b))
	}))
	defer srv.Close()
	cfg := DefaultMonitorConfig()
	cfg.Window, cfg.Lateness, cfg.LeaseTTL = w, 0, 5*time.Second
	prefix := "seertest-" + ksuid.New().String()
	rdb := redisClient(t)
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	lease := NewLease(rdb, prefix, "monitor", "test", cfg.LeaseTTL)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	mon, err := NewMonitor(cfg, job, lease, []AlertSink{ClickHouseAlertSink{conn, db}, WebhookSink{URL: srv.URL}, LogSink{logger}}, logger)
	if err != nil {
		t.Fatal(err)
	}
	mon.now = func() time.Time { return t0.Add(3 * w) }
	if err := mon.Step(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, "SELECT feature, toString(state), window_start FROM "+db+".alerts FINAL WHERE rule = 'feature-drift' ORDER BY at_ms, state")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var f, s string
		var ws time.Time
		rows.Scan(&f, &s, &ws)
		got = append(got, f+":"+s+"@"+ws.UTC().Sub(t0).String())
	}
	rows.Close()
	want := []string{"amount:firing@10m0s", "amount:resolved@20m0s"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("alerts table: %v, want %v", got, want)
	}
	if len(hooks) != 2 || !strings.Contains(hooks[0], `"alertname":"feature-drift"`) || !strings.Contains(hooks[1], "endsAt") {
		t.Errorf("webhook calls: %v", hooks)
	}
	if n := count(t, conn, "SELECT count() FROM "+db+".window_metrics FINAL WHERE metric = 'volume_ratio' AND value > 0.9 AND value < 1.1"); n != 2 {
		t.Errorf("windows with volume_ratio about 1: %d, want 2 (every window after the first)", n)
	}
	if n := count(t, conn, "SELECT uniqExact(window_start) FROM "+db+".window_metrics"); n != 4 {
		t.Errorf("window_metrics has %d windows, want 4 (3 evaluated + the resume point)", n)
	}
}

// TestKafkaAlertSink sends an alert to a topic on the real broker and
// reads it back.
func TestKafkaAlertSink(t *testing.T) {
	topic := "seertest-alerts-" + ksuid.New().String()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Kafka(t)), kgo.ConsumeTopics(topic), kgo.AllowAutoTopicCreation(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Cleanup(func() { kadm.NewClient(cl).DeleteTopics(context.Background(), topic) })
	a := Alert{ID: "a1", DedupKey: "feature-drift|m|1|amount", Rule: "feature-drift", State: StateFiring, Value: 0.001}
	if err := (KafkaAlertSink{Client: cl, Topic: topic}).Send(ctx, []Alert{a}); err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for len(recs) == 0 && ctx.Err() == nil {
		recs = append(recs, cl.PollFetches(ctx).Records()...)
	}
	if len(recs) != 1 || string(recs[0].Key) != a.DedupKey {
		t.Fatalf("alerts topic holds %d records", len(recs))
	}
	var got Alert
	if err := json.Unmarshal(recs[0].Value, &got); err != nil || got.ID != "a1" || got.State != StateFiring || got.Value != 0.001 {
		t.Errorf("alert on Kafka = %+v, %v", got, err)
	}
}

// TestStandbyTakesOver: monitor A evaluates two windows (the second fires
// a drift alert) and dies; standby B takes the lease once it lapses,
// resumes after A's last window, restores the firing alert and resolves it
// on the next window — with a newer fencing token.
func TestStandbyTakesOver(t *testing.T) {
	conn, db, m, _, t0 := threeWindows(t, 41, time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	const w = windowLen
	cfg := DefaultMonitorConfig()
	cfg.Window, cfg.Lateness, cfg.LeaseTTL = w, 0, time.Second
	prefix := "seertest-" + ksuid.New().String()
	rdb := redisClient(t)
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	newMon := func(id string, now time.Time) *Monitor {
		mon, err := NewMonitor(cfg, NewWindowJob(conn, db, m), NewLease(rdb, prefix, "monitor", id, cfg.LeaseTTL), []AlertSink{ClickHouseAlertSink{conn, db}}, logger)
		if err != nil {
			t.Fatal(err)
		}
		mon.now = func() time.Time { return now }
		return mon
	}
	a, b := newMon("a", t0.Add(2*w)), newMon("b", t0.Add(3*w))
	if err := a.Step(ctx); err != nil || !a.leader {
		t.Fatalf("a.Step: leader %v, %v", a.leader, err)
	}
	if err := b.Step(ctx); err != nil || b.leader {
		t.Fatalf("b.Step while a holds the lease: leader %v, %v", b.leader, err)
	}
	time.Sleep(1200 * time.Millisecond) // a dies: no more renewals
	if err := b.Step(ctx); err != nil || !b.leader {
		t.Fatalf("b.Step after a's lease lapsed: leader %v, %v", b.leader, err)
	}
	rows, err := conn.Query(ctx, "SELECT toString(state), window_start, fence FROM "+db+".alerts FINAL WHERE rule = 'feature-drift' AND feature = 'amount' ORDER BY at_ms")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var fences []uint64
	for rows.Next() {
		var s string
		var ws time.Time
		var f uint64
		rows.Scan(&s, &ws, &f)
		got, fences = append(got, s+"@"+ws.UTC().Sub(t0).String()), append(fences, f)
	}
	rows.Close()
	if strings.Join(got, ",") != "firing@10m0s,resolved@20m0s" || len(fences) != 2 || fences[1] <= fences[0] {
		t.Errorf("alerts %v with fences %v; want firing by a, resolved by b with a newer fence", got, fences)
	}
	if n := count(t, conn, "SELECT uniqExact(window_start) FROM "+db+".window_metrics"); n != 4 {
		t.Errorf("%d windows stored, want 4: b resumed after a's last window without redoing it", n)
	}
}

const windowLen = 10 * time.Minute

// threeWindows stores 10,000 rows in each of three windows from t0 —
// normal, amount shifted by 0.5σ, normal — and a stored window ending at
// t0 for the monitor to resume after.
func threeWindows(t *testing.T, seed uint64, t0 time.Time) (driver.Conn, string, *schemas.Manifest, *WindowJob, time.Time) {
	t.Helper()
	conn, db := newDB(t)
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, seed+1))
	sink := NewSink(conn, db)
	for i, shift := range []float64{0, 0.5, 0} {
		if err := sink.Insert(ctx, &Batch{Log: windowRows(r, m, 10000, t0.Add(time.Duration(i)*windowLen), map[string]float64{"amount": shift})}); err != nil {
			t.Fatal(err)
		}
	}
	job := NewWindowJob(conn, db, m)
	if err := job.Store(ctx, &Window{Model: m.Name, Version: m.Version, Start: t0.Add(-windowLen), End: t0, Metrics: []Metric{{FamilyQuality, "", "rows", 0}}}); err != nil {
		t.Fatal(err)
	}
	return conn, db, m, job, t0
}
