package judge

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// rows makes n log rows of one version and route, scores from score(i).
func rows(n int, version, route string, t0 time.Time, score func(i int) float32) []inferencelog.LogRow {
	out := make([]inferencelog.LogRow, n)
	for i := range out {
		s := score(i)
		var label int8
		if s >= 0.5 {
			label = 1
		}
		out[i] = inferencelog.LogRow{PredictionID: fmt.Sprintf("%s-%s-%d", route, version, i), EventID: fmt.Sprintf("e%d", i), EntityID: "u",
			Model: "card-fraud", ModelVersion: version, Route: route, EventTimeMs: t0.UnixMilli(), ScoredTimeMs: t0.UnixMilli() + int64(i), Score: s, Label: label}
	}
	return out
}

// TestJudgeShadowAndCanary on the real ClickHouse: a shadow that tracks
// production passes, one that ignores its inputs fails on correlation,
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
	ok, err := j.Canary(ctx, "card-fraud", "1.1.0", ref, t1, t1.Add(time.Hour))
	if err != nil || ok.Outcome != Pass {
		t.Errorf("canary like its reference: %+v, %v; want pass", ok, err)
	}
	moved, err := j.Canary(ctx, "card-fraud", "1.2.0-rc.1", ref, t1, t1.Add(time.Hour))
	if err != nil || moved.Outcome != Fail || moved.Gate != "score_drift" {
		t.Errorf("canary whose scores moved: %+v, %v; want a score_drift failure", moved, err)
	}
}
