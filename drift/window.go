package drift

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/schemas"
)

// Metric families.
const (
	FamilyDrift     = "drift"
	FamilyQuality   = "quality"
	FamilyFreshness = "freshness"
)

// Metric is one value computed for a window.
type Metric struct {
	Family  string
	Feature string // input name, "score" for the model output, a feature view, or "" for the whole window
	Name    string
	Value   float64
}

// Window is the outcome of one window job.
type Window struct {
	Model, Version string
	Start, End     time.Time
	Rows           uint64
	Metrics        []Metric
}

// Get returns the value of a metric, and whether it exists.
func (w *Window) Get(family, feature, name string) (float64, bool) {
	for _, m := range w.Metrics {
		if m.Family == family && m.Feature == feature && m.Name == name {
			return m.Value, true
		}
	}
	return 0, false
}

// WindowJob computes one model version's drift, data-quality and
// freshness metrics for a time window. The aggregates — bin counts on the
// package profile's frozen edges, category counts, missing and
// out-of-bounds counts, age quantiles — are computed IN ClickHouse; Go only
// finalizes the statistics. No raw row leaves ClickHouse. The SQL runs on
// ClickHouse 18.16. Replayed rows (not yet merged away) may be counted
// twice; that changes shares negligibly, so the job reads without FINAL.
type WindowJob struct {
	conn     driver.Conn
	database string
	m        *schemas.Manifest
}

// NewWindowJob prepares the queries for a model package.
func NewWindowJob(conn driver.Conn, database string, m *schemas.Manifest) *WindowJob {
	return &WindowJob{conn: conn, database: database, m: m}
}

func quote(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'" }

func floatList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'g', -1, 64)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// binIndex is the SQL for the 1-based index of the first edge above expr
// (0 when none is). The value goes in as a second array rather than being
// captured by the lambda: ClickHouse 18.16 fails to resolve captured
// columns in some queries ("Unknown identifier").
func binIndex(expr string, edges []float64) string {
	return fmt.Sprintf("arrayFirstIndex((e, x) -> x < e, %s, arrayResize([%s], %d, %s))", floatList(edges), expr, len(edges), expr)
}

func (j *WindowJob) where(start, end time.Time) string {
	return fmt.Sprintf("model = %s AND model_version = %s AND event_time_ms >= %d AND event_time_ms < %d",
		quote(j.m.Name), quote(j.m.Version), start.UnixMilli(), end.UnixMilli())
}

// numericInputs returns inputs with numeric reference profiles.
func (j *WindowJob) inputsOfKind(kind string) []schemas.Input {
	var out []schemas.Input
	for _, in := range j.m.Inputs {
		if j.m.Profile.Features[in.Name].Kind == kind {
			out = append(out, in)
		}
	}
	return out
}

// Queries returns every SQL statement the job runs for a window, for the
// conformance test that runs them in chDB.
func (j *WindowJob) Queries(start, end time.Time) []string {
	return []string{j.binQuery(start, end), j.scoreQuery(start, end), j.lagQuery(start, end), j.categoryQuery(start, end), j.qualityQuery(start, end), j.freshnessQuery(start, end), j.deadLetterQuery(start, end)}
}

func (j *WindowJob) binQuery(start, end time.Time) string {
	var cases, names []string
	for _, in := range j.inputsOfKind(KindNumeric) {
		cases = append(cases, fmt.Sprintf("name = %s, %s", quote(in.Name), binIndex("val", j.m.Profile.Features[in.Name].Edges)))
		names = append(names, quote(in.Name))
	}
	if len(names) == 0 {
		return ""
	}
	// bin: -1 missing, 0 overflow (≥ last edge), 1 underflow, k ≥ 2 bin k-2.
	return fmt.Sprintf(`SELECT name, bin, count() AS n FROM (
  SELECT name, if(miss = 1, -1, multiIf(%s, -2)) AS bin
  FROM %s.inference_log
  ARRAY JOIN input_names AS name, input_values AS val, input_missing AS miss
  WHERE %s AND name IN (%s)
) GROUP BY name, bin`, strings.Join(cases, ", "), j.database, j.where(start, end), strings.Join(names, ", "))
}

func (j *WindowJob) scoreQuery(start, end time.Time) string {
	p, ok := j.m.Profile.Outputs["score"]
	edges := binIndex("toFloat64(score)", []float64{0.5})
	if ok && p.Kind == KindNumeric {
		edges = binIndex("toFloat64(score)", p.Edges)
	}
	return fmt.Sprintf(`SELECT bin, count() AS n FROM (
  SELECT %s AS bin FROM %s.inference_log WHERE %s
) GROUP BY bin`, edges, j.database, j.where(start, end))
}

func (j *WindowJob) lagQuery(start, end time.Time) string {
	return fmt.Sprintf(`SELECT quantiles(0.5, 0.95)(toFloat64(scored_time_ms) - toFloat64(event_time_ms)) AS lag
FROM %s.inference_log WHERE %s`, j.database, j.where(start, end))
}

func (j *WindowJob) categoryQuery(start, end time.Time) string {
	var names []string
	for _, in := range j.inputsOfKind(KindCategorical) {
		names = append(names, quote(in.Name))
	}
	if len(names) == 0 {
		return ""
	}
	// Booleans are logged as 0/1 values; categories as strings.
	return fmt.Sprintf(`SELECT name, if(miss = 1, '', if(str != '', str, if(val = 1, 'true', 'false'))) AS category, count() AS n
FROM %s.inference_log
ARRAY JOIN input_names AS name, input_values AS val, input_strings AS str, input_missing AS miss
WHERE %s AND name IN (%s)
GROUP BY name, category`, j.database, j.where(start, end), strings.Join(names, ", "))
}

func (j *WindowJob) qualityQuery(start, end time.Time) string {
	cases := []string{}
	for _, in := range j.m.Inputs {
		if in.Min == nil && in.Max == nil {
			continue
		}
		lo, hi := math.Inf(-1), math.Inf(1)
		if in.Min != nil {
			lo = *in.Min
		}
		if in.Max != nil {
			hi = *in.Max
		}
		var cond []string
		if !math.IsInf(lo, -1) {
			cond = append(cond, "val < "+strconv.FormatFloat(lo, 'g', -1, 64))
		}
		if !math.IsInf(hi, 1) {
			cond = append(cond, "val > "+strconv.FormatFloat(hi, 'g', -1, 64))
		}
		cases = append(cases, fmt.Sprintf("name = %s, %s", quote(in.Name), strings.Join(cond, " OR ")))
	}
	oob := "0"
	if len(cases) > 0 {
		oob = fmt.Sprintf("multiIf(%s, 0)", strings.Join(cases, ", "))
	}
	return fmt.Sprintf(`SELECT name, count() AS n, sum(miss) AS missing, sum(if(miss = 1, 0, %s)) AS oob
FROM %s.inference_log
ARRAY JOIN input_names AS name, input_values AS val, input_missing AS miss
WHERE %s GROUP BY name`, oob, j.database, j.where(start, end))
}

func (j *WindowJob) freshnessQuery(start, end time.Time) string {
	return fmt.Sprintf(`SELECT view, count() AS n, quantilesIf(0.5, 0.95)(toFloat64(age), age >= 0) AS age_q, sum(fmiss) AS missing, sum(fstale) AS stale
FROM %s.inference_log
ARRAY JOIN feature_views AS view, feature_age_ms AS age, feature_missing AS fmiss, feature_stale AS fstale
WHERE %s GROUP BY view`, j.database, j.where(start, end))
}

func (j *WindowJob) deadLetterQuery(start, end time.Time) string {
	return fmt.Sprintf(`SELECT count() AS n FROM %s.dead_letters WHERE dlq_time_ms >= %d AND dlq_time_ms < %d`,
		j.database, start.UnixMilli(), end.UnixMilli())
}

// Run computes the window [start, end).
func (j *WindowJob) Run(ctx context.Context, start, end time.Time) (*Window, error) {
	w := &Window{Model: j.m.Name, Version: j.m.Version, Start: start, End: end}
	add := func(family, feature, name string, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			w.Metrics = append(w.Metrics, Metric{family, feature, name, v})
		}
	}

	// Output: rows, prediction drift, event lag.
	scoreBins := map[int]float64{}
	rows, err := j.conn.Query(ctx, j.scoreQuery(start, end))
	if err != nil {
		return nil, fmt.Errorf("window score query: %w", err)
	}
	for rows.Next() {
		var bin uint32
		var n uint64
		if err := rows.Scan(&bin, &n); err != nil {
			rows.Close()
			return nil, err
		}
		// Score bins: 0 is overflow, 1 underflow, k ≥ 2 bin k-2, as binQuery.
		scoreBins[int(bin)] += float64(n)
		w.Rows += n
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	add(FamilyQuality, "", "rows", float64(w.Rows))
	if w.Rows == 0 {
		return w, nil
	}
	var lag []float64
	if err := j.conn.QueryRow(ctx, j.lagQuery(start, end)).Scan(&lag); err != nil {
		return nil, fmt.Errorf("window lag query: %w", err)
	}
	if len(lag) == 2 {
		add(FamilyFreshness, "", "event_lag_p50_ms", lag[0])
		add(FamilyFreshness, "", "event_lag_p95_ms", lag[1])
	}
	var pvals []float64
	var pvalFeatures []string
	if p, ok := j.m.Profile.Outputs["score"]; ok && p.Kind == KindNumeric {
		if pv, err := numericDrift("score", p, scoreBins, add); err == nil {
			pvals, pvalFeatures = append(pvals, pv), append(pvalFeatures, "score")
		}
	}

	// Numeric inputs.
	if q := j.binQuery(start, end); q != "" {
		bins := map[string]map[int]float64{}
		rows, err := j.conn.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("window bin query: %w", err)
		}
		for rows.Next() {
			var name string
			var bin int64
			var n uint64
			if err := rows.Scan(&name, &bin, &n); err != nil {
				rows.Close()
				return nil, err
			}
			if bins[name] == nil {
				bins[name] = map[int]float64{}
			}
			bins[name][int(bin)] += float64(n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, in := range j.inputsOfKind(KindNumeric) {
			if pv, err := numericDrift(in.Name, j.m.Profile.Features[in.Name], bins[in.Name], add); err == nil {
				pvals, pvalFeatures = append(pvals, pv), append(pvalFeatures, in.Name)
			}
		}
	}

	// Categorical inputs.
	if q := j.categoryQuery(start, end); q != "" {
		counts := map[string]map[string]float64{}
		rows, err := j.conn.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("window category query: %w", err)
		}
		for rows.Next() {
			var name, cat string
			var n uint64
			if err := rows.Scan(&name, &cat, &n); err != nil {
				rows.Close()
				return nil, err
			}
			if counts[name] == nil {
				counts[name] = map[string]float64{}
			}
			counts[name][cat] += float64(n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, in := range j.inputsOfKind(KindCategorical) {
			if pv, err := categoricalDrift(in.Name, j.m.Profile.Features[in.Name], counts[in.Name], add); err == nil {
				pvals, pvalFeatures = append(pvals, pv), append(pvalFeatures, in.Name)
			}
		}
	}
	for i, adj := range BenjaminiHochberg(pvals) {
		add(FamilyDrift, pvalFeatures[i], "pvalue_adjusted", adj)
	}

	// Data quality per input.
	rows, err = j.conn.Query(ctx, j.qualityQuery(start, end))
	if err != nil {
		return nil, fmt.Errorf("window quality query: %w", err)
	}
	for rows.Next() {
		var name string
		var n, missing, oob uint64
		if err := rows.Scan(&name, &n, &missing, &oob); err != nil {
			rows.Close()
			return nil, err
		}
		add(FamilyQuality, name, "missing_share", float64(missing)/float64(max(n, 1)))
		add(FamilyQuality, name, "out_of_bounds_share", float64(oob)/float64(max(n, 1)))
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var dead uint64
	if err := j.conn.QueryRow(ctx, j.deadLetterQuery(start, end)).Scan(&dead); err != nil {
		return nil, fmt.Errorf("window dead-letter query: %w", err)
	}
	add(FamilyQuality, "", "dead_letters", float64(dead))
	add(FamilyQuality, "", "dead_letter_share", float64(dead)/float64(dead+w.Rows))

	// Freshness per feature view.
	rows, err = j.conn.Query(ctx, j.freshnessQuery(start, end))
	if err != nil {
		return nil, fmt.Errorf("window freshness query: %w", err)
	}
	for rows.Next() {
		var view string
		var n, missing, stale uint64
		var q []float64
		if err := rows.Scan(&view, &n, &q, &missing, &stale); err != nil {
			rows.Close()
			return nil, err
		}
		if len(q) == 2 && float64(missing) < float64(n) {
			add(FamilyFreshness, view, "age_p50_ms", q[0])
			add(FamilyFreshness, view, "age_p95_ms", q[1])
		}
		add(FamilyFreshness, view, "missing_share", float64(missing)/float64(max(n, 1)))
		add(FamilyFreshness, view, "stale_share", float64(stale)/float64(max(n, 1)))
	}
	rows.Close()
	return w, rows.Err()
}

// numericDrift adds the drift metrics of one numeric column from its bin
// counts (keys as binQuery numbers them) and returns its p-value.
func numericDrift(feature string, p schemas.ColumnProfile, cur map[int]float64, add func(string, string, string, float64)) (float64, error) {
	k := len(p.Counts)
	ref := append(append([]float64{float64(p.Underflow)}, toFloats(p.Counts)...), float64(p.Overflow), float64(p.Missing))
	c := make([]float64, k+3)
	for bin, n := range cur {
		switch {
		case bin == -1:
			c[k+2] += n
		case bin == 0:
			c[k+1] += n
		case bin == 1:
			c[0] += n
		case bin-1 <= k:
			c[bin-1] += n
		}
	}
	if sum(c) == 0 {
		return 0, ErrEmpty
	}
	psi, err := PSI(ref, c)
	if err != nil {
		return 0, err
	}
	add(FamilyDrift, feature, "psi", psi)
	pv, _ := PSIPValue(psi, sum(ref), sum(c), len(ref))
	add(FamilyDrift, feature, "psi_pvalue", pv)
	js, _ := JensenShannon(ref, c, math.E)
	add(FamilyDrift, feature, "js", js)
	js2, _ := JensenShannon(ref, c, 2)
	add(FamilyDrift, feature, "js_base2", js2)
	// Wasserstein and KS on the non-missing bins, at bin midpoints and
	// upper edges respectively. Both are coarse on the profile's few bins
	// (heavy tails above all); PSI and its p-value drive the alerts, and
	// `seer drift report` computes both exactly from raw values.
	mids := []float64{p.Edges[0]}
	uppers := []float64{p.Edges[0]}
	for i := 0; i < k; i++ {
		mids = append(mids, (p.Edges[i]+p.Edges[i+1])/2)
		uppers = append(uppers, p.Edges[i+1])
	}
	mids = append(mids, p.Edges[k])
	uppers = append(uppers, math.Nextafter(p.Edges[k], math.Inf(1)))
	if p.Std > 0 {
		if wn, err := WassersteinNorm(mids, ref[:k+2], c[:k+2], p.Std); err == nil {
			add(FamilyDrift, feature, "wasserstein_norm", wn)
		}
	}
	if sum(c[:k+2]) > 0 && sum(ref[:k+2]) > 0 {
		if d, _, err := KS(uppers, ref[:k+2], uppers, c[:k+2]); err == nil {
			add(FamilyDrift, feature, "ks", d)
		}
	}
	return pv, nil
}

// categoricalDrift adds the drift metrics of one categorical column.
func categoricalDrift(feature string, p schemas.ColumnProfile, cur map[string]float64, add func(string, string, string, float64)) (float64, error) {
	cats := make([]string, 0, len(p.Frequencies))
	for c := range p.Frequencies {
		cats = append(cats, c)
	}
	sort.Strings(cats)
	ref := make([]float64, 0, len(cats)+2)
	c := make([]float64, len(cats)+3) // categories, other, missing, new
	for i, cat := range cats {
		ref = append(ref, float64(p.Frequencies[cat]))
		c[i] = cur[cat]
	}
	ref = append(ref, float64(p.Other), float64(p.Missing), 0)
	var newRows float64
	for cat, n := range cur {
		if _, ok := p.Frequencies[cat]; ok {
			continue
		}
		if cat == "" {
			c[len(cats)+1] += n
		} else {
			c[len(cats)+2] += n
			newRows += n
		}
	}
	total := sum(c)
	if total == 0 {
		return 0, ErrEmpty
	}
	psi, err := PSI(ref, c)
	if err != nil {
		return 0, err
	}
	add(FamilyDrift, feature, "psi", psi)
	js, _ := JensenShannon(ref, c, math.E)
	add(FamilyDrift, feature, "js", js)
	js2, _ := JensenShannon(ref, c, 2)
	add(FamilyDrift, feature, "js_base2", js2)
	add(FamilyDrift, feature, "new_category_share", NewCategoryShare(newRows, total))
	var r2, c2 []float64
	for i := range ref {
		if ref[i] > 0 {
			r2, c2 = append(r2, ref[i]), append(c2, c[i])
		}
	}
	pv := 1.0
	switch {
	case newRows > 0:
		pv = 0 // a category the reference never saw: expected count 0
	case len(r2) >= 2 && sum(c2) > 0:
		pv, _ = ChiSquaredPValue(r2, c2)
	}
	add(FamilyDrift, feature, "chi2_pvalue", pv)
	return pv, nil
}

func toFloats(xs []int64) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = float64(x)
	}
	return out
}

// Store writes a window's metrics to window_metrics.
func (j *WindowJob) Store(ctx context.Context, w *Window) error {
	b, err := j.conn.PrepareBatch(ctx, "INSERT INTO "+j.database+".window_metrics (window_start, window_end, model, model_version, family, feature, metric, value, rows, computed_at, computed_ms)")
	if err != nil {
		return fmt.Errorf("preparing window_metrics insert: %w", err)
	}
	defer b.Abort()
	now := time.Now().UTC()
	for _, m := range w.Metrics {
		if err := b.Append(w.Start.UTC(), w.End.UTC(), w.Model, w.Version, m.Family, m.Feature, m.Name, m.Value, w.Rows, now, uint64(now.UnixMilli())); err != nil {
			return fmt.Errorf("appending window metric %s/%s: %w", m.Feature, m.Name, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d window metrics: %w", len(w.Metrics), err)
	}
	return nil
}
