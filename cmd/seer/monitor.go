package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/alert"
	"github.com/seer-ml/seer/drift/judge"
	"github.com/seer-ml/seer/drift/monitor"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
	"github.com/seer-ml/seer/scoring/rollout"
	"github.com/seer-ml/seer/stream"
)

func newMonitorCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "monitor",
		Short: "Run the windowed drift, data-quality and freshness jobs and route alerts",
		Long: `monitor evaluates tumbling windows (monitor.window, by event time, once
monitor.lateness has passed after a window ends) for the model package in
scoring.package. Each window's aggregates are computed in ClickHouse from the
inference log — bin counts on the package profile's frozen edges, category
counts, missing and out-of-bounds counts, feature-age and event-lag
quantiles — and Go finalizes PSI (with a window-size-aware p-value), JS,
Wasserstein, KS, chi-squared, Benjamini–Hochberg adjusted p-values, data
quality and freshness. Metrics go to the window_metrics table.

The reference is the package profile, or with monitor.reference:
START/END (RFC 3339) a time range of the inference log, such as the first
day after deployment, counted on the profile's frozen bins.

Alert rules (monitor.rules: metric, scope, threshold, for N windows, minimum
samples, hysteresis, cooldown, severity, labels) drive a state machine —
pending, firing, resolved — whose changes go to the log, the ClickHouse alerts
table, the Kafka topic monitor.alerts_topic and, if set, an
Alertmanager-compatible webhook (monitor.webhook_url).

Run several instances for availability: one holds a Redis lease (with a
fencing token) and works; the others stand by and take over within two
windows when it dies.

monitor also mirrors the model registry (registry.topic) into the
ClickHouse tables model_versions and model_events, and — behind a lease of
its own — judges the steps of the model's rollouts (seer rollout): a shadow
step on the candidate's agreement with production, a canary step on the
candidate's score drift against its own profile (rollout_gates). It moves a
passing rollout on, promotes it after its last step, and rolls it back with
an alert when a gate fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			return runMonitor(cmd.Context(), cfg, logger)
		},
	}
}

func runMonitor(ctx context.Context, cfg Config, logger *slog.Logger) error {
	m, err := schemas.LoadManifest(cfg.Scoring.Package)
	if err != nil {
		return fmt.Errorf("scoring.package: %w", err)
	}
	conn, err := drift.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := drift.Migrate(ctx, conn, cfg.ClickHouse.Database, logger); err != nil {
		return err
	}
	rdb := featurestore.NewClient(cfg.Redis)
	defer rdb.Close()
	host, _ := os.Hostname()
	lease := monitor.NewLease(rdb, cfg.Redis.KeyPrefix, "monitor:"+m.Name+":"+m.Version, host+"-"+ksuid.New().String(), cfg.Monitor.LeaseTTL)
	ch := notify.ClickHouse{Conn: conn, Database: cfg.ClickHouse.Database}
	sinks := []notify.Sink{notify.Log{Log: logger}, ch}
	if cfg.Monitor.AlertsTopic != "" {
		cl, err := kgo.NewClient(append(kafkaOpts(cfg.Kafka, "monitor-alerts", logger, nil), kgo.AllowAutoTopicCreation())...)
		if err != nil {
			return err
		}
		defer cl.Close()
		sinks = append(sinks, notify.Kafka{Client: cl, Topic: cfg.Monitor.AlertsTopic})
	}
	if cfg.Monitor.WebhookURL != "" {
		sinks = append(sinks, notify.Webhook{URL: cfg.Monitor.WebhookURL})
	}
	job := window.New(conn, cfg.ClickHouse.Database, m)
	if start, end, _ := cfg.Monitor.ReferenceRange(); !start.IsZero() {
		if err := job.UseReferenceRange(ctx, start, end); err != nil {
			return err
		}
		logger.Info("reference is a range of the inference log", "start", start, "end", end)
	}
	mon, closeMon, err := newMonitor(cfg, cfg.Monitor, job, lease, sinks, ch, logger)
	if err != nil {
		return err
	}
	defer closeMon()
	// The registry's ClickHouse mirror (model_versions, model_events).
	reg, err := openRegistry(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer reg.Close()
	mctx, stopMirror := context.WithCancel(ctx)
	mirrored := make(chan error, 1)
	go func() {
		mirrored <- reg.MirrorLoop(mctx, registry.Mirror{Conn: conn, Database: cfg.ClickHouse.Database}, func(err error) {
			logger.Warn("mirroring the registry to ClickHouse failed; retrying with the next events", "err", err)
		})
	}()
	defer func() { stopMirror(); <-mirrored }()

	// The rollout judge: one active instance, behind a lease of its own.
	store, err := registry.OpenStore(ctx, cfg.Registry.Store)
	if err != nil {
		return err
	}
	defer store.Close()
	dir, err := filepath.Abs(filepath.Join(".cache", "packages"))
	if err != nil {
		return err
	}
	rlease := monitor.NewLease(rdb, cfg.Redis.KeyPrefix, "rollout:"+m.Name, host+"-"+ksuid.New().String(), cfg.Monitor.LeaseTTL)
	defer rlease.Release(context.WithoutCancel(ctx))
	ctl := &rollout.Controller{Log: reg, Model: m.Name, Actor: "seer-monitor@" + host, Config: cfg.Rollout, Now: time.Now,
		Logger: logger.With("component", "rollout"),
		Judge:  rolloutJudge{j: judge.Judge{Conn: conn, Database: cfg.ClickHouse.Database, Config: cfg.RolloutGates}, log: reg, store: store, dir: dir},
		Leader: func(ctx context.Context) bool { held, _, err := rlease.Hold(ctx); return err == nil && held },
		OnEnd: func(e registry.Event) {
			sendAll(ctx, sinks, []alert.Alert{rolloutAlert(e)}, func(err error) { logger.Error("rollout alert sink failed", "err", err) })
		}}
	rctx, stopRollout := context.WithCancel(ctx)
	rolled := make(chan error, 1)
	go func() { rolled <- ctl.Run(rctx) }()
	defer func() { stopRollout(); <-rolled }()
	logger.Info("monitor starting", "model", m.Name, "version", m.Version, "window", cfg.Monitor.Window, "rules", len(cfg.Monitor.Rules))
	return mon.Run(ctx)
}

// newMonitor wires a monitor that also reports the consumer lag of
// kafka.group; the returned func releases the lag client.
func newMonitor(cfg Config, mcfg monitor.Config, job *window.Job, lease *monitor.Lease, sinks []notify.Sink, firing monitor.FiringAlerts, logger *slog.Logger) (*monitor.Monitor, func(), error) {
	cl, err := kgo.NewClient(kafkaOpts(cfg.Kafka, "monitor-lag", logger, nil)...)
	if err != nil {
		return nil, nil, err
	}
	mon, err := monitor.New(mcfg, job, lease, sinks, firing, stream.NewGroupLag(cl, cfg.Kafka.Group).Total, logger, time.Now)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return mon, cl.Close, nil
}
