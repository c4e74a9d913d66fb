package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/ksuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

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
	var once bool
	var from, to string
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Run the windowed drift, data-quality and freshness jobs and route alerts",
		Long: `monitor evaluates tumbling windows (monitor.window, by event time, once
monitor.lateness has passed after a window ends) for one model: following
the registry (scoring.model, scoring.alias), every version that served in
the window — the alias's version and a rollout's canary — each on its own
rows against its own package; otherwise the package in scoring.package.
Each window's aggregates are computed in ClickHouse from the
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

Performance: with labels (seer labels) and monitor.label_delay set, each
window's performance per version — AUC, precision and recall at the
package threshold, Brier score, calibration error, label coverage and delay
— is measured once the window is mature (label_delay after its end), and
the performance rules alert on it; before, only the label coverage and the
estimate from the scores alone (estimated_*) are stored.

Backfill: --once --from T1 --to T2 (RFC 3339) computes every window that
starts in [T1, T2) and exits, without the lease and without alerts; run
again, it stores the same figures.

Run several instances for availability: one holds a Redis lease (with a
fencing token) and works; the others stand by and take over within two
windows when it dies.

monitor also mirrors the model registry (registry.topic) into the
ClickHouse tables model_versions and model_events, and — behind a lease of
its own — judges the steps of the model's rollouts (seer rollout), once
every member of kafka.group (the live serve instances) has loaded the step:
every step on the candidate's score failures and scoring latency against
production's, a shadow step on its agreement with production, a canary
step on its score drift against its own profile (rollout_gates). It moves
a passing rollout on, promotes it after its last step, and rolls it back
with an alert when a gate fails or a serve instance refuses the candidate.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			if !once {
				if from != "" || to != "" {
					return errors.New("--from and --to go with --once")
				}
				return runMonitor(cmd.Context(), cfg, logger)
			}
			start, err := time.Parse(time.RFC3339, from)
			if err != nil {
				return fmt.Errorf("--from: %q is not an RFC 3339 time", from)
			}
			end, err := time.Parse(time.RFC3339, to)
			if err != nil || !end.After(start) {
				return fmt.Errorf("--to: %q is not an RFC 3339 time after --from", to)
			}
			return backfill(cmd.Context(), g, cfg, logger, start, end)
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "compute the windows of --from/--to, then exit (a backfill: no lease, no alerts)")
	cmd.Flags().StringVar(&from, "from", "", "with --once: the first window's start (RFC 3339)")
	cmd.Flags().StringVar(&to, "to", "", "with --once: the end of the range (RFC 3339)")
	return cmd
}

// backfill computes the windows starting in [from, to) and exits.
func backfill(ctx context.Context, g *globals, cfg Config, logger *slog.Logger, from, to time.Time) error {
	conn, err := openMigrated(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer conn.Close()
	var pkgs packages
	if cfg.Scoring.Model != "" {
		var closePkgs func()
		if pkgs, closePkgs, err = openPackages(ctx, cfg, logger); err != nil {
			return err
		}
		defer closePkgs()
	}
	versions, err := monitorVersions(cfg, conn, pkgs, logger)
	if err != nil {
		return err
	}
	mon, err := monitor.New(cfg.Monitor, versions, nil, nil, nil, nil, logger, time.Now)
	if err != nil {
		return err
	}
	n, total := 0, int(to.Sub(from.Truncate(cfg.Monitor.Window))/cfg.Monitor.Window)
	if to.Sub(from.Truncate(cfg.Monitor.Window))%cfg.Monitor.Window != 0 {
		total++
	}
	t0 := time.Now()
	err = mon.Backfill(ctx, from, to, func(start time.Time) {
		n++
		fmt.Fprintf(g.stderr, "\rbackfill: window %d of %d (%s)", n, total, start.UTC().Format(time.RFC3339))
	})
	fmt.Fprintln(g.stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "backfilled %d windows of %s from %s to %s in %s\n", n, versions.Model, from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339),
		time.Since(t0).Round(time.Millisecond))
	return nil
}

func runMonitor(ctx context.Context, cfg Config, logger *slog.Logger) error {
	conn, err := openMigrated(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer conn.Close()
	rdb := featurestore.NewClient(cfg.Redis)
	defer rdb.Close()
	pkgs, closePkgs, err := openPackages(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer closePkgs()
	reg := pkgs.log
	versions, err := monitorVersions(cfg, conn, pkgs, logger)
	if err != nil {
		return err
	}
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
	group, err := kgo.NewClient(kafkaOpts(cfg.Kafka, "monitor-group", logger, nil)...)
	if err != nil {
		return err
	}
	defer group.Close()
	host, _ := os.Hostname()
	id := host + "-" + ksuid.New().String()
	mon, err := monitor.New(cfg.Monitor, versions, monitor.NewLease(rdb, cfg.Redis.KeyPrefix, "monitor:"+versions.Model, id, cfg.Monitor.LeaseTTL),
		sinks, ch, stream.NewGroupLag(group, cfg.Kafka.Group).Total, logger, time.Now)
	if err != nil {
		return err
	}
	// The registry's ClickHouse mirror (model_versions, model_events).
	mctx, stopMirror := context.WithCancel(ctx)
	mirrored := make(chan error, 1)
	go func() {
		mirrored <- reg.MirrorLoop(mctx, registry.Mirror{Conn: conn, Database: cfg.ClickHouse.Database}, func(err error) {
			logger.Warn("mirroring the registry to ClickHouse failed; retrying with the next events", "err", err)
		})
	}()
	defer func() { stopMirror(); <-mirrored }()

	// The rollout controller: one active instance, behind a lease of its own.
	rlease := monitor.NewLease(rdb, cfg.Redis.KeyPrefix, "rollout:"+versions.Model, id, cfg.Monitor.LeaseTTL)
	defer rlease.Release(context.WithoutCancel(ctx))
	ctl := newController(cfg, versions.Model, reg, judge.Judge{Conn: conn, Database: cfg.ClickHouse.Database, Config: cfg.RolloutGates}, pkgs, group, sinks, logger)
	ctl.Actor = "seer-monitor@" + host
	ctl.Leader = func(ctx context.Context) bool { held, _, err := rlease.Hold(ctx); return err == nil && held }
	rctx, stopRollout := context.WithCancel(ctx)
	rolled := make(chan error, 1)
	go func() { rolled <- ctl.Run(rctx) }()
	defer func() { stopRollout(); <-rolled }()
	logger.Info("monitor starting", "model", versions.Model, "window", cfg.Monitor.Window, "rules", len(cfg.Monitor.Rules))
	return mon.Run(ctx)
}

// monitorVersions says what the monitor measures. Following the registry
// (scoring.model), every version that served in a window — the alias's
// version and a rollout's canary — each against its own package;
// otherwise the package in scoring.package.
func monitorVersions(cfg Config, conn driver.Conn, pkgs packages, logger *slog.Logger) (*window.Versions, error) {
	v := &window.Versions{Conn: conn, Database: cfg.ClickHouse.Database, Logger: logger.With("component", "monitor")}
	if start, end, _ := cfg.Monitor.ReferenceRange(); !start.IsZero() {
		v.Reference = [2]time.Time{start, end}
		logger.Info("reference is a range of the inference log", "start", start, "end", end)
	}
	if cfg.Scoring.Model != "" {
		v.Model = cfg.Scoring.Model
		v.Production = func(ctx context.Context) (*schemas.Manifest, error) {
			return pkgs.manifest(ctx, cfg.Scoring.Model, "@"+cfg.Scoring.Alias)
		}
		v.Package = func(ctx context.Context, version string) (*schemas.Manifest, error) {
			return pkgs.manifest(ctx, cfg.Scoring.Model, version)
		}
		return v, nil
	}
	m, err := schemas.LoadManifest(cfg.Scoring.Package)
	if err != nil {
		return nil, fmt.Errorf("scoring.package: %w", err)
	}
	v.Model = m.Name
	v.Production = func(context.Context) (*schemas.Manifest, error) { return m, nil }
	return v, nil
}

// newController wires the rollout controller of model: judged in
// ClickHouse, waiting on the members of kafka.group (the live serve
// instances, listed through cl), alerting through sinks.
func newController(cfg Config, model string, reg *registry.Log, j judge.Judge, pkgs packages, cl *kgo.Client, sinks []notify.Sink, logger *slog.Logger) *rollout.Controller {
	return &rollout.Controller{Log: reg, Model: model, Actor: "seer-monitor", Config: cfg.Rollout, Now: time.Now,
		Logger: logger.With("component", "rollout"), Judge: rolloutJudge{j: j, pkgs: pkgs},
		Fleet: func(ctx context.Context) ([]string, error) { return stream.GroupMembers(ctx, cl, cfg.Kafka.Group) },
		OnEnd: func(e registry.Event) {
			sendAll(context.Background(), sinks, []alert.Alert{rolloutAlert(e)}, func(err error) { logger.Error("rollout alert sink failed", "err", err) })
		}}
}
