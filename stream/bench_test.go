package stream

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

// BenchmarkHotPath measures seer's per-event CPU work on one core, without
// network round trips: decode and validate the JSON event, apply the Redis
// replies (client side of enrichment), score with ONNX Runtime (batches of
// 500), encode the prediction and build the log row. It reports ns/event
// and allocs/event. Run: go test -run XXX -bench HotPath -benchmem ./stream
func BenchmarkHotPath(b *testing.B) {
	const batch = 500
	if err := scoring.InitRuntime(testenv.OnnxRuntime(b)); err != nil {
		b.Fatal(err)
	}
	schema, _ := schemas.LoadInputSchema("card_transactions.v1")
	m, err := schemas.LoadManifest(testenv.ExamplePackage(b))
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	model, err := scoring.Open(scoring.DefaultConfig(), m, schema, schemas.RouteProduction, logger)
	if err != nil {
		b.Fatal(err)
	}
	defer model.Close()
	views, features := m.FeatureViews()
	store := featurestore.New(featurestore.DefaultConfig(), nil, views, features, logger, nil)

	gen, _ := loadtest.NewGenerator(schema, m, 1000, 1)
	rows := gen.FeatureRows(0)
	values := make([][]byte, batch)
	keys := make([][]byte, batch)
	replies := make([][]any, batch)
	nowMs := time.Now().UnixMilli()
	for i := range values {
		ev := gen.Next(time.Now(), false)
		values[i], keys[i] = ev.Value, ev.Key
		f := rows["user_stats"][string(ev.Key)]
		replies[i] = []any{f["txn_count_24h"], f["avg_amount_30d"], f["chargeback_rate_90d"], strconv.FormatInt(nowMs-1000, 10)}
	}
	ctx := context.Background()
	var logRows []inferencelog.LogRow
	var out []byte
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for n := 0; n < b.N; n++ {
		items := make([]schemas.Item, batch)
		nf := len(schema.Fields)
		vals := make([]schemas.Value, batch*nf)
		for i := range items {
			ev, derr := schema.DecodeInto(vals[i*nf:(i+1)*nf:(i+1)*nf], keys[i], values[i], schemas.Source{Topic: "t", Offset: int64(i)})
			items[i].Event, items[i].Reject = ev, derr
		}
		store.Apply(items, replies, time.Now())
		if err := model.Score(ctx, items); err != nil {
			b.Fatal(err)
		}
		out = out[:0]
		for i := range items {
			out = schemas.AppendPrediction(out, &items[i])
		}
		logRows = inferencelog.AppendRows(logRows[:0], items)
		events += batch
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(events), "ns/event")
}
