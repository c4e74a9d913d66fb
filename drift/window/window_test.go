package window

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/drift/stats"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// TestWindowJobFlagsShiftNotNoise: a window drawn from the reference
// profile shows no drift; a window where amount shifts by 0.5σ flags
// amount (and only amount among the inputs) with adjusted p < 0.01.
func TestWindowJobFlagsShiftNotNoise(t *testing.T) {
	conn, db := chtest.NewDB(t)
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(11, 12))
	ctx := context.Background()
	s := inferencelog.NewSink(conn, db)
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	w := 10 * time.Minute
	if err := s.Insert(ctx, &inferencelog.Batch{Log: chtest.WindowRows(r, m, 10000, t0, nil)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, &inferencelog.Batch{Log: chtest.WindowRows(r, m, 10000, t0.Add(w), map[string]float64{"amount": 0.5})}); err != nil {
		t.Fatal(err)
	}
	job := New(conn, db, m)
	quiet, err := job.Run(ctx, t0, t0.Add(w))
	if err != nil {
		t.Fatal(err)
	}
	shifted, err := job.Run(ctx, t0.Add(w), t0.Add(2*w))
	if err != nil {
		t.Fatal(err)
	}
	if quiet.Rows != 10000 || shifted.Rows != 10000 {
		t.Fatalf("window rows %d and %d, want 10000 each", quiet.Rows, shifted.Rows)
	}
	for _, in := range m.Inputs {
		pq, ok := metric(quiet, FamilyDrift, in.Name, "pvalue_adjusted")
		if !ok {
			t.Fatalf("no adjusted p-value for %s; metrics %v", in.Name, quiet.Metrics)
		}
		if pq < 0.01 {
			t.Errorf("quiet window: %s flagged (adjusted p %v)", in.Name, pq)
		}
		ps, _ := metric(shifted, FamilyDrift, in.Name, "pvalue_adjusted")
		if (in.Name == "amount") != (ps < 0.01) {
			t.Errorf("shifted window: %s adjusted p %v; want < 0.01 only for amount", in.Name, ps)
		}
	}
	// Windows compute Wasserstein on the profile's bins, a coarse measure
	// on heavy-tailed inputs: check only that the shift raises it.
	wq, _ := metric(quiet, FamilyDrift, "amount", "wasserstein_norm")
	ws, _ := metric(shifted, FamilyDrift, "amount", "wasserstein_norm")
	if !(ws > 2*wq) {
		t.Errorf("amount wasserstein_norm %v after a 0.5σ shift, %v before; want it clearly larger", ws, wq)
	}
	if age, ok := metric(quiet, FamilyFreshness, "user_stats", "age_p50_ms"); !ok || math.Abs(age-3500) > 300 {
		t.Errorf("user_stats age p50 = %v (%v), want about 3500", age, ok)
	}
	if lag, ok := metric(quiet, FamilyFreshness, "", "event_lag_p95_ms"); !ok || math.Abs(lag-40) > 1 {
		t.Errorf("event lag p95 = %v, want 40", lag)
	}
	if ms, ok := metric(quiet, FamilyQuality, "amount", "missing_share"); !ok || ms != 0 {
		t.Errorf("amount missing_share = %v (%v), want 0", ms, ok)
	}
	// A period of the log as the reference instead of the profile: 40,000
	// rows just before the windows (references should be larger than a
	// window).
	if err := s.Insert(ctx, &inferencelog.Batch{Log: chtest.WindowRows(r, m, 40000, t0.Add(-w), nil)}); err != nil {
		t.Fatal(err)
	}
	byRange := New(conn, db, m)
	if err := byRange.UseReferenceRange(ctx, t0.Add(-w), t0); err != nil {
		t.Fatal(err)
	}
	self, err := byRange.Run(ctx, t0.Add(-w), t0)
	if err != nil {
		t.Fatal(err)
	}
	later, err := byRange.Run(ctx, t0.Add(w), t0.Add(2*w))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range m.Inputs {
		if p, _ := metric(self, FamilyDrift, in.Name, "pvalue_adjusted"); p < 0.5 {
			t.Errorf("reference range against itself: %s adjusted p %v, want high", in.Name, p)
		}
		if p, _ := metric(later, FamilyDrift, in.Name, "pvalue_adjusted"); (in.Name == "amount") != (p < 0.01) {
			t.Errorf("reference range, shifted window: %s adjusted p %v; want < 0.01 only for amount", in.Name, p)
		}
	}
	if err := byRange.UseReferenceRange(ctx, t0.Add(-time.Hour), t0.Add(-w)); err == nil {
		t.Error("UseReferenceRange accepted a range without rows")
	}
	if err := job.Store(ctx, shifted); err != nil {
		t.Fatal(err)
	}
	if n := chtest.Count(t, conn, "SELECT count() FROM "+db+".window_metrics FINAL WHERE feature = 'amount' AND metric = 'psi'"); n != 1 {
		t.Errorf("window_metrics rows for amount psi = %d, want 1", n)
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
	windowOf := func(shift float64) *Window {
		w := &Window{Model: m.Name, Version: m.Version, Rows: 10000}
		add := func(f, feat, name string, v float64) {
			w.Metrics = append(w.Metrics, Metric{Family: f, Feature: feat, Name: name, Value: v})
		}
		var pvals []float64
		var feats []string
		for _, in := range m.Inputs {
			p := m.Profile.Features[in.Name]
			var pv float64
			if p.Kind == schemas.ProfileNumeric {
				bins := map[int]float64{}
				for i := 0; i < 10000; i++ {
					v, _ := chtest.SampleColumn(r, p)
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
					_, c := chtest.SampleColumn(r, p)
					cats[c]++
				}
				pv, _ = categoricalDrift(in.Name, p, cats, add)
			}
			pvals, feats = append(pvals, pv), append(feats, in.Name)
		}
		for i, adj := range stats.BenjaminiHochberg(pvals) {
			add(FamilyDrift, feats[i], "pvalue_adjusted", adj)
		}
		return w
	}
	// The default feature-drift rule (monitor.DefaultConfig) fires on a
	// fresh window of 10,000 rows exactly when an adjusted p-value is below
	// 0.01 (for: 1, min_samples: 1000).
	const threshold = 0.01
	drifted := func(w *Window) (out []string) {
		for _, m := range w.Metrics {
			if m.Family == FamilyDrift && m.Name == "pvalue_adjusted" && m.Value < threshold {
				out = append(out, m.Feature)
			}
		}
		return out
	}
	alerted := 0
	for i := 0; i < 1000; i++ {
		if len(drifted(windowOf(0))) > 0 {
			alerted++
		}
	}
	t.Logf("no-drift windows with a drift alert: %d/1000", alerted)
	if alerted >= 10 {
		t.Errorf("%d of 1000 no-drift windows raised a drift alert, want under 1%%", alerted)
	}
	if out := drifted(windowOf(0.5)); len(out) != 1 || out[0] != "amount" {
		t.Errorf("0.5σ shift in amount: drifted %v, want amount alone", out)
	}
}

// metric returns the value of a metric of w, and whether it exists.
func metric(w *Window, family, feature, name string) (float64, bool) {
	for _, m := range w.Metrics {
		if m.Family == family && m.Feature == feature && m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// TestDeadLettersPerVersion on the real ClickHouse: in a window where
// production (1.0.0) has 6,000 rows and a canary (1.1.0) 2,000, the 400
// dead letters rejected before a route was chosen count for production, as
// a share of all 8,000 routed events; production's 100 score-stage dead
// letters count for it too; the canary counts only its own (none), and
// another model's dead letters count for no one.
func TestDeadLettersPerVersion(t *testing.T) {
	conn, db := chtest.NewDB(t)
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	cand := *m
	cand.Version = "1.1.0"
	r := rand.New(rand.NewPCG(21, 22))
	ctx := context.Background()
	t0 := time.Date(2026, 11, 5, 10, 0, 0, 0, time.UTC)
	b := &inferencelog.Batch{Log: chtest.WindowRows(r, m, 6000, t0, nil)}
	canary := chtest.WindowRows(r, m, 2000, t0, nil)
	for i := range canary {
		canary[i].ModelVersion, canary[i].Route, canary[i].PredictionID = "1.1.0", "canary", canary[i].PredictionID+"-c"
	}
	b.Log = append(b.Log, canary...)
	dead := func(n int, model, version string, route schemas.Route) {
		for i := range n {
			b.Dead = append(b.Dead, schemas.DeadLetter{Source: schemas.Source{Topic: "in", Offset: int64(len(b.Dead) + i)}, Reason: schemas.ReasonInvalidJSON,
				Stage: schemas.StageScore, Time: t0.Add(time.Minute), Model: model, ModelVersion: version, Route: route})
		}
	}
	dead(400, "", "", "")
	dead(100, m.Name, m.Version, schemas.RouteProduction)
	dead(50, "other-model", "9.9.9", schemas.RouteProduction)
	if err := inferencelog.NewSink(conn, db).Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	prod, can := New(conn, db, m), New(conn, db, &cand)
	prod.Production = true
	for _, c := range []struct {
		job         *Job
		dead, share float64
	}{{prod, 500, 500.0 / 8500}, {can, 0, 0}} {
		w, err := c.job.Run(ctx, t0, t0.Add(10*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		d, _ := metric(w, FamilyQuality, "", "dead_letters")
		s, _ := metric(w, FamilyQuality, "", "dead_letter_share")
		if d != c.dead || math.Abs(s-c.share) > 1e-12 {
			t.Errorf("%s: dead_letters %v, share %v; want %v and %v", w.Version, d, s, c.dead, c.share)
		}
	}
}
