package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/alert"
	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/monitor"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
)

type demoOptions struct {
	brokers     []string
	duration    time.Duration
	rate        int
	malformed   float64
	users       int
	summaryJSON string
	seed        uint64
}

func newDemoCmd(g *globals) *cobra.Command {
	o := demoOptions{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole pipeline on one machine with generated traffic",
		Long: `demo runs seer end to end and reports what happened:

  1. starts an embedded Kafka broker (kfake) unless --brokers is given;
  2. connects to Redis and ClickHouse (redis.addr, clickhouse.addr; 'make demo'
     starts local ones) and migrates the ClickHouse schema;
  3. loads per-user features for the example model into Redis (some users are
     left out on purpose, so feature misses are flagged);
  4. deploys the model package (scoring.package) and runs the serve pipeline;
  5. sends open-loop traffic at --rate events/s for --duration, with a share of
     malformed events (--malformed) that must land in the DLQ, showing a live
     progress line;
  6. prints a summary — events in, predictions out, DLQ records by reason,
     rows in ClickHouse, p50/p99 end-to-end latency — and two queries to paste
     into clickhouse-client, and writes it as JSON to --summary-json.

Each run uses its own topics (seer-demo-<run>.*) and starts from an empty
ClickHouse database seer_demo, so runs never mix. seer monitor runs alongside
with windows of a sixth of --duration: in the middle third the demo shifts
amount by one standard deviation and lets the features go stale, so a drift
alert and a freshness alert fire and then resolve.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			return runDemo(cmd.Context(), g, cfg, logger, o)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&o.brokers, "brokers", nil, "use these Kafka brokers instead of the embedded one")
	f.DurationVar(&o.duration, "duration", 60*time.Second, "how long to send traffic")
	f.IntVar(&o.rate, "rate", 500, "events per second")
	f.Float64Var(&o.malformed, "malformed", 0.03, "share of events that are malformed on purpose")
	f.IntVar(&o.users, "users", 20000, "number of distinct users (entities); their features are a sample of the reference profile")
	f.StringVar(&o.summaryJSON, "summary-json", "", "also write the summary as JSON to this path")
	f.Uint64Var(&o.seed, "seed", 1, "seed of the traffic generator")
	return cmd
}

// DemoSummary is what seer demo reports.
type DemoSummary struct {
	RunID           string           `json:"run_id"`
	Brokers         string           `json:"brokers"`
	InputTopic      string           `json:"input_topic"`
	Model           string           `json:"model"`
	ModelVersion    string           `json:"model_version"`
	DurationSeconds float64          `json:"duration_seconds"`
	TargetRate      int              `json:"target_rate"`
	EventsIn        int64            `json:"events_in"`
	MalformedSent   int64            `json:"malformed_sent"`
	PredictionsOut  int64            `json:"predictions_out"`
	DLQRecords      int64            `json:"dlq_records"`
	DLQByReason     map[string]int64 `json:"dlq_by_reason"`
	ClickHouseRows  int64            `json:"clickhouse_rows"`
	ClickHouseDLQ   int64            `json:"clickhouse_dead_letters"`
	FeatureMisses   int64            `json:"feature_misses"`
	LatencyP50Ms    float64          `json:"latency_p50_ms"`
	LatencyP99Ms    float64          `json:"latency_p99_ms"`
	LatencyMaxMs    float64          `json:"latency_max_ms"`
	Alerts          []DemoAlert      `json:"alerts"`
	AnalystQueries  []string         `json:"analyst_queries"`
}

// DemoAlert is one alert state change seen during the demo.
type DemoAlert struct {
	AtSeconds float64 `json:"at_s"`
	Rule      string  `json:"rule"`
	Feature   string  `json:"feature"`
	State     string  `json:"state"`
	Value     float64 `json:"value"`
}

// alertLog is an alert sink that keeps the demo's alerts for the summary.
type alertLog struct {
	mu     sync.Mutex
	start  time.Time
	alerts []DemoAlert
}

func (l *alertLog) Send(_ context.Context, as []alert.Alert) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range as {
		l.alerts = append(l.alerts, DemoAlert{AtSeconds: time.Since(l.start).Seconds(), Rule: a.Rule, Feature: a.Feature, State: a.State.String(), Value: a.Value})
	}
	return nil
}

func (l *alertLog) entries() []DemoAlert {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]DemoAlert(nil), l.alerts...)
}

// demoMonitorConfig scales windows to the demo's length: six windows per
// run, features stale after 30 s.
func demoMonitorConfig(d time.Duration) monitor.Config {
	c := monitor.DefaultConfig()
	c.Window = max(d/6, 2*time.Second).Truncate(time.Second)
	c.Lateness = 2 * time.Second
	c.LeaseTTL = min(c.Window, 5*time.Second)
	for i := range c.Rules {
		r := &c.Rules[i]
		switch r.Name {
		case "feature-stale":
			r.Threshold, r.For = float64((30 * time.Second).Milliseconds()), 1
		case "feature-drift":
			r.MinSamples = 500
		}
	}
	return c
}

func runDemo(ctx context.Context, g *globals, cfg Config, logger *slog.Logger, o demoOptions) error {
	if o.rate < 1 || o.duration <= 0 || o.malformed < 0 || o.malformed > 1 {
		return errors.New("demo: --rate must be ≥ 1, --duration > 0 and --malformed within [0, 1]")
	}
	run := strings.ToLower(ksuid.New().String()[:10])
	base := "seer-demo-" + run
	cfg.Kafka.InputTopic = base + ".events"
	cfg.Kafka.PredictionsTopic = base + ".predictions"
	cfg.Kafka.DLQTopic = base + ".dlq"
	cfg.Kafka.Group = base
	cfg.Redis.KeyPrefix = "seer-demo"
	// Keep the demo's own output readable: pipeline logs at warn and above.
	quiet := newLogger(g.stderr, "warn", cfg.LogFormat)

	if len(o.brokers) == 0 {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic))
		if err != nil {
			return fmt.Errorf("starting embedded kafka: %w", err)
		}
		defer cluster.Close()
		cfg.Kafka.Brokers = cluster.ListenAddrs()
		fmt.Fprintf(g.stdout, "embedded Kafka (kfake) on %s\n", strings.Join(cfg.Kafka.Brokers, ","))
	} else {
		cfg.Kafka.Brokers = o.brokers
		fmt.Fprintf(g.stdout, "Kafka at %s (topics are auto-created)\n", strings.Join(cfg.Kafka.Brokers, ","))
	}

	// The demo owns its database: each run starts from an empty one, so the
	// monitor's windows hold this run's traffic only.
	cfg.ClickHouse.Database = "seer_demo"
	if conn, err := drift.Open(ctx, cfg.ClickHouse); err == nil {
		err = drift.DropDatabase(ctx, conn, cfg.ClickHouse.Database)
		conn.Close()
		if err != nil {
			return fmt.Errorf("resetting the demo database: %w", err)
		}
	}
	a, err := buildApp(ctx, cfg, quiet, prometheus.NewRegistry())
	if err != nil {
		return fmt.Errorf("demo needs Redis and ClickHouse (run `make stack-up` or `make demo`): %w", err)
	}
	defer a.Close()
	fmt.Fprintf(g.stdout, "model %s %s (sha256 %s…) from %s\n", a.manifest.Name, a.manifest.Version, a.manifest.Artifact.SHA256[:12], cfg.Scoring.Package)

	gen, err := loadtest.NewGenerator(a.schema, a.manifest, o.users, o.seed)
	if err != nil {
		return err
	}
	// Traffic replays the package's held-out examples, so that it keeps the
	// correlations of real data: no drift fires where none is injected.
	exs, err := schemas.LoadExamples(a.manifest.Dir)
	if err != nil {
		return err
	}
	if len(exs) > 0 {
		if err := gen.UseExamples(exs); err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "traffic replays the %d held-out examples of %s\n", len(exs), a.manifest.Dir)
	}
	features := gen.FeatureRows(20)
	if err := a.store.PutViews(ctx, features, time.Now(), time.Hour); err != nil {
		return err
	}
	for view, byUser := range features {
		fmt.Fprintf(g.stdout, "loaded %d users into feature view %s (1 in 20 left out on purpose)\n", len(byUser), view)
	}

	// The monitor runs beside the pipeline with short windows, so that the
	// drift and the stale features injected in the middle third of the run
	// raise alerts that then resolve.
	mcfg := demoMonitorConfig(o.duration)
	alerts := &alertLog{start: time.Now()}
	lease := monitor.NewLease(a.rdb, cfg.Redis.KeyPrefix+"-"+run, "monitor", run, mcfg.LeaseTTL)
	ch := notify.ClickHouse{Conn: a.ch, Database: cfg.ClickHouse.Database}
	mon, closeMon, err := newMonitor(cfg, mcfg, window.New(a.ch, cfg.ClickHouse.Database, a.manifest), lease, []notify.Sink{alerts, ch}, ch, quiet)
	if err != nil {
		return err
	}
	defer closeMon()
	mctx, stopMonitor := context.WithCancel(ctx)
	defer stopMonitor()
	monDone := make(chan error, 1)
	go func() { monDone <- mon.Run(mctx) }()

	pctx, stopPipeline := context.WithCancel(ctx)
	defer stopPipeline()
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- a.Run(pctx) }()

	// The traffic is loadtest's open-loop engine; in the middle third
	// amount drifts by 1σ and the features go stale.
	fmt.Fprintf(g.stdout, "sending %d events/s for %s (%.1f%% malformed) to %s\n", o.rate, o.duration, 100*o.malformed, cfg.Kafka.InputTopic)
	phase := 0
	rep, runErr := loadtest.Run(ctx, loadtest.RunConfig{
		InputTopic: cfg.Kafka.InputTopic, PredictionsTopic: cfg.Kafka.PredictionsTopic, DLQTopic: cfg.Kafka.DLQTopic,
		Profile:        loadtest.Profile{Kind: "constant", Rate: float64(o.rate), Duration: o.duration},
		MalformedShare: o.malformed, DrainTimeout: 30 * time.Second, Partitions: 4, Progress: g.stderr,
		ClientOpts: kafkaOpts(cfg.Kafka, "demo", quiet, nil),
		EachSecond: func(el time.Duration) error {
			switch {
			case phase == 0 && el >= o.duration/3:
				phase = 1
				gen.SetShift(map[string]float64{"amount": 1})
				fmt.Fprintf(g.stderr, "\n[%3.0fs] injecting drift (amount +1σ) and stale features (2 min old)\n", el.Seconds())
				return a.store.PutViews(ctx, features, time.Now().Add(-2*time.Minute), time.Hour)
			case phase == 1 && el >= 2*o.duration/3:
				phase = 2
				gen.SetShift(nil)
				fmt.Fprintf(g.stderr, "\n[%3.0fs] back to normal traffic and fresh features\n", el.Seconds())
				return a.store.PutViews(ctx, features, time.Now(), time.Hour)
			}
			return nil
		},
	}, gen)
	if rep == nil {
		return fmt.Errorf("demo traffic: %w", runErr)
	}
	// Let the monitor close the last window.
	wait := mcfg.Window + mcfg.Lateness + mcfg.LeaseTTL
	fmt.Fprintf(g.stderr, "waiting %s for the monitor to evaluate the last window\n", wait)
	select {
	case <-time.After(wait):
	case <-ctx.Done():
	}
	stopMonitor()
	if err := <-monDone; err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	stopPipeline()
	if err := <-pipeDone; err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}

	s := DemoSummary{
		RunID: run, Brokers: strings.Join(cfg.Kafka.Brokers, ","), InputTopic: cfg.Kafka.InputTopic,
		Model: a.manifest.Name, ModelVersion: a.manifest.Version,
		DurationSeconds: rep.DurationS, TargetRate: o.rate,
		EventsIn: rep.Sent, MalformedSent: rep.Malformed,
		PredictionsOut: rep.Predicted, DLQRecords: rep.DeadLettered, DLQByReason: rep.DLQByReason,
		LatencyP50Ms: rep.Latency.P50, LatencyP99Ms: rep.Latency.P99, LatencyMaxMs: rep.Latency.Max,
		Alerts:         alerts.entries(),
		AnalystQueries: inferencelog.ExampleQueries(cfg.ClickHouse.Database, cfg.Kafka.InputTopic),
	}
	qctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	counts, err := a.sink.CountTopic(qctx, cfg.Kafka.InputTopic)
	if err != nil {
		return err
	}
	s.ClickHouseRows, s.FeatureMisses, s.ClickHouseDLQ = int64(counts.Rows), int64(counts.FeatureMisses), int64(counts.DeadLetters)
	printDemoSummary(g, s)
	if o.summaryJSON != "" {
		b, _ := json.MarshalIndent(s, "", "  ")
		if err := os.WriteFile(o.summaryJSON, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("--summary-json: %w", err)
		}
		fmt.Fprintf(g.stdout, "summary written to %s\n", o.summaryJSON)
	}
	var problems []string
	if runErr != nil {
		problems = append(problems, runErr.Error())
	}
	if s.PredictionsOut+s.DLQRecords != s.EventsIn {
		problems = append(problems, fmt.Sprintf("%d events in but %d predictions + %d dead letters out", s.EventsIn, s.PredictionsOut, s.DLQRecords))
	}
	if s.ClickHouseRows != s.PredictionsOut {
		problems = append(problems, fmt.Sprintf("%d predictions but %d inference_log rows", s.PredictionsOut, s.ClickHouseRows))
	}
	if len(problems) > 0 {
		return fmt.Errorf("demo finished with gaps: %s", strings.Join(problems, "; "))
	}
	return nil
}

func printDemoSummary(g *globals, s DemoSummary) {
	w := g.stdout
	fmt.Fprintf(w, "\n== seer demo summary (run %s)\n", s.RunID)
	fmt.Fprintf(w, "  model              %s %s\n", s.Model, s.ModelVersion)
	fmt.Fprintf(w, "  duration           %.1fs at %d events/s target\n", s.DurationSeconds, s.TargetRate)
	fmt.Fprintf(w, "  events in          %d (%d malformed on purpose)\n", s.EventsIn, s.MalformedSent)
	fmt.Fprintf(w, "  predictions out    %d\n", s.PredictionsOut)
	reasons := make([]string, 0, len(s.DLQByReason))
	for r, n := range s.DLQByReason {
		reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
	}
	sort.Strings(reasons)
	fmt.Fprintf(w, "  DLQ records        %d (%s)\n", s.DLQRecords, strings.Join(reasons, ", "))
	fmt.Fprintf(w, "  ClickHouse rows    %d inference_log, %d dead_letters\n", s.ClickHouseRows, s.ClickHouseDLQ)
	fmt.Fprintf(w, "  feature misses     %d predictions scored with flagged default features\n", s.FeatureMisses)
	fmt.Fprintf(w, "  latency (e2e)      p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", s.LatencyP50Ms, s.LatencyP99Ms, s.LatencyMaxMs)
	fmt.Fprintf(w, "  alerts             %d state changes (seer monitor, drift injected in the middle third)\n", len(s.Alerts))
	for _, a := range s.Alerts {
		if a.State == alert.Pending.String() {
			continue
		}
		fmt.Fprintf(w, "    [%3.0fs] %-9s %-16s %-20s value %.4g\n", a.AtSeconds, a.State, a.Rule, a.Feature, a.Value)
	}
	fmt.Fprintf(w, "  (traffic replays held-out examples; 1 user in 20 has no features, so their scores use the\n"+
		"   model's defaults)\n")
	fmt.Fprintf(w, "\nTry these in clickhouse-client:\n")
	for _, q := range s.AnalystQueries {
		fmt.Fprintf(w, "  %s;\n", q)
	}
}
