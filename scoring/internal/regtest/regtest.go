// Package regtest sets up a model registry on the real broker for the
// tests of the scoring rooms that follow it (router, rollout).
package regtest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
)

// Registry is a registry set up for one test.
type Registry struct {
	Log      *registry.Log
	Store    *registry.Store
	StoreDir string // the store's folder, to change a stored file behind the registry's back
	Gates    registry.Gates
	Versions map[string]registry.Event // version_registered events by version
}

// New opens a registry log on a fresh topic (deleted after the test) and
// an artifact store in a temporary folder, registers the named example
// packages (deploy/examples/NAME) and points champion at the first.
func New(t testing.TB, packages ...string) *Registry {
	t.Helper()
	if err := scoring.InitRuntime(testenv.OnnxRuntime(t)); err != nil {
		t.Fatal(err)
	}
	brokers := testenv.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := "seertest-registry-" + ksuid.New().String()
	log, err := registry.NewLog([]kgo.Opt{kgo.SeedBrokers(brokers)}, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := log.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	adm, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		kadm.NewClient(adm).DeleteTopics(context.Background(), topic, registry.LoadsTopic(topic))
		adm.Close()
		log.Close()
	})
	storeDir := t.TempDir()
	store, err := registry.OpenStore(ctx, "file://"+storeDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	schema, err := schemas.LoadInputSchema("card_transactions.v1")
	if err != nil {
		t.Fatal(err)
	}
	gates := registry.Gates{Schema: schema, Scoring: scoring.DefaultConfig()}
	events := map[string]registry.Event{}
	for _, p := range packages {
		e, _, err := registry.Register(ctx, log, store, gates, filepath.Join(testenv.RepoRoot(t), "deploy", "examples", p), "ci", "release")
		if err != nil {
			t.Fatal(err)
		}
		events[e.Version] = e
	}
	if len(packages) > 0 {
		first, _ := schemas.LoadManifest(filepath.Join(testenv.RepoRoot(t), "deploy", "examples", packages[0]))
		if _, err := log.SetAlias(ctx, first.Name, "champion", first.Version, "ci", "first"); err != nil {
			t.Fatal(err)
		}
	}
	return &Registry{Log: log, Store: store, StoreDir: storeDir, Gates: gates, Versions: events}
}
