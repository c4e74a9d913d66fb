package labels

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// calibrated draws n (score, label) pairs of a calibrated classifier: the
// score is a logistic of a normal, the label a Bernoulli of the score.
func calibrated(r *rand.Rand, n int) ([]float32, []uint8) {
	scores, ys := make([]float32, n), make([]uint8, n)
	for i := range scores {
		scores[i] = float32(1 / (1 + math.Exp(-(r.NormFloat64()*1.6 - 2.4))))
		if r.Float64() < float64(scores[i]) {
			ys[i] = 1
		}
	}
	return scores, ys
}

// oracle runs testdata/sklearn_oracle.py (scikit-learn) on the labelled pairs.
func oracle(t *testing.T, scores []float32, ys []uint8, threshold float64) map[string]float64 {
	t.Helper()
	s64, y64 := make([]float64, len(scores)), make([]int, len(ys))
	for i := range scores {
		s64[i], y64[i] = float64(scores[i]), int(ys[i])
	}
	in, _ := json.Marshal(map[string]any{"scores": s64, "labels": y64, "threshold": threshold})
	cmd := exec.Command(testenv.Python(t), filepath.Join("testdata", "sklearn_oracle.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sklearn_oracle.py: %v\n%s", err, stderr.String())
	}
	var res map[string]float64
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// TestPerformanceAgreesWithScikitLearn on the real ClickHouse: 20,000
// events of a calibrated classifier, 80% of them labelled (some twice:
// the latest label wins), some rows replayed (they count once). The
// window's AUC, precision, recall, Brier score, positive rate and ECE agree
// with scikit-learn on the raw labelled pairs (the binned AUC within 1e-3
// and within its own error bound); the coverage is exact; before maturity
// only coverage and the estimate are reported; the estimate of a
// calibrated model is close to the measured figures.
func TestPerformanceAgreesWithScikitLearn(t *testing.T) {
	conn, db := chtest.NewDB(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	const n = 20000
	scores, ys := calibrated(r, n)
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	threshold := 0.3
	m := &schemas.Manifest{Name: "card-fraud", Version: "1.0.0", Threshold: &threshold, Evaluation: &schemas.Evaluation{AUC: 0.95}}
	var log []inferencelog.LogRow
	var ls []Label
	var labScores []float32
	var labYs []uint8
	for i := range n {
		id := fmt.Sprintf("e%d", i)
		row := inferencelog.LogRow{PredictionID: "p" + id, EventID: id, EntityID: "u", Model: m.Name, ModelVersion: m.Version, Route: "production",
			EventTimeMs: t0.UnixMilli() + int64(i), ScoredTimeMs: t0.UnixMilli() + int64(i) + 5, Score: scores[i]}
		log = append(log, row)
		if i%10 == 0 { // a replay: the same event scored again, not yet merged
			row.PredictionID += "-replay"
			row.ScoredTimeMs++
			log = append(log, row)
		}
		// Rows of another version and of the shadow route are not this
		// window's.
		if i%7 == 0 {
			other := row
			other.Route, other.PredictionID = "shadow", row.PredictionID+"-shadow"
			other.Score = 1 - scores[i]
			log = append(log, other)
		}
		if i%5 == 4 {
			continue // unlabelled: coverage 80%
		}
		lt := t0.Add(time.Duration(i)*time.Millisecond + time.Duration(1+r.IntN(60))*time.Minute)
		if i%9 == 0 { // an earlier, wrong label the later one corrects
			ls = append(ls, Label{EventID: id, Label: 1 - ys[i], Time: lt.Add(-30 * time.Second), Source: "test"})
		}
		l := Label{EventID: id, Label: ys[i], Time: lt, Source: "test"}
		if ys[i] == 1 {
			l.Value, l.HasValue = float64(10+i%90), true
		}
		ls = append(ls, l)
		labScores, labYs = append(labScores, scores[i]), append(labYs, ys[i])
	}
	if err := inferencelog.NewSink(conn, db).Insert(ctx, &inferencelog.Batch{Log: log}); err != nil {
		t.Fatal(err)
	}
	w := Writer{Conn: conn, Database: db}
	// The correcting labels are inserted first: the latest label_time
	// wins, not the latest insert.
	sort.SliceStable(ls, func(a, b int) bool { return ls[a].Time.After(ls[b].Time) })
	if err := w.Write(ctx, ls); err != nil {
		t.Fatal(err)
	}
	p := Performance{Conn: conn, Database: db}
	routes := []schemas.Route{schemas.RouteProduction, schemas.RouteCanary}
	early, err := p.Measure(ctx, m, routes, t0, t0.Add(time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	if early.Rows != n || early.Labeled != uint64(len(labScores)) || early.Figures["label_coverage"] != 0.8 || early.Figures["mature"] != 0 {
		t.Fatalf("immature window: rows %d labeled %d coverage %v mature %v; want %d, %d, 0.8, 0", early.Rows, early.Labeled, early.Figures["label_coverage"], early.Figures["mature"], n, len(labScores))
	}
	for _, name := range []string{"auc", "precision", "brier", "ece"} {
		if _, ok := early.Figures[name]; ok {
			t.Errorf("an immature window reports %s", name)
		}
	}
	got, err := p.Measure(ctx, m, routes, t0, t0.Add(time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	want := oracle(t, labScores, labYs, threshold)
	f := got.Figures
	testenv.Near(t, "auc", f["auc"], want["auc"], 1e-3)
	if b := f["auc_bin_error_bound"]; b <= 0 || b > 1e-3 || math.Abs(f["auc"]-want["auc"]) > b+1e-12 {
		t.Errorf("auc %v vs scikit-learn %v: off by more than its bound %v", f["auc"], want["auc"], b)
	}
	for _, name := range []string{"brier", "precision", "recall", "positive_rate", "ece"} {
		testenv.Near(t, name, f[name], want[name], 1e-9)
	}
	testenv.Near(t, "auc_drop", f["auc_drop"], 0.95-f["auc"], 1e-12)
	if f["label_delay_p50_ms"] < 60_000 || f["label_delay_p95_ms"] > 3_601_000 || f["label_delay_p50_ms"] > f["label_delay_p95_ms"] {
		t.Errorf("label delay p50 %v p95 %v, want within the 1–60 min drawn", f["label_delay_p50_ms"], f["label_delay_p95_ms"])
	}
	if f["value_caught"]+f["value_missed"] <= 0 {
		t.Errorf("value caught %v missed %v: want the positives' values", f["value_caught"], f["value_missed"])
	}
	// CBPE: a calibrated model's estimate is close to what the labels say.
	testenv.Near(t, "estimated_auc", f["estimated_auc"], f["auc"], 0.02)
	testenv.Near(t, "estimated_positive_rate", f["estimated_positive_rate"], f["positive_rate"], 0.01)
	testenv.Near(t, "estimated_brier", f["estimated_brier"], f["brier"], 0.01)
	if f["estimated_auc"] != early.Figures["estimated_auc"] {
		t.Errorf("the estimate changed with maturity: %v, then %v", early.Figures["estimated_auc"], f["estimated_auc"])
	}
}

// TestBinnedAUCOverAMillionRows: the AUC on DefaultBins bins of a million
// calibrated scores is within its reported bound of the exact AUC (sorted
// ranks, ties one half), and the bound is below 1e-3.
func TestBinnedAUCOverAMillionRows(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const n = 1_000_000
	scores, ys := calibrated(r, n)
	pos, neg := make([]float64, DefaultBins), make([]float64, DefaultBins)
	for i := range scores {
		b := min(int(math.Floor(math.Max(float64(scores[i]), 0)*DefaultBins)), DefaultBins-1)
		if ys[i] == 1 {
			pos[b]++
		} else {
			neg[b]++
		}
	}
	binned, bound, ok := binnedAUC(pos, neg)
	if !ok {
		t.Fatal("no AUC")
	}
	exact := exactAUC(scores, ys)
	diff := math.Abs(binned - exact)
	t.Logf("1M rows: exact AUC %.7f, binned %.7f, |error| %.2e, bound %.2e", exact, binned, diff, bound)
	if diff > bound || bound > 1e-3 {
		t.Errorf("binned AUC %v vs exact %v: error %v, bound %v", binned, exact, diff, bound)
	}
}

// TestDecodeLabels: the contract's checks, with the reason codes of the
// DLQ.
func TestDecodeLabels(t *testing.T) {
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	src := schemas.Source{Topic: "labels", Partition: 2, Offset: 9}
	l, derr := d.Decode([]byte(`{"event_id":"e1","label":1,"label_time":"2026-11-26T10:00:00Z","value":120.5}`), src)
	if derr != nil || l.EventID != "e1" || l.Label != 1 || !l.HasValue || l.Value != 120.5 || l.Time.Unix() != 1795687200 || l.Source != "labels/2/9" {
		t.Fatalf("Decode = %+v, %v", l, derr)
	}
	for body, reason := range map[string]schemas.Reason{
		`{"label":1,"label_time":1}`:                               schemas.ReasonMissingField,
		`{"event_id":"e","label":2,"label_time":1}`:                schemas.ReasonOutOfBounds,
		`{"event_id":"e","label":0.5,"label_time":1}`:              schemas.ReasonWrongType,
		`{"event_id":"e","label":"yes","label_time":1}`:            schemas.ReasonWrongType,
		`{"event_id":"e","label":1}`:                               schemas.ReasonMissingField,
		`{"event_id":"e","label":1,"label_time":"yesterday"}`:      schemas.ReasonWrongType,
		`{"event_id":"e","label":1,"label_time":1,"value":NaN}`:    schemas.ReasonNotFinite,
		`{"event_id":"e","event_id":"f","label":1,"label_time":1}`: schemas.ReasonDuplicateKey,
		`[1]`: schemas.ReasonInvalidJSON,
	} {
		if _, derr := d.Decode([]byte(body), src); derr == nil || derr.Reason != reason {
			t.Errorf("Decode(%s) = %v, want %s", body, derr, reason)
		}
	}
	if _, err := FromText(map[string]string{"event_id": "e", "label": "true", "label_time": "1700000000000", "value": ""}); err != nil {
		t.Errorf("FromText of a good row: %v", err)
	}
	for _, row := range []map[string]string{
		{"label": "1", "label_time": "1"},
		{"event_id": "e", "label": "2", "label_time": "1"},
		{"event_id": "e", "label": "1", "label_time": "soon"},
		{"event_id": "e", "label": "1", "label_time": "1", "value": "Inf"},
	} {
		if _, err := FromText(row); err == nil || !strings.Contains(err.Error(), "column ") {
			t.Errorf("FromText(%v) = %v, want an error naming the column", row, err)
		}
	}
}

// FuzzDecodeLabels: any bytes get a label or a reason, never a panic, and
// a decoded label is within the contract.
func FuzzDecodeLabels(f *testing.F) {
	d, err := NewDecoder()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(`{"event_id":"e1","label":1,"label_time":"2026-11-26T10:00:00Z","value":1}`))
	f.Add([]byte(`{"event_id":"","label":0,"label_time":0}`))
	f.Add([]byte(`{"event_id":"e","label":1,"label_time":1e300}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, derr := d.Decode(b, schemas.Source{})
		if derr != nil {
			if derr.Reason == "" {
				t.Fatalf("a rejection without a reason: %v", derr)
			}
			return
		}
		if l.EventID == "" || l.Label > 1 || l.Time.UnixMilli() < 0 || math.IsNaN(l.Value) || math.IsInf(l.Value, 0) {
			t.Fatalf("decoded outside the contract: %+v", l)
		}
	})
}
