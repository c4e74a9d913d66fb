package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
	"github.com/seer-ml/seer/scoring/router"
	"github.com/seer-ml/seer/stream"
)

// app is one wired pipeline and the clients it owns. Close releases them in
// reverse order of creation.
type app struct {
	instance string // names this serve instance: its consumer's client id and its registry events
	manifest *schemas.Manifest
	schema   *schemas.InputSchema
	rdb      redis.UniversalClient
	store    *featurestore.Store
	ch       driver.Conn
	sink     *inferencelog.Sink
	writer   *inferencelog.Writer
	router   *router.Router
	follower *router.Follower // nil when serving scoring.package
	registry *registry.Log
	artifact *registry.Store
	pipeline *stream.Pipeline
}

// buildApp loads and verifies the model package, connects Redis and
// ClickHouse, migrates the schema and creates the Kafka pipeline.
func buildApp(ctx context.Context, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (_ *app, err error) {
	host, _ := os.Hostname()
	a := &app{instance: fmt.Sprintf("%s-serve-%s-%s", cfg.Kafka.ClientID, host, ksuid.New().String()[19:])}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	if a.schema, err = schemas.LoadInputSchema(cfg.Kafka.InputSchema); err != nil {
		return nil, fmt.Errorf("kafka.input_schema: %w", err)
	}
	if err = scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
		return nil, err
	}
	var info *prometheus.GaugeVec
	loads := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "seer_scoring_loads_total",
		Help: "Model versions loaded (outcome loaded) or refused (outcome failed) by this instance."}, []string{"model", "version", "outcome"})
	rollouts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "seer_rollout_events_total",
		Help: "Rollout events of the served model seen by this instance since it started (rollout_started, rollout_stepped, rollout_promoted, rollout_rolled_back, rollout_paused), by the candidate version."},
		[]string{"model", "version", "type"})
	if reg != nil {
		reg.MustRegister(rollouts)
		info = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "seer_scoring_model_info", Help: "The model version being served (value 1)."},
			[]string{"model", "version", "route", "sha256"})
		reg.MustRegister(info, loads)
	}
	if cfg.Scoring.Model != "" {
		if err = a.follow(ctx, cfg, logger, loads, rollouts); err != nil {
			return nil, err
		}
	} else {
		var m *schemas.Manifest
		if m, err = schemas.LoadManifest(cfg.Scoring.Package); err != nil {
			return nil, fmt.Errorf("scoring.package: %w", err)
		}
		mod, err := scoring.Open(cfg.Scoring, m, a.schema, schemas.RouteProduction, logger)
		if err != nil {
			return nil, fmt.Errorf("scoring.package %s: %w", cfg.Scoring.Package, err)
		}
		a.router = router.New(mod, logger)
		loads.WithLabelValues(m.Name, m.Version, "loaded").Inc()
	}
	a.manifest = a.router.Current().Manifest
	showModel := func(mod *scoring.Model) {
		if info != nil {
			info.Reset()
			info.WithLabelValues(mod.Manifest.Name, mod.Manifest.Version, string(mod.Route), mod.Manifest.Artifact.SHA256).Set(1)
		}
	}
	showModel(a.router.Current())
	a.router.OnSwap = showModel
	if reg != nil {
		device := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "seer_scoring_device",
			Help: "The device scoring runs on (value 1): requested is scoring.device, actual differs when the CUDA provider was unavailable and scoring fell back to the CPU."},
			[]string{"requested", "actual"})
		reg.MustRegister(device)
		device.WithLabelValues(cfg.Scoring.Device, a.router.Current().Device()).Set(1)
	}
	logger.Info("model loaded", "component", "scoring", "model", a.manifest.Name, "version", a.manifest.Version, "sha256", a.manifest.Artifact.SHA256)

	a.rdb = featurestore.NewClient(cfg.Redis)
	if err = a.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", cfg.Redis.Where(), err)
	}
	views, features := a.manifest.FeatureViews()
	a.store = featurestore.New(cfg.Redis, a.rdb, views, features, logger, reg)

	if a.ch, err = openMigrated(ctx, cfg, logger); err != nil {
		return nil, err
	}
	a.sink = inferencelog.NewSink(a.ch, cfg.ClickHouse.Database)
	if a.writer, err = inferencelog.NewWriter(cfg.ClickHouse.Config, a.sink, logger, reg); err != nil {
		return nil, fmt.Errorf("clickhouse.spool_dir: %w", err)
	}

	// The consumer's client id is the instance name: the rollout controller
	// lists the group's members to know which instances must load a step.
	opts := append(kafkaOpts(cfg.Kafka, "serve", logger, reg), kgo.ClientID(a.instance))
	if a.pipeline, err = stream.New(cfg.Kafka, a.schema, a.store, a.router, a.writer, logger, reg, opts...); err != nil {
		return nil, err
	}
	return a, nil
}

// follow makes serve follow scoring.model @ scoring.alias in the
// registry: it starts only when the alias resolves to a version it can
// load.
func (a *app) follow(ctx context.Context, cfg Config, logger *slog.Logger, loads, rollouts *prometheus.CounterVec) (err error) {
	if a.registry, err = registry.NewLog(kafkaOpts(cfg.Kafka, "serve-registry", logger, nil), cfg.Registry.Topic); err != nil {
		return err
	}
	if a.artifact, err = registry.OpenStore(ctx, cfg.Registry.Store); err != nil {
		return err
	}
	keys, err := loadTrustedKeys(cfg.Registry.TrustedKeys)
	if err != nil {
		return err
	}
	dir, err := packageCache()
	if err != nil {
		return err
	}
	a.follower = &router.Follower{Log: a.registry, Store: a.artifact, Model: cfg.Scoring.Model, Alias: cfg.Scoring.Alias,
		Gates:    registry.Gates{Schema: a.schema, Scoring: cfg.Scoring, RequireSignature: cfg.Registry.RequireSignature, TrustedKeys: keys},
		Instance: a.instance, Dir: dir, Logger: logger.With("component", "registry"),
		OnRollout: func(e registry.Event) { rollouts.WithLabelValues(e.Model, e.Version, string(e.Type)).Inc() }}
	a.router, err = a.follower.Start(ctx, func(version string, ok bool) {
		outcome := "loaded"
		if !ok {
			outcome = "failed"
		}
		loads.WithLabelValues(cfg.Scoring.Model, version, outcome).Inc()
	})
	if err != nil {
		return err
	}
	loads.WithLabelValues(cfg.Scoring.Model, a.router.Current().Manifest.Version, "loaded").Inc()
	return nil
}

// Run runs the pipeline, the log writer and, when following the
// registry, the follower until ctx ends. Stop order: the pipeline stops
// polling and finishes its in-flight batches (their rows reach the
// writer), then the writer flushes and stops; the follower stops with ctx.
func (a *app) Run(ctx context.Context) error {
	wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWriter()
	werr := make(chan error, 1)
	go func() { werr <- a.writer.Run(wctx) }()
	fctx, stopFollower := context.WithCancel(ctx)
	defer stopFollower()
	ferr := make(chan error, 1)
	if a.follower != nil {
		go func() { ferr <- a.follower.Run(fctx) }()
	} else {
		ferr <- nil
	}
	perr := a.pipeline.Run(ctx)
	stopFollower()
	stopWriter()
	return errors.Join(perr, <-werr, <-ferr)
}

// Ready checks, at once and each within timeout, that the pipeline has
// joined its group and that Kafka, Redis and ClickHouse answer. The report
// has one line per check, so a failure names its dependency.
func (a *app) Ready(ctx context.Context, timeout time.Duration) (report string, ok bool) {
	checks := []struct {
		name string
		fn   func(context.Context) error
	}{
		{"consumer", func(context.Context) error { return a.pipeline.Ready() }},
		{"kafka", func(ctx context.Context) error { return a.pipeline.Client().Ping(ctx) }},
		{"redis", a.store.Ping},
		{"clickhouse", a.sink.Ping},
	}
	errs := make([]error, len(checks))
	var wg sync.WaitGroup
	for i, c := range checks {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			errs[i] = c.fn(cctx)
		})
	}
	wg.Wait()
	var b strings.Builder
	ok = true
	for i, c := range checks {
		if errs[i] != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", c.name, errs[i])
		} else {
			fmt.Fprintf(&b, "%s: ok\n", c.name)
		}
	}
	return b.String(), ok
}

// Alive is the pipeline's liveness, except that a writer waiting on a full
// spool is waiting for ClickHouse, not stuck: a restart would not help.
func (a *app) Alive(now time.Time) error {
	err := a.pipeline.Alive(now)
	if err != nil && a.writer.Spool().Full() {
		return nil
	}
	return err
}

// Close releases what buildApp opened; the pipeline closes its own client
// when Run returns.
func (a *app) Close() error {
	var errs []error
	if a.writer != nil {
		errs = append(errs, a.writer.Close())
	}
	if a.ch != nil {
		errs = append(errs, a.ch.Close())
	}
	if a.rdb != nil {
		errs = append(errs, a.rdb.Close())
	}
	if a.router != nil {
		errs = append(errs, a.router.Close())
	}
	if a.artifact != nil {
		errs = append(errs, a.artifact.Close())
	}
	if a.registry != nil {
		a.registry.Close()
	}
	return errors.Join(errs...)
}
