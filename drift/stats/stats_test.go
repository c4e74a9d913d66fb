package stats

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"

	"github.com/seer-ml/seer/internal/testenv"
)

func binnedCase(r *rand.Rand, shift float64) (ref, cur, locs []float64) {
	for i := 0; i < 12; i++ {
		locs = append(locs, float64(i)*1.5+r.Float64())
		ref = append(ref, math.Floor(1000*math.Exp(-math.Pow(float64(i)-5, 2)/8)))
		cur = append(cur, math.Floor(800*math.Exp(-math.Pow(float64(i)-5-shift, 2)/8)))
	}
	ref[11], cur[0] = 0, 0 // empty bins on each side
	return ref, cur, locs
}

func TestBinnedStatisticsMatchScipy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var cases []map[string]any
	type in struct{ ref, cur, locs []float64 }
	var ins []in
	for _, shift := range []float64{0, 0.3, 1, 3} {
		ref, cur, locs := binnedCase(r, shift)
		ins = append(ins, in{ref, cur, locs})
		cases = append(cases, map[string]any{"kind": "binned", "ref": ref, "cur": cur, "locations": locs, "ref_std": 2.5})
	}
	want := testenv.StatsReference(t, cases)
	for i, c := range ins {
		psi, err := PSI(c.ref, c.cur)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Near(t, "psi", psi, want[i]["psi"].(float64), 1e-6)
		js, _ := JensenShannon(c.ref, c.cur, math.E)
		testenv.Near(t, "js", js, want[i]["js"].(float64), 1e-6)
		js2, _ := JensenShannon(c.ref, c.cur, 2)
		testenv.Near(t, "js_base2", js2, want[i]["js_base2"].(float64), 1e-6)
		w, err := WassersteinNorm(c.locs, c.ref, c.cur, 2.5)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Near(t, "wasserstein_norm", w, want[i]["wasserstein_norm"].(float64), 1e-6)
	}
}

func TestChiSquaredMatchesScipy(t *testing.T) {
	ref := []float64{6002, 4002, 2376, 1581, 1621, 3425, 993}
	curs := [][]float64{
		{600, 400, 238, 158, 162, 342, 100},
		{500, 400, 238, 258, 162, 342, 100},
		{60, 40, 24, 16, 16, 34, 10},
		{600, 400, 238, 158, 162, 342, 0}, // a category gone
	}
	var cases []map[string]any
	for _, c := range curs {
		cases = append(cases, map[string]any{"kind": "chi2", "ref": ref, "cur": c})
	}
	want := testenv.StatsReference(t, cases)
	for i, c := range curs {
		p, err := ChiSquaredPValue(ref, c)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Near(t, "chi2_pvalue", p, want[i]["chi2_pvalue"].(float64), 1e-6)
	}
	if _, err := ChiSquaredPValue([]float64{0, 0}, []float64{1, 1}); err == nil {
		t.Error("ChiSquaredPValue accepted an empty reference")
	}
}

// TestKSFromBinsMatchesScipyOnRawRows: on 100k-row samples, the statistic
// computed from 1000 quantile bins (what ClickHouse returns) is within 0.005
// of scipy's ks_2samp on the raw rows, and the p-value formula matches
// scipy's kstwobign.
func TestKSFromBinsMatchesScipyOnRawRows(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 100_000
	a, b := make([]float64, n), make([]float64, n)
	for i := range a {
		a[i] = r.NormFloat64()
		b[i] = r.NormFloat64()*1.1 + 0.03
	}
	want := testenv.StatsReference(t, []map[string]any{{"kind": "ks", "a": a, "b": b}})[0]
	// Bins: 1000 quantile edges of the reference; count both samples.
	sorted := append([]float64(nil), a...)
	sort.Float64s(sorted)
	var edges []float64
	for i := 1; i < 1000; i++ {
		edges = append(edges, sorted[i*n/1000])
	}
	edges = append(edges, math.Inf(1))
	count := func(xs []float64) []float64 {
		c := make([]float64, len(edges))
		for _, x := range xs {
			c[sort.SearchFloat64s(edges, x)]++
		}
		return c
	}
	locs := append(append([]float64(nil), edges[:len(edges)-1]...), sorted[n-1]+1)
	d, p, err := KS(locs, count(a), locs, count(b))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Near(t, "ks from bins vs raw", d, want["ks"].(float64), 0.005)
	// Exact samples: same statistic as scipy.
	ones := make([]float64, n)
	for i := range ones {
		ones[i] = 1
	}
	sb := append([]float64(nil), b...)
	sort.Float64s(sb)
	dRaw, pRaw, _ := KS(sorted, ones, sb, ones)
	testenv.Near(t, "ks raw", dRaw, want["ks"].(float64), 1e-9)
	testenv.Near(t, "ks p-value (kstwobign)", pRaw, want["ks_pvalue_asymp"].(float64), 1e-6)
	if p < 0 || p > 1 {
		t.Errorf("p-value %v outside [0, 1]", p)
	}
}

func TestKolmogorovSurvivalMatchesScipy(t *testing.T) {
	xs := []float64{0.1, 0.3, 0.5, 0.8, 1.0, 1.36, 1.63, 2.5}
	want := testenv.StatsReference(t, []map[string]any{{"kind": "kstwobign", "x": xs}})[0]["sf"].([]any)
	for i, x := range xs {
		testenv.Near(t, "Q_KS", KolmogorovSurvival(x), want[i].(float64), 1e-9)
	}
}

func TestStatisticsRejectBadInput(t *testing.T) {
	if _, err := PSI([]float64{1, 2}, []float64{1}); err == nil {
		t.Error("PSI accepted bins of different lengths")
	}
	if _, err := PSI([]float64{0, 0}, []float64{1, 1}); err == nil {
		t.Error("PSI accepted an empty reference")
	}
	if _, err := WassersteinNorm([]float64{2, 1}, []float64{1, 1}, []float64{1, 1}, 1); err == nil {
		t.Error("WassersteinNorm accepted unsorted locations")
	}
	if v, _ := PSI([]float64{10, 20, 30}, []float64{10, 20, 30}); v != 0 {
		t.Errorf("PSI of identical distributions = %v, want 0", v)
	}
}

func TestBenjaminiHochbergMatchesScipy(t *testing.T) {
	p := []float64{0.001, 0.04, 0.03, 0.5, 0.2, 0.011, 0.9, 0.04}
	want := testenv.StatsReference(t, []map[string]any{{"kind": "bh", "p": p}})[0]["adjusted"].([]any)
	got := BenjaminiHochberg(p)
	for i := range p {
		testenv.Near(t, "BH adjusted p", got[i], want[i].(float64), 1e-12)
	}
}

// TestPSIPValueKeepsFalseAlarmRate: over 1000 windows with no drift (each
// compared with its own reference draw, which is what the approximation
// describes) the share flagged at alpha = 0.01 stays near 1%, for small and
// large windows alike — where a fixed PSI threshold would not.
func TestPSIPValueKeepsFalseAlarmRate(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const bins, n = 10, 20000
	draw := func(size int) []float64 {
		c := make([]float64, bins)
		for i := 0; i < size; i++ {
			c[r.IntN(bins)]++
		}
		return c
	}
	for _, m := range []int{500, 20000} {
		hits, fixed := 0, 0
		for w := 0; w < 1000; w++ {
			psi, err := PSI(draw(n), draw(m))
			if err != nil {
				t.Fatal(err)
			}
			p, err := PSIPValue(psi, n, float64(m), bins)
			if err != nil {
				t.Fatal(err)
			}
			if p < 0.01 {
				hits++
			}
			if psi > 0.02 {
				fixed++
			}
		}
		t.Logf("window of %d rows: %d/1000 flagged by the p-value at 0.01, %d/1000 by a fixed PSI > 0.02", m, hits, fixed)
		if hits > 20 {
			t.Errorf("window of %d rows: false-alarm rate %d/1000 at alpha 0.01, want about 10", m, hits)
		}
	}
}

// TestStatisticsMatchEvidently runs Evidently's own stattests (psi,
// jensenshannon, wasserstein) on raw samples, with empty bins on both
// sides, and computes seer's statistics on Evidently's bins.
func TestStatisticsMatchEvidently(t *testing.T) {
	r := rand.New(rand.NewPCG(51, 52))
	var ref, cur []float64
	for i := 0; i < 5000; i++ {
		ref = append(ref, r.NormFloat64()*2+10)
	}
	for i := 0; i < 3000; i++ {
		cur = append(cur, r.ExpFloat64()*3+9) // skewed: some bins empty on each side
	}
	in, _ := json.Marshal(map[string]any{"reference": ref, "current": cur, "n_bins": 30})
	cmd := exec.Command(testenv.PythonEvidently(t), filepath.Join("testdata", "reference_evidently.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reference_evidently.py: %v\n%s", err, stderr.String())
	}
	var ev struct {
		PSI, JS, Wasserstein float64 `json:"-"`
		PSIv                 float64 `json:"psi"`
		JSv                  float64 `json:"js"`
		WD                   float64 `json:"wasserstein_norm"`
		PSIRef, PSICur       []float64
		JSRef, JSCur         []float64
	}
	var raw map[string]json.RawMessage
	json.Unmarshal(out, &raw)
	json.Unmarshal(out, &ev)
	json.Unmarshal(raw["psi_ref"], &ev.PSIRef)
	json.Unmarshal(raw["psi_cur"], &ev.PSICur)
	json.Unmarshal(raw["js_ref"], &ev.JSRef)
	json.Unmarshal(raw["js_cur"], &ev.JSCur)
	// Evidently's bins before it fills empty ones: seer's PSI fills them
	// by the same rule.
	psi, err := PSI(ev.JSRef, ev.JSCur)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Near(t, "psi vs Evidently", psi, ev.PSIv, 1e-6)
	js, _ := JensenShannon(ev.JSRef, ev.JSCur, math.E)
	testenv.Near(t, "js vs Evidently", js, ev.JSv, 1e-6)
	sort.Float64s(ref)
	sort.Float64s(cur)
	locs, rw, cw := MergeSamples(ref, cur)
	wd, err := WassersteinNorm(locs, rw, cw, StdDev(ref))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Near(t, "wasserstein_norm vs Evidently", wd, ev.WD, 1e-6)
	empty := 0
	for i := range ev.JSRef {
		if ev.JSRef[i] == 0 || ev.JSCur[i] == 0 {
			empty++
		}
	}
	if empty == 0 {
		t.Error("the samples left no empty bin; the zero-share rule went untested")
	}
}
