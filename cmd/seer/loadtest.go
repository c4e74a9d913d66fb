package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
)

func newLoadtestCmd(g *globals) *cobra.Command {
	var (
		p       loadtest.Profile
		o       loadtest.RunConfig
		report  string
		feats   bool
		users   int
		seed    uint64
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "loadtest",
		Short: "Send open-loop load to a running seer serve and measure end-to-end latency",
		Long: `loadtest produces events for the model package (scoring.package) to
kafka.input_topic — values sampled from the package's reference profile — and
reads kafka.predictions_topic and kafka.dlq_topic, matching each prediction to
its event by id. Latency runs from each event's scheduled send time to its
prediction's arrival (open loop, so a stalled pipeline cannot hide its
queueing delay), recorded in an HDR histogram.

Profiles: constant (--rate), step (--rate to --to in --steps steps) and ramp
(--rate to --to), over --duration. --preload N instead sends N events as fast
as possible and reports the rate at which predictions come back: the
pipeline's maximum throughput. A live progress line shows each second; the
JSON report (--report) holds the totals and per-second windows.

Point it at the same config as the seer serve under test. Only loopback or
your own test brokers should be targets.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.load()
			if err != nil {
				return err
			}
			schema, err := schemas.LoadInputSchema(cfg.Kafka.InputSchema)
			if err != nil {
				return err
			}
			m, err := schemas.LoadManifest(cfg.Scoring.Package)
			if err != nil {
				return err
			}
			gen, err := loadtest.NewGenerator(schema, m, users, seed)
			if err != nil {
				return err
			}
			if feats {
				if err := loadGeneratedFeatures(cmd.Context(), cfg, gen); err != nil {
					return err
				}
			}
			o.Brokers, o.InputTopic, o.PredictionsTopic, o.DLQTopic = cfg.Kafka.Brokers, cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic
			o.Profile, o.DrainTimeout, o.Progress = p, timeout, g.stderr
			rep, runErr := loadtest.Run(cmd.Context(), o, gen)
			if rep == nil {
				return runErr
			}
			fmt.Fprint(g.stdout, rep.Summary())
			if report != "" {
				if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
					return err
				}
				b, _ := json.MarshalIndent(rep, "", "  ")
				if err := os.WriteFile(report, append(b, '\n'), 0o644); err != nil {
					return fmt.Errorf("--report: %w", err)
				}
				fmt.Fprintf(g.stdout, "report written to %s\n", report)
			}
			return runErr
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Kind, "profile", "constant", "constant, step or ramp")
	f.Float64Var(&p.Rate, "rate", 1000, "events per second (the first step, or the ramp's start)")
	f.Float64Var(&p.To, "to", 0, "final rate of a step or ramp profile")
	f.IntVar(&p.Steps, "steps", 5, "number of steps of a step profile")
	f.DurationVar(&p.Duration, "duration", 30*time.Second, "how long to send")
	f.IntVar(&o.Preload, "preload", 0, "send this many events as fast as possible instead of a profile")
	f.Float64Var(&o.MalformedShare, "malformed", 0, "share of malformed events")
	f.IntVar(&users, "users", 10000, "number of distinct entities")
	f.Uint64Var(&seed, "seed", 1, "generator seed")
	f.DurationVar(&timeout, "drain-timeout", 60*time.Second, "how long to wait for the last predictions")
	f.StringVar(&report, "report", "", "write the JSON report here")
	f.Int32Var(&o.Partitions, "partitions", 4, "partitions of topics that do not exist yet")
	f.BoolVar(&feats, "load-features", false, "first write generated features for every user to Redis (redis.addr)")
	return cmd
}

// loadGeneratedFeatures writes one generated feature row per user and view.
func loadGeneratedFeatures(ctx context.Context, cfg Config, gen *loadtest.Generator) error {
	rdb := featurestore.NewClient(cfg.Redis)
	defer rdb.Close()
	store := featurestore.New(cfg.Redis, rdb, nil, nil, slog.New(slog.DiscardHandler), nil)
	now := time.Now().UnixMilli()
	for view, byUser := range gen.FeatureRows(0) {
		rows := make([]featurestore.Row, 0, len(byUser))
		for u, vals := range byUser {
			rows = append(rows, featurestore.Row{Entity: u, TsMs: now, Values: vals})
		}
		if err := store.Put(ctx, view, rows, 0); err != nil {
			return err
		}
	}
	return nil
}
