package scoring

import (
	"context"
	"encoding/csv"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

func readCSVColumns(t *testing.T, path string) Columns {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	c := Columns{Names: recs[0], Values: map[string][]string{}, Rows: len(recs) - 1}
	for _, r := range recs[1:] {
		for i, name := range recs[0] {
			c.Values[name] = append(c.Values[name], r[i])
		}
	}
	return c
}

// TestInitAgreesWithTrainPy: seer models init, given the example model,
// its input mapping and the data train.py trained and evaluated on, writes
// the profile train.py wrote (the same bins within float tolerance, the
// same counts and categories), the same held-out metrics, and examples
// that reproduce.
func TestInitAgreesWithTrainPy(t *testing.T) {
	m0, schema := loadExample(t)
	root := testenv.RepoRoot(t)
	tmp := t.TempDir()
	cmd := exec.Command(testenv.Python(t), filepath.Join(root, "deploy", "examples", "card-fraud", "train.py"), "--out", filepath.Join(tmp, "trained"), "--export-data", filepath.Join(tmp, "data"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("train.py: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(filepath.Join(root, "deploy", "examples", "init", "card-fraud-inputs.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var mapping struct {
		Inputs []schemas.Input `yaml:"inputs"`
	}
	if err := schemas.DecodeStrictYAML(raw, &mapping); err != nil {
		t.Fatal(err)
	}
	holdout := readCSVColumns(t, filepath.Join(tmp, "data", "holdout.csv"))
	out := filepath.Join(tmp, "pkg")
	m, err := InitPackage(context.Background(), InitOptions{
		ONNX: m0.ArtifactPath(), Out: out, Name: "card-fraud", Version: "1.0.0-init", Owner: "o", Desc: "d",
		Inputs: mapping.Inputs, Output: schemas.Output{Name: "score", Index: -1}, Threshold: 0.5,
		Reference: readCSVColumns(t, filepath.Join(tmp, "data", "train.csv")), Holdout: &holdout, Label: "is_fraud",
		Examples: 50, Lineage: schemas.Lineage{Dataset: "train.csv", Code: "train.py"}, Bins: 10, Schema: schema,
	})
	if err != nil {
		t.Fatal(err)
	}
	near := func(what string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol {
			t.Errorf("%s = %v, train.py wrote %v", what, got, want)
		}
	}
	compare := func(name string, got, want schemas.ColumnProfile) {
		t.Helper()
		if got.Kind != want.Kind || len(got.Edges) != len(want.Edges) || len(got.Counts) != len(want.Counts) {
			t.Errorf("%s: kind %s with %d edges, train.py: %s with %d", name, got.Kind, len(got.Edges), want.Kind, len(want.Edges))
			return
		}
		for i := range got.Edges {
			near(name+" edge", got.Edges[i], want.Edges[i], 2e-6)
		}
		for i := range got.Counts {
			near(name+" count", float64(got.Counts[i]), float64(want.Counts[i]), 0)
		}
		near(name+" underflow", float64(got.Underflow), float64(want.Underflow), 0)
		near(name+" overflow", float64(got.Overflow), float64(want.Overflow), 0)
		near(name+" mean", got.Mean, want.Mean, 1e-4*math.Max(1, math.Abs(want.Mean)))
		near(name+" std", got.Std, want.Std, 1e-4*math.Max(1, want.Std))
		for c, n := range want.Frequencies {
			near(name+" frequency of "+c, float64(got.Frequencies[c]), float64(n), 0)
		}
	}
	for name, want := range m0.Profile.Features {
		compare(name, m.Profile.Features[name], want)
	}
	// The score's profile: ONNX Runtime in Go against Python's; its bins
	// may move by a row where a score sits on an edge.
	gs, ws := m.Profile.Outputs["score"], m0.Profile.Outputs["score"]
	if len(gs.Edges) != len(ws.Edges) {
		t.Fatalf("score profile: %d edges, train.py %d", len(gs.Edges), len(ws.Edges))
	}
	for i := range gs.Edges {
		near("score edge", gs.Edges[i], ws.Edges[i], 2e-6)
	}
	near("held-out AUC", m.Evaluation.AUC, m0.Evaluation.AUC, 1e-5)
	near("held-out Brier", m.Evaluation.Brier, m0.Evaluation.Brier, 1e-5)

	loaded, err := schemas.LoadManifest(out)
	if err != nil {
		t.Fatalf("the written model.yaml does not load: %v", err)
	}
	exs, err := schemas.LoadExamples(out)
	if err != nil || len(exs) != 50 {
		t.Fatalf("examples: %d, %v", len(exs), err)
	}
	mod, err := Open(DefaultConfig(), loaded, schema, schemas.RouteProduction, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	if err := mod.CheckExamples(context.Background(), schema, exs); err != nil {
		t.Error(err)
	}
}
