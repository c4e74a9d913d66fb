package router

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
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

// TestFollowerRefusesABadVersion on the real broker: a version whose
// stored package was changed after registration is refused at load; the
// old version keeps serving, load_failed names the instance and the
// reason; a good version then swaps in, and Rollback returns to the old.
func TestFollowerRefusesABadVersion(t *testing.T) {
	if err := scoring.InitRuntime(testenv.OnnxRuntime(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	topic := "seertest-follow-" + ksuid.New().String()
	log, err := registry.NewLog([]kgo.Opt{kgo.SeedBrokers(testenv.Kafka(t))}, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := log.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	adm, _ := kgo.NewClient(kgo.SeedBrokers(testenv.Kafka(t)))
	t.Cleanup(func() { kadm.NewClient(adm).DeleteTopics(context.Background(), topic); adm.Close(); log.Close() })
	storeDir := t.TempDir()
	store, err := registry.OpenStore(ctx, "file://"+storeDir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	schema, _ := schemas.LoadInputSchema("card_transactions.v1")
	gates := registry.Gates{Schema: schema, Scoring: scoring.DefaultConfig()}
	events := map[string]registry.Event{}
	for _, p := range []string{"card-fraud", "card-fraud-1.1.0", "card-fraud-1.2.0-rc.1"} {
		e, _, err := registry.Register(ctx, log, store, gates, filepath.Join(testenv.RepoRoot(t), "deploy", "examples", p), "ci", "release")
		if err != nil {
			t.Fatal(err)
		}
		events[e.Version] = e
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "ci", "first"); err != nil {
		t.Fatal(err)
	}
	// The stored 1.2.0-rc.1 is changed behind the registry's back.
	onnx := filepath.Join(storeDir, filepath.FromSlash(events["1.2.0-rc.1"].Artifact), "model.onnx")
	if err := os.WriteFile(onnx, []byte("not the registered model"), 0o644); err != nil {
		t.Fatal(err)
	}

	f := &Follower{Log: log, Store: store, Gates: gates, Model: "card-fraud", Alias: "champion", Instance: "test-instance",
		Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	outcomes := make(chan string, 4)
	r, err := f.Start(ctx, func(v string, ok bool) {
		if ok {
			outcomes <- v + " loaded"
		} else {
			outcomes <- v + " failed"
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	next := func() string {
		select {
		case o := <-outcomes:
			return o
		case <-time.After(20 * time.Second):
			return "timeout"
		}
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.2.0-rc.1", "ci", "try it"); err != nil {
		t.Fatal(err)
	}
	if o := next(); o != "1.2.0-rc.1 failed" || r.Current().Manifest.Version != "1.0.0" {
		t.Fatalf("after a move to a tampered version: %q, serving %s; want failed and 1.0.0 still serving", o, r.Current().Manifest.Version)
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.1.0", "ci", "better"); err != nil {
		t.Fatal(err)
	}
	if o := next(); o != "1.1.0 loaded" || r.Current().Manifest.Version != "1.1.0" {
		t.Fatalf("after a move to 1.1.0: %q, serving %s", o, r.Current().Manifest.Version)
	}
	if back, err := r.Rollback(); err != nil || back.Manifest.Version != "1.0.0" || r.Current().Manifest.Version != "1.0.0" {
		t.Errorf("Rollback = %v, %v; serving %s", back, err, r.Current().Manifest.Version)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, _, _ := log.Read(ctx)
	var failed *registry.Event
	for _, e := range st.Models["card-fraud"].History {
		if e.Type == registry.LoadFailed {
			failed = &e
		}
	}
	if failed == nil || failed.Instance != "test-instance" || failed.Version != "1.2.0-rc.1" || !strings.Contains(failed.Reason, "changed") {
		t.Errorf("load_failed event = %+v; want one naming the instance, the version and the changed file", failed)
	}
}
