// Package judge measures a rollout step's candidate against production in
// ClickHouse, from the inference log and the dead letters. Every step is
// first judged on health: the candidate's score-failure rate against
// production's, and its scoring latency p99 against production's. Then,
// for a shadow step, the same events scored by both (label agreement,
// score difference, score correlation); for a canary step, the candidate's
// score drift against its own reference profile, calibrated as the drift
// jobs are. It only measures
// and compares with thresholds; scoring/rollout decides what to do, and
// cmd/seer wires the two. A Judge is safe for concurrent use.
package judge

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/drift/stats"
	"github.com/seer-ml/seer/schemas"
)

// Config holds the gates' thresholds.
type Config struct {
	MinSamples      uint64  `yaml:"min_samples"`        // fewer rows in the step: not enough samples
	MinAgreement    float64 `yaml:"min_agreement"`      // shadow: share of events whose labels agree
	MinCorrelation  float64 `yaml:"min_correlation"`    // shadow: Pearson correlation of the scores
	MaxScoreDiffP95 float64 `yaml:"max_score_diff_p95"` // shadow: 95th percentile of |candidate − production|
	MaxDriftPValue  float64 `yaml:"max_drift_pvalue"`   // canary: the score's drift p-value must stay above this…
	MinDriftPSI     float64 `yaml:"min_drift_psi"`      // …unless its PSI is below this effect floor

	// The candidate's score-failure rate may exceed production's by this
	// much (a share of its events).
	MaxErrorRateIncrease float64 `yaml:"max_error_rate_increase"`
	// The candidate's scoring-time p99 may be this many times production's,
	// or production's plus LatencySlack, whichever is larger.
	MaxLatencyRatio float64       `yaml:"max_latency_ratio"`
	LatencySlack    time.Duration `yaml:"latency_slack"`

	// The performance gate, judged on labels once they have had
	// LabelDelay (monitor.label_delay; 0 turns the gate off) to arrive:
	// the candidate's AUC may be below production's by MaxAUCDrop, on at
	// least MinLabels labelled events of each.
	MinLabels  uint64        `yaml:"min_labels"`
	MaxAUCDrop float64       `yaml:"max_auc_drop"`
	LabelDelay time.Duration `yaml:"-"`
}

// DefaultConfig: 1,000 rows a step, 1 point more score failures than
// production, twice production's scoring p99 (or 25 ms more), 90% label
// agreement, correlation 0.5, a p95 score difference of 0.2, drift at
// 1% with a PSI floor of 0.1, and an AUC at most 0.02 below production's
// on 500 labels each.
func DefaultConfig() Config {
	return Config{MinSamples: 1000, MinAgreement: 0.9, MinCorrelation: 0.5, MaxScoreDiffP95: 0.2, MaxDriftPValue: 0.01, MinDriftPSI: 0.1,
		MaxErrorRateIncrease: 0.01, MaxLatencyRatio: 2, LatencySlack: 25 * time.Millisecond, MinLabels: 500, MaxAUCDrop: 0.02}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.MinAgreement < 0 || c.MinAgreement > 1:
		return fmt.Errorf("rollout.gates.min_agreement: %v is not in [0, 1]", c.MinAgreement)
	case c.MinCorrelation < -1 || c.MinCorrelation > 1:
		return fmt.Errorf("rollout.gates.min_correlation: %v is not in [-1, 1]", c.MinCorrelation)
	case c.MaxErrorRateIncrease < 0 || c.MaxErrorRateIncrease > 1:
		return fmt.Errorf("rollout.gates.max_error_rate_increase: %v is not in [0, 1]", c.MaxErrorRateIncrease)
	case c.MaxAUCDrop < 0 || c.MaxAUCDrop > 1:
		return fmt.Errorf("rollout.gates.max_auc_drop: %v is not in [0, 1]", c.MaxAUCDrop)
	case c.MaxLatencyRatio < 1:
		return fmt.Errorf("rollout.gates.max_latency_ratio: %v is below 1", c.MaxLatencyRatio)
	case c.MaxScoreDiffP95 <= 0 || c.MaxDriftPValue <= 0 || c.MinDriftPSI < 0 || c.LatencySlack < 0:
		return fmt.Errorf("rollout.gates: thresholds must be positive")
	}
	return nil
}

// Outcome is a step's verdict.
type Outcome int

// Outcomes.
const (
	Pass Outcome = iota
	TooFew
	Fail
)

func (o Outcome) String() string { return [...]string{"pass", "too_few_samples", "fail"}[o] }

// Result is a step's verdict with the gate that decided it and every
// figure measured.
type Result struct {
	Outcome Outcome
	Gate    string
	Figures map[string]float64
}

// Judge reads the inference log of one database.
type Judge struct {
	Conn     driver.Conn
	Database string
	Config   Config
}

// ShadowQuery is the SQL of a shadow step: production and shadow rows of
// the same events in [from, to), one per event (a replayed event's rows
// may not have merged yet), joined on the event id. It runs on ClickHouse
// 18.16.
func (j Judge) ShadowQuery(model, production, candidate string, from, to time.Time) string {
	where := func(version, route string) string {
		return fmt.Sprintf("FROM %s.inference_log WHERE model = %s AND model_version = %s AND route = '%s' AND scored_time_ms >= %d AND scored_time_ms < %d",
			j.Database, drift.Quote(model), drift.Quote(version), route, from.UnixMilli(), to.UnixMilli())
	}
	return fmt.Sprintf(`SELECT count(), avg(label = s_label), quantiles(0.5, 0.95, 0.99)(abs(score - s_score)), corr(toFloat64(score), toFloat64(s_score))
FROM (SELECT event_id, any(label) AS label, any(score) AS score %s GROUP BY event_id) AS p
ALL INNER JOIN (SELECT event_id, any(label) AS s_label, any(score) AS s_score %s GROUP BY event_id) AS s USING event_id`, where(production, "production"), where(candidate, "shadow"))
}

// Shadow judges a shadow step.
func (j Judge) Shadow(ctx context.Context, model, production, candidate string, from, to time.Time) (Result, error) {
	r, err := j.health(ctx, model, production, candidate, schemas.RouteShadow, from, to)
	if err != nil || r.Outcome != Pass {
		return r, err
	}
	q := j.ShadowQuery(model, production, candidate, from, to)
	var n uint64
	var agree, corr float64
	var diffs []float32 // p50, p95, p99 of |candidate − production|
	if err := j.Conn.QueryRow(ctx, q).Scan(&n, &agree, &diffs, &corr); err != nil {
		return Result{}, fmt.Errorf("judging the shadow step: %w", err)
	}
	if len(diffs) != 3 {
		return Result{}, fmt.Errorf("judging the shadow step: %d score-difference quantiles, want 3", len(diffs))
	}
	diff := float64(diffs[1])
	r.Figures["samples"], r.Figures["label_agreement"], r.Figures["score_correlation"] = float64(n), agree, corr
	r.Figures["score_diff_p50"], r.Figures["score_diff_p95"], r.Figures["score_diff_p99"] = float64(diffs[0]), diff, float64(diffs[2])
	c := j.Config
	switch {
	case n < c.MinSamples:
		r.Outcome, r.Gate = TooFew, "min_samples"
	case agree < c.MinAgreement:
		r.Outcome, r.Gate = Fail, "label_agreement"
	case math.IsNaN(corr) || corr < c.MinCorrelation:
		r.Outcome, r.Gate = Fail, "score_correlation"
	case diff > c.MaxScoreDiffP95:
		r.Outcome, r.Gate = Fail, "score_diff_p95"
	}
	return r, nil
}

// CanaryQuery is the SQL of a canary step: the candidate's canary scores
// in [from, to) counted on its profile's frozen edges — underflow, each
// bin, overflow — one countIf each, as the window jobs count (ClickHouse
// 18.16).
func (j Judge) CanaryQuery(model, candidate string, edges []float64, from, to time.Time) string {
	e := func(i int) string { return fmt.Sprint(edges[i]) }
	cells := []string{"countIf(toFloat64(score) < " + e(0) + ")"}
	for i := 0; i+1 < len(edges); i++ {
		cells = append(cells, fmt.Sprintf("countIf(toFloat64(score) >= %s AND toFloat64(score) < %s)", e(i), e(i+1)))
	}
	cells = append(cells, "countIf(toFloat64(score) >= "+e(len(edges)-1)+")")
	return fmt.Sprintf("SELECT %s FROM %s.inference_log WHERE model = %s AND model_version = %s AND route = 'canary' AND scored_time_ms >= %d AND scored_time_ms < %d",
		strings.Join(cells, ", "), j.Database, drift.Quote(model), drift.Quote(candidate), from.UnixMilli(), to.UnixMilli())
}

// Canary judges a canary step by the drift of the candidate's scores
// against the candidate's own reference profile (PSI with its
// window-size-aware p-value).
func (j Judge) Canary(ctx context.Context, model, production, candidate string, ref schemas.ColumnProfile, from, to time.Time) (Result, error) {
	if len(ref.Edges) < 2 {
		return Result{}, fmt.Errorf("the candidate's score profile has no bins")
	}
	r, err := j.health(ctx, model, production, candidate, schemas.RouteCanary, from, to)
	if err != nil || r.Outcome != Pass {
		return r, err
	}
	counts := make([]uint64, len(ref.Edges)+1)
	dst := make([]any, len(counts))
	for i := range counts {
		dst[i] = &counts[i]
	}
	if err := j.Conn.QueryRow(ctx, j.CanaryQuery(model, candidate, ref.Edges, from, to)).Scan(dst...); err != nil {
		return Result{}, fmt.Errorf("judging the canary step: %w", err)
	}
	k := len(ref.Counts)
	cur := make([]float64, k+2) // underflow, bins…, overflow
	var n uint64
	for i, c := range counts {
		cur[i] = float64(c)
		n += c
	}
	r.Figures["samples"] = float64(n)
	if n < j.Config.MinSamples {
		r.Outcome, r.Gate = TooFew, "min_samples"
		return r, nil
	}
	refc := make([]float64, k+2)
	refc[0], refc[k+1] = float64(ref.Underflow), float64(ref.Overflow)
	for i, c := range ref.Counts {
		refc[i+1] = float64(c)
	}
	psi, err := stats.PSI(refc, cur)
	if err != nil {
		return Result{}, err
	}
	pv, err := stats.PSIPValue(psi, stats.Sum(refc), stats.Sum(cur), len(refc))
	if err != nil {
		return Result{}, err
	}
	r.Figures["score_psi"], r.Figures["score_drift_pvalue"] = psi, pv
	if pv < j.Config.MaxDriftPValue && psi >= j.Config.MinDriftPSI {
		r.Outcome, r.Gate = Fail, "score_drift"
	}
	return r, nil
}

// Performance is the performance gate of a step on route (shadow or
// canary) over [from, to): judged only on events whose labels have had
// LabelDelay to arrive by now, the candidate's AUC on its route against
// production's on its own rows (for a shadow, the same events). Too few
// labelled events of either holds the step. Off (Pass, no figures) when
// LabelDelay is 0.
func (j Judge) Performance(ctx context.Context, production, candidate *schemas.Manifest, route schemas.Route, from, to, now time.Time) (Result, error) {
	c := j.Config
	r := Result{Figures: map[string]float64{}}
	if c.LabelDelay <= 0 {
		return r, nil
	}
	if mature := now.Add(-c.LabelDelay); mature.Before(to) {
		to = mature
	}
	if !to.After(from) {
		r.Outcome, r.Gate = TooFew, "labels_mature"
		return r, nil
	}
	p := labels.Performance{Conn: j.Conn, Database: j.Database}
	prod, err := p.Measure(ctx, production, []schemas.Route{schemas.RouteProduction}, from, to, true)
	if err != nil {
		return Result{}, fmt.Errorf("judging production's performance: %w", err)
	}
	cand, err := p.Measure(ctx, candidate, []schemas.Route{route}, from, to, true)
	if err != nil {
		return Result{}, fmt.Errorf("judging the candidate's performance: %w", err)
	}
	r.Figures["labeled"], r.Figures["production_labeled"] = float64(cand.Labeled), float64(prod.Labeled)
	pa, okP := prod.Figures["auc"]
	ca, okC := cand.Figures["auc"]
	if okP && okC {
		r.Figures["auc"], r.Figures["production_auc"], r.Figures["auc_drop"] = ca, pa, pa-ca
	}
	switch {
	case cand.Labeled < c.MinLabels || prod.Labeled < c.MinLabels || !okP || !okC:
		r.Outcome, r.Gate = TooFew, "min_labels"
	case pa-ca > c.MaxAUCDrop:
		r.Outcome, r.Gate = Fail, "auc"
	}
	return r, nil
}

// RouteQuery is the SQL of the health figures: per route and version in
// [from, to), the events scored, those a candidate failed
// (candidate_failed, on production's rows), and the p99 of the scoring
// time of the ONNX runs the rows came from (ClickHouse 18.16).
func (j Judge) RouteQuery(model, production, candidate string, from, to time.Time) string {
	return fmt.Sprintf(`SELECT toString(route), model_version, uniqExact(event_id), countIf(candidate_failed = 1), quantile(0.99)(toFloat64(scoring_us))
FROM %s.inference_log WHERE model = %s AND model_version IN (%s, %s) AND scored_time_ms >= %d AND scored_time_ms < %d
GROUP BY route, model_version`, j.Database, drift.Quote(model), drift.Quote(production), drift.Quote(candidate), from.UnixMilli(), to.UnixMilli())
}

// DeadLetterQuery is the SQL of the events each route and version rejected
// at the score stage in [from, to).
func (j Judge) DeadLetterQuery(model, production, candidate string, from, to time.Time) string {
	return fmt.Sprintf(`SELECT route, model_version, count() FROM %s.dead_letters
WHERE model = %s AND model_version IN (%s, %s) AND stage = 'score' AND dlq_time_ms >= %d AND dlq_time_ms < %d
GROUP BY route, model_version`, j.Database, drift.Quote(model), drift.Quote(production), drift.Quote(candidate), from.UnixMilli(), to.UnixMilli())
}

// health judges what every step is judged on first: enough candidate
// events, the candidate's score-failure rate against production's, and
// its scoring p99 against production's. The candidate's failures are the
// production rows marked candidate_failed: for a canary, events
// production scored instead (the router never dead-letters an event the
// canary could not score); for a shadow, events it has no row for.
// Production's failures are its score-stage dead letters.
func (j Judge) health(ctx context.Context, model, production, candidate string, route schemas.Route, from, to time.Time) (Result, error) {
	type key struct{ route, version string }
	type figs struct {
		n, failed, dead uint64
		p99us           float64
	}
	by := map[key]*figs{}
	get := func(route, version string) *figs {
		k := key{route, version}
		if by[k] == nil {
			by[k] = &figs{}
		}
		return by[k]
	}
	rows, err := j.Conn.Query(ctx, j.RouteQuery(model, production, candidate, from, to))
	if err != nil {
		return Result{}, fmt.Errorf("judging the step's health: %w", err)
	}
	for rows.Next() {
		var rt, v string
		var f figs
		if err := rows.Scan(&rt, &v, &f.n, &f.failed, &f.p99us); err != nil {
			rows.Close()
			return Result{}, fmt.Errorf("judging the step's health: %w", err)
		}
		*get(rt, v) = f
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Result{}, fmt.Errorf("judging the step's health: %w", err)
	}
	dead, err := j.Conn.Query(ctx, j.DeadLetterQuery(model, production, candidate, from, to))
	if err != nil {
		return Result{}, fmt.Errorf("counting the step's dead letters: %w", err)
	}
	for dead.Next() {
		var rt, v string
		var n uint64
		if err := dead.Scan(&rt, &v, &n); err != nil {
			dead.Close()
			return Result{}, fmt.Errorf("counting the step's dead letters: %w", err)
		}
		get(rt, v).dead += n
	}
	dead.Close()
	if err := dead.Err(); err != nil {
		return Result{}, fmt.Errorf("counting the step's dead letters: %w", err)
	}

	prod, cand := get(string(schemas.RouteProduction), production), get(string(route), candidate)
	candFailed, prodOwn := prod.failed, prod.n
	if route == schemas.RouteCanary {
		prodOwn -= prod.failed // the canary's events production scored
	}
	rate := func(failed, ok uint64) float64 {
		if failed+ok == 0 {
			return 0
		}
		return float64(failed) / float64(failed+ok)
	}
	candRate, prodRate := rate(candFailed, cand.n), rate(prod.dead, prodOwn)
	r := Result{Figures: map[string]float64{
		"samples": float64(cand.n), "production_samples": float64(prodOwn),
		"error_rate": candRate, "production_error_rate": prodRate,
		"scoring_p99_ms": cand.p99us / 1000, "production_scoring_p99_ms": prod.p99us / 1000,
	}}
	c := j.Config
	limit := max(prod.p99us*c.MaxLatencyRatio, prod.p99us+float64(c.LatencySlack.Microseconds()))
	switch {
	case cand.n+candFailed < c.MinSamples:
		r.Outcome, r.Gate = TooFew, "min_samples"
	case candRate > prodRate+c.MaxErrorRateIncrease:
		r.Outcome, r.Gate = Fail, "error_rate"
	case prodOwn > 0 && cand.p99us > limit:
		r.Outcome, r.Gate = Fail, "scoring_p99_ms"
	}
	return r, nil
}
