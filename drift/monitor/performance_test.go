package monitor

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// labelledWindows stores three windows of the example model from t0 and
// labels for them: window 1 labels 90% of its events by their score (the
// model is right), window 2 90% at random (the model is no better than a
// coin), window 3 only 20%, by score.
func labelledWindows(t *testing.T, t0 time.Time) (driver.Conn, string, *schemas.Manifest) {
	t.Helper()
	conn, db := chtest.NewDB(t)
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(41, 42))
	var ls []labels.Label
	for i, share := range []float64{0.9, 0.9, 0.2} {
		start := t0.Add(time.Duration(i) * windowLen)
		rows := chtest.WindowRows(r, m, 5000, start, nil)
		for k := range rows {
			rows[k].EventID = fmt.Sprintf("w%d-e%d", i, k)
			if r.Float64() >= share {
				continue
			}
			y := uint8(0)
			if (i != 1 && rows[k].Score > 0.1) || (i == 1 && r.IntN(10) == 0) {
				y = 1
			}
			ls = append(ls, labels.Label{EventID: rows[k].EventID, Label: y, Time: start.Add(5 * time.Minute), Source: "test"})
		}
		if err := inferencelog.NewSink(conn, db).Insert(ctx, &inferencelog.Batch{Log: rows}); err != nil {
			t.Fatal(err)
		}
	}
	if err := (labels.Writer{Conn: conn, Database: db}).Write(ctx, ls); err != nil {
		t.Fatal(err)
	}
	resumeAt(t, conn, db, m, t0)
	return conn, db, m
}

// perfMetric reads one performance metric of the window starting at start.
func perfMetric(t *testing.T, conn driver.Conn, db string, start time.Time, metric string) (float64, bool) {
	t.Helper()
	rows, err := conn.Query(context.Background(), fmt.Sprintf("SELECT value FROM %s.window_metrics FINAL WHERE family = 'performance' AND metric = '%s' AND window_start = toDateTime(%d)", db, metric, start.Unix()))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var v float64
	if !rows.Next() {
		return 0, false
	}
	rows.Scan(&v)
	return v, true
}

// TestPerformanceMatures on the real ClickHouse and Redis: with
// label_delay 30 min, a monitor evaluating three windows stores their
// label coverage and estimate but no AUC and raises no performance alert;
// another instance, after the delay, resumes at the first immature window
// and measures all three: the coin-flip window fires performance-drop,
// the next resolves it, and the poorly labelled one is pending on
// label-coverage.
func TestPerformanceMatures(t *testing.T) {
	t0 := time.Date(2026, 11, 3, 0, 0, 0, 0, time.UTC)
	conn, db, m := labelledWindows(t, t0)
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Window, cfg.Lateness, cfg.LeaseTTL, cfg.LabelDelay = windowLen, 0, 5*time.Second, 30*time.Minute
	prefix := "seertest-" + ksuid.New().String()
	rdb := redisClient(t)
	t.Cleanup(func() { rdb.Del(ctx, prefix+":lease:monitor", prefix+":fence:monitor") })
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ch := notify.ClickHouse{Conn: conn, Database: db}
	run := func(now time.Time) {
		t.Helper()
		lease := NewLease(rdb, prefix, "monitor", "test", cfg.LeaseTTL)
		defer lease.Release(ctx) // as a monitor that stops does
		mon, err := New(cfg, versions(conn, db, m, nil), lease, []notify.Sink{ch}, ch, nil, logger, func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
		if err := mon.Step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	run(t0.Add(3 * windowLen))
	for i := range 3 {
		start := t0.Add(time.Duration(i) * windowLen)
		cov, ok := perfMetric(t, conn, db, start, "label_coverage")
		want := []float64{0.9, 0.9, 0.2}[i]
		if !ok || cov < want-0.03 || cov > want+0.03 {
			t.Errorf("window %d before maturity: label_coverage %v (stored %v), want about %v", i+1, cov, ok, want)
		}
		if _, ok := perfMetric(t, conn, db, start, "auc"); ok {
			t.Errorf("window %d reports an AUC before maturity", i+1)
		}
		if _, ok := perfMetric(t, conn, db, start, "estimated_auc"); !ok {
			t.Errorf("window %d has no estimate before maturity", i+1)
		}
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".alerts WHERE rule IN ('performance-drop', 'label-coverage')"); n != 0 {
		t.Errorf("%d performance alerts before maturity", n)
	}

	run(t0.Add(3*windowLen + cfg.LabelDelay))
	for i, want := range []struct{ lo, hi float64 }{{0.97, 1}, {0.4, 0.6}, {0.97, 1}} {
		start := t0.Add(time.Duration(i) * windowLen)
		auc, ok := perfMetric(t, conn, db, start, "auc")
		if mature, _ := perfMetric(t, conn, db, start, "mature"); !ok || mature != 1 || auc < want.lo || auc > want.hi {
			t.Errorf("window %d after maturity: auc %v (stored %v), mature %v; want auc in [%v, %v]", i+1, auc, ok, mature, want.lo, want.hi)
		}
	}
	got := alertTrail(t, conn, "SELECT rule, toString(state), window_start FROM "+db+".alerts FINAL WHERE rule IN ('performance-drop', 'label-coverage') ORDER BY at_ms, rule, state", t0)
	sort.Strings(got)
	want := []string{"label-coverage:pending@20m0s", "performance-drop:firing@10m0s", "performance-drop:resolved@20m0s"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("performance alerts: %v, want %v", got, want)
	}
}

// TestBackfillIsIdempotent on the real ClickHouse: two backfills of the
// same range, each by a fresh monitor without a lease (nil: touching it
// would panic) and without sinks, store the same metrics after FINAL —
// drift, quality, freshness and mature performance — and no alert.
func TestBackfillIsIdempotent(t *testing.T) {
	t0 := time.Date(2026, 11, 4, 0, 0, 0, 0, time.UTC)
	conn, db, m := labelledWindows(t, t0)
	ctx := context.Background()
	cfg := DefaultConfig()
	cfg.Window, cfg.Lateness, cfg.LabelDelay = windowLen, 0, time.Minute
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	snapshot := func() string {
		t.Helper()
		mon, err := New(cfg, versions(conn, db, m, nil), nil, nil, nil, nil, logger, time.Now)
		if err != nil {
			t.Fatal(err)
		}
		var seen []time.Time
		if err := mon.Backfill(ctx, t0.Add(time.Minute), t0.Add(3*windowLen), func(s time.Time) { seen = append(seen, s) }); err != nil {
			t.Fatal(err)
		}
		if len(seen) != 3 || !seen[0].Equal(t0) {
			t.Fatalf("backfill went over windows %v, want the 3 from %v", seen, t0)
		}
		rows, err := conn.Query(ctx, "SELECT window_start, model_version, toString(family), feature, metric, value FROM "+db+".window_metrics FINAL WHERE window_start >= toDateTime("+fmt.Sprint(t0.Unix())+") ORDER BY window_start, family, feature, metric")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var ws time.Time
			var v, fam, feat, metric string
			var val float64
			rows.Scan(&ws, &v, &fam, &feat, &metric, &val)
			fmt.Fprintf(&b, "%s %s %s %s %s %.12g\n", ws.UTC().Format(time.RFC3339), v, fam, feat, metric, val)
		}
		return b.String()
	}
	first, second := snapshot(), snapshot()
	if first != second {
		t.Errorf("a second backfill changed the metrics:\n%s\nthen\n%s", first, second)
	}
	for _, want := range []string{" drift amount psi ", " performance  auc ", " performance  mature 1\n", " quality  rows 5000\n"} {
		if strings.Count(first, want) != 3 {
			t.Errorf("backfilled metrics hold %q %d times, want once per window (3):\n%s", want, strings.Count(first, want), first)
		}
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".alerts"); n != 0 {
		t.Errorf("a backfill stored %d alerts", n)
	}
}
