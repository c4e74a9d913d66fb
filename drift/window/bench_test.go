package window

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// BenchmarkWindowJob10M runs one window job over 10 million inference-log
// rows (the example model: 7 inputs and the score) in the local
// ClickHouse, and reports seconds per window and the Go heap in use after
// it. The rows are generated inside ClickHouse. Run:
//
//	go test -run XXX -bench WindowJob10M -benchtime 1x ./drift
func BenchmarkWindowJob10M(b *testing.B) {
	conn, db := chtest.NewDB(b)
	m, err := schemas.LoadManifest(testenv.ExamplePackage(b))
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	names := make([]string, len(m.Inputs))
	for i, in := range m.Inputs {
		names[i] = "'" + in.Name + "'"
	}
	gen := fmt.Sprintf(`INSERT INTO %s.inference_log (prediction_id, event_id, entity_id, model, model_version, route,
  event_time, scored_time, event_time_ms, scored_time_ms, input_names, input_values, input_strings, input_missing,
  feature_views, feature_age_ms, feature_missing, feature_stale, score, label, source_topic, source_partition, source_offset)
SELECT toString(number), toString(number), 'u', '%s', '%s', 'production',
  toDateTime(%d + intDiv(number, 10000)), toDateTime(%d + intDiv(number, 10000)),
  toUInt64(%d) + intDiv(number, 10), toUInt64(%d) + intDiv(number, 10) + 40,
  [%s], [rand(1) %% 5000 / 10, rand(2) %% 7, rand(3) %% 24, rand(4) %% 2, rand(5) %% 10, rand(6) %% 300, rand(7) %% 100 / 1000],
  ['', ['grocery','fuel','travel'][rand(8) %% 3 + 1], '', '', '', '', ''], [0, 0, 0, 0, 0, 0, 0],
  ['user_stats'], [toInt64(rand(9) %% 100000)], [0], [0], rand(10) %% 1000 / 1000, 0, 'bench', 0, number
FROM numbers(10000000)`, db, m.Name, m.Version, t0.Unix(), t0.Unix(), t0.UnixMilli(), t0.UnixMilli(), strings.Join(names, ", "))
	ctx := context.Background()
	start := time.Now()
	if err := conn.Exec(ctx, gen); err != nil {
		b.Fatal(err)
	}
	// Let ClickHouse finish merging the new parts, as on a table in steady
	// state, so that background merges do not compete with the job.
	if err := conn.Exec(ctx, "OPTIMIZE TABLE "+db+".inference_log FINAL"); err != nil {
		b.Fatal(err)
	}
	b.Logf("generated and merged 10M rows in %v", time.Since(start).Round(time.Millisecond))
	job := New(conn, db, m)
	end := t0.Add(24 * time.Hour)
	b.ResetTimer()
	var w *Window
	for i := 0; i < b.N; i++ {
		if w, err = job.Run(ctx, t0, end); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if w.Rows != 10_000_000 {
		b.Fatalf("window has %d rows, want 10M", w.Rows)
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/window")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heapMB")
	b.ReportMetric(float64(len(w.Metrics)), "metrics")
}
