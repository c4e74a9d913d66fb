package inferencelog_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/internal/testenv"
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
			InputNames:   []string{"amount", "cat"},
			InputStrings: []string{"", "fuel"}, InputMissing: []uint8{0, 0},
			Inputs:   []float32{float32(i), 2},
			Features: []schemas.FeatureState{{View: "user", AgeMs: 1500 + int64(i), Missing: i%5 == 0}},
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
	// Every array column, read back row by row: the writer hands each row's
	// elements to the driver from buffers it reuses across rows.
	for _, e := range []int{7, 8, 48} {
		var amount float64
		var cat, view string
		var age int64
		if err := conn.QueryRow(ctx, "SELECT input_values[indexOf(names, 'amount')], input_strings[indexOf(names, 'cat')], feature_views[1], feature_age_ms[1] FROM "+db+".inference_log FINAL "+
			"ANY LEFT JOIN (SELECT model, model_version, input_names AS names FROM "+db+".model_inputs FINAL) USING (model, model_version) WHERE event_id = ?", fmt.Sprintf("e%d", e)).Scan(&amount, &cat, &view, &age); err != nil {
			t.Fatal(err)
		}
		if amount != float64(e) || cat != "fuel" || view != "user" || age != 1500+int64(e) {
			t.Errorf("e%d = amount %v, cat %q, view %q, age %d; want %d, fuel, user, %d", e, amount, cat, view, age, e, 1500+e)
		}
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

// TestInputNamesOncePerVersion: a version's input names go to
// model_inputs once, not on its log rows, and InputQuery (docs/clickhouse.md)
// reads an input by name both from those rows and from rows written before
// migration 0006, whose names are on the row and which 0006 copied to
// model_inputs.
func TestInputNamesOncePerVersion(t *testing.T) {
	conn, db := chtest.NewDB(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	// Version 0.9's rows, as written before 0006: names on every row,
	// amount (always 7) first.
	old, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".inference_log (prediction_id, event_id, model, model_version, route, event_time, scored_time, scored_time_ms, input_names, input_values)")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if err := old.Append(fmt.Sprintf("p%d", i), fmt.Sprintf("old%d", i), "card-fraud", "0.9", "production", now, now, uint64(now.UnixMilli()),
			[]string{"amount", "hour"}, []float64{7, float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Send(); err != nil {
		t.Fatal(err)
	}
	migs, err := schemas.Migrations(db, schemas.Dialect{})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range migs {
		if m.Version == 6 { // again, now that there are rows to copy
			for _, stmt := range m.Statements {
				if err := conn.Exec(ctx, stmt); err != nil {
					t.Fatalf("0006: %v\n%s", err, stmt)
				}
			}
		}
	}
	// Version 1.0's rows, through two sinks (two serve instances), amount
	// second.
	var items []schemas.Item
	for i := range 40 {
		it := schemas.Item{Event: schemas.Event{ID: fmt.Sprintf("e%d", i), Time: now}, Model: "card-fraud", ModelVersion: "1.0",
			Route: schemas.RouteProduction, ScoredTime: now, InputNames: []string{"hour", "amount"},
			Inputs: []float32{float32(i), 7}}
		it.PredictionID = schemas.StableKSUID(now, it.Event.ID, it.Model, it.ModelVersion)
		items = append(items, it)
	}
	rows := inferencelog.AppendRows(nil, items)
	for _, b := range []*inferencelog.Batch{{Log: rows[:20]}, {Log: rows[20:]}} {
		for _, s := range []*inferencelog.Sink{inferencelog.NewSink(conn, db), inferencelog.NewSink(conn, db)} {
			if err := s.Insert(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := chtest.Count(t, conn, "SELECT count() FROM "+db+".inference_log FINAL WHERE model_version = '1.0' AND notEmpty(input_names)"); got != 0 {
		t.Errorf("%d rows of version 1.0 carry their input names, want 0", got)
	}
	if got := chtest.Count(t, conn, "SELECT count() FROM "+db+".model_inputs FINAL"); got != 2 {
		t.Errorf("model_inputs has %d versions, want 2", got)
	}
	var names []string
	if err := conn.QueryRow(ctx, "SELECT input_names FROM "+db+".model_inputs FINAL WHERE model = 'card-fraud' AND model_version = '1.0'").Scan(&names); err != nil || strings.Join(names, ",") != "hour,amount" {
		t.Errorf("version 1.0's input names = %q, %v; want hour, amount", names, err)
	}
	var hours int
	var amounts [][]float64
	r, err := conn.Query(ctx, inferencelog.InputQuery(db, "amount", "model = 'card-fraud'"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for r.Next() {
		var hour time.Time
		var q []float64
		if err := r.Scan(&hour, &q); err != nil {
			t.Fatal(err)
		}
		hours, amounts = hours+1, append(amounts, q)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	for _, q := range amounts {
		for _, v := range q {
			if v != 7 {
				t.Errorf("InputQuery's amount quantiles = %v, want 7 (versions 0.9 and 1.0 hold amount at other positions)", amounts)
			}
		}
	}
	if hours == 0 {
		t.Error("InputQuery found no rows")
	}
	// Input names may hold '-', which an alias may not.
	if r, err := conn.Query(ctx, inferencelog.InputQuery(db, "txn-count", "1")); err != nil {
		t.Errorf("InputQuery of an input named txn-count: %v", err)
	} else {
		r.Close()
	}
	if doc, err := os.ReadFile("../../docs/clickhouse.md"); err != nil || !strings.Contains(string(doc), inferencelog.InputQuery("seer", "amount", "model = 'card-fraud'")+";") {
		t.Errorf("docs/clickhouse.md does not give InputQuery as it is (%v)", err)
	}
}

// TestShadowRows: a scored item with a shadow prediction gives two log
// rows, production and shadow, with their own ids, versions and scores.
func TestShadowRows(t *testing.T) {
	it := schemas.Item{Event: schemas.Event{ID: "e1", EntityID: "u1"}, PredictionID: "p1", Model: "m", ModelVersion: "1",
		Route: schemas.RouteProduction, Score: 0.25, Inputs: []float32{1, 2}, InputStrings: make([]string, 2), InputMissing: make([]uint8, 2)}
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

// TestStringColumnsPresized: from a sink's second insert on, the String
// columns of its inference_log inserts reach clickhouse-go sized for the
// batch, so they take one allocation each instead of growing value by
// value; the provider is armed only while the insert is prepared, and the
// rows read back whole.
func TestStringColumnsPresized(t *testing.T) {
	conn, db := chtest.NewDB(t)
	s := inferencelog.NewSink(conn, db)
	var mu sync.Mutex
	sized := map[string][2]int{} // column → cap of its values' positions and of its bytes
	column.WithColStrProvider(func(name string) proto.ColStr {
		c := inferencelog.ProvideColStr(name)
		mu.Lock()
		defer mu.Unlock()
		sized[name] = [2]int{cap(c.Pos), cap(c.Buf)}
		return c
	})
	t.Cleanup(func() { column.WithColStrProvider(inferencelog.ProvideColStr) })
	now := time.Now().UTC().Truncate(time.Millisecond)
	batch := func(first, n int) *inferencelog.Batch {
		var items []schemas.Item
		for i := first; i < first+n; i++ {
			it := schemas.Item{Event: schemas.Event{ID: fmt.Sprintf("e%03d", i), EntityID: "user7", Time: now}, Model: "m", ModelVersion: "1",
				Route: schemas.RouteProduction, ScoredTime: now, InputNames: []string{"amount", "cat"}, Inputs: []float32{float32(i), 1},
				InputStrings: []string{"", "fuel"}, InputMissing: []uint8{0, 0},
				Features: []schemas.FeatureState{{View: "user"}}}
			it.PredictionID = schemas.StableKSUID(now, it.Event.ID)
			items = append(items, it)
		}
		return &inferencelog.Batch{Log: inferencelog.AppendRows(nil, items)}
	}
	ctx := context.Background()
	if err := s.Insert(ctx, batch(0, 3)); err != nil { // learns the columns' types
		t.Fatal(err)
	}
	mu.Lock()
	clear(sized)
	mu.Unlock()
	if err := s.Insert(ctx, batch(3, 5)); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	for name, want := range map[string][2]int{"prediction_id": {5, 5 * 27}, "event_id": {5, 5 * 4}, "entity_id": {5, 5 * 5}, "input_strings": {10, 5 * 4}} {
		if sized[name] != want {
			t.Errorf("%s was given capacity for %d values and %d bytes, want %d and %d", name, sized[name][0], sized[name][1], want[0], want[1])
		}
	}
	mu.Unlock()
	if c := inferencelog.ProvideColStr("prediction_id"); cap(c.Pos) != 0 || cap(c.Buf) != 0 {
		t.Errorf("after the insert the provider still presizes: %d values, %d bytes", cap(c.Pos), cap(c.Buf))
	}
	if got := chtest.Count(t, conn, "SELECT count() FROM "+db+".inference_log FINAL WHERE entity_id = 'user7' AND input_strings = ['', 'fuel'] AND feature_views = ['user'] AND length(prediction_id) = 27"); got != 8 {
		t.Errorf("%d whole rows read back, want 8", got)
	}
}

// BenchmarkSinkInsert inserts batches of 10,000 log rows (the default
// clickhouse.flush_rows) shaped like the bench model's (7 inputs, one
// feature view) into ClickHouse: the cost of the writer's insert per row,
// client side (ns/op, B/op and allocs are per row).
func BenchmarkSinkInsert(b *testing.B) {
	conn, db := chtest.NewDB(b)
	s := inferencelog.NewSink(conn, db)
	now := time.Now().UTC()
	names := []string{"amount", "merchant_category", "hour", "card_present", "txn_count_24h", "avg_amount_30d", "chargeback_rate_90d"}
	items := make([]schemas.Item, inferencelog.DefaultConfig().FlushRows)
	for i := range items {
		inputs, strs := make([]float32, len(names)), make([]string, len(names))
		for j := range inputs {
			inputs[j] = float32(i + j)
		}
		strs[1] = "online"
		id := fmt.Sprintf("e%d", i)
		items[i] = schemas.Item{Event: schemas.Event{ID: id, EntityID: fmt.Sprintf("u%d", i%1000), Time: now,
			Source: schemas.Source{Topic: "bench.events", Partition: int32(i % 8), Offset: int64(i)}},
			PredictionID: schemas.StableKSUID(now, id, "card-fraud", "1.0.0"), Model: "card-fraud", ModelVersion: "1.0.0",
			Route: schemas.RouteProduction, Score: 0.1, ScoredTime: now, ScoringTime: 40 * time.Microsecond,
			InputNames: names, Inputs: inputs, InputStrings: strs, InputMissing: make([]uint8, len(names)),
			Features: []schemas.FeatureState{{View: "user_stats", AgeMs: 1500}}}
	}
	batch := &inferencelog.Batch{Log: inferencelog.AppendRows(nil, items)}
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := testenv.ProcessCPU(b)
	b.ResetTimer()
	for done := 0; done < b.N; done += len(batch.Log) {
		if err := s.Insert(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	// ns/op includes ClickHouse's own work on the shared cores; this is
	// the client's.
	b.ReportMetric(float64(testenv.ProcessCPU(b)-cpu0)/float64(b.N), "client-cpu-ns/row")
}
