package inferencelog_test

import (
	"context"
	"fmt"
	"syscall"
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

// BenchmarkSinkInsert inserts batches of 5,000 log rows shaped like the
// bench model's (7 inputs, one feature view) into ClickHouse: the cost of
// the writer's insert per row, client side (ns/op and allocs are per row).
func BenchmarkSinkInsert(b *testing.B) {
	conn, db := chtest.NewDB(b)
	s := inferencelog.NewSink(conn, db)
	now := time.Now().UTC()
	names := []string{"amount", "merchant_category", "hour", "card_present", "txn_count_24h", "avg_amount_30d", "chargeback_rate_90d"}
	items := make([]schemas.Item, 5000)
	for i := range items {
		raw := make([]schemas.Value, len(names))
		inputs := make([]float32, len(names))
		for j := range raw {
			raw[j], inputs[j] = schemas.Value{Kind: schemas.KindNumber, Num: float64(i + j)}, float32(i+j)
		}
		raw[1] = schemas.Value{Kind: schemas.KindString, Str: "online"}
		id := fmt.Sprintf("e%d", i)
		items[i] = schemas.Item{Event: schemas.Event{ID: id, EntityID: fmt.Sprintf("u%d", i%1000), Time: now,
			Source: schemas.Source{Topic: "bench.events", Partition: int32(i % 8), Offset: int64(i)}},
			PredictionID: schemas.StableKSUID(now, id, "card-fraud", "1.0.0"), Model: "card-fraud", ModelVersion: "1.0.0",
			Route: schemas.RouteProduction, Score: 0.1, ScoredTime: now, ScoringTime: 40 * time.Microsecond,
			InputNames: names, InputRaw: raw, Inputs: inputs,
			Features: []schemas.FeatureState{{View: "user_stats", AgeMs: 1500}}}
	}
	batch := &inferencelog.Batch{Log: inferencelog.AppendRows(nil, items)}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	for done := 0; done < b.N; done += len(batch.Log) {
		if err := s.Insert(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// ns/op includes ClickHouse's own work on the shared cores; this is
	// the client's.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "client-cpu-ns/row")
}

// processCPU is this process's user and system CPU time so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
