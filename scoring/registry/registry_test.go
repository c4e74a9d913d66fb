package registry

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

// testRegistry opens a log on a fresh topic of the real broker and a store
// in a temporary folder, with gates for the example input schema.
func testRegistry(t *testing.T) (*Log, *Store, Gates) {
	t.Helper()
	brokers := testenv.Kafka(t)
	if err := scoring.InitRuntime(testenv.OnnxRuntime(t)); err != nil {
		t.Fatal(err)
	}
	topic := "seertest-registry-" + ksuid.New().String()
	log, err := NewLog([]kgo.Opt{kgo.SeedBrokers(brokers)}, topic)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := log.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kadm.NewClient(log.cl).DeleteTopics(context.Background(), topic, LoadsTopic(topic))
		log.Close()
	})
	store, err := OpenStore(ctx, "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	schema, err := schemas.LoadInputSchema("card_transactions.v1")
	if err != nil {
		t.Fatal(err)
	}
	return log, store, Gates{Schema: schema, Scoring: scoring.DefaultConfig()}
}

func examplePkg(t *testing.T, name string) string {
	return filepath.Join(testenv.RepoRoot(t), "deploy", "examples", name)
}

// copyDir copies a package folder.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(src, e.Name()))
		os.WriteFile(filepath.Join(dst, e.Name()), data, 0o644)
	}
	return dst
}

// TestRegisterAliasHistory on the real broker: registration is idempotent
// for the same package and refused for another under the same version;
// alias moves are recorded with their previous version; the state folds
// back from the log; a stored package comes back intact.
func TestRegisterAliasHistory(t *testing.T) {
	log, store, gates := testRegistry(t)
	ctx := context.Background()
	v1, already, err := Register(ctx, log, store, gates, examplePkg(t, "card-fraud"), "alice", "first release")
	if err != nil || already {
		t.Fatalf("Register 1.0.0 = already %v, %v", already, err)
	}
	if _, already, err := Register(ctx, log, store, gates, examplePkg(t, "card-fraud"), "alice", "again"); err != nil || !already {
		t.Errorf("registering the same package again: already %v, %v; want a no-op", already, err)
	}
	if _, _, err := Register(ctx, log, store, gates, examplePkg(t, "card-fraud-1.1.0"), "bob", "more trees"); err != nil {
		t.Fatal(err)
	}
	other := copyDir(t, examplePkg(t, "card-fraud-1.2.0-rc.1"))
	y, _ := os.ReadFile(filepath.Join(other, "model.yaml"))
	os.WriteFile(filepath.Join(other, "model.yaml"), bytes.Replace(y, []byte("version: 1.2.0-rc.1"), []byte("version: 1.0.0"), 1), 0o644)
	if _, _, err := Register(ctx, log, store, gates, other, "mallory", "overwrite"); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("another package under 1.0.0: err = %v, want a refusal (versions are immutable)", err)
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "alice", "first champion"); err != nil {
		t.Fatal(err)
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.1.0", "bob", "better AUC"); err != nil {
		t.Fatal(err)
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "9.9.9", "bob", "typo"); err == nil {
		t.Error("an alias moved to a version that does not exist")
	}
	st, skipped, err := log.Read(ctx)
	if err != nil || len(skipped) != 0 {
		t.Fatalf("Read: %v, skipped %v", err, skipped)
	}
	m := st.Models["card-fraud"]
	if len(m.Versions) != 2 || m.Aliases["champion"] != "1.1.0" {
		t.Fatalf("state: versions %d, aliases %v", len(m.Versions), m.Aliases)
	}
	if len(m.History) != 2 || m.History[0].Previous != "" || m.History[1].Previous != "1.0.0" || m.History[1].Actor != "bob" || m.History[1].Reason != "better AUC" {
		t.Errorf("history %+v", m.History)
	}
	if e, err := st.Resolve("card-fraud", "@champion"); err != nil || e.Version != "1.1.0" {
		t.Errorf("Resolve(@champion) = %v, %v", e, err)
	}
	dst := t.TempDir()
	if err := store.Fetch(ctx, v1.Artifact, dst, v1.Package.Files); err != nil {
		t.Fatal(err)
	}
	if _, err := schemas.LoadManifest(dst); err != nil {
		t.Errorf("fetched package: %v", err)
	}
}

// TestConcurrentAliasMoves: a move that lost the race — another was
// appended between its read and its append — is not applied, and its
// caller learns which version won.
func TestConcurrentAliasMoves(t *testing.T) {
	log, store, gates := testRegistry(t)
	ctx := context.Background()
	for _, p := range []string{"card-fraud", "card-fraud-1.1.0", "card-fraud-1.2.0-rc.1"} {
		if _, _, err := Register(ctx, log, store, gates, examplePkg(t, p), "ci", "release"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "ci", "first"); err != nil {
		t.Fatal(err)
	}
	log.beforeAppend = func() {
		log.beforeAppend = nil
		if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.1.0", "bob", "better"); err != nil {
			t.Errorf("the winning move: %v", err)
		}
	}
	_, err := log.SetAlias(ctx, "card-fraud", "champion", "1.2.0-rc.1", "carol", "try the candidate")
	if err == nil || !strings.Contains(err.Error(), "moved to 1.1.0 by another request") {
		t.Fatalf("the losing move: err = %v, want it to name 1.1.0 as the winner", err)
	}
	st, _, _ := log.Read(ctx)
	if got := st.Models["card-fraud"].Aliases["champion"]; got != "1.1.0" {
		t.Errorf("champion = %s after the race, want 1.1.0", got)
	}
}

// TestGatesReportEveryFailure: a package that fails several gates is
// refused with every failure named, and a signed package changed after
// signing is refused by the signature gate.
func TestGatesReportEveryFailure(t *testing.T) {
	_, _, gates := testRegistry(t)
	ctx := context.Background()
	dir := copyDir(t, examplePkg(t, "card-fraud-1.1.0"))
	y, _ := os.ReadFile(filepath.Join(dir, "model.yaml"))
	y = bytes.Replace(y, []byte("auc: 0.811595"), []byte("auc: 0"), 1)
	os.WriteFile(filepath.Join(dir, "model.yaml"), y, 0o644)
	ex, _ := os.ReadFile(filepath.Join(dir, "examples.jsonl"))
	os.WriteFile(filepath.Join(dir, "examples.jsonl"), bytes.Replace(ex, []byte(`"score": 0.`), []byte(`"score": 0.9`), 1), 0o644)
	strict := gates
	priv, pub, _ := GenerateKey("ed25519")
	kdir := t.TempDir()
	os.WriteFile(filepath.Join(kdir, "k.pub"), pub, 0o644)
	os.WriteFile(filepath.Join(kdir, "k.key"), priv, 0o600)
	v, _ := LoadPublicKey(filepath.Join(kdir, "k.pub"))
	strict.RequireSignature, strict.TrustedKeys = true, []dsse.Verifier{v}
	_, _, err := strict.Check(ctx, dir)
	for _, want := range []string{"gate manifest: incomplete: [evaluation", "gate examples:", "gate signature: package is not signed"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
	signed := copyDir(t, examplePkg(t, "card-fraud-1.1.0"))
	signer, _ := LoadPrivateKey(filepath.Join(kdir, "k.key"))
	if _, err := Sign(ctx, signed, "card-fraud", "1.1.0", signer); err != nil {
		t.Fatal(err)
	}
	if _, facts, err := strict.Check(ctx, signed); err != nil || facts.SignedBy == "" {
		t.Fatalf("a signed, untouched package: %v (facts %+v)", err, facts)
	}
	os.WriteFile(filepath.Join(signed, "README"), []byte("added after signing"), 0o644)
	if _, _, err := strict.Check(ctx, signed); err == nil || !strings.Contains(err.Error(), "gate signature") || !strings.Contains(err.Error(), "README") {
		t.Errorf("a file added after signing: err = %v, want the signature gate to name README", err)
	}
}

// FuzzDecodeEvent: the registry event decoder never panics, and what it
// accepts has the fields its type needs.
func FuzzDecodeEvent(f *testing.F) {
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	f.Add([]byte(`{"id":"a","type":"alias_set","model":"m","version":"1","alias":"champion","previous":"","actor":"x","time":"` + now + `"}`))
	f.Add([]byte(`{"id":"a","type":"version_registered","model":"m","version":"1","actor":"x","time":"` + now + `","digest":"d","package":{"owner":"o","onnx_sha256":"s","dataset":"d","code":"c","metrics":{},"files":{}}}`))
	f.Add([]byte(`{"id":"a","type":"load_failed","model":"m","version":"1","actor":"x","time":"` + now + `","instance":"serve-1"}`))
	f.Add([]byte(`{"id":"a","type":"rollout_started","model":"m","version":"1","actor":"x","time":"` + now + `","rollout":"r","steps":["shadow","5","100"],"step_duration":"1m","alias":"champion"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := DecodeEvent(data)
		if err != nil {
			return
		}
		if e.ID == "" || e.Model == "" || e.Version == "" || e.Actor == "" || e.Time.IsZero() {
			t.Fatalf("accepted an event without its common fields: %+v", e)
		}
		switch e.Type {
		case VersionRegistered:
			if e.Digest == "" || e.Package == nil {
				t.Fatalf("accepted %+v", e)
			}
		case AliasSet:
			if e.Alias == "" {
				t.Fatalf("accepted %+v", e)
			}
		case VersionLoaded, LoadFailed:
			if e.Instance == "" {
				t.Fatalf("accepted %+v", e)
			}
		case RolloutStarted, RolloutStepped, RolloutPaused, RolloutPromoted, RolloutRolledBack:
			if e.Rollout == "" || (e.Type == RolloutStarted && ParseSteps(e.Steps) != nil) {
				t.Fatalf("accepted %+v", e)
			}
		default:
			t.Fatalf("accepted type %q", e.Type)
		}
		NewState().Apply(e) // must not panic
	})
}

// TestMirrorToClickHouse: registry events reach model_versions and
// model_events on the real ClickHouse — rollout events with their step,
// gate and figures — and a prediction's version joins to its lineage with
// the query docs/clickhouse.md gives.
func TestMirrorToClickHouse(t *testing.T) {
	log, store, gates := testRegistry(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := drift.DefaultConfig()
	cfg.Addr = testenv.ClickHouse(t)
	cfg.Database = "seertest_" + strings.ToLower(ksuid.New().String()[:12])
	conn, err := drift.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database); conn.Close() })
	if err := drift.Migrate(ctx, conn, cfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"card-fraud", "card-fraud-1.1.0"} {
		if _, _, err := Register(ctx, log, store, gates, examplePkg(t, p), "ci", "release"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "ci", "first"); err != nil {
		t.Fatal(err)
	}
	if _, err := log.StartRollout(ctx, "card-fraud", "1.1.0", "champion", []string{"shadow", "50"}, time.Minute, "ci", "try"); err != nil {
		t.Fatal(err)
	}
	if _, err := log.ChangeRollout(ctx, "card-fraud", RolloutStepped, "monitor", "passed", "", map[string]float64{"score_correlation": 0.97}); err != nil {
		t.Fatal(err)
	}
	if _, err := log.ChangeRollout(ctx, "card-fraud", RolloutPromoted, "monitor", "passed", "", nil); err != nil {
		t.Fatal(err)
	}
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- log.MirrorLoop(mctx, Mirror{Conn: conn, Database: cfg.Database}, func(err error) { t.Errorf("mirror: %v", err) })
	}()
	var versions, events uint64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".model_versions FINAL").Scan(&versions)
		conn.QueryRow(ctx, "SELECT count() FROM "+cfg.Database+".model_events FINAL").Scan(&events)
		if versions == 2 && events == 6 {
			break
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if versions != 2 || events != 6 {
		t.Fatalf("mirrored %d versions and %d events, want 2 and 6", versions, events)
	}
	var step string
	var figure float64
	if err := conn.QueryRow(ctx, "SELECT step, figure_values[indexOf(figure_names, 'score_correlation')] FROM "+cfg.Database+".model_events FINAL WHERE type = 'rollout_stepped'").Scan(&step, &figure); err != nil || step != "50" || figure != 0.97 {
		t.Errorf("the stepped event in model_events: step %q, score_correlation %v, %v; want 50 and 0.97", step, figure, err)
	}
	// A prediction row of 1.1.0 joins to its lineage (docs/clickhouse.md).
	// (clickhouse-go's INSERT … VALUES hangs on 18.16: a batch with a column list.)
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+cfg.Database+".inference_log (prediction_id, event_id, entity_id, model, model_version, route)")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append("p1", "e1", "u1", "card-fraud", "1.1.0", "production"); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	var owner, dataset string
	var auc float64
	q := strings.ReplaceAll(LineageQuery, "seer.", cfg.Database+".")
	if err := conn.QueryRow(ctx, q+" AND l.prediction_id = 'p1'").Scan(new(string), new(string), &owner, &dataset, &auc); err != nil {
		t.Fatalf("lineage query: %v\n%s", err, q)
	}
	if owner != "risk-ml@example.com" || !strings.Contains(dataset, "synthetic") || auc < 0.8 {
		t.Errorf("lineage of p1: owner %q, dataset %q, auc %v", owner, dataset, auc)
	}
}
