package monitor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

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
	conn, db, m, t0 := threeWindows(t, 31, time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	const w = windowLen
	var hooks []string
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		hooks = append(hooks, string(b))
	}))
	defer srv.Close()
	cfg := DefaultConfig()
	cfg.Window, cfg.Lateness, cfg.LeaseTTL = w, 0, 5*time.Second
	prefix := "seertest-" + ksuid.New().String()
	rdb := redisClient(t)
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	lease := NewLease(rdb, prefix, "monitor", "test", cfg.LeaseTTL)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ch := notify.ClickHouse{Conn: conn, Database: db}
	mon, err := New(cfg, versions(conn, db, m, nil), lease, []notify.Sink{ch, notify.Webhook{URL: srv.URL}, notify.Log{Log: logger}}, ch, nil, logger, func() time.Time { return t0.Add(3 * w) })
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Step(ctx); err != nil {
		t.Fatal(err)
	}
	got := alertTrail(t, conn, "SELECT feature, toString(state), window_start FROM "+db+".alerts FINAL WHERE rule = 'feature-drift' ORDER BY at_ms, state", t0)
	want := []string{"amount:firing@10m0s", "amount:resolved@20m0s"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("alerts table: %v, want %v", got, want)
	}
	if len(hooks) != 2 || !strings.Contains(hooks[0], `"alertname":"feature-drift"`) || !strings.Contains(hooks[1], "endsAt") {
		t.Errorf("webhook calls: %v", hooks)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".window_metrics FINAL WHERE metric = 'volume_ratio' AND value > 0.9 AND value < 1.1"); n != 2 {
		t.Errorf("windows with volume_ratio about 1: %d, want 2 (every window after the first)", n)
	}
	if n := chtest.Count(t, conn, "SELECT uniqExact(window_start) FROM "+db+".window_metrics"); n != 4 {
		t.Errorf("window_metrics has %d windows, want 4 (3 evaluated + the resume point)", n)
	}
}

// TestStandbyTakesOver: monitor A evaluates two windows (the second fires
// a drift alert) and dies; standby B takes the lease once it lapses,
// resumes after A's last window, restores the firing alert and resolves it
// on the next window — with a newer fencing token.
func TestStandbyTakesOver(t *testing.T) {
	conn, db, m, t0 := threeWindows(t, 41, time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC))
	ctx := context.Background()
	const w = windowLen
	cfg := DefaultConfig()
	cfg.Window, cfg.Lateness, cfg.LeaseTTL = w, 0, time.Second
	prefix := "seertest-" + ksuid.New().String()
	rdb := redisClient(t)
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	newMon := func(id string, now time.Time) *Monitor {
		ch := notify.ClickHouse{Conn: conn, Database: db}
		mon, err := New(cfg, versions(conn, db, m, nil), NewLease(rdb, prefix, "monitor", id, cfg.LeaseTTL), []notify.Sink{ch}, ch, nil, logger, func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
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
	if n := chtest.Count(t, conn, "SELECT uniqExact(window_start) FROM "+db+".window_metrics"); n != 4 {
		t.Errorf("%d windows stored, want 4: b resumed after a's last window without redoing it", n)
	}
}

const windowLen = 10 * time.Minute

// versions measures prod in production and, when others is set, the
// versions it names too.
func versions(conn driver.Conn, db string, prod *schemas.Manifest, others map[string]*schemas.Manifest) *window.Versions {
	v := &window.Versions{Conn: conn, Database: db, Model: prod.Name, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Production: func(context.Context) (*schemas.Manifest, error) { return prod, nil }}
	if others != nil {
		v.Package = func(_ context.Context, version string) (*schemas.Manifest, error) {
			if m, ok := others[version]; ok {
				return m, nil
			}
			return nil, fmt.Errorf("no package %s", version)
		}
	}
	return v
}

// TestMonitorMeasuresEachVersion on the real ClickHouse and Redis: in
// windows where production (1.0.0) and a canary (1.1.0) both serve, each
// version is measured on its own rows against its own profile — the
// canary's moved amount raises a drift alert for 1.1.0 only — and a
// shadow's rows are measured by no one. After the promotion, the old
// version has no rows and is not measured: no no-data alert for it.
func TestMonitorMeasuresEachVersion(t *testing.T) {
	conn, db := chtest.NewDB(t)
	ctx := context.Background()
	prod, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	cand, err := schemas.LoadManifest(filepath.Join(testenv.RepoRoot(t), "deploy", "examples", "card-fraud-1.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(51, 52))
	sink := inferencelog.NewSink(conn, db)
	as := func(rows []inferencelog.LogRow, version, route string) []inferencelog.LogRow {
		for i := range rows {
			rows[i].ModelVersion, rows[i].Route, rows[i].PredictionID = version, route, rows[i].PredictionID+"-"+route
		}
		return rows
	}
	// Windows 0 and 1: both versions serve, and a shadow; window 2: only 1.1.0 (promoted).
	for i := range 2 {
		ts := t0.Add(time.Duration(i) * windowLen)
		b := &inferencelog.Batch{Log: chtest.WindowRows(r, prod, 8000, ts, nil)}
		b.Log = append(b.Log, as(chtest.WindowRows(r, cand, 4000, ts, map[string]float64{"amount": 1}), "1.1.0", "canary")...)
		b.Log = append(b.Log, as(chtest.WindowRows(r, cand, 4000, ts, map[string]float64{"amount": 3}), "1.2.0", "shadow")...)
		if err := sink.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := sink.Insert(ctx, &inferencelog.Batch{Log: as(chtest.WindowRows(r, cand, 8000, t0.Add(2*windowLen), nil), "1.1.0", "production")}); err != nil {
		t.Fatal(err)
	}
	resumeAt(t, conn, db, prod, t0)
	cfg := DefaultConfig()
	cfg.Window, cfg.Lateness, cfg.LeaseTTL = windowLen, 0, 5*time.Second
	prefix := "seertest-" + ksuid.New().String()
	rdb := redisClient(t)
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ch := notify.ClickHouse{Conn: conn, Database: db}
	inProd := prod
	v := versions(conn, db, prod, map[string]*schemas.Manifest{"1.1.0": cand, "1.2.0": cand})
	v.Production = func(context.Context) (*schemas.Manifest, error) { return inProd, nil }
	now := t0.Add(2 * windowLen)
	mon, err := New(cfg, v, NewLease(rdb, prefix, "monitor", "test", cfg.LeaseTTL), []notify.Sink{ch}, ch, nil, logger, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	if err := mon.Step(ctx); err != nil {
		t.Fatal(err)
	}
	inProd, now = cand, t0.Add(3*windowLen) // promoted
	if err := mon.Step(ctx); err != nil {
		t.Fatal(err)
	}
	perVersion := func(q string) string {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []string
		for rows.Next() {
			var a, b string
			if err := rows.Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			got = append(got, a+"="+b)
		}
		return strings.Join(got, ",")
	}
	if got := perVersion("SELECT model_version, toString(groupArray(toUInt64(value))) FROM (SELECT model_version, window_start, value FROM " + db + ".window_metrics FINAL WHERE metric = 'rows' AND window_start >= toDateTime('2026-11-04 00:00:00') ORDER BY window_start) GROUP BY model_version ORDER BY model_version"); got != "1.0.0=[8000,8000],1.1.0=[4000,4000,8000]" {
		t.Errorf("rows per version and window: %s; want 1.0.0 in windows 0–1 only, 1.1.0 in all three, the shadow in none", got)
	}
	if got := perVersion("SELECT model_version, toString(groupUniqArray(concat(feature, ':', label_values[indexOf(label_keys, 'route')]))) FROM " + db + ".alerts FINAL WHERE rule = 'feature-drift' AND state = 'firing' GROUP BY model_version ORDER BY model_version"); got != "1.1.0=['amount:canary']" {
		t.Errorf("firing drift alerts per version (feature:route): %s; want amount for 1.1.0 only, labelled route canary", got)
	}
	if got := perVersion("SELECT model_version, toString(groupArray(route)) FROM (SELECT DISTINCT model_version, window_start, route FROM " + db + ".window_metrics FINAL WHERE window_start >= toDateTime('2026-11-04 00:00:00') ORDER BY window_start) GROUP BY model_version ORDER BY model_version"); got != "1.0.0=['production','production'],1.1.0=['canary','canary','production']" {
		t.Errorf("route of each version's windows: %s; want 1.1.0 a canary until promoted", got)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".alerts WHERE rule = 'no-data'"); n != 0 {
		t.Errorf("%d no-data alerts; the retired version must not be measured", n)
	}
}

// threeWindows stores 10,000 rows in each of three windows from t0 —
// normal, amount shifted by 0.5σ, normal — and a stored window ending at
// t0 for the monitor to resume after.
func threeWindows(t *testing.T, seed uint64, t0 time.Time) (driver.Conn, string, *schemas.Manifest, time.Time) {
	t.Helper()
	conn, db := chtest.NewDB(t)
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(seed, seed+1))
	sink := inferencelog.NewSink(conn, db)
	for i, shift := range []float64{0, 0.5, 0} {
		if err := sink.Insert(ctx, &inferencelog.Batch{Log: chtest.WindowRows(r, m, 10000, t0.Add(time.Duration(i)*windowLen), map[string]float64{"amount": shift})}); err != nil {
			t.Fatal(err)
		}
	}
	resumeAt(t, conn, db, m, t0)
	return conn, db, m, t0
}

// alertTrail runs q, whose rows are (name, state, window_start), and
// returns them as name:state@offset from t0.
func alertTrail(t *testing.T, conn driver.Conn, q string, t0 time.Time) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name, state string
		var ws time.Time
		if err := rows.Scan(&name, &state, &ws); err != nil {
			t.Fatal(err)
		}
		got = append(got, name+":"+state+"@"+ws.UTC().Sub(t0).String())
	}
	return got
}

// resumeAt stores a window of m ending at t0, for the monitor to resume
// after.
func resumeAt(t *testing.T, conn driver.Conn, db string, m *schemas.Manifest, t0 time.Time) {
	t.Helper()
	if err := window.New(conn, db, m).Store(context.Background(), &window.Window{Model: m.Name, Version: m.Version, Start: t0.Add(-windowLen), End: t0, Metrics: []window.Metric{{Family: window.FamilyQuality, Name: "rows"}}}); err != nil {
		t.Fatal(err)
	}
}
