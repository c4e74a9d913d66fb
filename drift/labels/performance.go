package labels

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/schemas"
)

// DefaultBins is how many equal-width score bins the AUC is computed on.
// Pairs of a positive and a negative in the same bin count one half, so
// the binned AUC is off the exact one by at most
// ½ Σ_b P_b·N_b / (P·N) — reported as auc_bin_error_bound — which for
// scores spread over [0, 1] is about 1/(2·bins): 5e-5 here.
const DefaultBins = 10000

// eceBins is how many equal-width bins the expected calibration error
// uses, the common choice (Guo et al., 2017).
const eceBins = 10

// Performance measures a model version's performance over a time range of
// the inference log, IN ClickHouse: the version's rows (one per event;
// replays count once) joined with each event's latest label, counted per
// score bin, label and thresholded prediction. Go finalizes the metrics.
type Performance struct {
	Conn     driver.Conn
	Database string
	Bins     int // 0: DefaultBins
}

// Result is what Measure found. Figures holds:
//   - always: labeled, label_coverage, mature (0 or 1), and the
//     estimate from the scores alone — estimated_auc, estimated_precision,
//     estimated_recall, estimated_brier, estimated_positive_rate (CBPE:
//     right when the model is calibrated);
//   - once mature, from the labels: auc, auc_bin_error_bound, precision,
//     recall, brier, ece, positive_rate, predicted_positive_rate,
//     label_delay_p50_ms, label_delay_p95_ms; value_caught and
//     value_missed when labels carry a value; auc_drop and brier_rise
//     against the package's evaluation.
//
// A figure that is undefined (no positives for the AUC, nothing predicted
// positive for the precision) is left out.
type Result struct {
	Rows, Labeled uint64
	Figures       map[string]float64
}

// group is one row of the grouped query.
type group struct {
	bin            uint32
	has, y, pred   uint8
	n              uint64
	s, s2, v, vHas float64
}

func (p Performance) bins() int {
	if p.Bins > 0 {
		return p.Bins
	}
	return DefaultBins
}

func (p Performance) where(m *schemas.Manifest, routes []schemas.Route, from, to time.Time) string {
	rs := make([]string, len(routes))
	for i, r := range routes {
		rs[i] = drift.Quote(string(r))
	}
	return fmt.Sprintf("model = %s AND model_version = %s AND route IN (%s) AND event_time_ms >= %d AND event_time_ms < %d",
		drift.Quote(m.Name), drift.Quote(m.Version), strings.Join(rs, ", "), from.UnixMilli(), to.UnixMilli())
}

// joined is the version's events in range, one row each, with the latest
// label of each (has = 0 and defaults where none came yet).
func (p Performance) joined(where string) string {
	latest := "(label_time_ms, ingested_ms)"
	// Aliases differ from the columns: ClickHouse substitutes an alias
	// wherever its name appears, WHERE included.
	return fmt.Sprintf(`SELECT s, et, has, y, v, vhas, lt
FROM (SELECT event_id, any(score) AS s, any(event_time_ms) AS et FROM %[1]s.inference_log WHERE %[2]s GROUP BY event_id) AS e
ANY LEFT JOIN (SELECT event_id, toUInt8(1) AS has, argMax(label, %[3]s) AS y, argMax(value, %[3]s) AS v, argMax(has_value, %[3]s) AS vhas, max(label_time_ms) AS lt
  FROM %[1]s.labels WHERE event_id IN (SELECT event_id FROM %[1]s.inference_log WHERE %[2]s) GROUP BY event_id) AS l USING event_id`, p.Database, where, latest)
}

// Queries returns the SQL Measure runs, for the conformance test.
func (p Performance) Queries(m *schemas.Manifest, routes []schemas.Route, from, to time.Time) []string {
	j := p.joined(p.where(m, routes, from, to))
	return []string{p.groupQuery(j, threshold(m)), delayQuery(j)}
}

func (p Performance) groupQuery(joined string, t float64) string {
	b := p.bins()
	return fmt.Sprintf(`SELECT toUInt32(least(floor(greatest(toFloat64(s), 0) * %d), %d)) AS bin, has, y, toUInt8(s >= %v) AS pred,
  count(), sum(toFloat64(s)), sum(toFloat64(s) * toFloat64(s)), sum(v * vhas), sum(toFloat64(vhas))
FROM (%s) GROUP BY bin, has, y, pred`, b, b-1, t, joined)
}

func delayQuery(joined string) string {
	return fmt.Sprintf("SELECT count(), quantiles(0.5, 0.95)(toFloat64(lt) - toFloat64(et)) FROM (%s) WHERE has = 1", joined)
}

// threshold is the package's decision threshold, 0.5 when it sets none.
func threshold(m *schemas.Manifest) float64 {
	if m.Threshold != nil {
		return *m.Threshold
	}
	return 0.5
}

// Measure computes the performance of m's rows on routes with event times
// in [from, to). Until mature (the labels have had time to arrive) only
// the coverage and the estimate are reported.
func (p Performance) Measure(ctx context.Context, m *schemas.Manifest, routes []schemas.Route, from, to time.Time, mature bool) (Result, error) {
	j := p.joined(p.where(m, routes, from, to))
	rows, err := p.Conn.Query(ctx, p.groupQuery(j, threshold(m)))
	if err != nil {
		return Result{}, fmt.Errorf("performance query: %w", err)
	}
	var gs []group
	for rows.Next() {
		var g group
		if err := rows.Scan(&g.bin, &g.has, &g.y, &g.pred, &g.n, &g.s, &g.s2, &g.v, &g.vHas); err != nil {
			rows.Close()
			return Result{}, fmt.Errorf("performance query: %w", err)
		}
		gs = append(gs, g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Result{}, fmt.Errorf("performance query: %w", err)
	}
	r := finalize(gs, p.bins(), mature, m.Evaluation)
	if mature && r.Labeled > 0 {
		var n uint64
		var delay []float64
		if err := p.Conn.QueryRow(ctx, delayQuery(j)).Scan(&n, &delay); err != nil {
			return Result{}, fmt.Errorf("label delay query: %w", err)
		}
		if n > 0 && len(delay) == 2 {
			r.Figures["label_delay_p50_ms"], r.Figures["label_delay_p95_ms"] = delay[0], delay[1]
		}
	}
	return r, nil
}

// finalize turns the grouped counts into the figures.
func finalize(gs []group, bins int, mature bool, eval *schemas.Evaluation) Result {
	r := Result{Figures: map[string]float64{}}
	put := func(name string, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			r.Figures[name] = v
		}
	}
	// Per bin: expected positives and negatives (all rows, for the
	// estimate) and labelled positives and negatives.
	estPos, estNeg := make([]float64, bins), make([]float64, bins)
	pos, neg := make([]float64, bins), make([]float64, bins)
	eceS, eceY := make([]float64, eceBins), make([]float64, eceBins)
	var sumS, sumS2, predN, predS float64
	var tp, fp, fn, sq, labeledN, valueCaught, valueMissed, valued float64
	for _, g := range gs {
		n := float64(g.n)
		r.Rows += g.n
		estPos[g.bin] += g.s
		estNeg[g.bin] += n - g.s
		sumS += g.s
		sumS2 += g.s2
		if g.pred == 1 {
			predN += n
			predS += g.s
		}
		if g.has == 0 {
			continue
		}
		r.Labeled += g.n
		labeledN += n
		y := float64(g.y)
		if g.y == 1 {
			pos[g.bin] += n
		} else {
			neg[g.bin] += n
		}
		switch {
		case g.pred == 1 && g.y == 1:
			tp += n
			valueCaught += g.v
		case g.pred == 1:
			fp += n
		case g.y == 1:
			fn += n
			valueMissed += g.v
		}
		valued += g.vHas
		sq += g.s2 - 2*y*g.s + y*n // Σ (s − y)²
		k := int(g.bin) * eceBins / bins
		eceS[k] += g.s
		eceY[k] += y * n
	}
	rows := float64(r.Rows)
	put("labeled", labeledN)
	put("label_coverage", labeledN/rows)
	put("mature", map[bool]float64{false: 0, true: 1}[mature])
	if auc, _, ok := binnedAUC(estPos, estNeg); ok {
		put("estimated_auc", auc)
	}
	put("estimated_positive_rate", sumS/rows)
	put("estimated_brier", (sumS-sumS2)/rows) // E[(s − y)²] = s(1 − s) for a calibrated s
	put("estimated_precision", predS/predN)
	put("estimated_recall", predS/sumS)
	if !mature || r.Labeled == 0 {
		return r
	}
	if auc, bound, ok := binnedAUC(pos, neg); ok {
		put("auc", auc)
		put("auc_bin_error_bound", bound)
		if eval != nil && eval.AUC > 0 {
			put("auc_drop", eval.AUC-auc)
		}
	}
	put("precision", tp/(tp+fp))
	put("recall", tp/(tp+fn))
	put("brier", sq/labeledN)
	if eval != nil && eval.Brier > 0 {
		put("brier_rise", sq/labeledN-eval.Brier)
	}
	var ece float64
	for k := range eceS {
		ece += math.Abs(eceS[k] - eceY[k])
	}
	put("ece", ece/labeledN)
	put("positive_rate", (tp+fn)/labeledN)
	put("predicted_positive_rate", (tp+fp)/labeledN)
	if valued > 0 {
		put("value_caught", valueCaught)
		put("value_missed", valueMissed)
	}
	return r
}

// binnedAUC is the AUC of per-bin positive and negative counts (bins in
// ascending score order), pairs within a bin counting one half, and its
// error bound against the exact AUC. ok is false without both classes.
func binnedAUC(pos, neg []float64) (auc, bound float64, ok bool) {
	var p, n, below, wins, ties float64
	for b := range pos {
		wins += pos[b] * below
		ties += pos[b] * neg[b]
		below += neg[b]
		p += pos[b]
		n += neg[b]
	}
	if p <= 0 || n <= 0 {
		return 0, 0, false
	}
	return (wins + ties/2) / (p * n), ties / 2 / (p * n), true
}
