package scoring

import (
	"context"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// loadExample initializes the runtime and loads the example package and
// its input schema.
func loadExample(t *testing.T) (*schemas.Manifest, *schemas.InputSchema) {
	t.Helper()
	if err := InitRuntime(testenv.OnnxRuntime(t)); err != nil {
		t.Fatal(err)
	}
	schema, err := schemas.LoadInputSchema("card_transactions.v1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	return m, schema
}

func openExample(t *testing.T) (*Model, *schemas.InputSchema) {
	t.Helper()
	m, schema := loadExample(t)
	mod, err := Open(DefaultConfig(), m, schema, schemas.RouteProduction, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mod.Close() })
	return mod, schema
}

// TestScoreMatchesReference scores events with seer and with an independent
// Python encoder + onnxruntime, including missing features and unknown
// categories, and requires agreement within 1e-5.
func TestScoreMatchesReference(t *testing.T) {
	mod, schema := openExample(t)
	events := []string{
		`{"user_id":"a","event_time":"2026-01-01T00:00:00Z","amount":12.5,"merchant_category":"grocery","hour":13,"card_present":true}`,
		`{"user_id":"b","event_time":"2026-01-01T00:00:00Z","amount":2500,"merchant_category":"electronics","hour":2,"card_present":false}`,
		`{"user_id":"c","event_time":"2026-01-01T00:00:00Z","amount":80,"merchant_category":"casino","hour":23}`,
		`{"user_id":"d","event_time":"2026-01-01T00:00:00Z","amount":0,"merchant_category":"travel","hour":0}`,
	}
	feats := []map[string]string{
		{"txn_count_24h": "2", "avg_amount_30d": "40.5", "chargeback_rate_90d": "0.01"},
		{"txn_count_24h": "11", "avg_amount_30d": "30", "chargeback_rate_90d": "0.2"},
		nil, // missing view: defaults
		{"txn_count_24h": "1", "avg_amount_30d": "900"}, // one feature missing
	}
	items := make([]schemas.Item, len(events))
	var cases []testenv.RefCase
	for i, e := range events {
		ev, derr := schema.Decode(nil, []byte(e), schemas.Source{Topic: "t", Offset: int64(i)})
		if derr != nil {
			t.Fatal(derr)
		}
		items[i].Event = ev
		st := schemas.FeatureState{View: "user_stats", Values: make([]schemas.Value, 3), Missing: feats[i] == nil}
		for j, name := range []string{"txn_count_24h", "avg_amount_30d", "chargeback_rate_90d"} {
			if v, ok := feats[i][name]; ok {
				st.Values[j] = schemas.Value{Kind: schemas.KindNumber, Num: mustFloat(t, v), Str: v}
			}
		}
		items[i].Features = []schemas.FeatureState{st}
		c := testenv.RefCase{Event: decodeJSON(t, e)}
		if feats[i] != nil {
			c.Features = map[string]map[string]string{"user_stats": feats[i]}
		}
		cases = append(cases, c)
	}
	if err := mod.Score(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	want := testenv.ReferenceScores(t, testenv.ExamplePackage(t), cases)
	for i, it := range items {
		if it.Reject != nil {
			t.Fatalf("item %d rejected: %v", i, it.Reject)
		}
		if d := math.Abs(float64(it.Score) - want[i]); d > 1e-5 {
			t.Errorf("event %d: seer score %v, reference %v (diff %g)", i, it.Score, want[i], d)
		}
		if it.PredictionID == "" || it.Model != "card-fraud" || it.Route != schemas.RouteProduction {
			t.Errorf("event %d: prediction metadata not set: %+v", i, it)
		}
		wantLabel := int8(0)
		if want[i] >= 0.5 {
			wantLabel = 1
		}
		if it.Label != wantLabel {
			t.Errorf("event %d: label %d for score %v, want %d", i, it.Label, it.Score, wantLabel)
		}
	}
	// What the inference log keeps of the inputs (amount, merchant_category,
	// hour, card_present and the three user_stats features): the string
	// input's value, and which inputs were absent and took their default.
	for i, want := range []struct {
		category string
		missing  []uint8
	}{
		{"grocery", []uint8{0, 0, 0, 0, 0, 0, 0}},
		{"electronics", []uint8{0, 0, 0, 0, 0, 0, 0}},
		{"casino", []uint8{0, 0, 0, 1, 1, 1, 1}},
		{"travel", []uint8{0, 0, 0, 1, 0, 0, 1}},
	} {
		it := items[i]
		if len(it.InputStrings) != 7 || it.InputStrings[1] != want.category || slices.ContainsFunc(slices.Delete(slices.Clone(it.InputStrings), 1, 2), func(s string) bool { return s != "" }) {
			t.Errorf("event %d: input strings %q, want only merchant_category %q", i, it.InputStrings, want.category)
		}
		if !slices.Equal(it.InputMissing, want.missing) {
			t.Errorf("event %d: inputs missing %v, want %v", i, it.InputMissing, want.missing)
		}
	}
	// The same event scored again gets the same prediction id (idempotent replay).
	again := []schemas.Item{{Event: items[0].Event, Features: items[0].Features}}
	if err := mod.Score(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	if again[0].PredictionID != items[0].PredictionID {
		t.Errorf("prediction id changed on replay: %s vs %s", again[0].PredictionID, items[0].PredictionID)
	}
}

func TestOpenRejectsMismatchedPackage(t *testing.T) {
	if err := InitRuntime(testenv.OnnxRuntime(t)); err != nil {
		t.Fatal(err)
	}
	schema, _ := schemas.LoadInputSchema("card_transactions.v1")
	src := testenv.ExamplePackage(t)
	f := func(name string, edit func(string) string, want string) {
		t.Helper()
		dir := t.TempDir()
		onnx, _ := os.ReadFile(filepath.Join(src, "model.onnx"))
		yml, _ := os.ReadFile(filepath.Join(src, "model.yaml"))
		os.WriteFile(filepath.Join(dir, "model.onnx"), onnx, 0o644)
		os.WriteFile(filepath.Join(dir, "model.yaml"), []byte(edit(string(yml))), 0o644)
		m, err := schemas.LoadManifest(dir)
		if err == nil {
			_, err = Open(DefaultConfig(), m, schema, schemas.RouteProduction, slog.New(slog.NewTextHandler(io.Discard, nil)))
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error = %v, want it to contain %q", name, err, want)
		}
	}
	f("wrong input tensor", func(s string) string { return strings.Replace(s, "input: features", "input: x", 1) }, "has no input \"x\"")
	f("wrong output tensor", func(s string) string { return strings.Replace(s, "tensor: probabilities", "tensor: probs", 1) }, "has no output \"probs\"")
	f("index out of range", func(s string) string { return strings.Replace(s, "index: 1", "index: 5", 1) }, "out of range")
	f("extra input", func(s string) string {
		s = strings.Replace(s, "outputs:", "- {name: extra, source: event.amount, dtype: float, default: 0}\noutputs:", 1)
		return strings.Replace(s, "  features:\n", "  features:\n    extra: {kind: numeric, edges: [0, 1], counts: [1]}\n", 1)
	}, "declares 8 inputs")
	f("unknown event field", func(s string) string { return strings.Replace(s, "source: event.hour", "source: event.hour_of_day", 1) }, "not in input schema")
}

func mustFloat(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestCUDAFallsBackToCPU: with the CPU-only ONNX Runtime library,
// scoring.device cuda:0 runs on the CPU with a warning that says so, and
// Device reports the CPU — never a silent fallback.
func TestCUDAFallsBackToCPU(t *testing.T) {
	m, schema := loadExample(t)
	cfg := DefaultConfig()
	cfg.Device = "cuda:0"
	var logs strings.Builder
	mod, err := Open(cfg, m, schema, schemas.RouteProduction, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	if mod.Device() != "cpu" {
		t.Errorf("Device() = %q with a CPU-only library, want cpu", mod.Device())
	}
	if !strings.Contains(logs.String(), "FALLING BACK TO CPU") || !strings.Contains(logs.String(), "requested=cuda:0") {
		t.Errorf("no loud fallback warning; log:\n%s", logs.String())
	}
	raw, err := OpenRaw(m.ArtifactPath(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if raw.Device() != "cpu" {
		t.Errorf("RawSession.Device() = %q, want cpu", raw.Device())
	}
}

// TestMaxBatchSplitsRuns: scoring in runs of at most max_batch rows gives
// every item the score one run over the whole batch gives.
func TestMaxBatchSplitsRuns(t *testing.T) {
	whole, schema := openExample(t)
	m := whole.Manifest
	cfg := DefaultConfig()
	cfg.MaxBatch = 3
	split, err := Open(cfg, m, schema, schemas.RouteProduction, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer split.Close()
	mk := func() []schemas.Item {
		items := make([]schemas.Item, 11)
		for i := range items {
			ev, derr := schema.Decode([]byte("u"), []byte(`{"user_id":"u","event_time":"2026-01-01T00:00:00Z","amount":`+strconv.Itoa(10+i*97)+`,"merchant_category":"grocery","hour":`+strconv.Itoa(i)+`}`), schemas.Source{Offset: int64(i)})
			if derr != nil {
				t.Fatal(derr)
			}
			items[i].Event = ev
			if i%4 == 1 { // rejected items are skipped and do not count
				items[i].Reject = &schemas.DecodeError{Reason: schemas.ReasonWrongType}
			}
		}
		return items
	}
	a, b := mk(), mk()
	if err := whole.Score(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if err := split.Score(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	for i := range a {
		if a[i].Reject != nil {
			if !b[i].ScoredTime.IsZero() {
				t.Errorf("rejected item %d was scored", i)
			}
			continue
		}
		if b[i].ScoredTime.IsZero() || a[i].Score != b[i].Score {
			t.Errorf("item %d: score %v in runs of 3, %v in one run", i, b[i].Score, a[i].Score)
		}
	}
}

// TestBenchOnCPU: the raw session reads the example model's shape, the
// same input gives the same outputs twice, and Bench reports its runs.
func TestBenchOnCPU(t *testing.T) {
	mod, _ := openExample(t)
	raw, err := OpenRaw(mod.Manifest.ArtifactPath(), DefaultConfig(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if raw.Width() != len(mod.Manifest.Inputs) {
		t.Fatalf("Width() = %d, manifest has %d inputs", raw.Width(), len(mod.Manifest.Inputs))
	}
	in := RandomInput(16, raw.Width(), 7)
	a, err := raw.Run(16, in)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := raw.Run(16, in)
	if len(a) == 0 || MaxAbsDiff(a, b) != 0 {
		t.Errorf("two runs on one input: %d outputs, max difference %v", len(a), MaxAbsDiff(a, b))
	}
	if d := MaxAbsDiff(a, a[:len(a)-1]); !math.IsInf(d, 1) {
		t.Errorf("MaxAbsDiff of different lengths = %v, want +Inf", d)
	}
	if _, err := raw.Run(16, in[:5]); err == nil {
		t.Error("Run accepted an input of the wrong size")
	}
	r, err := Bench(raw, 64, 0)
	if err != nil || r.Runs < 5 || r.Batch != 64 || r.Device != "cpu" || r.PredictionsPerSec <= 0 {
		t.Errorf("Bench = %+v, %v", r, err)
	}
}

// TestExamplesReproduce: each example package's held-out examples give
// their expected outputs within 1e-5 through seer's own decode, feature
// binding and ONNX Runtime; a changed expectation is refused, naming the
// example's line.
func TestExamplesReproduce(t *testing.T) {
	_, schema := loadExample(t)
	for _, dir := range []string{"card-fraud", "card-fraud-1.1.0", "card-fraud-1.2.0-rc.1"} {
		pkg := filepath.Join(testenv.RepoRoot(t), "deploy", "examples", dir)
		m, err := schemas.LoadManifest(pkg)
		if err != nil {
			t.Fatal(err)
		}
		exs, err := schemas.LoadExamples(pkg)
		if err != nil || len(exs) < 100 {
			t.Fatalf("%s: %d examples, %v", dir, len(exs), err)
		}
		mod, err := Open(DefaultConfig(), m, schema, schemas.RouteProduction, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer mod.Close()
		if err := mod.CheckExamples(context.Background(), schema, exs); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
		if m.Evaluation == nil || m.Evaluation.AUC <= 0 || m.Evaluation.Rows == 0 {
			t.Errorf("%s: no evaluation metrics: %+v", dir, m.Evaluation)
		}
		exs[7].Outputs["score"] += 1e-3
		if err := mod.CheckExamples(context.Background(), schema, exs); err == nil || !strings.Contains(err.Error(), "line 8") {
			t.Errorf("%s: a changed expected output: err = %v, want it to name line 8", dir, err)
		}
	}
}

// TestCandidatesAreOrdered: 1.1.0 is better than 1.0.0 on held-out data,
// and the shuffled-label candidate is worse than chance would excuse.
func TestCandidatesAreOrdered(t *testing.T) {
	eval := func(dir string) *schemas.Evaluation {
		m, err := schemas.LoadManifest(filepath.Join(testenv.RepoRoot(t), "deploy", "examples", dir))
		if err != nil {
			t.Fatal(err)
		}
		return m.Evaluation
	}
	v1, v11, bad := eval("card-fraud"), eval("card-fraud-1.1.0"), eval("card-fraud-1.2.0-rc.1")
	if !(v11.AUC > v1.AUC && v11.Brier < v1.Brier) {
		t.Errorf("1.1.0 (AUC %v, Brier %v) is not better than 1.0.0 (AUC %v, Brier %v)", v11.AUC, v11.Brier, v1.AUC, v1.Brier)
	}
	if bad.AUC > 0.6 {
		t.Errorf("the shuffled-label candidate has AUC %v; it should be near or below chance", bad.AUC)
	}
}
