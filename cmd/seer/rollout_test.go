package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/scoring/registry"
)

// TestRolloutsEndToEnd runs seer demo against the real Kafka broker, Redis,
// ClickHouse and ONNX Runtime: serve follows the registry and the monitor's
// controller judges every step from ClickHouse. The bad candidate is rolled
// back by a failed gate, whose figures the registry event carries, within
// one monitor window of its step falling due, and never reaches a canary;
// the better candidate goes through shadow, 25% and 100% and is promoted;
// every event has exactly one prediction; shadow rows are logged apart.
func TestRolloutsEndToEnd(t *testing.T) {
	cfg, admin := integrationConfig(t)
	cfg.Registry.Store = "file://" + t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	summary := filepath.Join(t.TempDir(), "summary.json")
	o := demoOptions{brokers: cfg.Kafka.Brokers, duration: 60 * time.Second, rate: 500, malformed: 0.02, users: 5000, seed: 3,
		stepDuration: 4 * time.Second, database: cfg.ClickHouse.Database, summaryJSON: summary,
		candidate: filepath.Join("..", "..", "deploy", "examples", "card-fraud-1.1.0"),
		bad:       filepath.Join("..", "..", "deploy", "examples", "card-fraud-1.2.0-rc.1")}
	var out syncBuffer // the load's progress and the demo's logs write from their own goroutines
	g := &globals{stdout: &out, stderr: &out}
	err := runDemo(ctx, g, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), o)
	var s DemoSummary
	if b, rerr := os.ReadFile(summary); rerr == nil {
		json.Unmarshal(b, &s)
	}
	t.Cleanup(func() {
		adm := kadm.NewClient(admin)
		base := "seer-demo-" + s.RunID
		adm.DeleteTopics(context.Background(), base+".events", base+".predictions", base+".dlq", base+".registry", registry.LoadsTopic(base+".registry"))
		if a, err := buildApp(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), nil); err == nil {
			cleanupApp(cfg, a)
		}
	})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}

	var rolledBack, promoted *DemoRolloutEvent
	for i, e := range s.Rollouts {
		switch {
		case e.Version == "1.2.0-rc.1" && e.Type == string(registry.RolloutRolledBack):
			rolledBack = &s.Rollouts[i]
		case e.Version == "1.1.0" && e.Type == string(registry.RolloutPromoted):
			promoted = &s.Rollouts[i]
		}
	}
	if rolledBack == nil || rolledBack.Gate == "" || rolledBack.Step != registry.ShadowStep {
		t.Fatalf("the bad candidate: %+v; want rolled back at the shadow step by a gate", rolledBack)
	}
	if _, ok := rolledBack.Figures[rolledBack.Gate]; !ok && rolledBack.Gate != "min_samples" {
		t.Errorf("the rollback names gate %s but not its figure: %v", rolledBack.Gate, rolledBack.Figures)
	}
	if promoted == nil || s.ModelVersion != "1.1.0" {
		t.Fatalf("1.1.0: %+v, champion %s at the end; want promoted", promoted, s.ModelVersion)
	}
	if s.Routes["1.2.0-rc.1/shadow"] == 0 || s.Routes["1.2.0-rc.1/canary"] != 0 || s.Routes["1.1.0/canary"] == 0 || s.Routes["1.1.0/production"] == 0 {
		t.Errorf("rows by version and route %v: want rc.1 in shadow only, 1.1.0 as canary then production", s.Routes)
	}
	if s.Duplicates != 0 || s.PredictionsOut+s.DLQRecords != s.EventsIn {
		t.Errorf("%d events in, %d predictions (%d duplicates), %d dead letters", s.EventsIn, s.PredictionsOut, s.Duplicates, s.DLQRecords)
	}
	// From the registry: when the bad candidate's step fell due (every
	// instance had loaded it and the step was held) and when it was rolled back.
	reg, err := registry.NewLog(kafkaOpts(cfg.Kafka, "test", slog.New(slog.NewTextHandler(io.Discard, nil)), nil), s.RegistryTopic)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	st, _, err := reg.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var started, loaded, back time.Time
	var rollout string
	for _, e := range st.Models["card-fraud"].History {
		switch {
		case e.Type == registry.RolloutStarted && e.Version == "1.2.0-rc.1":
			started, rollout = e.Time, e.Rollout
		case e.Type == registry.VersionLoaded && rollout != "" && e.Rollout == rollout && e.Time.After(loaded):
			loaded = e.Time
		case e.Type == registry.RolloutRolledBack && e.Rollout == rollout:
			back = e.Time
		}
	}
	if loaded.IsZero() || back.IsZero() {
		t.Fatalf("registry history lacks the load (%v) or the rollback (%v) of rollout %s", loaded, back, rollout)
	}
	due := loaded.Add(o.stepDuration)
	window := demoMonitorConfig(o.duration).Window
	t.Logf("bad candidate: started %s, loaded everywhere after %s, step due %s, rolled back %s after it fell due (gate %s, figures %v)",
		started.Format(time.RFC3339Nano), loaded.Sub(started), due.Format(time.RFC3339Nano), back.Sub(due), rolledBack.Gate, rolledBack.Figures)
	if back.Before(due) || back.Sub(due) > window {
		t.Errorf("rolled back %s after the step fell due; want within one monitor window (%s) and not before", back.Sub(due), window)
	}
	perf := map[string]DemoPerformance{}
	for _, p := range s.Performance {
		perf[p.Version] = p
	}
	if s.LabelsSent == 0 || s.LabelsIngested != s.LabelsSent || perf["1.1.0"].Labeled == 0 || perf["1.1.0"].AUC < 0.7 || perf["1.2.0-rc.1 (shadow)"].AUC > perf["1.1.0"].AUC {
		t.Errorf("labels %d sent, %d ingested; performance %+v: want 1.1.0 measured on labels, the bad candidate's shadow worse", s.LabelsSent, s.LabelsIngested, s.Performance)
	}
	// The model dashboard's queries over the run's database.
	conn, err := drift.Open(ctx, cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// The analyst queries the demo prints run and find the run's rows; the
	// last reads the first input by name, through model_inputs.
	for i, q := range s.AnalystQueries {
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Errorf("analyst query %d: %v\n%s", i+1, err, q)
			continue
		}
		n := 0
		for ; rows.Next(); n++ {
			if i == len(s.AnalystQueries)-1 {
				var hour time.Time
				var q []float64
				if err := rows.Scan(&hour, &q); err != nil || len(q) != 3 || q[1] <= 0 {
					t.Errorf("the input query's quantiles %v, %v; want the amounts of the run's events", q, err)
				}
			}
		}
		rows.Close()
		if n == 0 {
			t.Errorf("analyst query %d finds no rows:\n%s", i+1, q)
		}
	}

	runDashboardQueries(t, conn, cfg.ClickHouse.Database, "card-fraud", started.Add(-5*time.Minute), time.Now().Add(time.Minute))
	if !strings.Contains(out.String(), "rollout_rolled_back") {
		t.Errorf("the demo's output does not show the rollback:\n%s", out.String())
	}
}

// TestRolloutCommands drives seer rollout on the real broker: start, status
// (text and JSON, with the live serve instances of the group: none here),
// the manual promote and abort, each recorded in the registry; a second
// start while one runs, and a promote with no rollout, are refused.
func TestRolloutCommands(t *testing.T) {
	cfg, admin := integrationConfig(t)
	withRegistry(t, &cfg, admin)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := openRegistry(ctx, cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	store, err := registry.OpenStore(ctx, cfg.Registry.Store)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := demoRegister(ctx, &globals{stdout: io.Discard, stderr: io.Discard}, cfg, reg, store,
		[]string{cfg.Scoring.Package, filepath.Join("..", "..", "deploy", "examples", "card-fraud-1.1.0")}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.SetAlias(ctx, "card-fraud", "champion", "1.0.0", "ci", "first"); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"SEER_KAFKA_BROKERS": cfg.Kafka.Brokers[0], "SEER_KAFKA_GROUP": cfg.Kafka.Group,
		"SEER_REGISTRY_TOPIC": cfg.Registry.Topic, "SEER_REGISTRY_STORE": cfg.Registry.Store} {
		t.Setenv(k, v)
	}
	seer := func(args ...string) (string, error) { return runSeer(ctx, args...) }
	champion := func() string {
		st, _, err := reg.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Models["card-fraud"].Aliases["champion"]
	}

	if out, err := seer("rollout", "start", "card-fraud", "1.1.0", "--steps", "shadow,10,100", "--step-duration", "1h", "--reason", "better AUC"); err != nil || !strings.Contains(out, "shadow → 10 → 100") {
		t.Fatalf("start: %v\n%s", err, out)
	}
	if _, err := seer("rollout", "start", "card-fraud", "1.1.0", "--reason", "again"); err == nil {
		t.Error("a second rollout started while one is in progress")
	}
	out, err := seer("rollout", "status", "card-fraud")
	if err != nil || !strings.Contains(out, "step 1 of 3 (shadow), running") || !strings.Contains(out, "0 live in group") {
		t.Errorf("status: %v\n%s", err, out)
	}
	out, err = seer("rollout", "status", "card-fraud", "-o", "json")
	var st struct {
		Candidate string   `json:"Candidate"`
		StepName  string   `json:"step_name"`
		Live      []string `json:"live_instances"`
		LeftS     int64    `json:"step_left_s"`
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Candidate != "1.1.0" || st.StepName != "shadow" || st.LeftS < 3500 {
		t.Errorf("status -o json: %v %+v\n%s", err, st, out)
	}
	if _, err := seer("rollout", "abort", "card-fraud"); err == nil {
		t.Error("abort without --reason was accepted")
	}
	if out, err := seer("rollout", "abort", "card-fraud", "--reason", "on-call: wrong threshold", "--actor", "oncall"); err != nil || !strings.Contains(out, "rollout_rolled_back") {
		t.Fatalf("abort: %v\n%s", err, out)
	}
	if c := champion(); c != "1.0.0" {
		t.Errorf("champion %s after the abort, want 1.0.0", c)
	}
	if _, err := seer("rollout", "promote", "card-fraud", "--reason", "nothing to promote"); err == nil {
		t.Error("promote with no rollout in progress was accepted")
	}
	if _, err := seer("rollout", "start", "card-fraud", "1.1.0", "--steps", "5,50", "--reason", "again"); err != nil {
		t.Fatal(err)
	}
	if out, err := seer("rollout", "promote", "card-fraud", "--reason", "manual: judged by hand", "--actor", "mlops"); err != nil || !strings.Contains(out, "rollout_promoted") {
		t.Fatalf("promote: %v\n%s", err, out)
	}
	if c := champion(); c != "1.1.0" {
		t.Errorf("champion %s after the promotion, want 1.1.0", c)
	}
	rs, _, err := reg.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var trail []string
	for _, e := range rolloutEvents(rs.Models["card-fraud"]) {
		trail = append(trail, string(e.Type)+" by "+e.Actor)
	}
	if want := "rollout_started by " + actorName("") + ",rollout_rolled_back by oncall,rollout_started by " + actorName("") + ",rollout_promoted by mlops"; strings.Join(trail, ",") != want {
		t.Errorf("audit trail %v, want %s", trail, want)
	}
}

// runSeer runs the seer command line with args and returns what it printed.
func runSeer(ctx context.Context, args ...string) (string, error) {
	var out syncBuffer
	root := newRootCmd(&out, &out)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), err
}
