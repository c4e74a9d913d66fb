package drift

import (
	"context"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/schemas/testenv"
)

// sampleColumn draws a value from a reference profile: a bin by its count,
// then uniformly inside it; categories by frequency.
func sampleColumn(r *rand.Rand, p schemas.ColumnProfile) (float64, string) {
	if p.Kind == KindCategorical {
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

// windowRows generates n log rows for the example model at time t, with
// the named input shifted by shift reference standard deviations.
func windowRows(r *rand.Rand, m *schemas.Manifest, n int, t time.Time, shift map[string]float64) []LogRow {
	names := make([]string, len(m.Inputs))
	for i, in := range m.Inputs {
		names[i] = in.Name
	}
	rows := make([]LogRow, n)
	for k := range rows {
		row := LogRow{
			PredictionID: strconv.Itoa(k) + t.String(), EventID: "e" + strconv.Itoa(k), EntityID: "u",
			Model: m.Name, ModelVersion: m.Version, Route: "production",
			EventTimeMs: t.UnixMilli() + int64(k%1000), ScoredTimeMs: t.UnixMilli() + int64(k%1000) + 40,
			InputNames: names, InputValues: make([]float64, len(names)), InputStrings: make([]string, len(names)), InputMissing: make([]uint8, len(names)),
			FeatureViews: []string{"user_stats"}, FeatureAgeMs: []int64{int64(1000 + k%5000)}, FeatureMissing: []uint8{0}, FeatureStale: []uint8{0},
		}
		for i, in := range m.Inputs {
			p := m.Profile.Features[in.Name]
			v, s := sampleColumn(r, p)
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
		sv, _ := sampleColumn(r, m.Profile.Outputs["score"])
		row.Score = float32(sv)
		rows[k] = row
	}
	return rows
}

// TestWindowJobFlagsShiftNotNoise: a window drawn from the reference
// profile shows no drift; a window where amount shifts by 0.5σ flags
// amount (and only amount among the inputs) with adjusted p < 0.01.
func TestWindowJobFlagsShiftNotNoise(t *testing.T) {
	conn, db := newDB(t)
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(11, 12))
	ctx := context.Background()
	s := NewSink(conn, db)
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	w := 10 * time.Minute
	if err := s.Insert(ctx, &Batch{Log: windowRows(r, m, 10000, t0, nil)}); err != nil {
		t.Fatal(err)
	}
	if err := s.Insert(ctx, &Batch{Log: windowRows(r, m, 10000, t0.Add(w), map[string]float64{"amount": 0.5})}); err != nil {
		t.Fatal(err)
	}
	job := NewWindowJob(conn, db, m)
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
		pq, ok := quiet.Get(FamilyDrift, in.Name, "pvalue_adjusted")
		if !ok {
			t.Fatalf("no adjusted p-value for %s; metrics %v", in.Name, quiet.Metrics)
		}
		if pq < 0.01 {
			t.Errorf("quiet window: %s flagged (adjusted p %v)", in.Name, pq)
		}
		ps, _ := shifted.Get(FamilyDrift, in.Name, "pvalue_adjusted")
		if (in.Name == "amount") != (ps < 0.01) {
			t.Errorf("shifted window: %s adjusted p %v; want < 0.01 only for amount", in.Name, ps)
		}
	}
	// Windows compute Wasserstein on the profile's bins, a coarse measure
	// on heavy-tailed inputs: check only that the shift raises it.
	wq, _ := quiet.Get(FamilyDrift, "amount", "wasserstein_norm")
	ws, _ := shifted.Get(FamilyDrift, "amount", "wasserstein_norm")
	if !(ws > 2*wq) {
		t.Errorf("amount wasserstein_norm %v after a 0.5σ shift, %v before; want it clearly larger", ws, wq)
	}
	if age, ok := quiet.Get(FamilyFreshness, "user_stats", "age_p50_ms"); !ok || math.Abs(age-3500) > 300 {
		t.Errorf("user_stats age p50 = %v (%v), want about 3500", age, ok)
	}
	if lag, ok := quiet.Get(FamilyFreshness, "", "event_lag_p95_ms"); !ok || math.Abs(lag-40) > 1 {
		t.Errorf("event lag p95 = %v, want 40", lag)
	}
	if ms, ok := quiet.Get(FamilyQuality, "amount", "missing_share"); !ok || ms != 0 {
		t.Errorf("amount missing_share = %v (%v), want 0", ms, ok)
	}
	// A period of the log as the reference instead of the profile: 40,000
	// rows just before the windows (references should be larger than a
	// window).
	if err := s.Insert(ctx, &Batch{Log: windowRows(r, m, 40000, t0.Add(-w), nil)}); err != nil {
		t.Fatal(err)
	}
	byRange := NewWindowJob(conn, db, m)
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
		if p, _ := self.Get(FamilyDrift, in.Name, "pvalue_adjusted"); p < 0.5 {
			t.Errorf("reference range against itself: %s adjusted p %v, want high", in.Name, p)
		}
		if p, _ := later.Get(FamilyDrift, in.Name, "pvalue_adjusted"); (in.Name == "amount") != (p < 0.01) {
			t.Errorf("reference range, shifted window: %s adjusted p %v; want < 0.01 only for amount", in.Name, p)
		}
	}
	if err := byRange.UseReferenceRange(ctx, t0.Add(-time.Hour), t0.Add(-w)); err == nil {
		t.Error("UseReferenceRange accepted a range without rows")
	}
	if err := job.Store(ctx, shifted); err != nil {
		t.Fatal(err)
	}
	if n := count(t, conn, "SELECT count() FROM "+db+".window_metrics FINAL WHERE feature = 'amount' AND metric = 'psi'"); n != 1 {
		t.Errorf("window_metrics rows for amount psi = %d, want 1", n)
	}
}
