package schemas

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExampleManifestLoads(t *testing.T) {
	m, err := LoadManifest(filepath.Join("..", "deploy", "examples", "card-fraud"))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	views, features := m.FeatureViews()
	if len(views) != 1 || views[0] != "user_stats" || len(features["user_stats"]) != 3 {
		t.Errorf("FeatureViews = %v %v, want [user_stats] with 3 features", views, features)
	}
	s, _ := LoadInputSchema("card_transactions.v1")
	if err := m.CheckAgainstSchema(s); err != nil {
		t.Errorf("CheckAgainstSchema: %v", err)
	}
}

// TestManifestGolden decodes testdata/*.good.yml (must validate) and
// testdata/*.bad.yml (must fail with the error in the file's first line,
// written as "# want: <text>").
func TestManifestGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/manifest-*.yml")
	if len(files) < 3 {
		t.Fatalf("found %d manifest fixtures, want several", len(files))
	}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParseManifest(data)
		switch {
		case strings.HasSuffix(file, ".good.yml"):
			if err != nil {
				t.Errorf("%s: %v", file, err)
			}
		case strings.HasSuffix(file, ".bad.yml"):
			first, _, _ := strings.Cut(string(data), "\n")
			want := strings.TrimSpace(strings.TrimPrefix(first, "# want:"))
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error = %v, want it to contain %q", file, err, want)
			}
		}
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join("..", "deploy", "examples", "card-fraud")
	for _, f := range []string{"model.yaml", "model.onnx"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "model.onnx" {
			b[len(b)-1] ^= 1
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o644)
	}
	m, err := LoadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(); err == nil || !strings.Contains(err.Error(), "artifact.sha256") {
		t.Errorf("Verify of a modified model = %v, want an artifact.sha256 mismatch", err)
	}
}

func TestInputEncode(t *testing.T) {
	cat := Input{Name: "c", Dtype: DtypeCategory, Default: "other", Categories: []string{"a", "b", "other"}}
	num := Input{Name: "n", Dtype: DtypeFloat, Default: 2.5}
	boolean := Input{Name: "b", Dtype: DtypeBool, Default: true}
	f := func(in Input, v Value, want float32) {
		t.Helper()
		if got := in.Encode(v); got != want {
			t.Errorf("%s.Encode(%+v) = %v, want %v", in.Name, v, got, want)
		}
	}
	f(cat, Value{Kind: KindString, Str: "b"}, 1)
	f(cat, Value{Kind: KindString, Str: "zzz"}, 2)
	f(cat, Value{}, 2)
	f(num, Value{Kind: KindNumber, Num: 7}, 7)
	f(num, Value{}, 2.5)
	f(boolean, Value{}, 1)
	f(boolean, Value{Kind: KindNumber, Num: 0}, 0)
}

func FuzzParseManifest(f *testing.F) {
	for _, p := range []string{"../deploy/examples/card-fraud/model.yaml", "testdata/manifest-minimal.good.yml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("name: [}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		// Whatever validates must be usable without panics.
		m.FeatureViews()
		for i := range m.Inputs {
			m.Inputs[i].Encode(Value{})
		}
	})
}

func FuzzParseInputSchema(f *testing.F) {
	if b, err := os.ReadFile("events/card_transactions.v1.yaml"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseInputSchema(data)
		if err != nil {
			return
		}
		s.Decode([]byte("k"), []byte(`{}`), Source{})
	})
}

func TestMigrations(t *testing.T) {
	migs, err := Migrations("seer_test", Dialect{})
	if err != nil {
		t.Fatal(err)
	}
	if len(migs) == 0 || migs[0].Version != 1 {
		t.Fatalf("migrations = %+v, want version 1 first", migs)
	}
	for _, m := range migs {
		for _, s := range m.Statements {
			if strings.Contains(s, "{db}") || strings.HasSuffix(s, ";") || strings.HasPrefix(strings.TrimSpace(s), "--") {
				t.Errorf("migration %d statement not rendered cleanly: %q", m.Version, s)
			}
		}
	}
	if _, err := Migrations("bad-name", Dialect{}); err == nil {
		t.Error("Migrations accepted database name bad-name")
	}
}

// TestMigrationsForCluster: on a cluster every table is created ON
// CLUSTER, and every ALTER of a replicated local table runs once per
// shard, never ON CLUSTER (OncePerShard): 18.16's DDL worker can run such
// an ALTER on two replicas and then stop for good. An INSERT … SELECT runs
// once, through the Distributed tables.
func TestMigrationsForCluster(t *testing.T) {
	migs, err := Migrations("seer_test", Dialect{Cluster: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	var creates, alters int
	for _, m := range migs {
		for _, s := range m.Statements {
			switch {
			case strings.HasPrefix(s, "ALTER TABLE "):
				alters++
				if !OncePerShard(s) || strings.Contains(s, "ON CLUSTER") || !strings.Contains(strings.Fields(s)[2], "_local") {
					t.Errorf("migration %d: %q; want an ALTER of a _local table, once per shard", m.Version, s)
				}
			case strings.HasPrefix(s, "CREATE "), strings.HasPrefix(s, "DROP "):
				creates++
				if !strings.Contains(s, " ON CLUSTER c1") || OncePerShard(s) {
					t.Errorf("migration %d: %q; want it ON CLUSTER c1", m.Version, s)
				}
			case strings.HasPrefix(s, "INSERT INTO "):
				if OncePerShard(s) || strings.Contains(s, "ON CLUSTER") || strings.Contains(s, "_local") {
					t.Errorf("migration %d: %q; want it once, through the Distributed tables", m.Version, s)
				}
			default:
				t.Errorf("migration %d: unexpected statement %q", m.Version, s)
			}
		}
	}
	if creates == 0 || alters == 0 {
		t.Errorf("%d CREATE or DROP and %d ALTER statements; want some of each", creates, alters)
	}
	single, _ := Migrations("seer_test", Dialect{})
	for _, m := range single {
		for _, s := range m.Statements {
			if strings.Contains(s, "ON CLUSTER") {
				t.Errorf("migration %d on one server: %q", m.Version, s)
			}
		}
	}
	for _, s := range RetentionStatements("seer_test", 30) {
		for _, c := range (Dialect{Cluster: "c1"}).ForCluster(s) {
			if !OncePerShard(c) {
				t.Errorf("retention on a cluster: %q; want it once per shard", c)
			}
		}
	}
}

func TestParseExamples(t *testing.T) {
	good := `{"event":{"user_id":"u1"},"features":{"v":{"a":1.5,"b":"x"}},"outputs":{"score":0.25},"label":1}

{"event":{"user_id":"u2"},"outputs":{"score":0.5}}
`
	exs, err := ParseExamples(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(exs) != 2 || exs[0].Line != 1 || exs[1].Line != 3 || *exs[0].Label != 1 || exs[1].Label != nil || exs[1].Outputs["score"] != 0.5 {
		t.Fatalf("examples = %+v", exs)
	}
	if v, err := exs[0].FeatureValue("v", "a"); err != nil || v.Kind != KindNumber || v.Num != 1.5 {
		t.Errorf("numeric feature = %+v, %v", v, err)
	}
	if v, err := exs[0].FeatureValue("v", "b"); err != nil || v.Kind != KindString || v.Str != "x" {
		t.Errorf("string feature = %+v, %v", v, err)
	}
	if v, err := exs[1].FeatureValue("v", "a"); err != nil || v.Kind != KindAbsent {
		t.Errorf("missing feature = %+v, %v", v, err)
	}
	f := func(body, want string) {
		t.Helper()
		if _, err := ParseExamples(strings.NewReader(body)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseExamples(%q) error = %v, want it to mention %q", body, err, want)
		}
	}
	f("{\"event\":{},\"outputs\":{\"score\":1}}\n{\"event\":{},\"outputs\":{\"score\":1},\"extra\":1}", "line 2")
	f(`{"event":[1],"outputs":{"score":1}}`, "event: want a JSON object")
	f(`{"event":{}}`, "outputs: at least one")
	f(`{"event":{},"outputs":{"score":1}} {"x":1}`, "more than one JSON value")
	f(`{"event":{},"outputs":{"score":"high"}}`, "line 1")
}

// FuzzParseExamples: the examples decoder never panics, and what it
// accepts has an event object and finite outputs on the lines it names.
func FuzzParseExamples(f *testing.F) {
	f.Add([]byte(`{"event":{"user_id":"u1"},"features":{"v":{"a":1}},"outputs":{"score":0.25},"label":0}`))
	f.Add([]byte("\n\n{\"event\":{},\"outputs\":{\"s\":1e308}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		exs, err := ParseExamples(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, ex := range exs {
			if ex.Line < 1 || len(ex.Event) == 0 || ex.Event[0] != '{' || len(ex.Outputs) == 0 {
				t.Fatalf("accepted a bad example: %+v", ex)
			}
			for v, fs := range ex.Features {
				for name := range fs {
					ex.FeatureValue(v, name) // must not panic
				}
			}
		}
	})
}
