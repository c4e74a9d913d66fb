package judge

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// rows makes n log rows of one version and route, scores from score(i),
// each scored in a 2 ms ONNX run; event ids are unique per t0.
func rows(n int, version, route string, t0 time.Time, score func(i int) float32) []inferencelog.LogRow {
	out := make([]inferencelog.LogRow, n)
	for i := range out {
		s := score(i)
		var label int8
		if s >= 0.5 {
			label = 1
		}
		out[i] = inferencelog.LogRow{PredictionID: fmt.Sprintf("%s-%s-%d", route, version, i), EventID: fmt.Sprintf("e%d-%d", t0.Unix(), i), EntityID: "u",
			Model: "card-fraud", ModelVersion: version, Route: route, EventTimeMs: t0.UnixMilli(), ScoredTimeMs: t0.UnixMilli() + int64(i), Score: s, Label: label, ScoringUs: 2000}
	}
	return out
}

// TestJudgeShadowAndCanary on the real ClickHouse: a shadow that tracks
// production passes (a replay of production's rows counts once), one that ignores its inputs fails on correlation,
// too few events hold; a canary scoring like its reference passes, one
// whose scores moved fails on drift.
func TestJudgeShadowAndCanary(t *testing.T) {
	conn, db := chtest.NewDB(t)
	ctx := context.Background()
	sink := inferencelog.NewSink(conn, db)
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(1, 2))
	prod := make([]float32, 3000)
	for i := range prod {
		prod[i] = float32(r.Float64() * r.Float64())
	}
	batch := &inferencelog.Batch{}
	batch.Log = append(batch.Log, rows(3000, "1.0.0", "production", t0, func(i int) float32 { return prod[i] })...)
	batch.Log = append(batch.Log, rows(3000, "1.0.0", "production", t0, func(i int) float32 { return prod[i] })...) // replayed, not merged yet
	batch.Log = append(batch.Log, rows(3000, "1.1.0", "shadow", t0, func(i int) float32 { return prod[i] * 0.98 })...)
	batch.Log = append(batch.Log, rows(3000, "1.2.0-rc.1", "shadow", t0, func(i int) float32 { return 0.07 + float32(r.Float64())*0.01 })...)
	if err := sink.Insert(ctx, batch); err != nil {
		t.Fatal(err)
	}
	j := Judge{Conn: conn, Database: db, Config: DefaultConfig()}
	from, to := t0, t0.Add(time.Hour)
	good, err := j.Shadow(ctx, "card-fraud", "1.0.0", "1.1.0", from, to)
	if err != nil || good.Outcome != Pass || good.Figures["samples"] != 3000 || good.Figures["score_correlation"] < 0.99 {
		t.Errorf("tracking shadow: %+v, %v; want pass on 3000 events", good, err)
	}
	if f := good.Figures; !(f["score_diff_p50"] > 0 && f["score_diff_p50"] <= f["score_diff_p95"] && f["score_diff_p95"] <= f["score_diff_p99"]) {
		t.Errorf("score-difference quantiles %v, %v, %v; want 0 < p50 ≤ p95 ≤ p99", f["score_diff_p50"], f["score_diff_p95"], f["score_diff_p99"])
	}
	bad, err := j.Shadow(ctx, "card-fraud", "1.0.0", "1.2.0-rc.1", from, to)
	if err != nil || bad.Outcome != Fail || bad.Figures["score_correlation"] > 0.2 {
		t.Errorf("constant shadow: %+v, %v; want a failure, with a correlation near 0", bad, err)
	}
	few, err := j.Shadow(ctx, "card-fraud", "1.0.0", "1.1.0", from, t0.Add(500*time.Millisecond))
	if err != nil || few.Outcome != TooFew {
		t.Errorf("500 events: %+v, %v; want too few samples", few, err)
	}

	m, err := schemas.LoadManifest(filepath.Join(testenv.RepoRoot(t), "deploy", "examples", "card-fraud-1.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	ref := m.Profile.Outputs["score"]
	sample := func() float32 { v, _ := chtest.SampleColumn(r, ref); return float32(v) }
	t1 := t0.Add(2 * time.Hour)
	canary := &inferencelog.Batch{Log: rows(3000, "1.1.0", "canary", t1, func(int) float32 { return sample() })}
	canary.Log = append(canary.Log, rows(3000, "1.2.0-rc.1", "canary", t1, func(int) float32 { return min(sample()*3, 1) })...)
	for i := range canary.Log[3000:] {
		canary.Log[3000+i].PredictionID += "-x"
	}
	if err := sink.Insert(ctx, canary); err != nil {
		t.Fatal(err)
	}
	ok, err := j.Canary(ctx, "card-fraud", "1.0.0", "1.1.0", ref, t1, t1.Add(time.Hour))
	if err != nil || ok.Outcome != Pass {
		t.Errorf("canary like its reference: %+v, %v; want pass", ok, err)
	}
	moved, err := j.Canary(ctx, "card-fraud", "1.0.0", "1.2.0-rc.1", ref, t1, t1.Add(time.Hour))
	if err != nil || moved.Outcome != Fail || moved.Gate != "score_drift" {
		t.Errorf("canary whose scores moved: %+v, %v; want a score_drift failure", moved, err)
	}
}

// TestJudgeHealth on the real ClickHouse: a shadow that fails events or
// scores slowly fails before its agreement is looked at; a canary whose
// events production had to score fails on its error rate when that is
// more than a point above production's (its score-stage dead letters),
// and passes when it is not.
func TestJudgeHealth(t *testing.T) {
	conn, db := chtest.NewDB(t)
	ctx := context.Background()
	sink := inferencelog.NewSink(conn, db)
	j := Judge{Conn: conn, Database: db, Config: DefaultConfig()}
	same := func(i int) float32 { return float32(i%100) / 100 }

	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	b := &inferencelog.Batch{Log: rows(3000, "1.0.0", "production", t0, same)}
	for i := 2700; i < 3000; i++ {
		b.Log[i].CandidateFailed = 1 // 300 events the shadow 1.1.0 could not score
	}
	b.Log = append(b.Log, rows(2700, "1.1.0", "shadow", t0, same)...)
	// The next hour, a shadow that scores in 40 ms what production does in 2.
	b.Log = append(b.Log, rows(3000, "1.0.0", "production", t0.Add(time.Hour), same)...)
	slow := rows(3000, "1.2.0", "shadow", t0.Add(time.Hour), same)
	for i := range slow {
		slow[i].ScoringUs = 40_000
	}
	b.Log = append(b.Log, slow...)
	if err := sink.Insert(ctx, b); err != nil {
		t.Fatal(err)
	}
	from, to := t0, t0.Add(time.Hour)
	missing, err := j.Shadow(ctx, "card-fraud", "1.0.0", "1.1.0", from, to)
	if err != nil || missing.Outcome != Fail || missing.Gate != "error_rate" || math.Abs(missing.Figures["error_rate"]-0.1) > 1e-9 {
		t.Errorf("shadow missing 10%% of the events: %+v, %v; want an error_rate failure at 0.1", missing, err)
	}
	slowR, err := j.Shadow(ctx, "card-fraud", "1.0.0", "1.2.0", from.Add(time.Hour), to.Add(time.Hour))
	if err != nil || slowR.Outcome != Fail || slowR.Gate != "scoring_p99_ms" || slowR.Figures["scoring_p99_ms"] != 40 || slowR.Figures["production_scoring_p99_ms"] != 2 {
		t.Errorf("shadow scoring in 40 ms against 2: %+v, %v; want a scoring_p99_ms failure", slowR, err)
	}

	m, err := schemas.LoadManifest(filepath.Join(testenv.RepoRoot(t), "deploy", "examples", "card-fraud-1.1.0"))
	if err != nil {
		t.Fatal(err)
	}
	ref := m.Profile.Outputs["score"]
	r := rand.New(rand.NewPCG(3, 4))
	sample := func(int) float32 { v, _ := chtest.SampleColumn(r, ref); return float32(v) }
	// One canary per hour: production's own 3,000 events with 30
	// score-stage dead letters (30 / 3,030), the canary's 2,000, and the canary's
	// failures as production rows marked candidate_failed.
	canaryHour := func(t1 time.Time, version string, failures int) {
		b := &inferencelog.Batch{Log: rows(3000, "1.0.0", "production", t1, sample)}
		b.Log = append(b.Log, rows(2000, version, "canary", t1, sample)...)
		fb := rows(failures, "1.0.0", "production", t1.Add(time.Minute), sample)
		for i := range fb {
			fb[i].EventID, fb[i].PredictionID, fb[i].CandidateFailed = fmt.Sprintf("f%d", i), fmt.Sprintf("fb-%d", i), 1
		}
		b.Log = append(b.Log, fb...)
		for i := range 30 {
			b.Dead = append(b.Dead, schemas.DeadLetter{Source: schemas.Source{Topic: "in", Partition: 0, Offset: t1.UnixMilli() + int64(i)},
				Reason: schemas.ReasonScoreFailed, Stage: schemas.StageScore, Time: t1.Add(time.Second), Model: "card-fraud", ModelVersion: "1.0.0", Route: schemas.RouteProduction})
		}
		if err := sink.Insert(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	t1, t2 := t0.Add(2*time.Hour), t0.Add(3*time.Hour)
	canaryHour(t1, "1.3.0", 100) // 100 / 2,100 = 4.8%
	canaryHour(t2, "1.4.0", 20)  // 20 / 2,020 = 1.0%
	failing, err := j.Canary(ctx, "card-fraud", "1.0.0", "1.3.0", ref, t1, t1.Add(time.Hour))
	if err != nil || failing.Outcome != Fail || failing.Gate != "error_rate" || math.Abs(failing.Figures["production_error_rate"]-30.0/3030) > 1e-9 {
		t.Errorf("canary failing 4.8%% against production's 1%%: %+v, %v; want an error_rate failure", failing, err)
	}
	passing, err := j.Canary(ctx, "card-fraud", "1.0.0", "1.4.0", ref, t2, t2.Add(time.Hour))
	if err != nil || passing.Outcome != Pass || math.Abs(passing.Figures["error_rate"]-20.0/2020) > 1e-9 {
		t.Errorf("canary failing 1.0%% against production's 1%%: %+v, %v; want pass", passing, err)
	}
}

// TestJudgePerformance on the real ClickHouse: a canary whose scores are
// distributed as production's but whose labels say it ranks no better
// than a coin fails the performance gate on the AUC; one as good as
// production passes; before the labels are mature, or with too few of
// them, the step holds; without a label delay the gate is off.
func TestJudgePerformance(t *testing.T) {
	conn, db := chtest.NewDB(t)
	ctx := context.Background()
	sink := inferencelog.NewSink(conn, db)
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(3, 4))
	score := func(int) float32 { return r.Float32() }
	prod := rows(2000, "1.0.0", "production", t0, score)
	good := rows(2000, "1.1.0", "canary", t0.Add(time.Second), score)
	bad := rows(2000, "1.2.0", "canary", t0.Add(2*time.Second), score)
	var ls []labels.Label
	label := func(rs []inferencelog.LogRow, informative bool) {
		for _, row := range rs {
			y := uint8(0)
			if (informative && row.Score > 0.7) || (!informative && r.IntN(3) == 0) {
				y = 1
			}
			ls = append(ls, labels.Label{EventID: row.EventID, Label: y, Time: t0.Add(time.Hour)})
		}
	}
	label(prod, true)
	label(good, true)
	label(bad, false)
	if err := sink.Insert(ctx, &inferencelog.Batch{Log: append(append(prod, good...), bad...)}); err != nil {
		t.Fatal(err)
	}
	if err := (labels.Writer{Conn: conn, Database: db}).Write(ctx, ls); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.LabelDelay = time.Hour
	j := Judge{Conn: conn, Database: db, Config: cfg}
	m := func(v string) *schemas.Manifest { return &schemas.Manifest{Name: "card-fraud", Version: v} }
	from, to, later := t0.Add(-time.Minute), t0.Add(time.Minute), t0.Add(2*time.Hour)
	check := func(what string, cand string, now time.Time, j Judge, outcome Outcome, gate string) Result {
		t.Helper()
		res, err := j.Performance(ctx, m("1.0.0"), m(cand), schemas.RouteCanary, from, to, now)
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != outcome || res.Gate != gate {
			t.Errorf("%s: %v at gate %q (%v), want %v at %q", what, res.Outcome, res.Gate, res.Figures, outcome, gate)
		}
		return res
	}
	res := check("a candidate the labels say is worse", "1.2.0", later, j, Fail, "auc")
	if res.Figures["production_auc"] < 0.95 || res.Figures["auc"] > 0.6 || res.Figures["labeled"] != 2000 {
		t.Errorf("figures %v: want production's AUC near 1, the candidate's near 0.5, on 2000 labels", res.Figures)
	}
	check("a candidate as good as production", "1.1.0", later, j, Pass, "")
	check("labels not yet mature", "1.2.0", t0.Add(30*time.Minute), j, TooFew, "labels_mature")
	few := j
	few.Config.MinLabels = 5000
	check("too few labels", "1.2.0", later, few, TooFew, "min_labels")
	off := j
	off.Config.LabelDelay = 0
	check("no label delay: the gate is off", "1.2.0", later, off, Pass, "")
}
