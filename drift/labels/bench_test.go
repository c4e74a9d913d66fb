package labels

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/schemas"
)

// exactAUC is the AUC from sorted ranks, ties counting one half.
func exactAUC(scores []float32, ys []uint8) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var below, wins, p, q float64
	for i := 0; i < len(idx); {
		j := i
		var tp, tn float64
		for ; j < len(idx) && scores[idx[j]] == scores[idx[i]]; j++ {
			if ys[idx[j]] == 1 {
				tp++
			} else {
				tn++
			}
		}
		wins += tp*below + tp*tn/2
		below += tn
		p, q = p+tp, q+tn
		i = j
	}
	return wins / (p * q)
}

// BenchmarkMeasureMillionRows: one window of a million labelled events
// measured through the real ClickHouse (the join, the grouped query and
// the finalizing), reporting the binned AUC's error against the exact
// AUC and its reported bound.
//
//	go test -run XXX -bench MeasureMillionRows -benchtime 1x ./drift/labels
func BenchmarkMeasureMillionRows(b *testing.B) {
	conn, db := chtest.NewDB(b)
	ctx := context.Background()
	const n = 1_000_000
	scores, ys := calibrated(rand.New(rand.NewPCG(13, 14)), n)
	t0 := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	m := &schemas.Manifest{Name: "card-fraud", Version: "1.0.0"}
	sink, w := inferencelog.NewSink(conn, db), Writer{Conn: conn, Database: db}
	for start := 0; start < n; start += 100_000 {
		rows := make([]inferencelog.LogRow, 0, 100_000)
		ls := make([]Label, 0, 100_000)
		for i := start; i < start+100_000; i++ {
			id := fmt.Sprintf("e%d", i)
			rows = append(rows, inferencelog.LogRow{PredictionID: "p" + id, EventID: id, Model: m.Name, ModelVersion: m.Version, Route: "production",
				EventTimeMs: t0.UnixMilli() + int64(i%50_000), ScoredTimeMs: t0.UnixMilli() + int64(i%50_000), Score: scores[i]})
			ls = append(ls, Label{EventID: id, Label: ys[i], Time: t0.Add(time.Hour)})
		}
		if err := sink.Insert(ctx, &inferencelog.Batch{Log: rows}); err != nil {
			b.Fatal(err)
		}
		if err := w.Write(ctx, ls); err != nil {
			b.Fatal(err)
		}
	}
	exact := exactAUC(scores, ys)
	p := Performance{Conn: conn, Database: db}
	var r Result
	b.ResetTimer()
	for range b.N {
		var err error
		if r, err = p.Measure(ctx, m, []schemas.Route{schemas.RouteProduction}, t0, t0.Add(time.Minute), true); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if r.Labeled != n {
		b.Fatalf("measured %d labelled rows, want %d", r.Labeled, n)
	}
	diff := math.Abs(r.Figures["auc"] - exact)
	b.Logf("1M rows through ClickHouse: exact AUC %.7f, binned %.7f, |error| %.2e, bound %.2e", exact, r.Figures["auc"], diff, r.Figures["auc_bin_error_bound"])
	b.ReportMetric(diff, "auc_error")
	b.ReportMetric(r.Figures["auc_bin_error_bound"], "auc_bound")
	if diff > r.Figures["auc_bin_error_bound"] {
		b.Errorf("error %v above the bound %v", diff, r.Figures["auc_bin_error_bound"])
	}
}
