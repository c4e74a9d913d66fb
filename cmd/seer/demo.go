package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/ksuid"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/alert"
	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/judge"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/drift/monitor"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/featurestore/ingest"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
	"github.com/seer-ml/seer/stream"
)

type demoOptions struct {
	brokers      []string
	candidate    string
	bad          string
	stepDuration time.Duration
	database     string
	secure       bool
	duration     time.Duration
	rate         int
	malformed    float64
	users        int
	summaryJSON  string
	seed         uint64
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
  4. registers the model package (scoring.package), the candidate
     (--candidate) and the bad candidate (--bad-candidate) in a registry of
     its own, points the alias champion at the first, and runs the serve
     pipeline following champion;
  5. sends open-loop traffic at --rate events/s for --duration, with a share of
     malformed events (--malformed) that must land in the DLQ, showing a live
     progress line;
  6. rolls the bad candidate out (shadow, then a 25% canary, each step held
     --step-duration): the monitor's judge fails a gate and rolls it back;
     then rolls the candidate out (shadow, 25%, 100%) and promotes it to
     champion;
  7. prints a summary — events in, predictions out by version and route, DLQ
     records by reason, rows in ClickHouse, p50/p99 end-to-end latency, the
     rollout timeline with each verdict and the failed gate's figures, the
     alerts — and two queries to paste into clickhouse-client, and writes it
     as JSON to --summary-json.

Each run uses its own topics (seer-demo-<run>.*) and starts from an empty
ClickHouse database (--database, seer_demo), so runs never mix. seer
monitor runs alongside with windows of a sixth of --duration, measuring
each version on its own rows. From half the run (once the rollouts have
ended: input drift would fail a canary's drift gate) and for a quarter of
it, the demo shifts amount by one standard deviation and lets the features
go stale, so a drift alert and a freshness alert fire and then resolve.
With --candidate "" and --bad-candidate "" no rollout runs.`,
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
	f.BoolVar(&o.secure, "secure", false, "run on the local stack's secured ports: Kafka SASL_SSL with each role as its own principal under least-privilege ACLs, Redis and ClickHouse over TLS (see docs/security.md)")
	f.StringVar(&o.candidate, "candidate", filepath.Join("deploy", "examples", "card-fraud-1.1.0"), "package rolled out and promoted (\"\": no rollouts)")
	f.StringVar(&o.bad, "bad-candidate", filepath.Join("deploy", "examples", "card-fraud-1.2.0-rc.1"), "package rolled out first and rolled back by the judge (\"\": none)")
	f.DurationVar(&o.stepDuration, "step-duration", 5*time.Second, "how long each rollout step is held before it is judged")
	f.StringVar(&o.database, "database", "seer_demo", "the ClickHouse database the demo owns: dropped and created again at the start")
	f.DurationVar(&o.duration, "duration", 80*time.Second, "how long to send traffic")
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
	RegistryTopic   string           `json:"registry_topic"`
	Model           string           `json:"model"`
	ModelVersion    string           `json:"model_version"`
	DurationSeconds float64          `json:"duration_seconds"`
	TargetRate      int              `json:"target_rate"`
	EventsIn        int64            `json:"events_in"`
	MalformedSent   int64            `json:"malformed_sent"`
	PredictionsOut  int64            `json:"predictions_out"`
	Duplicates      int64            `json:"duplicate_predictions"` // a second prediction for an event (or a foreign one)
	DLQRecords      int64            `json:"dlq_records"`
	DLQByReason     map[string]int64 `json:"dlq_by_reason"`
	ClickHouseRows  int64            `json:"clickhouse_rows"`
	ClickHouseDLQ   int64            `json:"clickhouse_dead_letters"`
	FeatureMisses   int64            `json:"feature_misses"`
	LatencyP50Ms    float64          `json:"latency_p50_ms"`
	LatencyP99Ms    float64          `json:"latency_p99_ms"`
	LatencyMaxMs    float64          `json:"latency_max_ms"`
	Alerts          []DemoAlert      `json:"alerts"`
	// Rollouts is the timeline of every rollout event; Routes counts the
	// inference_log rows per version and route ("1.1.0/canary").
	Rollouts       []DemoRolloutEvent `json:"rollouts"`
	Routes         map[string]uint64  `json:"rows_by_version_and_route"`
	AnalystQueries []string           `json:"analyst_queries"`
	// The delayed labels, and each version's performance over the run:
	// measured on them next to the estimate from its scores alone.
	LabelsSent        int               `json:"labels_sent"`
	LabelsIngested    int               `json:"labels_ingested"`
	LabelDelaySeconds float64           `json:"label_delay_seconds"`
	Performance       []DemoPerformance `json:"performance"`
}

// DemoPerformance is one version's performance over the demo's run
// (production and canary rows).
type DemoPerformance struct {
	Version      string  `json:"version"`
	Labeled      uint64  `json:"labeled"`
	AUC          float64 `json:"auc"`
	EstimatedAUC float64 `json:"estimated_auc"`
	Brier        float64 `json:"brier"`
}

// demoPerformance measures every version that served in the run, as it
// served: production and canary rows together, shadow rows apart (the
// same events as production's).
func demoPerformance(ctx context.Context, a *app, cfg Config, pkgs packages, model string, start time.Time) ([]DemoPerformance, error) {
	from, to := start.Add(-time.Minute), time.Now().Add(time.Minute)
	rows, err := a.ch.Query(ctx, fmt.Sprintf("SELECT DISTINCT model_version, toUInt8(route = 'shadow') FROM %s.inference_log WHERE model = %s AND event_time_ms >= %d AND event_time_ms < %d ORDER BY model_version",
		cfg.ClickHouse.Database, drift.Quote(model), from.UnixMilli(), to.UnixMilli()))
	if err != nil {
		return nil, err
	}
	type served struct {
		version string
		shadow  uint8
	}
	var all []served
	for rows.Next() {
		var v served
		if err := rows.Scan(&v.version, &v.shadow); err != nil {
			rows.Close()
			return nil, err
		}
		all = append(all, v)
	}
	rows.Close()
	p := labels.Performance{Conn: a.ch, Database: cfg.ClickHouse.Database}
	var out []DemoPerformance
	for _, v := range all {
		m, err := pkgs.manifest(ctx, model, v.version)
		if err != nil {
			return nil, err
		}
		routes, name := []schemas.Route{schemas.RouteProduction, schemas.RouteCanary}, v.version
		if v.shadow == 1 {
			routes, name = []schemas.Route{schemas.RouteShadow}, v.version+" (shadow)"
		}
		r, err := p.Measure(ctx, m, routes, from, to, true)
		if err != nil {
			return nil, err
		}
		out = append(out, DemoPerformance{Version: name, Labeled: r.Labeled, AUC: r.Figures["auc"], EstimatedAUC: r.Figures["estimated_auc"], Brier: r.Figures["brier"]})
	}
	return out, nil
}

// DemoRolloutEvent is one step of a rollout's timeline.
type DemoRolloutEvent struct {
	AtSeconds float64            `json:"at_s"`
	Type      string             `json:"type"`
	Version   string             `json:"version"`
	Step      string             `json:"step"` // the step the rollout is at after the event
	Gate      string             `json:"gate,omitempty"`
	Figures   map[string]float64 `json:"figures,omitempty"`
	Reason    string             `json:"reason"`
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
	c.LabelDelay = c.Window // labels come one window after their events
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
	if o.rate < 1 || o.duration <= 0 || o.malformed < 0 || o.malformed > 1 || o.stepDuration <= 0 {
		return errors.New("demo: --rate must be ≥ 1, --duration and --step-duration > 0 and --malformed within [0, 1]")
	}
	run := strings.ToLower(ksuid.New().String()[:10])
	base := "seer-demo-" + run
	cfg.Kafka.InputTopic = base + ".events"
	cfg.Kafka.PredictionsTopic = base + ".predictions"
	cfg.Kafka.DLQTopic = base + ".dlq"
	cfg.Kafka.Group = base
	cfg.Registry.Topic = base + ".registry"
	cfg.Redis.KeyPrefix = "seer-demo"
	// Keep the demo's own output readable: pipeline logs at warn and above.
	quiet := newLogger(g.stderr, "warn", cfg.LogFormat)

	// as is the config a role runs with: on --secure, its own Kafka
	// principal under the ACLs seer acls makes for the demo's topics.
	as := func(string) Config { return cfg }
	if o.secure {
		var err error
		if as, err = secureDemo(ctx, &cfg); err != nil {
			return err
		}
		fmt.Fprintf(g.stdout, "secure: Kafka SASL_SSL %s, each role as its own principal (serve, monitor, registry, loadtest); Redis TLS %s, ClickHouse TLS %s (CA %s)\n",
			cfg.Kafka.Brokers[0], cfg.Redis.Addr, cfg.ClickHouse.Addr, cfg.Kafka.TLS.CAFile)
		o.brokers = cfg.Kafka.Brokers
	}
	if len(o.brokers) == 0 {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.SeedTopics(4, cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic))
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
	cfg.ClickHouse.Database = o.database
	if conn, err := drift.Open(ctx, cfg.ClickHouse); err == nil {
		err = drift.DropDatabase(ctx, conn, cfg.ClickHouse.Database)
		conn.Close()
		if err != nil {
			return fmt.Errorf("resetting the demo database: %w", err)
		}
	}

	// A registry of its own: the champion and the candidates, registered
	// through every gate; serve follows champion.
	pkgs, closePkgs, err := openPackages(ctx, as("registry"), quiet)
	if err != nil {
		return err
	}
	defer closePkgs()
	reg := pkgs.log
	versions, err := demoRegister(ctx, g, cfg, reg, pkgs.store, []string{cfg.Scoring.Package, o.bad, o.candidate})
	if err != nil {
		return err
	}
	champion, bad, good := versions[0], versions[1], versions[2]
	model := champion.Model
	if _, err := reg.SetAlias(ctx, model, "champion", champion.Version, "seer-demo", "the demo's starting champion"); err != nil {
		return err
	}
	cfg.Scoring.Model, cfg.Scoring.Alias = model, "champion"

	a, err := buildApp(ctx, as("serve"), quiet, prometheus.NewRegistry())
	if err != nil {
		return fmt.Errorf("demo needs Redis and ClickHouse (run `make stack-up` or `make demo`): %w", err)
	}
	defer a.Close()
	fmt.Fprintf(g.stdout, "serving %s %s (@champion, sha256 %s…)\n", a.manifest.Name, a.manifest.Version, a.manifest.Artifact.SHA256[:12])

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
		fmt.Fprintf(g.stdout, "traffic replays the %d held-out examples of %s %s\n", len(exs), a.manifest.Name, a.manifest.Version)
	}
	// The upstreams: feature updates stream through seer features
	// ingest's loop, and the outcomes of the replayed examples come back
	// labelDelay after their events through seer labels ingest's.
	mcfg := demoMonitorConfig(o.duration)
	sctx, stopStreams := context.WithCancel(ctx)
	defer stopStreams()
	features := gen.FeatureRows(20)
	views := make([]string, 0, len(features))
	for view := range features {
		views = append(views, view)
	}
	ups, err := startDemoStreams(sctx, cfg, a, base, views, mcfg.LabelDelay, quiet)
	if err != nil {
		return err
	}
	defer func() { stopStreams(); ups.close() }()
	gen.OnLabel(ups.label)
	if err := ups.publishFeatures(ctx, features, time.Now()); err != nil {
		return err
	}
	for view, byUser := range features {
		fmt.Fprintf(g.stdout, "streamed %d users' features of view %s through features ingest (1 in 20 left out on purpose)\n", len(byUser), view)
	}

	// The monitor runs beside the pipeline with short windows, so that the
	// drift and the stale features injected later in the run raise alerts
	// that then resolve; its rollout controller judges the rollouts.
	start := time.Now()
	alerts := &alertLog{start: start}
	ch := notify.ClickHouse{Conn: a.ch, Database: cfg.ClickHouse.Database}
	sinks := []notify.Sink{alerts, ch}
	monPkgs, closeMonPkgs, err := openPackages(ctx, as("monitor"), quiet)
	if err != nil {
		return err
	}
	defer closeMonPkgs()
	measured, err := monitorVersions(cfg, a.ch, monPkgs, quiet)
	if err != nil {
		return err
	}
	group, err := kgo.NewClient(kafkaOpts(as("monitor").Kafka, "demo-monitor", quiet, nil)...)
	if err != nil {
		return err
	}
	defer group.Close()
	mon, err := monitor.New(mcfg, measured, monitor.NewLease(a.rdb, cfg.Redis.KeyPrefix+"-"+run, "monitor", run, mcfg.LeaseTTL), sinks, ch,
		stream.NewGroupLag(group, cfg.Kafka.Group).Total, quiet, time.Now)
	if err != nil {
		return err
	}
	cfg.Rollout.Interval = time.Second
	gates := cfg.RolloutGates
	gates.MinSamples = 300
	ctl := newController(cfg, model, monPkgs.log, judge.Judge{Conn: a.ch, Database: cfg.ClickHouse.Database, Config: gates}, monPkgs, group, sinks, quiet)
	ctl.Actor = "seer-demo-monitor"
	mctx, stopMonitor := context.WithCancel(ctx)
	defer stopMonitor()
	monDone, ctlDone, mirrorDone := make(chan error, 1), make(chan error, 1), make(chan error, 1)
	go func() { monDone <- mon.Run(mctx) }()
	go func() { ctlDone <- ctl.Run(mctx) }()
	go func() { // the registry's events in ClickHouse (model_events), for analysts
		err := monPkgs.log.MirrorLoop(mctx, registry.Mirror{Conn: a.ch, Database: cfg.ClickHouse.Database}, func(err error) {
			quiet.Warn("mirroring the registry to ClickHouse failed; retrying with the next events", "err", err)
		})
		if mctx.Err() != nil {
			err = nil
		}
		mirrorDone <- err
	}()

	pctx, stopPipeline := context.WithCancel(ctx)
	defer stopPipeline()
	pipeDone := make(chan error, 1)
	go func() { pipeDone <- a.Run(pctx) }()

	// The traffic is loadtest's open-loop engine. Meanwhile the bad
	// candidate and then the good one are rolled out; from half to three
	// quarters of the run amount drifts by 1σ and the features go stale.
	fmt.Fprintf(g.stdout, "sending %d events/s for %s (%.1f%% malformed) to %s\n", o.rate, o.duration, 100*o.malformed, cfg.Kafka.InputTopic)
	plan := &demoRollouts{log: reg, model: model, stepDuration: o.stepDuration, out: g.stderr}
	if bad != nil {
		plan.queue = append(plan.queue, demoRollout{version: bad.Version, steps: []string{registry.ShadowStep, "25"}, reason: "the bad candidate (trained on shuffled labels)"})
	}
	if good != nil {
		plan.queue = append(plan.queue, demoRollout{version: good.Version, steps: []string{registry.ShadowStep, "25", "100"}, reason: "the better candidate"})
	}
	phase, drifted := 0, time.Duration(0)
	rep, runErr := loadtest.Run(ctx, loadtest.RunConfig{
		InputTopic: cfg.Kafka.InputTopic, PredictionsTopic: cfg.Kafka.PredictionsTopic, DLQTopic: cfg.Kafka.DLQTopic,
		Profile:        loadtest.Profile{Kind: "constant", Rate: float64(o.rate), Duration: o.duration},
		MalformedShare: o.malformed, DrainTimeout: 30 * time.Second, Partitions: 4, Progress: g.stderr,
		ClientOpts: kafkaOpts(as("loadtest").Kafka, "demo", quiet, nil),
		EachSecond: func(el time.Duration) error {
			if el >= 2*time.Second {
				if err := plan.step(ctx, el); err != nil {
					return err
				}
			}
			if err := ups.sendDue(ctx, time.Now(), false); err != nil {
				return err
			}
			switch {
			// Input drift moves a canary's scores too (its score_drift gate
			// would fail): the drift waits for the rollouts to end.
			case phase == 0 && el >= o.duration/2 && plan.idle():
				phase, drifted = 1, el
				gen.SetShift(map[string]float64{"amount": 1})
				fmt.Fprintf(g.stderr, "\n[%3.0fs] injecting drift (amount +1σ) and stale features (2 min old)\n", el.Seconds())
				// A fault, not an update: written straight over the newer
				// values, which features ingest would never do.
				return ingest.New(a.rdb, a.store.Prefix()).PutViews(ctx, features, time.Now().Add(-2*time.Minute), time.Hour)
			case phase == 1 && el >= drifted+o.duration/4:
				phase = 2
				gen.SetShift(nil)
				fmt.Fprintf(g.stderr, "\n[%3.0fs] back to normal traffic and fresh features\n", el.Seconds())
				return ups.publishFeatures(ctx, features, time.Now())
			}
			return nil
		},
	}, gen)
	if rep == nil {
		return fmt.Errorf("demo traffic: %w", runErr)
	}
	// The last labels: the monitor's last windows mature with them.
	if err := ups.sendDue(ctx, time.Now(), true); err != nil {
		return err
	}
	// Let the monitor close the last window.
	wait := mcfg.Window + mcfg.Lateness + mcfg.LeaseTTL
	fmt.Fprintf(g.stderr, "waiting %s for the monitor to evaluate the last window\n", wait)
	select {
	case <-time.After(wait):
	case <-ctx.Done():
	}
	stopMonitor()
	if err := errors.Join(<-monDone, <-ctlDone, <-mirrorDone); err != nil {
		return fmt.Errorf("monitor: %w", err)
	}
	stopPipeline()
	if err := <-pipeDone; err != nil {
		return fmt.Errorf("pipeline: %w", err)
	}

	st, _, err := reg.Read(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	s := DemoSummary{
		RunID: run, Brokers: strings.Join(cfg.Kafka.Brokers, ","), InputTopic: cfg.Kafka.InputTopic, RegistryTopic: cfg.Registry.Topic,
		Model: model, ModelVersion: st.Models[model].Aliases["champion"],
		DurationSeconds: rep.DurationS, TargetRate: o.rate,
		EventsIn: rep.Sent, MalformedSent: rep.Malformed,
		PredictionsOut: rep.Predicted, Duplicates: rep.DuplicatesOrFor, DLQRecords: rep.DeadLettered, DLQByReason: rep.DLQByReason,
		LatencyP50Ms: rep.Latency.P50, LatencyP99Ms: rep.Latency.P99, LatencyMaxMs: rep.Latency.Max,
		Alerts:         alerts.entries(),
		Rollouts:       rolloutTimeline(st.Models[model], start),
		AnalystQueries: inferencelog.ExampleQueries(cfg.ClickHouse.Database, cfg.Kafka.InputTopic, a.manifest.Inputs[0].Name),
	}
	qctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	counts, err := a.sink.CountTopic(qctx, cfg.Kafka.InputTopic)
	if err != nil {
		return err
	}
	s.ClickHouseRows, s.FeatureMisses, s.ClickHouseDLQ, s.Routes = int64(counts.Rows), int64(counts.FeatureMisses), int64(counts.DeadLetters), counts.Routes
	s.LabelsSent, s.LabelsIngested, s.LabelDelaySeconds = ups.sent, int(ups.labelled.Load()), mcfg.LabelDelay.Seconds()
	if s.Performance, err = demoPerformance(qctx, a, cfg, monPkgs, model, start); err != nil {
		return err
	}
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
	if s.Duplicates > 0 {
		problems = append(problems, fmt.Sprintf("%d events had a second prediction", s.Duplicates))
	}
	if s.LabelsIngested != s.LabelsSent {
		problems = append(problems, fmt.Sprintf("%d labels sent but %d ingested", s.LabelsSent, s.LabelsIngested))
	}
	if s.ClickHouseRows != s.PredictionsOut {
		problems = append(problems, fmt.Sprintf("%d predictions but %d inference_log rows", s.PredictionsOut, s.ClickHouseRows))
	}
	if bad != nil && !s.ended(bad.Version, registry.RolloutRolledBack) {
		problems = append(problems, fmt.Sprintf("the bad candidate %s was not rolled back", bad.Version))
	}
	if good != nil && !s.ended(good.Version, registry.RolloutPromoted) {
		problems = append(problems, fmt.Sprintf("the candidate %s was not promoted", good.Version))
	}
	if len(problems) > 0 {
		return fmt.Errorf("demo finished with gaps: %s", strings.Join(problems, "; "))
	}
	return nil
}

// ended reports whether the timeline has version's rollout ending with t.
func (s DemoSummary) ended(version string, t registry.EventType) bool {
	for _, e := range s.Rollouts {
		if e.Version == version && e.Type == string(t) {
			return true
		}
	}
	return false
}

// demoRegister registers each package dir ("" skipped, nil in its place)
// through every gate, in order.
func demoRegister(ctx context.Context, g *globals, cfg Config, reg *registry.Log, store *registry.Store, dirs []string) ([]*registry.Event, error) {
	schema, err := schemas.LoadInputSchema(cfg.Kafka.InputSchema)
	if err != nil {
		return nil, fmt.Errorf("kafka.input_schema: %w", err)
	}
	if err := scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
		return nil, err
	}
	gates := registry.Gates{Schema: schema, Scoring: cfg.Scoring}
	out := make([]*registry.Event, len(dirs))
	for i, dir := range dirs {
		if dir == "" {
			continue
		}
		e, _, err := registry.Register(ctx, reg, store, gates, dir, "seer-demo", "registered by seer demo")
		if err != nil {
			return nil, fmt.Errorf("registering %s: %w", dir, err)
		}
		out[i] = &e
		fmt.Fprintf(g.stdout, "registered %s %s from %s (digest %s…)\n", e.Model, e.Version, dir, e.Digest[:12])
	}
	return out, nil
}

// demoRollout is one rollout the demo starts.
type demoRollout struct {
	version, reason string
	steps           []string
}

// demoRollouts starts the queued rollouts one after the other and prints
// each change of the one in progress.
type demoRollouts struct {
	log          *registry.Log
	model        string
	stepDuration time.Duration
	out          io.Writer
	queue        []demoRollout
	seen         int  // rollout events already printed
	active       bool // a rollout is in progress
}

func (d *demoRollouts) step(ctx context.Context, el time.Duration) error {
	st, _, err := d.log.Read(ctx)
	if err != nil {
		return err
	}
	m := st.Models[d.model]
	for _, e := range rolloutEvents(m)[d.seen:] {
		d.seen++
		fmt.Fprintf(d.out, "\n[%3.0fs] %s %s (now at step %s): %s\n", el.Seconds(), e.Type, e.Version, stepName(e), e.Reason)
	}
	if d.active = m.Rollout.Active(); d.active || len(d.queue) == 0 {
		return nil
	}
	d.active = true
	r := d.queue[0]
	d.queue = d.queue[1:]
	_, err = d.log.StartRollout(ctx, d.model, r.version, "champion", r.steps, d.stepDuration, "seer-demo", r.reason)
	return err
}

// idle reports whether every queued rollout has ended.
func (d *demoRollouts) idle() bool { return len(d.queue) == 0 && !d.active }

// rolloutEvents returns the rollout events in the model's history.
func rolloutEvents(m *registry.Model) []registry.Event {
	var out []registry.Event
	for _, e := range m.History {
		switch e.Type {
		case registry.RolloutStarted, registry.RolloutStepped, registry.RolloutPaused, registry.RolloutPromoted, registry.RolloutRolledBack:
			out = append(out, e)
		}
	}
	return out
}

// rolloutTimeline is the summary's rollout timeline, in seconds from start.
func rolloutTimeline(m *registry.Model, start time.Time) []DemoRolloutEvent {
	var out []DemoRolloutEvent
	for _, e := range rolloutEvents(m) {
		out = append(out, DemoRolloutEvent{AtSeconds: e.Time.Sub(start).Seconds(), Type: string(e.Type), Version: e.Version,
			Step: stepName(e), Gate: e.Gate, Figures: e.Figures, Reason: e.Reason})
	}
	return out
}

// stepName is the step a rollout event leaves its rollout at.
func stepName(e registry.Event) string {
	if e.Step < len(e.Steps) {
		return e.Steps[e.Step]
	}
	return ""
}

func printDemoSummary(g *globals, s DemoSummary) {
	w := g.stdout
	fmt.Fprintf(w, "\n== seer demo summary (run %s)\n", s.RunID)
	fmt.Fprintf(w, "  model              %s, champion at the end: %s\n", s.Model, s.ModelVersion)
	fmt.Fprintf(w, "  duration           %.1fs at %d events/s target\n", s.DurationSeconds, s.TargetRate)
	fmt.Fprintf(w, "  events in          %d (%d malformed on purpose)\n", s.EventsIn, s.MalformedSent)
	fmt.Fprintf(w, "  predictions out    %d (%d duplicates)\n", s.PredictionsOut, s.Duplicates)
	reasons := make([]string, 0, len(s.DLQByReason))
	for r, n := range s.DLQByReason {
		reasons = append(reasons, fmt.Sprintf("%s=%d", r, n))
	}
	sort.Strings(reasons)
	fmt.Fprintf(w, "  DLQ records        %d (%s)\n", s.DLQRecords, strings.Join(reasons, ", "))
	fmt.Fprintf(w, "  ClickHouse rows    %d inference_log (predictions), %d dead_letters\n", s.ClickHouseRows, s.ClickHouseDLQ)
	routes := make([]string, 0, len(s.Routes))
	for k, n := range s.Routes {
		routes = append(routes, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(routes)
	fmt.Fprintf(w, "  rows by version    %s\n", strings.Join(routes, ", "))
	if len(s.Rollouts) > 0 {
		fmt.Fprintf(w, "  rollouts           %d events (judged by seer monitor from ClickHouse)\n", len(s.Rollouts))
	}
	for _, e := range s.Rollouts {
		fmt.Fprintf(w, "    [%3.0fs] %-20s %-11s step %-7s %s\n", e.AtSeconds, e.Type, e.Version, e.Step, e.Reason)
		if len(e.Figures) > 0 {
			names := make([]string, 0, len(e.Figures))
			for k, v := range e.Figures {
				names = append(names, fmt.Sprintf("%s=%.4g", k, v))
			}
			sort.Strings(names)
			fmt.Fprintf(w, "             figures: %s\n", strings.Join(names, ", "))
		}
	}
	fmt.Fprintf(w, "  feature misses     %d predictions scored with flagged default features\n", s.FeatureMisses)
	fmt.Fprintf(w, "  labels             %d sent %.0fs after their events, %d ingested into ClickHouse\n", s.LabelsSent, s.LabelDelaySeconds, s.LabelsIngested)
	for _, p := range s.Performance {
		fmt.Fprintf(w, "    %-20s AUC %.3f measured on %d labels, %.3f estimated from the scores alone; Brier %.4f\n", p.Version, p.AUC, p.Labeled, p.EstimatedAUC, p.Brier)
	}
	fmt.Fprintf(w, "  latency (e2e)      p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", s.LatencyP50Ms, s.LatencyP99Ms, s.LatencyMaxMs)
	fmt.Fprintf(w, "  alerts             %d state changes (seer monitor, drift injected once the rollouts ended)\n", len(s.Alerts))
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

// secureDemo points cfg at the local stack's secured ports
// (deploy/local/stack.sh, docs/security.md) — Kafka's SASL_SSL listener,
// Redis's TLS port with serve's client certificate, ClickHouse's secure
// native port, each verified against the test CA — and, as Kafka's admin,
// creates the demo's topics and the ACLs seer acls makes for them. It
// returns the config of each role: its own SCRAM principal.
func secureDemo(ctx context.Context, cfg *Config) (func(role string) Config, error) {
	cache := os.Getenv("SEER_CACHE_DIR")
	if cache == "" {
		cache = ".cache"
	}
	dir := filepath.Join(cache, "secure")
	port := func(env, def string) string {
		if v := os.Getenv(env); v != "" {
			return v
		}
		return def
	}
	password := func(who string) (schemas.Secret, error) {
		pw, err := schemas.LoadSecret(nil, "", filepath.Join(dir, who+".password"), "--secure")
		if err != nil {
			return "", fmt.Errorf("%w (start the local stack: make stack-up)", err)
		}
		return pw, nil
	}
	pw, err := password("admin")
	if err != nil {
		return nil, err
	}
	ca := filepath.Join(dir, "ca.crt")
	cfg.Kafka.Brokers = []string{"127.0.0.1:" + port("SEER_KAFKA_SASL_PORT", "9094")}
	cfg.Kafka.TLS = schemas.TLS{CAFile: ca}
	cfg.Kafka.SASL = stream.SASL{Mechanism: stream.ScramSHA512, Username: "admin", Password: pw}
	cfg.Redis.Addr = "127.0.0.1:" + port("SEER_REDIS_TLS_PORT", "6380")
	cfg.Redis.TLS = schemas.TLS{CAFile: ca, CertFile: filepath.Join(dir, "serve.crt"), KeyFile: filepath.Join(dir, "serve.key")}
	cfg.ClickHouse.Addr = "127.0.0.1:" + port("SEER_CLICKHOUSE_TLS_PORT", "9440")
	cfg.ClickHouse.TLS = schemas.TLS{CAFile: ca}
	if err := cfg.loadTLS(time.Now()); err != nil {
		return nil, err
	}
	admin, err := kgo.NewClient(kafkaOpts(cfg.Kafka, "demo-admin", slog.New(slog.DiscardHandler), nil)...)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	resp, err := kadm.NewClient(admin).CreateTopics(ctx, 4, -1, nil, cfg.Kafka.InputTopic, cfg.Kafka.PredictionsTopic, cfg.Kafka.DLQTopic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("creating the demo's topics as admin: %w", err)
	}
	if err := applyACLs(ctx, admin, kafkaACLs(*cfg, defaultPrincipals()), io.Discard); err != nil {
		return nil, err
	}
	roles := map[string]schemas.Secret{}
	for _, who := range []string{"serve", "monitor", "registry", "loadtest"} {
		if roles[who], err = password(who); err != nil {
			return nil, err
		}
	}
	// The config as it is when the role starts (the demo sets more later).
	return func(role string) Config {
		c := *cfg
		c.Kafka.SASL.Username, c.Kafka.SASL.Password = role, roles[role]
		return c
	}, nil
}
