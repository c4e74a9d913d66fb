package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/internal/testenv"
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
	t.Cleanup(func() { kadm.NewClient(admin).DeleteTopics(context.Background(), cfg.Registry.Topic) })
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
	w := watchPredictions(t, cfg.Kafka.Brokers[0], cfg.Kafka.PredictionsTopic)
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
	// A steady 250 events/s for 12 s; the alias moves at 4 s and at 8 s,
	// from another goroutine, so that the rate does not wait for a move.
	const rate, seconds = 250, 12
	var ids []string
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
	for i := 0; i < rate*seconds; i += rate / 10 {
		ids = append(ids, produceValid(ctx, t, admin, cfg.Kafka.InputTopic, gen, rate/10)...)
		time.Sleep(time.Until(start.Add(time.Duration(i+rate/10) * time.Second / rate)))
	}
	if err := <-movesDone; err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, len(ids), time.Minute)
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
	var before, during []float64
	for _, id := range ids {
		v, _ := preds.Load(id)
		list, _ := v.([]schemas.Prediction)
		if len(list) != 1 {
			t.Errorf("event %s has %d predictions, want exactly 1", id, len(list))
			continue
		}
		p := list[0]
		switch {
		case p.ScoredTime.Before(moved) && p.ModelVersion != "1.0.0":
			t.Errorf("event %s scored by %s at %v, before the move to 1.1.0", id, p.ModelVersion, p.ScoredTime)
		case p.ScoredTime.After(allOn11) && p.ScoredTime.Before(movedBack) && p.ModelVersion != "1.1.0":
			t.Errorf("event %s scored by %s at %v, after every instance swapped to 1.1.0", id, p.ModelVersion, p.ScoredTime)
		case p.ScoredTime.After(allBack) && p.ModelVersion != "1.0.0":
			t.Errorf("event %s scored by %s at %v, after every instance swapped back", id, p.ModelVersion, p.ScoredTime)
		}
		lat := p.ScoredTime.Sub(p.EventTime).Seconds() * 1000
		switch {
		case p.ScoredTime.Before(moved) && p.ScoredTime.After(moved.Add(-2*time.Second)):
			before = append(before, lat)
		case !p.ScoredTime.Before(moved) && p.ScoredTime.Before(allOn11.Add(time.Second)):
			during = append(during, lat)
		}
	}
	p99 := func(xs []float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		slices.Sort(xs)
		return xs[min(len(xs)-1, len(xs)*99/100)]
	}
	t.Logf("alias move → last instance serving 1.1.0: %v; back to 1.0.0: %v", allOn11.Sub(moved).Round(time.Millisecond), allBack.Sub(movedBack).Round(time.Millisecond))
	t.Logf("event time → scored p99: %.1f ms in the 2 s before the move (%d events), %.1f ms from the move to 1 s after the last swap (%d events)", p99(before), len(before), p99(during), len(during))
}
