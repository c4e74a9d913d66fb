package report

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// writeCSV writes rows of (amount, shifted, merchant, stable) columns.
func writeCSV(t *testing.T, path string, n int, seed uint64, shift float64, merchants []string) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed+1))
	var b strings.Builder
	b.WriteString("amount,shifted,merchant,stable\n")
	for i := 0; i < n; i++ {
		amount := 50 + 10*r.NormFloat64()
		sh := 100 + 20*r.NormFloat64() + shift*20
		m := merchants[r.IntN(len(merchants))]
		st := []string{"a", "b", "c"}[r.IntN(3)]
		missing := ""
		if i%97 != 0 { // some missing amounts
			missing = strconv.FormatFloat(amount, 'f', 3, 64)
		}
		b.WriteString(missing + "," + strconv.FormatFloat(sh, 'f', 3, 64) + "," + m + "," + st + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReportFlagsShiftsAndNotNoise(t *testing.T) {
	dir := t.TempDir()
	ref, cur := filepath.Join(dir, "ref.csv"), filepath.Join(dir, "cur.csv")
	writeCSV(t, ref, 20000, 1, 0, []string{"fuel", "grocery", "travel"})
	// Current: "shifted" moves by 0.5σ; merchants gain a new category.
	writeCSV(t, cur, 10000, 2, 0.5, []string{"fuel", "grocery", "travel", "casino", "casino"})
	rt, err := ReadTable(ref, "")
	if err != nil {
		t.Fatal(err)
	}
	ct, err := ReadTable(cur, "")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Build(rt, ct, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]FeatureReport{}
	for _, f := range rep.Features {
		got[f.Name] = f
	}
	want := map[string]struct {
		kind    schemas.ProfileKind
		drifted bool
	}{
		"amount": {schemas.ProfileNumeric, false}, "shifted": {schemas.ProfileNumeric, true},
		"merchant": {schemas.ProfileCategorical, true}, "stable": {schemas.ProfileCategorical, false},
	}
	for name, w := range want {
		f, ok := got[name]
		if !ok {
			t.Fatalf("no feature %s in report", name)
		}
		if f.Kind != w.kind || f.Drifted != w.drifted {
			t.Errorf("%s: kind %s drifted %v, want %s %v (metrics %v)", name, f.Kind, f.Drifted, w.kind, w.drifted, f.Metrics)
		}
	}
	if s := got["merchant"].Metrics["new_category_share"]; s < 0.35 || s > 0.45 {
		t.Errorf("merchant new_category_share = %v, want about 0.4", s)
	}
	for _, k := range []string{"psi", "js", "js_base2", "wasserstein_norm", "ks", "ks_pvalue"} {
		if _, ok := got["shifted"].Metrics[k]; !ok {
			t.Errorf("numeric metrics lack %s", k)
		}
	}
	for _, k := range []string{"chi2_pvalue", "js", "js_base2", "new_category_share"} {
		if _, ok := got["merchant"].Metrics[k]; !ok {
			t.Errorf("categorical metrics lack %s", k)
		}
	}
	// The raw-value statistics match scipy on the same columns.
	num := func(col []string) []float64 {
		xs, _, err := parseNumbers(col)
		if err != nil {
			t.Fatal(err)
		}
		return xs
	}
	refAmt, curAmt := num(rt.Values["shifted"]), num(ct.Values["shifted"])
	sc := testenv.StatsReference(t, []map[string]any{{"kind": "raw", "a": refAmt, "b": curAmt}})[0]
	testenv.Near(t, "report ks", got["shifted"].Metrics["ks"], sc["ks"].(float64), 1e-9)
	testenv.Near(t, "report wasserstein_norm", got["shifted"].Metrics["wasserstein_norm"], sc["wasserstein_norm"].(float64), 1e-6)

	var html bytes.Buffer
	if err := rep.WriteHTML(&html); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"shifted", "merchant", "<svg", "class=\"cur\"", "drifted"} {
		if !strings.Contains(html.String(), s) {
			t.Errorf("HTML report lacks %q", s)
		}
	}
}

func TestReadTableErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte("{\"a\":1}\n{\"a\":[1]}\n"), 0o644)
	if _, err := ReadTable(bad, ""); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("ReadTable(nested) error = %v, want it to name line 2", err)
	}
	if _, err := ReadTable(filepath.Join(dir, "x.parquet"), ""); err == nil {
		t.Error("ReadTable accepted a missing parquet file")
	}
	type row struct {
		Amount   *float64 `parquet:"amount,optional"`
		Merchant string   `parquet:"merchant"`
		Present  bool     `parquet:"present"`
		Hour     int32    `parquet:"hour"`
	}
	x := 12.5
	pq := filepath.Join(dir, "ok.parquet")
	f, _ := os.Create(pq)
	if err := parquet.Write(f, []row{{&x, "fuel", true, 3}, {nil, "travel", false, 23}}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	pt, err := ReadTable(pq, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{"amount": {"12.5", ""}, "merchant": {"fuel", "travel"}, "present": {"true", "false"}, "hour": {"3", "23"}}
	for col, vals := range want {
		if strings.Join(pt.Values[col], "|") != strings.Join(vals, "|") {
			t.Errorf("parquet column %s = %q, want %q", col, pt.Values[col], vals)
		}
	}
	if pt.Rows != 2 || detectKind(pt.Values["amount"]) != schemas.ProfileNumeric || detectKind(pt.Values["merchant"]) != schemas.ProfileCategorical {
		t.Errorf("parquet table %+v", pt)
	}
	good := filepath.Join(dir, "ok.jsonl")
	os.WriteFile(good, []byte("{\"a\":1,\"b\":\"x\"}\n{\"a\":2.5}\n"), 0o644)
	tb, err := ReadTable(good, "")
	if err != nil || tb.Rows != 2 || tb.Values["b"][1] != "" || tb.Values["a"][1] != "2.5" {
		t.Errorf("ReadTable(jsonl) = %+v, %v", tb, err)
	}
}

// TestReportDegradesPerColumn covers the drift-report defects of issue 8:
// an empty column no longer aborts the report, a missing-share change is
// flagged, a tiny sample is never called drifted, a header-only file and a
// malformed CSV line get messages that name the file and the right line.
func TestReportDegradesPerColumn(t *testing.T) {
	dir := t.TempDir()
	ref, cur := filepath.Join(dir, "ref.csv"), filepath.Join(dir, "cur.csv")
	writeCSV(t, ref, 2000, 1, 0, []string{"fuel", "travel", "food"})
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	rt, err := ReadTable(ref, "")
	if err != nil {
		t.Fatal(err)
	}
	feature := func(rep *Report, name string) FeatureReport {
		t.Helper()
		for _, f := range rep.Features {
			if f.Name == name {
				return f
			}
		}
		t.Fatalf("report has no feature %s: %+v", name, rep.Features)
		return FeatureReport{}
	}

	// amount is NaN or empty everywhere; half of shifted is missing.
	var b strings.Builder
	b.WriteString("amount,shifted,merchant,stable\n")
	for i := 0; i < 2000; i++ {
		amount, sh := "NaN", strconv.Itoa(90+i%20)
		if i%2 == 0 {
			amount, sh = "", ""
		}
		b.WriteString(amount + "," + sh + ",fuel,a\n")
	}
	write(cur, b.String())
	ct, err := ReadTable(cur, "")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Build(rt, ct, DefaultOptions())
	if err != nil {
		t.Fatalf("an all-missing column aborted the report: %v", err)
	}
	if f := feature(rep, "amount"); f.Status != StatusNoObservations || f.Drifted || len(f.Warnings) == 0 {
		t.Errorf("amount: status %q drifted %v warnings %q; want no_observations, not drifted, a warning", f.Status, f.Drifted, f.Warnings)
	}
	if f := feature(rep, "merchant"); f.Status != StatusOK || !f.Drifted {
		t.Errorf("merchant (all fuel now): status %q drifted %v; want ok and drifted", f.Status, f.Drifted)
	}
	if f := feature(rep, "shifted"); !f.MissingChanged || f.Metrics["missing_share_current"] != 0.5 {
		t.Errorf("shifted: missing_changed %v, missing_share_current %v; want true and 0.5 (%q)", f.MissingChanged, f.Metrics["missing_share_current"], f.Warnings)
	}
	if f := feature(rep, "stable"); f.MissingChanged {
		t.Errorf("stable has no missing values but is flagged: %q", f.Warnings)
	}

	// One row far out: a huge PSI, but a small sample is not drift.
	write(cur, "amount,shifted,merchant,stable\n900,900,fuel,a\n")
	ct, _ = ReadTable(cur, "")
	rep, err = Build(rt, ct, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rep.Features {
		if f.Status != StatusSmallSample || f.Drifted || !strings.Contains(strings.Join(f.Warnings, " "), "small sample") {
			t.Errorf("%s on one row: status %q drifted %v warnings %q; want small_sample, not drifted", f.Name, f.Status, f.Drifted, f.Warnings)
		}
	}

	write(cur, "amount,shifted,merchant,stable\n")
	ct, _ = ReadTable(cur, "")
	if _, err := Build(rt, ct, DefaultOptions()); err == nil || !strings.Contains(err.Error(), "current file has no data rows") {
		t.Errorf("header-only current file: err = %v, want it to say the current file has no data rows", err)
	}

	var lines strings.Builder
	lines.WriteString("a,b\n")
	for i := 2; i <= 10; i++ {
		lines.WriteString("1,2\n")
	}
	lines.WriteString("1,2,3\n") // line 11
	write(cur, lines.String())
	_, err = ReadTable(cur, "")
	if err == nil || !strings.Contains(err.Error(), cur) || !strings.Contains(err.Error(), "line 11") || strings.Contains(err.Error(), "row 11") {
		t.Errorf("malformed line 11: err = %v, want the file and line 11 named once", err)
	}
}
