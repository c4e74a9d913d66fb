// Package chtest holds the helpers that ClickHouse-backed tests of the drift
// rooms share: a migrated database of its own per test, and generated
// inference-log rows drawn from a package's reference profile.
package chtest

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// NewDB connects to the real ClickHouse, migrates a unique database and
// drops it afterwards.
func NewDB(t testing.TB) (driver.Conn, string) {
	t.Helper()
	cfg := drift.DefaultConfig()
	cfg.Addr = testenv.ClickHouse(t)
	cfg.Database = "seertest_" + strings.ToLower(ksuid.New().String()[:12])
	ctx := context.Background()
	conn, err := drift.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database)
		conn.Close()
	})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := 0; i < 2; i++ { // twice: migrations are idempotent
		if err := drift.Migrate(ctx, conn, cfg, log); err != nil {
			t.Fatalf("Migrate run %d: %v", i+1, err)
		}
	}
	return conn, cfg.Database
}

// Count runs a query that returns one number.
func Count(t testing.TB, conn driver.Conn, q string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// SampleColumn draws a value from a reference profile: a bin by its count,
// then uniformly inside it; categories by frequency.
func SampleColumn(r *rand.Rand, p schemas.ColumnProfile) (float64, string) {
	if p.Kind == schemas.ProfileCategorical {
		cats := make([]string, 0, len(p.Frequencies))
		total := 0.0
		for c, n := range p.Frequencies {
			cats = append(cats, c)
			total += float64(n)
		}
		sort.Strings(cats)
		x := r.Float64() * total
		for _, c := range cats {
			x -= float64(p.Frequencies[c])
			if x < 0 {
				return 0, c
			}
		}
		return 0, cats[len(cats)-1]
	}
	total := float64(p.Underflow + p.Overflow)
	for _, c := range p.Counts {
		total += float64(c)
	}
	x := r.Float64() * total
	if x < float64(p.Underflow) {
		return p.Edges[0] - 1e-9, ""
	}
	x -= float64(p.Underflow)
	for i, c := range p.Counts {
		if x < float64(c) {
			return p.Edges[i] + r.Float64()*(p.Edges[i+1]-p.Edges[i]), ""
		}
		x -= float64(c)
	}
	return p.Edges[len(p.Edges)-1], ""
}

// WindowRows generates n log rows for the example model at time t, with
// the named input shifted by shift reference standard deviations.
func WindowRows(r *rand.Rand, m *schemas.Manifest, n int, t time.Time, shift map[string]float64) []inferencelog.LogRow {
	names := make([]string, len(m.Inputs))
	for i, in := range m.Inputs {
		names[i] = in.Name
	}
	rows := make([]inferencelog.LogRow, n)
	for k := range rows {
		row := inferencelog.LogRow{
			PredictionID: strconv.Itoa(k) + t.String(), EventID: "e" + strconv.Itoa(k), EntityID: "u",
			Model: m.Name, ModelVersion: m.Version, Route: "production",
			EventTimeMs: t.UnixMilli() + int64(k%1000), ScoredTimeMs: t.UnixMilli() + int64(k%1000) + 40,
			InputNames: names, InputValues: make([]float64, len(names)), InputStrings: make([]string, len(names)), InputMissing: make([]uint8, len(names)),
			FeatureViews: []string{"user_stats"}, FeatureAgeMs: []int64{int64(1000 + k%5000)}, FeatureMissing: []uint8{0}, FeatureStale: []uint8{0},
		}
		for i, in := range m.Inputs {
			p := m.Profile.Features[in.Name]
			v, s := SampleColumn(r, p)
			switch {
			case in.Dtype == schemas.DtypeCategory:
				row.InputStrings[i] = s
				row.InputValues[i] = float64(len(s))
			case in.Dtype == schemas.DtypeBool:
				if s == "true" {
					row.InputValues[i] = 1
				}
			default:
				row.InputValues[i] = v + shift[in.Name]*p.Std
			}
		}
		sv, _ := SampleColumn(r, m.Profile.Outputs["score"])
		row.Score = float32(sv)
		rows[k] = row
	}
	return rows
}
