package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/featurestore/ingest"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/stream"
)

func newLoadtestCmd(g *globals) *cobra.Command {
	var (
		p       loadtest.Profile
		o       loadtest.RunConfig
		report  string
		feats   bool
		findMax bool
		setup   bool
		remove  bool
		drifts  []string
		slo     time.Duration
		maxRate float64
		steps   int
		users   int
		seed    uint64
		timeout time.Duration
		before  string
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
JSON report (--report) holds the totals and per-second windows; PNG charts
of latency percentiles and of target against achieved rate are written next
to it. --find-max searches the highest constant rate whose p99 stays within
--slo.

Point it at the same config as the seer serve under test. Only loopback or
your own test brokers should be targets.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
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
				if err := loadGeneratedFeatures(cmd.Context(), cfg, logger, gen); err != nil {
					return err
				}
			}
			if len(drifts) > 0 {
				shift := map[string]float64{}
				for _, d := range drifts {
					name, v, ok := strings.Cut(d, "=")
					f, err := strconv.ParseFloat(v, 64)
					if !ok || err != nil || m.Profile.Features[name].Kind != schemas.ProfileNumeric {
						return fmt.Errorf("--drift: %q is not INPUT=SIGMAS for a numeric input of %s", d, m.Name)
					}
					shift[name] = f
				}
				gen.SetShift(shift)
			}
			o.InputTopic, o.PredictionsTopic, o.DLQTopic = cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic
			// franz-go's info lines would break the progress line.
			o.ClientOpts = kafkaOpts(cfg.Kafka, "loadtest", newLogger(g.stderr, "warn", cfg.LogFormat), nil)
			o.Profile, o.DrainTimeout, o.Progress = p, timeout, g.stderr
			if remove {
				if setup {
					return fmt.Errorf("--delete-topics and --setup-only exclude each other")
				}
				if err := loadtest.DeleteTopics(cmd.Context(), o); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "topics %s, %s and %s are deleted; no load sent\n", o.InputTopic, o.PredictionsTopic, o.DLQTopic)
				return nil
			}
			if setup {
				if err := loadtest.EnsureTopics(cmd.Context(), o); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "topics %s, %s and %s are there; no load sent\n", o.InputTopic, o.PredictionsTopic, o.DLQTopic)
				return nil
			}
			if findMax {
				if !cmd.Flags().Changed("warmup") {
					o.Warmup = 5 * time.Second
				}
				if o.Warmup >= p.Duration {
					return fmt.Errorf("--warmup %v must be shorter than --duration %v", o.Warmup, p.Duration)
				}
				return searchMax(cmd.Context(), g, o, gen, slo, maxRate, steps, report, cfg.Kafka.Group, before)
			}
			rep, runErr := loadtest.Run(cmd.Context(), o, gen)
			if rep == nil {
				return runErr
			}
			fmt.Fprint(g.stdout, rep.Summary())
			if report != "" {
				if err := os.MkdirAll(filepath.Dir(report), 0o755); err != nil {
					return err
				}
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return fmt.Errorf("--report: %w", err)
				}
				if err := os.WriteFile(report, append(b, '\n'), 0o644); err != nil {
					return fmt.Errorf("--report: %w", err)
				}
				fmt.Fprintf(g.stdout, "report written to %s\n", report)
				charts, err := loadtest.WriteCharts(rep, filepath.Dir(report), strings.TrimSuffix(filepath.Base(report), ".json"))
				if err != nil {
					return fmt.Errorf("charts: %w", err)
				}
				fmt.Fprintf(g.stdout, "charts written to %s\n", strings.Join(charts, ", "))
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
	f.StringSliceVar(&drifts, "drift", nil, "inject drift: INPUT=SIGMAS shifts a numeric event input's mean by that many reference standard deviations (repeatable)")
	f.IntVar(&users, "users", 10000, "number of distinct entities")
	f.Uint64Var(&seed, "seed", 1, "generator seed")
	f.DurationVar(&timeout, "drain-timeout", 60*time.Second, "how long to wait for the last predictions")
	f.StringVar(&report, "report", "", "write the JSON report here")
	f.Int32Var(&o.Partitions, "partitions", 4, "partitions of topics that do not exist yet")
	f.BoolVar(&findMax, "find-max", false, "search the highest constant rate (between --rate and --max-rate) whose p99 stays within --slo; each step runs for --duration")
	f.DurationVar(&slo, "slo", 50*time.Millisecond, "p99 latency objective for --find-max")
	f.Float64Var(&maxRate, "max-rate", 100000, "upper end of the --find-max search")
	f.IntVar(&steps, "search-steps", 5, "bisection steps of --find-max")
	f.StringVar(&before, "before-trial", "", "for --find-max: a shell command run before each trial, once the service has drained the last one's backlog (make bench empties the inference log with it, so that every trial starts from the same state); the search stops when it fails")
	f.DurationVar(&o.Warmup, "warmup", 0, "leave the first seconds of each run out of the steady p99 (the figure --find-max judges a rate on); for --find-max, 5s when not set")
	f.BoolVar(&feats, "load-features", false, "first write generated features for every user to Redis (redis.addr)")
	f.BoolVar(&remove, "delete-topics", false, "delete the run's input, predictions and DLQ topics, then exit without sending: run it when a benchmark ends, so that its records do not fill the broker's disk")
	f.BoolVar(&setup, "setup-only", false, "create the topics that do not exist yet (and with --load-features, write the features), then exit without sending: run it before starting the seer serve under test, so that serve finds its input topic when it starts")
	return cmd
}

// loadGeneratedFeatures writes one generated feature row per user and view.
func loadGeneratedFeatures(ctx context.Context, cfg Config, logger *slog.Logger, gen *loadtest.Generator) error {
	rdb := featurestore.NewClient(cfg.Redis)
	defer rdb.Close()
	return ingest.New(rdb, cfg.Redis.KeyPrefix).PutViews(ctx, gen.FeatureRows(0), time.Now(), 0)
}

// drained waits, up to 5 minutes, until the service's consumer group has
// no lag (an unknown group has none).
func drained(ctx context.Context, g *globals, lag *stream.GroupLag) error {
	deadline, said := time.Now().Add(5*time.Minute), false
	for {
		n, err := lag.Total(ctx)
		if err != nil || n <= 0 { // no group yet, or no lag we can see
			return nil
		}
		if !said {
			fmt.Fprintf(g.stdout, "waiting for the service to drain a backlog of %d records before the next trial\n", n)
			said = true
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the service still has %d records of lag after 5 minutes: it cannot drain the last trial's backlog", n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// MaxReport is the outcome of a --find-max search.
type MaxReport struct {
	SLOMs       float64          `json:"slo_p99_ms"`
	MaxRate     float64          `json:"max_sustainable_rate"`
	StepSeconds float64          `json:"step_seconds"`
	WarmupS     float64          `json:"warmup_s"`     // left out of each trial's p99
	AtRangeTop  bool             `json:"at_range_top"` // no rate up to max_rate failed: the system may sustain more
	Trials      []loadtest.Trial `json:"trials"`
}

func searchMax(ctx context.Context, g *globals, o loadtest.RunConfig, gen *loadtest.Generator, slo time.Duration, maxRate float64, steps int, report, group, before string) error {
	admin, err := kgo.NewClient(o.ClientOpts...)
	if err != nil {
		return err
	}
	defer admin.Close()
	lag := stream.NewGroupLag(admin, group)
	measure := func(ctx context.Context, rate float64) (float64, float64, error) {
		// Each trial starts on an empty queue: the backlog an overloaded
		// trial left behind would otherwise fail the next one, whatever
		// its rate.
		if err := drained(ctx, g, lag); err != nil {
			return 0, 0, err
		}
		if before != "" {
			sh := exec.CommandContext(ctx, "sh", "-c", before)
			sh.Stdout, sh.Stderr = g.stdout, g.stderr
			if err := sh.Run(); err != nil {
				return 0, 0, fmt.Errorf("--before-trial %q: %w", before, err)
			}
		}
		run := o
		run.Profile = loadtest.Profile{Kind: "constant", Rate: rate, Duration: o.Profile.Duration}
		run.DrainTimeout = min(o.DrainTimeout, 10*time.Second)
		rep, err := loadtest.Run(ctx, run, gen)
		if rep == nil {
			return 0, 0, err
		}
		// Events still missing after the drain lower the achieved rate,
		// which fails the trial.
		p99 := rep.SteadyLatency.P99
		fmt.Fprintf(g.stdout, "rate %.0f/s: achieved %.0f/s, p99 %.1f ms after %.0fs of warm-up (%.1f ms with it), %d missing\n",
			rate, rep.AchievedRate, p99, rep.WarmupS, rep.Latency.P99, rep.Missing)
		return float64(rep.Predicted) / rep.DurationS, p99, nil
	}
	best, trials, err := loadtest.SearchMax(ctx, o.Profile.Rate, maxRate, float64(slo.Milliseconds()), steps, measure)
	if err != nil {
		return err
	}
	fmt.Fprintf(g.stdout, "max sustainable rate with p99 <= %s: %.0f events/s\n", slo, best)
	atTop := loadtest.AtRangeTop(best, o.Profile.Rate, maxRate, steps)
	if atTop {
		fmt.Fprintf(g.stdout, "warning: %.0f/s is the top of the search's range (no rate up to --max-rate %.0f/s failed); the system may sustain more: raise --max-rate\n", best, maxRate)
	}
	if report != "" {
		b, err := json.MarshalIndent(MaxReport{SLOMs: float64(slo.Milliseconds()), MaxRate: best, StepSeconds: o.Profile.Duration.Seconds(), WarmupS: o.Warmup.Seconds(), AtRangeTop: atTop, Trials: trials}, "", "  ")
		if err != nil {
			return fmt.Errorf("--report: %w", err)
		}
		return os.WriteFile(report, append(b, '\n'), 0o644)
	}
	return nil
}
