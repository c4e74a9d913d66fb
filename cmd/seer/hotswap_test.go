package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
)

// TestHotSwapUnderLoad: two serve instances in one group follow
// card-fraud@champion in the registry on the real broker while events
// arrive at a steady rate; the alias moves to 1.1.0 and back. Every event
// gets exactly one prediction; no prediction carries the new version
// before the move, nor the old one after every instance reported the
// swap; both instances switch both times.
func TestHotSwapUnderLoad(t *testing.T) {
	cfg, admin := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg.Registry.Topic = "it-registry-" + strings.ToLower(ksuid.New().String()[:12])
	cfg.Registry.Store = "file://" + t.TempDir() + "?create_dir=1"
	cfg.Scoring.Model, cfg.Scoring.Alias = "card-fraud", "champion"
	cfg.Kafka.MaxPollRecords = 50
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	if err := scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
		t.Fatal(err)
	}
	reg, err := openRegistry(ctx, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	t.Cleanup(func() {
		kadm.NewClient(admin).DeleteTopics(context.Background(), cfg.Registry.Topic, registry.LoadsTopic(cfg.Registry.Topic))
	})
	store, err := registry.OpenStore(ctx, cfg.Registry.Store)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	schema, _ := schemas.LoadInputSchema(cfg.Kafka.InputSchema)
	gates := registry.Gates{Schema: schema, Scoring: cfg.Scoring}
	for _, pkg := range []string{"card-fraud", "card-fraud-1.1.0"} {
		if _, _, err := registry.Register(ctx, reg, store, gates, testenv.RepoRoot(t)+"/deploy/examples/"+pkg, "ci", "release"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reg.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "ci", "first champion"); err != nil {
		t.Fatal(err)
	}

	var apps []*app
	for i := range 2 {
		c := cfg
		c.HTTP = []string{"127.0.0.1:18081", "127.0.0.1:18082"}[i] // names the instance in load events
		c.ClickHouse.SpoolDir = t.TempDir()
		a, err := buildApp(ctx, c, logger, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		if v := a.router.Current().Manifest.Version; v != "1.0.0" {
			t.Fatalf("instance %d started with %s, want the champion 1.0.0", i, v)
		}
		apps = append(apps, a)
	}
	t.Cleanup(func() {
		cleanupApp(cfg, apps[0])
		apps[1].Close()
	})
	gen, _ := loadFeatures(ctx, t, apps[0])
	var preds sync.Map // event id → []schemas.Prediction
	pcl, err := kgo.NewClient(kgo.SeedBrokers(cfg.Kafka.Brokers[0]), kgo.ConsumeTopics(cfg.Kafka.PredictionsTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer pcl.Close()
	pctx, stopPreds := context.WithCancel(ctx)
	predsDone := make(chan struct{})
	go func() {
		defer close(predsDone)
		for pctx.Err() == nil {
			pcl.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
				var p schemas.Prediction
				if json.Unmarshal(r.Value, &p) == nil {
					old, _ := preds.Load(p.EventID)
					list, _ := old.([]schemas.Prediction)
					preds.Store(p.EventID, append(list, p))
				}
			})
		}
	}()

	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	for _, a := range apps {
		go func() { done <- a.Run(runCtx) }()
	}
	// seer loadtest's engine sends a steady 250 events/s for 12 s; the alias
	// moves at 4 s and at 8 s.
	var moved, movedBack time.Time
	start := time.Now()
	movesDone := make(chan error, 1)
	go func() {
		time.Sleep(time.Until(start.Add(4 * time.Second)))
		moved = time.Now()
		if _, err := reg.SetAlias(ctx, "card-fraud", "champion", "1.1.0", "ci", "better AUC"); err != nil {
			movesDone <- err
			return
		}
		time.Sleep(time.Until(start.Add(8 * time.Second)))
		movedBack = time.Now()
		_, err := reg.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "ci", "back")
		movesDone <- err
	}()
	rep, err := loadtest.Run(ctx, loadtest.RunConfig{
		InputTopic: cfg.Kafka.InputTopic, PredictionsTopic: cfg.Kafka.PredictionsTopic, DLQTopic: cfg.Kafka.DLQTopic,
		Profile:      loadtest.Profile{Kind: "constant", Rate: 250, Duration: 12 * time.Second},
		DrainTimeout: time.Minute, ClientOpts: []kgo.Opt{kgo.SeedBrokers(cfg.Kafka.Brokers[0])},
	}, gen)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := <-movesDone; err != nil {
		t.Fatal(err)
	}
	if rep.Missing != 0 || rep.DuplicatesOrFor != 0 || rep.Predicted != rep.Sent {
		t.Errorf("load: sent %d, predicted %d, missing %d, duplicate %d; want exactly one prediction per event", rep.Sent, rep.Predicted, rep.Missing, rep.DuplicatesOrFor)
	}
	stop()
	for range apps {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	stopPreds()
	<-predsDone

	st, _, err := reg.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	loaded := map[string]map[string]time.Time{} // version → instance → when it swapped in after a move
	for _, e := range st.Models["card-fraud"].History {
		if e.Type == registry.VersionLoaded && strings.HasPrefix(e.Reason, "swapped in") {
			if loaded[e.Version] == nil {
				loaded[e.Version] = map[string]time.Time{}
			}
			loaded[e.Version][e.Instance] = e.Time // the later swap wins for 1.0.0
		}
		if e.Type == registry.LoadFailed {
			t.Errorf("load failed on %s: %s", e.Instance, e.Reason)
		}
	}
	if len(loaded["1.1.0"]) != 2 || len(loaded["1.0.0"]) != 2 {
		t.Fatalf("instances that swapped: 1.1.0 %v, back to 1.0.0 %v; want both instances both times", loaded["1.1.0"], loaded["1.0.0"])
	}
	last := func(v string) time.Time {
		var l time.Time
		for _, at := range loaded[v] {
			if at.After(l) {
				l = at
			}
		}
		return l
	}
	allOn11, allBack := last("1.1.0"), last("1.0.0")
	// A batch that began on the old version just before a swap may end
	// just after it was reported: a grace of one batch (far under 500 ms).
	const grace = 500 * time.Millisecond
	n := 0
	preds.Range(func(k, v any) bool {
		n++
		list := v.([]schemas.Prediction)
		if len(list) != 1 {
			t.Errorf("event %s has %d predictions, want exactly 1", k, len(list))
			return true
		}
		p := list[0]
		switch {
		case p.ScoredTime.Before(moved) && p.ModelVersion != "1.0.0":
			t.Errorf("event %s scored by %s at %v, before the move to 1.1.0", k, p.ModelVersion, p.ScoredTime)
		case p.ScoredTime.After(allOn11.Add(grace)) && p.ScoredTime.Before(movedBack) && p.ModelVersion != "1.1.0":
			t.Errorf("event %s scored by %s at %v, after every instance swapped to 1.1.0", k, p.ModelVersion, p.ScoredTime)
		case p.ScoredTime.After(allBack.Add(grace)) && p.ModelVersion != "1.0.0":
			t.Errorf("event %s scored by %s at %v, after every instance swapped back", k, p.ModelVersion, p.ScoredTime)
		}
		return true
	})
	if int64(n) != rep.Sent {
		t.Errorf("%d events have predictions, %d were sent", n, rep.Sent)
	}
	// p99 per second of the load (loadtest's windows): the seconds before
	// the first move against the seconds in which the swaps happened.
	var before, during float64
	for _, w := range rep.Windows {
		at := start.Add(time.Duration(w.ElapsedS * float64(time.Second)))
		switch {
		case at.Before(moved) && at.After(moved.Add(-1500*time.Millisecond)):
			before = max(before, w.Latency.P99)
		case !at.Before(moved) && at.Before(allOn11.Add(2*time.Second)), !at.Before(movedBack) && at.Before(allBack.Add(2*time.Second)):
			during = max(during, w.Latency.P99)
		}
	}
	t.Logf("alias move → last instance serving 1.1.0: %v; back to 1.0.0: %v", allOn11.Sub(moved).Round(time.Millisecond), allBack.Sub(movedBack).Round(time.Millisecond))
	t.Logf("loadtest: %d sent, %d predicted; per-second p99 (send → prediction): at most %.1f ms in the 2 s before the first move, at most %.1f ms in the seconds of the swaps; whole run p99 %.1f ms",
		rep.Sent, rep.Predicted, before, during, rep.Latency.P99)
}
