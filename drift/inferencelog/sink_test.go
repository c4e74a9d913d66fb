package inferencelog_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/schemas"
)

func TestSinkWritesAndDeduplicatesReplays(t *testing.T) {
	conn, db := chtest.NewDB(t)
	s := inferencelog.NewSink(conn, db)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	var items []schemas.Item
	for i := 0; i < 50; i++ {
		it := schemas.Item{
			Event: schemas.Event{ID: fmt.Sprintf("e%d", i), EntityID: "u", Time: now,
				Source: schemas.Source{Topic: "in", Partition: 1, Offset: int64(i)}},
			Model: "m", ModelVersion: "1", Route: schemas.RouteProduction,
			Score: float32(i) / 100, Label: int8(i % 2), ScoredTime: now,
			InputNames: []string{"amount", "cat"},
			InputRaw:   []schemas.Value{{Kind: schemas.KindNumber, Num: float64(i)}, {Kind: schemas.KindString, Str: "fuel"}},
			Inputs:     []float32{float32(i), 2},
			Features:   []schemas.FeatureState{{View: "user", AgeMs: 1500, Missing: i%5 == 0}},
		}
		it.PredictionID = schemas.StableKSUID(now, it.Event.ID, "m", "1")
		items = append(items, it)
	}
	items[3].Reject = &schemas.DecodeError{Reason: schemas.ReasonScoreFailed}
	rows := inferencelog.AppendRows(nil, items)
	if len(rows) != 49 || rows[7].InputValues[0] != 8 || rows[7].InputStrings[1] != "fuel" || rows[7].FeatureMissing[0] != 0 || rows[4].FeatureMissing[0] != 1 {
		t.Fatalf("inferencelog.AppendRows built %d rows, row 7 = %+v", len(rows), rows[7])
	}
	for i := 0; i < 2; i++ { // the second write is a replay after a crash
		if err := s.Insert(ctx, &inferencelog.Batch{Log: rows}); err != nil {
			t.Fatal(err)
		}
	}
	if got := chtest.Count(t, conn, "SELECT count() FROM "+db+".inference_log FINAL"); got != 49 {
		t.Errorf("inference_log FINAL count = %d, want 49", got)
	}
	if got := chtest.Count(t, conn, "SELECT uniqExact(prediction_id) FROM "+db+".inference_log"); got != 49 {
		t.Errorf("distinct prediction ids = %d, want 49", got)
	}
	if got := chtest.Count(t, conn, "SELECT countIf(has(feature_missing, 1)) FROM "+db+".inference_log FINAL"); got != 10 {
		t.Errorf("rows with a missing feature view = %d, want 10", got)
	}
	var amount float64
	var cat string
	if err := conn.QueryRow(ctx, "SELECT input_values[indexOf(input_names, 'amount')], input_strings[indexOf(input_names, 'cat')] FROM "+db+".inference_log FINAL WHERE event_id = 'e7'").Scan(&amount, &cat); err != nil {
		t.Fatal(err)
	}
	if amount != 7 || cat != "fuel" {
		t.Errorf("e7 inputs = %v, %q; want 7, fuel", amount, cat)
	}

	dls := []schemas.DeadLetter{
		{Source: schemas.Source{Topic: "in", Offset: 100}, Reason: schemas.ReasonInvalidJSON, Stage: schemas.StageDecode, Detail: "x", Time: now},
		{Source: schemas.Source{Topic: "in", Offset: 101}, Reason: schemas.ReasonOutOfBounds, Stage: schemas.StageValidate, Detail: "y", Time: now},
	}
	for i := 0; i < 2; i++ {
		if err := s.Insert(ctx, &inferencelog.Batch{Dead: dls}); err != nil {
			t.Fatal(err)
		}
	}
	if got := chtest.Count(t, conn, "SELECT count() FROM "+db+".dead_letters FINAL WHERE reason = 'invalid_json'"); got != 1 {
		t.Errorf("dead_letters invalid_json after replay = %d, want 1", got)
	}
}

// TestShadowRows: a scored item with a shadow prediction gives two log
// rows, production and shadow, with their own ids, versions and scores.
func TestShadowRows(t *testing.T) {
	it := schemas.Item{Event: schemas.Event{ID: "e1", EntityID: "u1"}, PredictionID: "p1", Model: "m", ModelVersion: "1",
		Route: schemas.RouteProduction, Score: 0.25, Inputs: []float32{1, 2}, InputRaw: make([]schemas.Value, 2)}
	sh := it
	sh.PredictionID, sh.ModelVersion, sh.Route, sh.Score = "p2", "2", schemas.RouteShadow, 0.75
	it.Shadow = &sh
	rows := inferencelog.AppendRows(nil, []schemas.Item{it, {Reject: &schemas.DecodeError{}}})
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	if rows[0].PredictionID != "p1" || rows[0].Route != "production" || rows[1].PredictionID != "p2" || rows[1].Route != "shadow" || rows[1].ModelVersion != "2" || rows[1].Score != 0.75 || rows[1].EventID != "e1" {
		t.Errorf("rows %+v", rows)
	}
}
