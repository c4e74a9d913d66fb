// Package window computes one model version's drift, data-quality and
// freshness metrics for a time window, IN ClickHouse, and stores them in
// window_metrics. A Job is safe for sequential use by one monitor; its
// queries run on ClickHouse 18.16.
package window

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/stats"
	"github.com/seer-ml/seer/schemas"
)

// Metric families.
const (
	FamilyDrift     = "drift"
	FamilyQuality   = "quality"
	FamilyFreshness = "freshness"
	// FamilyPerformance: the labels joined to the log, and the estimate
	// from the scores alone (drift/labels).
	FamilyPerformance = "performance"
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
	Route          string // production, or canary for a rollout's candidate
	Start, End     time.Time
	Rows           uint64
	Metrics        []Metric
}

// Job computes one model version's drift, data-quality and
// freshness metrics for a time window. The aggregates — bin counts on the
// package profile's frozen edges, category counts, missing and
// out-of-bounds counts, age quantiles — are computed IN ClickHouse; Go only
// finalizes the statistics. No raw row leaves ClickHouse. The SQL runs on
// ClickHouse 18.16. Replayed rows (not yet merged away) may be counted
// twice; that changes shares negligibly, so the job reads without FINAL.
type Job struct {
	conn     driver.Conn
	database string
	m        *schemas.Manifest
	ref      schemas.Profile // the reference: the package profile, or counts of a time range of the log
	// Production: the version is in production, so its windows also count
	// the dead letters rejected before a route was chosen (decode, schema,
	// features), which belong to no version.
	Production bool
}

// New prepares the queries for a model package; the reference is
// the package's profile until UseReferenceRange says otherwise.
func New(conn driver.Conn, database string, m *schemas.Manifest) *Job {
	return &Job{conn: conn, database: database, m: m, ref: m.Profile}
}

// Manifest is the package of the version the job measures.
func (j *Job) Manifest() *schemas.Manifest { return j.m }

// Route is the route the job's version serves on: production, or canary.
func (j *Job) Route() schemas.Route {
	if j.Production {
		return schemas.RouteProduction
	}
	return schemas.RouteCanary
}

// UseReferenceRange makes a time range of the inference log — for example
// the first day after deployment — the reference, counted on the package
// profile's frozen bins. Categories the profile lacks count as "other";
// the profile's standard deviations still normalize Wasserstein.
func (j *Job) UseReferenceRange(ctx context.Context, start, end time.Time) error {
	c, err := j.count(ctx, start, end)
	if err != nil {
		return fmt.Errorf("reference range: %w", err)
	}
	if c.rows == 0 {
		return fmt.Errorf("reference range %s – %s holds no rows of %s %s", start.Format(time.RFC3339), end.Format(time.RFC3339), j.m.Name, j.m.Version)
	}
	ref := schemas.Profile{Rows: int64(c.rows), Features: map[string]schemas.ColumnProfile{}, Outputs: map[string]schemas.ColumnProfile{}}
	fromBins := func(p schemas.ColumnProfile, bins map[int]float64) schemas.ColumnProfile {
		q := p
		q.Counts = make([]int64, len(p.Counts))
		for i := range q.Counts {
			q.Counts[i] = int64(bins[i+2])
		}
		q.Underflow, q.Overflow, q.Missing = int64(bins[1]), int64(bins[0]), int64(bins[-1])
		return q
	}
	for name, p := range j.m.Profile.Features {
		if p.Kind == schemas.ProfileNumeric {
			ref.Features[name] = fromBins(p, c.bins[name])
			continue
		}
		q := p
		q.Frequencies = map[string]int64{}
		for cat := range p.Frequencies {
			q.Frequencies[cat] = int64(c.cats[name][cat])
		}
		q.Other, q.Missing = int64(c.cats[name][newCategory]), int64(c.cats[name][""])
		ref.Features[name] = q
	}
	if p, ok := j.m.Profile.Outputs["score"]; ok && p.Kind == schemas.ProfileNumeric {
		ref.Outputs["score"] = fromBins(p, c.bins["score"])
	}
	j.ref = ref
	return nil
}

func (j *Job) where(start, end time.Time) string {
	// A version's shadow rows are a candidate's trial, not its traffic.
	return fmt.Sprintf("model = %s AND model_version = %s AND route != 'shadow' AND event_time_ms >= %d AND event_time_ms < %d",
		drift.Quote(j.m.Name), drift.Quote(j.m.Version), start.UnixMilli(), end.UnixMilli())
}

// cell says what one counter of the window query counts.
type cell struct {
	feature string
	kind    int // cellBin, cellCategory, cellOOB or cellRows
	bin     int // numeric: -1 missing, 0 overflow, 1 underflow, k ≥ 2 bin k-2
	cat     string
}

const (
	cellBin = iota
	cellCategory
	cellOOB
	cellRows
)

// newCategory is the key under which categories the reference never saw
// are counted.
const newCategory = "\x00new"

// window builds the window query: one scan, no GROUP BY, one countIf per
// reference bin, category, missing and out-of-bounds counter of every
// input and of the score, plus event-lag and per-view feature-age
// quantiles. Rows of a model version carry its inputs and feature views in
// manifest order, so values are addressed by position, which keeps the
// scan to plain comparisons (per-row arrays and lambdas cost ten times
// more on ClickHouse 18.16).
func (j *Job) window(start, end time.Time) (string, []cell) {
	var sel []string
	var cells []cell
	count := func(c cell, cond string) {
		sel = append(sel, "countIf("+cond+")")
		cells = append(cells, c)
	}
	count(cell{kind: cellRows}, "1")
	numeric := func(feature, v, present string, edges []float64) {
		e := func(i int) string { return strconv.FormatFloat(edges[i], 'g', -1, 64) }
		count(cell{feature: feature, bin: 1}, fmt.Sprintf("%s AND %s < %s", present, v, e(0)))
		for i := 0; i+1 < len(edges); i++ {
			count(cell{feature: feature, bin: i + 2}, fmt.Sprintf("%s AND %s >= %s AND %s < %s", present, v, e(i), v, e(i+1)))
		}
		count(cell{feature: feature, bin: 0}, fmt.Sprintf("%s AND %s >= %s", present, v, e(len(edges)-1)))
	}
	for i, in := range j.m.Inputs {
		pos := i + 1
		v, miss := fmt.Sprintf("input_values[%d]", pos), fmt.Sprintf("input_missing[%d]", pos)
		present := miss + " = 0"
		prof := j.m.Profile.Features[in.Name]
		if prof.Kind == schemas.ProfileNumeric {
			count(cell{feature: in.Name, bin: -1}, miss+" = 1")
			numeric(in.Name, v, present, prof.Edges)
		} else {
			str := fmt.Sprintf("input_strings[%d]", pos)
			if in.Dtype == schemas.DtypeBool {
				str = fmt.Sprintf("if(%s = 1, 'true', 'false')", v)
			}
			cats := make([]string, 0, len(prof.Frequencies))
			for c := range prof.Frequencies {
				cats = append(cats, c)
			}
			sort.Strings(cats)
			quoted := make([]string, len(cats))
			for k, c := range cats {
				quoted[k] = drift.Quote(c)
				count(cell{feature: in.Name, kind: cellCategory, cat: c}, fmt.Sprintf("%s AND %s = %s", present, str, quoted[k]))
			}
			count(cell{feature: in.Name, kind: cellCategory, cat: ""}, miss+" = 1")
			count(cell{feature: in.Name, kind: cellCategory, cat: newCategory}, fmt.Sprintf("%s AND NOT has([%s], %s)", present, strings.Join(quoted, ", "), str))
		}
		var bounds []string
		if in.Min != nil {
			bounds = append(bounds, v+" < "+strconv.FormatFloat(*in.Min, 'g', -1, 64))
		}
		if in.Max != nil {
			bounds = append(bounds, v+" > "+strconv.FormatFloat(*in.Max, 'g', -1, 64))
		}
		if len(bounds) > 0 {
			count(cell{feature: in.Name, kind: cellOOB}, fmt.Sprintf("%s AND (%s)", present, strings.Join(bounds, " OR ")))
		}
	}
	if p, ok := j.m.Profile.Outputs["score"]; ok && p.Kind == schemas.ProfileNumeric {
		numeric("score", "toFloat64(score)", "1", p.Edges)
	}
	sel = append(sel, "quantiles(0.5, 0.95)(toFloat64(scored_time_ms) - toFloat64(event_time_ms))")
	views, _ := j.m.FeatureViews()
	for i := range views {
		pos := i + 1
		sel = append(sel,
			fmt.Sprintf("quantilesIf(0.5, 0.95)(toFloat64(feature_age_ms[%d]), feature_age_ms[%d] >= 0)", pos, pos),
			fmt.Sprintf("countIf(feature_missing[%d] = 1)", pos),
			fmt.Sprintf("countIf(feature_stale[%d] = 1)", pos))
	}
	return fmt.Sprintf("SELECT %s FROM %s.inference_log WHERE %s", strings.Join(sel, ",\n  "), j.database, j.where(start, end)), cells
}

// deadLetterQuery counts the window's dead letters of the version and the
// rows they are a share of. The production version's also count the dead
// letters rejected before a route was chosen, as a share of every routed
// row of the model: those events were bound for any version.
func (j *Job) deadLetterQuery(start, end time.Time) string {
	versions, routed := drift.Quote(j.m.Version), "model_version = "+drift.Quote(j.m.Version)+" AND "
	if j.Production {
		versions, routed = versions+", ''", ""
	}
	return fmt.Sprintf(`SELECT
  (SELECT count() FROM %s.dead_letters WHERE model IN (%s, '') AND model_version IN (%s) AND dlq_time_ms >= %d AND dlq_time_ms < %d),
  (SELECT count() FROM %s.inference_log WHERE model = %s AND %sroute != 'shadow' AND event_time_ms >= %d AND event_time_ms < %d)`,
		j.database, drift.Quote(j.m.Name), versions, start.UnixMilli(), end.UnixMilli(),
		j.database, drift.Quote(j.m.Name), routed, start.UnixMilli(), end.UnixMilli())
}

// Queries returns every SQL statement the job runs, for the conformance
// test that runs them in chDB.
func (j *Job) Queries(start, end time.Time) []string {
	q, _ := j.window(start, end)
	return []string{q, j.deadLetterQuery(start, end)}
}

// windowCounts are the aggregates of one window query.
type windowCounts struct {
	rows             uint64
	bins             map[string]map[int]float64
	cats             map[string]map[string]float64
	oob              map[string]float64
	lag              []float64
	views            []string
	ages             [][]float64
	vMissing, vStale []uint64
}

// count runs the window query for [start, end).
func (j *Job) count(ctx context.Context, start, end time.Time) (*windowCounts, error) {
	q, cells := j.window(start, end)
	counts := make([]uint64, len(cells))
	views, _ := j.m.FeatureViews()
	c := &windowCounts{views: views, ages: make([][]float64, len(views)), vMissing: make([]uint64, len(views)), vStale: make([]uint64, len(views)),
		bins: map[string]map[int]float64{}, cats: map[string]map[string]float64{}, oob: map[string]float64{}}
	dest := make([]any, 0, len(cells)+1+3*len(views))
	for i := range counts {
		dest = append(dest, &counts[i])
	}
	dest = append(dest, &c.lag)
	for i := range views {
		dest = append(dest, &c.ages[i], &c.vMissing[i], &c.vStale[i])
	}
	if err := j.conn.QueryRow(ctx, q).Scan(dest...); err != nil {
		return nil, fmt.Errorf("window query: %w", err)
	}
	c.rows = counts[0]
	for i, cl := range cells {
		n := float64(counts[i])
		switch cl.kind {
		case cellBin:
			if c.bins[cl.feature] == nil {
				c.bins[cl.feature] = map[int]float64{}
			}
			c.bins[cl.feature][cl.bin] += n
		case cellCategory:
			if c.cats[cl.feature] == nil {
				c.cats[cl.feature] = map[string]float64{}
			}
			c.cats[cl.feature][cl.cat] += n
		case cellOOB:
			c.oob[cl.feature] += n
		}
	}
	return c, nil
}

// Run computes the window [start, end).
func (j *Job) Run(ctx context.Context, start, end time.Time) (*Window, error) {
	w := &Window{Model: j.m.Name, Version: j.m.Version, Route: string(j.Route()), Start: start, End: end}
	add := func(family, feature, name string, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			w.Metrics = append(w.Metrics, Metric{family, feature, name, v})
		}
	}
	c, err := j.count(ctx, start, end)
	if err != nil {
		return nil, err
	}
	w.Rows = c.rows
	add(FamilyQuality, "", "rows", float64(w.Rows))
	if w.Rows == 0 {
		return w, nil
	}
	bins, cats, oob, lag := c.bins, c.cats, c.oob, c.lag
	views, ages, vMissing, vStale := c.views, c.ages, c.vMissing, c.vStale
	rows := float64(w.Rows)
	var pvals []float64
	var pvalFeatures []string
	for _, in := range j.m.Inputs {
		prof := j.ref.Features[in.Name]
		var pv float64
		var err error
		var missing float64
		if prof.Kind == schemas.ProfileNumeric {
			pv, err = numericDrift(in.Name, prof, bins[in.Name], add)
			missing = bins[in.Name][-1]
		} else {
			pv, err = categoricalDrift(in.Name, prof, cats[in.Name], add)
			missing = cats[in.Name][""]
		}
		if err == nil {
			pvals, pvalFeatures = append(pvals, pv), append(pvalFeatures, in.Name)
		}
		add(FamilyQuality, in.Name, "missing_share", missing/rows)
		add(FamilyQuality, in.Name, "out_of_bounds_share", oob[in.Name]/rows)
	}
	if p, ok := j.ref.Outputs["score"]; ok && p.Kind == schemas.ProfileNumeric {
		if pv, err := numericDrift("score", p, bins["score"], add); err == nil {
			pvals, pvalFeatures = append(pvals, pv), append(pvalFeatures, "score")
		}
	}
	for i, adj := range stats.BenjaminiHochberg(pvals) {
		add(FamilyDrift, pvalFeatures[i], "pvalue_adjusted", adj)
	}
	if len(lag) == 2 {
		add(FamilyFreshness, "", "event_lag_p50_ms", lag[0])
		add(FamilyFreshness, "", "event_lag_p95_ms", lag[1])
	}
	for i, view := range views {
		if len(ages[i]) == 2 && vMissing[i] < w.Rows {
			add(FamilyFreshness, view, "age_p50_ms", ages[i][0])
			add(FamilyFreshness, view, "age_p95_ms", ages[i][1])
		}
		add(FamilyFreshness, view, "missing_share", float64(vMissing[i])/rows)
		add(FamilyFreshness, view, "stale_share", float64(vStale[i])/rows)
	}
	var dead, routed uint64
	if err := j.conn.QueryRow(ctx, j.deadLetterQuery(start, end)).Scan(&dead, &routed); err != nil {
		return nil, fmt.Errorf("window dead-letter query: %w", err)
	}
	add(FamilyQuality, "", "dead_letters", float64(dead))
	add(FamilyQuality, "", "dead_letter_share", float64(dead)/float64(max(dead+routed, 1)))
	return w, nil
}

// numericDrift adds the drift metrics of one numeric column from its bin
// counts, keyed as the window query numbers its cells (-1 missing, 0
// overflow, 1 underflow, 2… the profile's bins), and returns its p-value.
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
	if stats.Sum(c) == 0 {
		return 0, stats.ErrEmpty
	}
	psi, err := stats.PSI(ref, c)
	if err != nil {
		return 0, err
	}
	add(FamilyDrift, feature, "psi", psi)
	// The test is on the distribution of present values: PSI above counts
	// the missing bin too, but a change in missingness is the quality
	// rules' business (missing_share), and a reference without missing
	// values would make any missing value "drift" at these sample sizes.
	pv := 1.0
	if stats.Sum(c[:k+2]) > 0 {
		present, err := stats.PSI(ref[:k+2], c[:k+2])
		if err == nil {
			pv, _ = stats.PSIPValue(present, stats.Sum(ref[:k+2]), stats.Sum(c[:k+2]), k+2)
		}
	}
	add(FamilyDrift, feature, "psi_pvalue", pv)
	js, _ := stats.JensenShannon(ref, c, math.E)
	add(FamilyDrift, feature, "js", js)
	js2, _ := stats.JensenShannon(ref, c, 2)
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
		if wn, err := stats.WassersteinNorm(mids, ref[:k+2], c[:k+2], p.Std); err == nil {
			add(FamilyDrift, feature, "wasserstein_norm", wn)
		}
	}
	if stats.Sum(c[:k+2]) > 0 && stats.Sum(ref[:k+2]) > 0 {
		if d, _, err := stats.KS(uppers, ref[:k+2], uppers, c[:k+2]); err == nil {
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
	total := stats.Sum(c)
	if total == 0 {
		return 0, stats.ErrEmpty
	}
	psi, err := stats.PSI(ref, c)
	if err != nil {
		return 0, err
	}
	add(FamilyDrift, feature, "psi", psi)
	js, _ := stats.JensenShannon(ref, c, math.E)
	add(FamilyDrift, feature, "js", js)
	js2, _ := stats.JensenShannon(ref, c, 2)
	add(FamilyDrift, feature, "js_base2", js2)
	add(FamilyDrift, feature, "new_category_share", stats.NewCategoryShare(newRows, total))
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
	case len(r2) >= 2 && stats.Sum(c2) > 0:
		pv, _ = stats.ChiSquaredPValue(r2, c2)
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
func (j *Job) Store(ctx context.Context, w *Window) error {
	b, err := j.conn.PrepareBatch(ctx, "INSERT INTO "+j.database+".window_metrics (window_start, window_end, model, model_version, route, family, feature, metric, value, rows, computed_at, computed_ms)")
	if err != nil {
		return fmt.Errorf("preparing window_metrics insert: %w", err)
	}
	defer b.Abort()
	now := time.Now().UTC()
	for _, m := range w.Metrics {
		if err := b.Append(w.Start.UTC(), w.End.UTC(), w.Model, w.Version, w.Route, m.Family, m.Feature, m.Name, m.Value, w.Rows, now, uint64(now.UnixMilli())); err != nil {
			return fmt.Errorf("appending window metric %s/%s: %w", m.Feature, m.Name, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d window metrics: %w", len(w.Metrics), err)
	}
	return nil
}
