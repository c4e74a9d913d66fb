// Package judge measures a rollout step's candidate against production in
// ClickHouse, from the inference log: for a shadow step, the same events
// scored by both (label agreement, score difference, score correlation);
// for a canary step, the candidate's score drift against its own
// reference profile, calibrated as the drift jobs are. It only measures
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
}

// DefaultConfig: 1,000 rows a step, 90% label agreement, correlation 0.5,
// a p95 score difference of 0.2, and drift at 1% with a PSI floor of 0.1.
func DefaultConfig() Config {
	return Config{MinSamples: 1000, MinAgreement: 0.9, MinCorrelation: 0.5, MaxScoreDiffP95: 0.2, MaxDriftPValue: 0.01, MinDriftPSI: 0.1}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.MinAgreement < 0 || c.MinAgreement > 1:
		return fmt.Errorf("rollout.gates.min_agreement: %v is not in [0, 1]", c.MinAgreement)
	case c.MinCorrelation < -1 || c.MinCorrelation > 1:
		return fmt.Errorf("rollout.gates.min_correlation: %v is not in [-1, 1]", c.MinCorrelation)
	case c.MaxScoreDiffP95 <= 0 || c.MaxDriftPValue <= 0 || c.MinDriftPSI < 0:
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
// the same events in [from, to), joined on the event id. It runs on
// ClickHouse 18.16.
func (j Judge) ShadowQuery(model, production, candidate string, from, to time.Time) string {
	where := func(version, route string) string {
		return fmt.Sprintf("FROM %s.inference_log WHERE model = %s AND model_version = %s AND route = '%s' AND scored_time_ms >= %d AND scored_time_ms < %d",
			j.Database, drift.Quote(model), drift.Quote(version), route, from.UnixMilli(), to.UnixMilli())
	}
	return fmt.Sprintf(`SELECT count(), avg(label = s_label), quantile(0.95)(abs(score - s_score)), corr(toFloat64(score), toFloat64(s_score))
FROM (SELECT event_id, label, score %s) AS p
ALL INNER JOIN (SELECT event_id, label AS s_label, score AS s_score %s) AS s USING event_id`, where(production, "production"), where(candidate, "shadow"))
}

// Shadow judges a shadow step.
func (j Judge) Shadow(ctx context.Context, model, production, candidate string, from, to time.Time) (Result, error) {
	q := j.ShadowQuery(model, production, candidate, from, to)
	var n uint64
	var agree, diff, corr float64
	if err := j.Conn.QueryRow(ctx, q).Scan(&n, &agree, &diff, &corr); err != nil {
		return Result{}, fmt.Errorf("judging the shadow step: %w", err)
	}
	r := Result{Figures: map[string]float64{"samples": float64(n), "label_agreement": agree, "score_diff_p95": diff, "score_correlation": corr}}
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
func (j Judge) Canary(ctx context.Context, model, candidate string, ref schemas.ColumnProfile, from, to time.Time) (Result, error) {
	if len(ref.Edges) < 2 {
		return Result{}, fmt.Errorf("the candidate's score profile has no bins")
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
	r := Result{Figures: map[string]float64{"samples": float64(n)}}
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
