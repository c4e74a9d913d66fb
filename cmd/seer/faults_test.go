package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/loadtest"
	"github.com/seer-ml/seer/schemas"
)

// predictionWatcher counts predictions per event id on a topic.
type predictionWatcher struct {
	mu   sync.Mutex
	seen map[string]int
	stop func()
	done chan struct{}
}

func watchPredictions(t *testing.T, brokers, topic string) *predictionWatcher {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &predictionWatcher{seen: map[string]int{}, done: make(chan struct{})}
	w.stop = func() { cancel(); <-w.done; cl.Close() }
	t.Cleanup(w.stop)
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			w.mu.Lock()
			fs.EachRecord(func(r *kgo.Record) {
				var p schemas.Prediction
				if json.Unmarshal(r.Value, &p) == nil {
					w.seen[p.EventID]++
				}
			})
			w.mu.Unlock()
		}
	}()
	return w
}

func (w *predictionWatcher) distinct() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.seen)
}

func (w *predictionWatcher) waitFor(t *testing.T, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for w.distinct() < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := w.distinct(); got < n {
		t.Fatalf("%d distinct predictions after %v, want %d", got, within, n)
	}
}

// check fails the test for each of ids without a prediction and returns
// how many predictions were duplicates.
func (w *predictionWatcher) check(t *testing.T, ids []string) (dups int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range ids {
		if w.seen[id] == 0 {
			t.Errorf("event %s has no prediction", id)
		}
		dups += max(w.seen[id]-1, 0)
	}
	return dups
}

// helperApp builds the test's own app, which prepares features and reads
// ClickHouse; its Kafka client must not join serve's group, so it gets a
// group of its own and is closed. The app's database and keys go when the
// test ends.
func helperApp(ctx context.Context, t *testing.T, cfg Config) *app {
	t.Helper()
	helper := cfg
	helper.Kafka.Group += "-helper"
	a, err := buildApp(ctx, helper, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a.pipeline.Client().Close()
	t.Cleanup(func() { cleanupApp(cfg, a) })
	return a
}

func produceValid(ctx context.Context, t *testing.T, admin *kgo.Client, topic string, gen *loadtest.Generator, n int) []string {
	t.Helper()
	var ids []string
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		ev := gen.Next(time.Now(), false)
		ids = append(ids, ev.ID)
		recs = append(recs, &kgo.Record{Topic: topic, Key: ev.Key, Value: ev.Value})
	}
	if err := admin.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func countRows(ctx context.Context, t *testing.T, a *app, db string) (final, distinct uint64) {
	t.Helper()
	if err := a.ch.QueryRow(ctx, "SELECT count() FROM "+db+".inference_log FINAL").Scan(&final); err != nil {
		t.Fatal(err)
	}
	if err := a.ch.QueryRow(ctx, "SELECT uniqExact(prediction_id) FROM "+db+".inference_log").Scan(&distinct); err != nil {
		t.Fatal(err)
	}
	return final, distinct
}

// TestClickHouseOutage stops ClickHouse in the middle of a run: scoring
// goes on (rows are spooled to disk), and once ClickHouse is back every
// row arrives, once in counts.
func TestClickHouseOutage(t *testing.T) {
	cfg, admin := integrationConfig(t)
	ch := testenv.StartClickHouse(t)
	cfg.ClickHouse.Addr = ch.Addr
	cfg.ClickHouse.FlushInterval = 50 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a, err := buildApp(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupApp(cfg, a) })
	gen, _ := loadFeatures(ctx, t, a)
	w := watchPredictions(t, cfg.Kafka.Brokers[0], cfg.Kafka.PredictionsTopic)

	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(pctx) }()

	produceValid(ctx, t, admin, cfg.Kafka.InputTopic, gen, 300)
	w.waitFor(t, 300, time.Minute)
	ch.Stop()
	produceValid(ctx, t, admin, cfg.Kafka.InputTopic, gen, 300)
	w.waitFor(t, 600, time.Minute) // scoring does not wait for ClickHouse
	deadline := time.Now().Add(20 * time.Second)
	for a.writer.Spool().Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if a.writer.Spool().Len() == 0 {
		t.Fatal("nothing was spooled while ClickHouse was down")
	}
	t.Logf("spooled while ClickHouse was down: %d batches, %d bytes", a.writer.Spool().Len(), a.writer.Spool().Bytes())
	ch.Start()
	for deadline := time.Now().Add(60 * time.Second); a.writer.Spool().Len() > 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := a.writer.Spool().Len(); n != 0 {
		t.Fatalf("spool still holds %d batches after ClickHouse returned", n)
	}
	final, distinct := countRows(ctx, t, a, cfg.ClickHouse.Database)
	if final != 600 || distinct != 600 {
		t.Errorf("inference_log FINAL = %d rows, %d distinct prediction ids; want 600 and 600", final, distinct)
	}
}

// TestServeSIGKILL kills `seer serve` with SIGKILL mid-stream and starts it
// again: every event ends up with a prediction and, after deduplication by
// id, exactly one log row; none is missing.
func TestServeSIGKILL(t *testing.T) {
	cfg, admin := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a := helperApp(ctx, t, cfg)
	gen, _ := loadFeatures(ctx, t, a)

	procs := newServeProcs(t, cfg, "SEER_KAFKA_MAX_POLL_RECORDS=50", "SEER_CLICKHOUSE_SPOOL_DIR="+t.TempDir())
	w := watchPredictions(t, cfg.Kafka.Brokers[0], cfg.Kafka.PredictionsTopic)
	serve := procs.start()

	const total = 3000
	var ids []string
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; i < total/100; i++ {
			ids = append(ids, produceValid(ctx, t, admin, cfg.Kafka.InputTopic, gen, 100)...)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	deadline := time.Now().Add(90 * time.Second)
	for w.distinct() < 500 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := serve.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	serve.Wait()
	killedAt := w.distinct()
	serve = procs.start()
	<-produced
	w.waitFor(t, total, 2*time.Minute)
	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Fatalf("serve exited with %v after SIGTERM; log:\n%s", err, procs.log())
	}

	dups := w.check(t, ids)
	t.Logf("killed after %d predictions; %d events replayed (duplicate predictions, same ids)", killedAt, dups)
	var final, distinct uint64
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if final, distinct = countRows(ctx, t, a, cfg.ClickHouse.Database); final >= total {
			break
		}
	}
	if final != total || distinct != total {
		t.Errorf("inference_log FINAL = %d rows, %d distinct prediction ids; want %d and %d", final, distinct, total, total)
	}
}

// serveProcs runs `seer serve` processes built from this package, on a
// test's config, the way an operator runs them: each its own process, all
// logging to one file that the test prints when it fails.
type serveProcs struct {
	t    *testing.T
	bin  string
	env  []string
	logs string
}

// newServeProcs builds seer and prepares the environment of cfg; extra
// SEER_* settings (KEY=value) come last and win.
func newServeProcs(t *testing.T, cfg Config, extra ...string) *serveProcs {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "seer")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	env := append(os.Environ(),
		"SEER_HTTP=127.0.0.1:0",
		"SEER_KAFKA_BROKERS="+cfg.Kafka.Brokers[0],
		"SEER_KAFKA_GROUP="+cfg.Kafka.Group,
		"SEER_KAFKA_INPUT_TOPIC="+cfg.Kafka.InputTopic,
		"SEER_KAFKA_PREDICTIONS_TOPIC="+cfg.Kafka.PredictionsTopic,
		"SEER_KAFKA_DLQ_TOPIC="+cfg.Kafka.DLQTopic,
		"SEER_KAFKA_SESSION_TIMEOUT=6s", // a killed member's partitions free up sooner
		"SEER_REDIS_ADDR="+cfg.Redis.Addr,
		"SEER_REDIS_KEY_PREFIX="+cfg.Redis.KeyPrefix,
		"SEER_CLICKHOUSE_ADDR="+cfg.ClickHouse.Addr,
		"SEER_CLICKHOUSE_DATABASE="+cfg.ClickHouse.Database,
		"SEER_ONNXRUNTIME_LIB="+cfg.OnnxRuntimeLib,
		"SEER_SCORING_PACKAGE="+cfg.Scoring.Package,
	)
	p := &serveProcs{t: t, bin: bin, env: append(env, extra...), logs: filepath.Join(t.TempDir(), "serve.log")}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serve log:\n%s", p.log())
		}
	})
	return p
}

// start starts one `seer serve` with extra settings of its own; the test's
// cleanup kills it if it still runs.
func (p *serveProcs) start(extra ...string) *exec.Cmd {
	p.t.Helper()
	lf, err := os.OpenFile(p.logs, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	cmd := exec.Command(p.bin, "serve")
	cmd.Env, cmd.Stdout, cmd.Stderr = append(slices.Clone(p.env), extra...), lf, lf
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		lf.Close()
	})
	return cmd
}

func (p *serveProcs) log() string {
	b, _ := os.ReadFile(p.logs)
	return string(b)
}
