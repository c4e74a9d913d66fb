package drift

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// Column kinds in a drift report.
const (
	KindNumeric     = "numeric"
	KindCategorical = "categorical"
)

// ReportOptions tune an offline drift report.
type ReportOptions struct {
	Alpha  float64           // false discovery rate for the BH-adjusted p-values
	MinPSI float64           // effect-size floor: smaller shifts are not called drift
	Bins   int               // numeric: reference quantile bins
	TopK   int               // categorical: reference categories kept; the rest is "other"
	Kinds  map[string]string // column → numeric or categorical; others detected
}

// DefaultReportOptions: FDR 1%, PSI ≥ 0.1, 10 bins, top 20 categories.
func DefaultReportOptions() ReportOptions {
	return ReportOptions{Alpha: 0.01, MinPSI: 0.1, Bins: 10, TopK: 20}
}

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
type FeatureReport struct {
	Name    string             `json:"name"`
	Kind    string             `json:"kind"`
	Metrics map[string]float64 `json:"metrics"`
	Drifted bool               `json:"drifted"`
	Bins    []HistogramBin     `json:"bins"` // reference and current shares, for charts
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

// BuildReport compares every column the two tables share.
func BuildReport(ref, cur Table, o ReportOptions) (*Report, error) {
	rep := &Report{Alpha: o.Alpha, MinPSI: o.MinPSI}
	var pvals []float64
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
		case KindNumeric:
			fr, err = numericFeature(col, rv, cv, o)
		case KindCategorical:
			fr, err = categoricalFeature(col, rv, cv, o)
		default:
			return nil, fmt.Errorf("column %s: kind %q is not numeric or categorical", col, kind)
		}
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", col, err)
		}
		rep.Features = append(rep.Features, fr)
		if kind == KindNumeric {
			pvals = append(pvals, fr.Metrics["ks_pvalue"])
		} else {
			pvals = append(pvals, fr.Metrics["chi2_pvalue"])
		}
	}
	if len(rep.Features) == 0 {
		return nil, fmt.Errorf("the files share no columns (reference has %v)", ref.Columns)
	}
	for i, adj := range BenjaminiHochberg(pvals) {
		f := &rep.Features[i]
		f.Metrics["pvalue_adjusted"] = adj
		f.Drifted = adj < o.Alpha && f.Metrics["psi"] >= o.MinPSI
		if f.Drifted {
			rep.DriftedCount++
		}
	}
	return rep, nil
}

func detectKind(vals []string) string {
	seen := 0
	for _, v := range vals {
		if v == "" {
			continue
		}
		if _, err := strconv.ParseFloat(v, 64); err != nil {
			return KindCategorical
		}
		seen++
	}
	if seen == 0 {
		return KindCategorical
	}
	return KindNumeric
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

func numericFeature(name string, rv, cv []string, o ReportOptions) (FeatureReport, error) {
	r, rMiss, err := parseNumbers(rv)
	if err != nil {
		return FeatureReport{}, fmt.Errorf("reference %w", err)
	}
	c, cMiss, err := parseNumbers(cv)
	if err != nil {
		return FeatureReport{}, fmt.Errorf("current %w", err)
	}
	if len(r) == 0 || len(c) == 0 {
		return FeatureReport{}, ErrEmpty
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
	if m["psi"], err = PSI(rc, cc); err != nil {
		return FeatureReport{}, err
	}
	m["js"], _ = JensenShannon(rc, cc, math.E)
	m["js_base2"], _ = JensenShannon(rc, cc, 2)
	// Wasserstein and KS on the raw values: all distinct locations.
	locs, rw, cw := mergeSamples(r, c)
	std := stdDev(r)
	if std > 0 {
		m["wasserstein_norm"], _ = WassersteinNorm(locs, rw, cw, std)
	}
	m["ks"], m["ks_pvalue"], _ = KS(locs, rw, locs, cw)
	bins := make([]HistogramBin, len(rc))
	labels := binLabels(edges)
	rs, cs := sum(rc), sum(cc)
	for i := range rc {
		bins[i] = HistogramBin{Label: labels[i], Reference: rc[i] / rs, Current: cc[i] / cs}
	}
	return FeatureReport{Name: name, Kind: KindNumeric, Metrics: m, Bins: bins}, nil
}

func binLabels(edges []float64) []string {
	f := func(x float64) string { return strconv.FormatFloat(x, 'g', 4, 64) }
	out := []string{"< " + f(edges[0])}
	for i := 0; i+1 < len(edges); i++ {
		out = append(out, "["+f(edges[i])+", "+f(edges[i+1])+")")
	}
	return append(out, "≥ "+f(edges[len(edges)-1]), "missing")
}

// mergeSamples returns the sorted distinct values of both samples and each
// sample's count at every value.
func mergeSamples(a, b []float64) (locs, wa, wb []float64) {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var x float64
		switch {
		case j >= len(b) || (i < len(a) && a[i] <= b[j]):
			x = a[i]
		default:
			x = b[j]
		}
		ca, cb := 0.0, 0.0
		for i < len(a) && a[i] == x {
			ca++
			i++
		}
		for j < len(b) && b[j] == x {
			cb++
			j++
		}
		locs, wa, wb = append(locs, x), append(wa, ca), append(wb, cb)
	}
	return locs, wa, wb
}

func stdDev(xs []float64) float64 {
	mean := sum(xs) / float64(len(xs))
	v := 0.0
	for _, x := range xs {
		v += (x - mean) * (x - mean)
	}
	return math.Sqrt(v / float64(len(xs)))
}

func categoricalFeature(name string, rv, cv []string, o ReportOptions) (FeatureReport, error) {
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
	if sum(rc) == 0 || sum(cc) == 0 {
		return FeatureReport{}, ErrEmpty
	}
	m := map[string]float64{}
	var err error
	if m["psi"], err = PSI(rc, cc); err != nil {
		return FeatureReport{}, err
	}
	m["js"], _ = JensenShannon(rc, cc, math.E)
	m["js_base2"], _ = JensenShannon(rc, cc, 2)
	m["new_category_share"] = NewCategoryShare(cc[len(cats)+1], sum(cc))
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
	case len(r2) >= 2 && sum(c2) > 0:
		m["chi2_pvalue"], _ = ChiSquaredPValue(r2, c2)
	default:
		m["chi2_pvalue"] = 1
	}
	labels := append(append([]string(nil), cats...), "other", "new")
	bins := make([]HistogramBin, len(rc))
	rs, cs := sum(rc), sum(cc)
	for i := range rc {
		l := labels[i]
		if l == "" {
			l = "(missing)"
		}
		bins[i] = HistogramBin{Label: strings.TrimSpace(l), Reference: rc[i] / rs, Current: cc[i] / cs}
	}
	return FeatureReport{Name: name, Kind: KindCategorical, Metrics: m, Bins: bins}, nil
}
