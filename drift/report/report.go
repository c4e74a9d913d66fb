// Package report builds seer's offline drift report between two data files
// (CSV, JSON Lines or flat Parquet): per column drift tests, data-quality
// flags and histograms, as JSON or HTML. A column that cannot be compared
// gets a status instead of failing the report.
package report

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/seer-ml/seer/drift/stats"
	"github.com/seer-ml/seer/schemas"
)

// Options tune an offline drift report.
type Options struct {
	Alpha          float64                        // false discovery rate for the BH-adjusted p-values
	MinPSI         float64                        // effect-size floor: smaller shifts are not called drift
	Bins           int                            // numeric: reference quantile bins
	TopK           int                            // categorical: reference categories kept; the rest is "other"
	Kinds          map[string]schemas.ProfileKind // column → numeric or categorical; others detected
	MinSamples     int                            // fewer observed values on either side: a warning, and never "drifted"
	MissingMaxDiff float64                        // a change of the missing share by more than this is flagged
}

// DefaultOptions: FDR 1%, PSI ≥ 0.1, 10 bins, top 20 categories, at
// least 100 observations a side, missing share flagged past ±5 points.
func DefaultOptions() Options {
	return Options{Alpha: 0.01, MinPSI: 0.1, Bins: 10, TopK: 20, MinSamples: 100, MissingMaxDiff: 0.05}
}

// Feature statuses in a drift report.
const (
	StatusOK             = "ok"              // compared
	StatusSmallSample    = "small_sample"    // compared, but too few values to call drift
	StatusNoObservations = "no_observations" // one side has no value at all: nothing to compare
)

// Report is the offline drift report. Its JSON form is a contract: a
// top-level features list whose items have name, kind, metrics and drifted.
type Report struct {
	Reference    Dataset         `json:"reference"`
	Current      Dataset         `json:"current"`
	Alpha        float64         `json:"alpha"`
	MinPSI       float64         `json:"min_psi"`
	DriftedCount int             `json:"drifted_count"`
	Features     []FeatureReport `json:"features"`
}

// Dataset names one side of the comparison.
type Dataset struct {
	Path string `json:"path"`
	Rows int    `json:"rows"`
}

// FeatureReport is one column's result. Metrics for numeric columns: psi,
// js, js_base2, wasserstein_norm, ks, ks_pvalue; for categorical: psi,
// chi2_pvalue, js, js_base2, new_category_share. pvalue_adjusted is the
// Benjamini–Hochberg adjustment across the report's features.
//
// Status is ok, small_sample or no_observations; Warnings say why in
// words, including a change of the missing share (a data-quality flag,
// MissingChanged), which the drift tests on present values do not see.
type FeatureReport struct {
	Name           string              `json:"name"`
	Kind           schemas.ProfileKind `json:"kind"`
	Status         string              `json:"status"`
	Metrics        map[string]float64  `json:"metrics"`
	Drifted        bool                `json:"drifted"`
	MissingChanged bool                `json:"missing_changed"`
	Warnings       []string            `json:"warnings,omitempty"`
	Bins           []HistogramBin      `json:"bins"` // reference and current shares, for charts
}

// HistogramBin is one bar pair of a feature's histogram.
type HistogramBin struct {
	Label     string  `json:"label"`
	Reference float64 `json:"reference"`
	Current   float64 `json:"current"`
}

// Table is a data set as columns of raw text values ("" is missing).
type Table struct {
	Columns []string
	Values  map[string][]string
	Rows    int
}

// Build compares every column the two tables share. A column that
// cannot be compared gets a status and a warning; the others are still
// reported. It fails only when there is nothing to compare at all.
func Build(ref, cur Table, o Options) (*Report, error) {
	switch {
	case ref.Rows == 0:
		return nil, errors.New("the reference file has no data rows")
	case cur.Rows == 0:
		return nil, errors.New("the current file has no data rows")
	}
	rep := &Report{Alpha: o.Alpha, MinPSI: o.MinPSI}
	var pvals []float64
	var tested []int // features in pvals order
	for _, col := range ref.Columns {
		cv, ok := cur.Values[col]
		if !ok {
			continue
		}
		rv := ref.Values[col]
		kind := o.Kinds[col]
		if kind == "" {
			kind = detectKind(rv)
		}
		var fr FeatureReport
		var err error
		switch kind {
		case schemas.ProfileNumeric:
			fr, err = numericFeature(col, rv, cv, o)
		case schemas.ProfileCategorical:
			fr, err = categoricalFeature(col, rv, cv, o)
		default:
			return nil, fmt.Errorf("column %s: kind %q is not numeric or categorical", col, kind)
		}
		switch {
		case errors.Is(err, stats.ErrEmpty):
			fr = FeatureReport{Name: col, Kind: kind, Status: StatusNoObservations, Metrics: map[string]float64{},
				Warnings: []string{fmt.Sprintf("no observed values (reference %d, current %d of %d and %d rows are present)",
					present(rv), present(cv), len(rv), len(cv))}}
		case err != nil:
			return nil, fmt.Errorf("column %s: %w", col, err)
		default:
			fr.Status = StatusOK
			if nr, nc := observed(kind, rv), observed(kind, cv); min(nr, nc) < o.MinSamples {
				fr.Status = StatusSmallSample
				fr.Warnings = append(fr.Warnings, fmt.Sprintf("small sample: %d reference and %d current values, fewer than %d; not called drifted", nr, nc, o.MinSamples))
			}
			tested = append(tested, len(rep.Features))
			if kind == schemas.ProfileNumeric {
				pvals = append(pvals, fr.Metrics["ks_pvalue"])
			} else {
				pvals = append(pvals, fr.Metrics["chi2_pvalue"])
			}
		}
		mr, mc := missingShare(rv), missingShare(cv)
		fr.Metrics["missing_share_reference"], fr.Metrics["missing_share_current"] = mr, mc
		if math.Abs(mc-mr) > o.MissingMaxDiff {
			fr.MissingChanged = true
			fr.Warnings = append(fr.Warnings, fmt.Sprintf("missing share changed from %.1f%% to %.1f%%", 100*mr, 100*mc))
		}
		rep.Features = append(rep.Features, fr)
	}
	if len(rep.Features) == 0 {
		return nil, fmt.Errorf("the files share no columns (reference has %v, current has %v)", ref.Columns, cur.Columns)
	}
	for i, adj := range stats.BenjaminiHochberg(pvals) {
		f := &rep.Features[tested[i]]
		f.Metrics["pvalue_adjusted"] = adj
		f.Drifted = f.Status == StatusOK && adj < o.Alpha && f.Metrics["psi"] >= o.MinPSI
		if f.Drifted {
			rep.DriftedCount++
		}
	}
	return rep, nil
}

// present counts the values that are not empty.
func present(vals []string) int {
	n := 0
	for _, v := range vals {
		if v != "" {
			n++
		}
	}
	return n
}

// observed counts the values a test of this kind uses: numbers that are
// finite for numeric columns, any value for categorical ones.
func observed(kind schemas.ProfileKind, vals []string) int {
	if kind == schemas.ProfileCategorical {
		return len(vals)
	}
	n := 0
	for _, v := range vals {
		if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
			n++
		}
	}
	return n
}

// missingShare is the share of values that are empty or not finite.
func missingShare(vals []string) float64 {
	if len(vals) == 0 {
		return 0
	}
	miss := 0
	for _, v := range vals {
		if v == "" {
			miss++
		} else if f, err := strconv.ParseFloat(v, 64); err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
			miss++
		}
	}
	return float64(miss) / float64(len(vals))
}

func detectKind(vals []string) schemas.ProfileKind {
	seen := 0
	for _, v := range vals {
		if v == "" {
			continue
		}
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			return schemas.ProfileCategorical
		}
		seen++
	}
	if seen == 0 {
		return schemas.ProfileCategorical
	}
	return schemas.ProfileNumeric
}

// parseNumbers returns the sorted finite values and the count of missing
// ones. A value that is not a number is an error naming it.
func parseNumbers(vals []string) ([]float64, int, error) {
	out := make([]float64, 0, len(vals))
	missing := 0
	for i, v := range vals {
		if v == "" {
			missing++
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return nil, 0, fmt.Errorf("row %d: %q is not a number", i+1, v)
		}
		if math.IsNaN(f) || math.IsInf(f, 0) {
			missing++
			continue
		}
		out = append(out, f)
	}
	sort.Float64s(out)
	return out, missing, nil
}

func numericFeature(name string, rv, cv []string, o Options) (FeatureReport, error) {
	r, rMiss, err := parseNumbers(rv)
	if err != nil {
		return FeatureReport{}, fmt.Errorf("reference %w", err)
	}
	c, cMiss, err := parseNumbers(cv)
	if err != nil {
		return FeatureReport{}, fmt.Errorf("current %w", err)
	}
	if len(r) == 0 || len(c) == 0 {
		return FeatureReport{}, stats.ErrEmpty
	}
	// Frozen bins: reference quantile edges, plus underflow, overflow and
	// missing — the same layout as a model package profile.
	var edges []float64
	for i := 0; i <= o.Bins; i++ {
		e := r[min(i*len(r)/o.Bins, len(r)-1)]
		if len(edges) == 0 || e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	count := func(xs []float64, miss int) []float64 {
		cnt := make([]float64, len(edges)+2) // underflow, bins…, overflow(incl. last edge), missing
		for _, x := range xs {
			cnt[sort.Search(len(edges), func(i int) bool { return edges[i] > x })]++
		}
		cnt[len(cnt)-1] = float64(miss)
		return cnt
	}
	rc, cc := count(r, rMiss), count(c, cMiss)
	m := map[string]float64{}
	if m["psi"], err = stats.PSI(rc, cc); err != nil {
		return FeatureReport{}, err
	}
	m["js"], _ = stats.JensenShannon(rc, cc, math.E)
	m["js_base2"], _ = stats.JensenShannon(rc, cc, 2)
	// Wasserstein and KS on the raw values: all distinct locations.
	locs, rw, cw := stats.MergeSamples(r, c)
	std := stats.StdDev(r)
	if std > 0 {
		m["wasserstein_norm"], _ = stats.WassersteinNorm(locs, rw, cw, std)
	}
	m["ks"], m["ks_pvalue"], _ = stats.KS(locs, rw, locs, cw)
	bins := make([]HistogramBin, len(rc))
	labels := binLabels(edges)
	rs, cs := stats.Sum(rc), stats.Sum(cc)
	for i := range rc {
		bins[i] = HistogramBin{Label: labels[i], Reference: rc[i] / rs, Current: cc[i] / cs}
	}
	return FeatureReport{Name: name, Kind: schemas.ProfileNumeric, Metrics: m, Bins: bins}, nil
}

func binLabels(edges []float64) []string {
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) }
	out := []string{"< " + f(edges[0])}
	for i := 0; i+1 < len(edges); i++ {
		out = append(out, "["+f(edges[i])+", "+f(edges[i+1])+")")
	}
	return append(out, "≥ "+f(edges[len(edges)-1]), "missing")
}

func categoricalFeature(name string, rv, cv []string, o Options) (FeatureReport, error) {
	refCount := map[string]float64{}
	for _, v := range rv {
		refCount[v]++
	}
	cats := make([]string, 0, len(refCount))
	for k := range refCount {
		cats = append(cats, k)
	}
	sort.Slice(cats, func(i, j int) bool {
		if refCount[cats[i]] != refCount[cats[j]] {
			return refCount[cats[i]] > refCount[cats[j]]
		}
		return cats[i] < cats[j]
	})
	if len(cats) > o.TopK {
		cats = cats[:o.TopK]
	}
	index := map[string]int{}
	for i, c := range cats {
		index[c] = i
	}
	// Buckets: the top-k reference categories, then "other" (rarer
	// reference categories), then "new" (never in the reference).
	bucket := func(v string, refSide bool) int {
		if i, ok := index[v]; ok {
			return i
		}
		if _, seen := refCount[v]; seen || refSide {
			return len(cats)
		}
		return len(cats) + 1
	}
	rc, cc := make([]float64, len(cats)+2), make([]float64, len(cats)+2)
	for _, v := range rv {
		rc[bucket(v, true)]++
	}
	for _, v := range cv {
		cc[bucket(v, false)]++
	}
	if stats.Sum(rc) == 0 || stats.Sum(cc) == 0 {
		return FeatureReport{}, stats.ErrEmpty
	}
	m := map[string]float64{}
	var err error
	if m["psi"], err = stats.PSI(rc, cc); err != nil {
		return FeatureReport{}, err
	}
	m["js"], _ = stats.JensenShannon(rc, cc, math.E)
	m["js_base2"], _ = stats.JensenShannon(rc, cc, 2)
	m["new_category_share"] = stats.NewCategoryShare(cc[len(cats)+1], stats.Sum(cc))
	// χ² over the buckets the reference has. A category the reference
	// never saw has an expected count of 0, so — as in Evidently's
	// chisquare test — its presence alone gives p = 0; the PSI floor keeps
	// a handful of such rows from being called drift.
	var r2, c2 []float64
	for i := range rc {
		if rc[i] > 0 {
			r2, c2 = append(r2, rc[i]), append(c2, cc[i])
		}
	}
	switch {
	case cc[len(cats)+1] > 0:
		m["chi2_pvalue"] = 0
	case len(r2) >= 2 && stats.Sum(c2) > 0:
		m["chi2_pvalue"], _ = stats.ChiSquaredPValue(r2, c2)
	default:
		m["chi2_pvalue"] = 1
	}
	labels := append(append([]string(nil), cats...), "other", "new")
	bins := make([]HistogramBin, len(rc))
	rs, cs := stats.Sum(rc), stats.Sum(cc)
	for i := range rc {
		l := labels[i]
		if l == "" {
			l = "(missing)"
		}
		bins[i] = HistogramBin{Label: strings.TrimSpace(l), Reference: rc[i] / rs, Current: cc[i] / cs}
	}
	return FeatureReport{Name: name, Kind: schemas.ProfileCategorical, Metrics: m, Bins: bins}, nil
}
