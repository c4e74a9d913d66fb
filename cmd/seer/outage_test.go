package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/internal/testenv"
)

// TestDependencyOutages is issue 8's fault suite for serve, on a private
// Kafka broker, a private ClickHouse and the shared Redis behind a
// pausable proxy, so that the shared services stay up for other tests:
//   - /readyz with each dependency down in turn names that one alone and
//     answers within a Kubernetes probe's 1 s timeout;
//   - a broker stop and start under load: serve keeps running, and every
//     event gets its prediction and its ClickHouse row;
//   - during a Redis stall the committed lag and the stall gauge rise
//     although nothing is fetched.
func TestDependencyOutages(t *testing.T) {
	broker := testenv.StartKafka(t)
	chs := testenv.StartClickHouse(t)
	redisProxy := testenv.StartProxy(t, testenv.Redis(t))
	cfg, admin := integrationConfigOn(t, broker.Addr)
	cfg.Redis.Addr = redisProxy.Addr
	cfg.ClickHouse.Addr = chs.Addr
	cfg.ClickHouse.FlushInterval = 50 * time.Millisecond
	cfg.Kafka.MaxPollRecords = 100
	cfg.Kafka.SessionTimeout = 6 * time.Second
	cfg.Kafka.RetryBackoffMax = 500 * time.Millisecond
	cfg.Kafka.LagInterval = 200 * time.Millisecond
	cfg.Scoring.Device = "cuda:0" // no GPU here: serve falls back to the CPU and says so
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	reg := prometheus.NewRegistry()
	a, err := buildApp(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupApp(cfg, a) })
	if n, err := testutil.GatherAndCount(reg, "seer_scoring_device"); err != nil || n != 1 {
		t.Fatalf("seer_scoring_device series: %d, %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP seer_scoring_device The device scoring runs on (value 1): requested is scoring.device, actual differs when the CUDA provider was unavailable and scoring fell back to the CPU.
# TYPE seer_scoring_device gauge
seer_scoring_device{actual="cpu",requested="cuda:0"} 1
`), "seer_scoring_device"); err != nil {
		t.Errorf("the CPU fallback is not reported: %v", err)
	}
	gen, _ := loadFeatures(ctx, t, a)
	var built atomic.Pointer[app]
	built.Store(a)
	srv := httptest.NewServer(httpMux(cfg, reg, &built))
	defer srv.Close()
	probe := &http.Client{Timeout: time.Second} // a Kubernetes probe's default
	readyz := func() (int, string) {
		t.Helper()
		resp, err := probe.Get(srv.URL + "/readyz")
		if err != nil {
			t.Fatalf("/readyz did not answer within the probe's 1 s: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// expectDown checks that /readyz fails and blames only down.
	expectDown := func(down string) {
		t.Helper()
		var code int
		var body string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if code, body = readyz(); code == http.StatusServiceUnavailable && !strings.Contains(body, down+": ok") {
				break
			}
		}
		if code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz = %d with %s down:\n%s", code, down, body)
		}
		for _, dep := range []string{"kafka", "redis", "clickhouse"} {
			if failing := !strings.Contains(body, dep+": ok"); failing != (dep == down) {
				t.Errorf("with %s down, /readyz says %s failing=%v:\n%s", down, dep, failing, body)
			}
		}
	}

	pctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(pctx) }()
	running := func(when string) {
		t.Helper()
		select {
		case err := <-done:
			t.Fatalf("serve's pipeline stopped %s: %v", when, err)
		default:
		}
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := readyz(); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			_, body := readyz()
			t.Fatalf("never ready:\n%s", body)
		}
	}

	// Each dependency down in turn.
	redisProxy.Pause()
	expectDown("redis")
	redisProxy.Resume()
	chs.Stop()
	expectDown("clickhouse")
	chs.Start()
	w := watchPredictions(t, broker.Addr, cfg.Kafka.PredictionsTopic)

	// A broker stop and start under load.
	const total = 2000
	var ids []string
	produced := make(chan error, 1)
	go func() {
		for i := 0; i < total/100; i++ {
			var recs []*kgo.Record
			for j := 0; j < 100; j++ {
				ev := gen.Next(time.Now(), false)
				ids = append(ids, ev.ID)
				recs = append(recs, &kgo.Record{Topic: cfg.Kafka.InputTopic, Key: ev.Key, Value: ev.Value})
			}
			if err := admin.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				produced <- err
				return
			}
			time.Sleep(25 * time.Millisecond)
		}
		produced <- nil
	}()
	for deadline := time.Now().Add(60 * time.Second); w.distinct() < 300 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	broker.Stop()
	expectDown("kafka")
	time.Sleep(3 * time.Second) // serve's commits and produces fail meanwhile
	running("while the broker was down")
	broker.Start()
	if err := <-produced; err != nil {
		t.Fatalf("producing the load: %v", err)
	}
	w.waitFor(t, total, 2*time.Minute)
	running("after the broker restart")
	w.mu.Lock()
	for _, id := range ids {
		if w.seen[id] == 0 {
			t.Errorf("event %s has no prediction after the broker restart", id)
		}
	}
	w.mu.Unlock()
	var final uint64
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if final, _ = countRows(ctx, t, a, cfg.ClickHouse.Database); final >= total {
			break
		}
	}
	if final != total {
		t.Errorf("inference_log FINAL = %d rows after the broker restart, want %d", final, total)
	}
	// Whether a commit or produce was due while the broker was away
	// depends on timing; the lag reads every 200 ms always were.
	if got := gaugeSum(t, reg, "seer_stream_retries_total") + gaugeSum(t, reg, "seer_stream_lag_read_errors_total"); got == 0 {
		t.Error("neither seer_stream_retries_total nor seer_stream_lag_read_errors_total counted the broker outage")
	}

	// Lag from committed offsets while Redis stalls and nothing is fetched.
	retriesBefore := gaugeSum(t, reg, "seer_stream_retries_total")
	redisProxy.Pause()
	produceValid(ctx, t, admin, cfg.Kafka.InputTopic, gen, 300)
	var lag, stalled, retries float64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		lag, stalled = gaugeSum(t, reg, "seer_stream_consumer_lag_records"), gaugeSum(t, reg, "seer_stream_stalled_seconds")
		retries = gaugeSum(t, reg, "seer_stream_retries_total") - retriesBefore // the first lookup fails after redis.timeout (2 s)
		if lag >= 300 && stalled >= 1 && retries > 0 {
			break
		}
	}
	if lag < 300 || stalled < 1 {
		t.Errorf("during a Redis stall: seer_stream_consumer_lag_records = %v (want >= 300), seer_stream_stalled_seconds = %v (want >= 1)", lag, stalled)
	}
	if retries == 0 {
		t.Error("no retry counted during the Redis stall")
	}
	redisProxy.Resume()
	w.waitFor(t, total+300, time.Minute)
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if lag = gaugeSum(t, reg, "seer_stream_consumer_lag_records"); lag == 0 {
			break
		}
	}
	if lag != 0 {
		t.Errorf("lag after Redis returned = %v, want 0", lag)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// gaugeSum adds up every sample of a gauge or counter family in reg.
func gaugeSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestTwoInstancesOneSpool: a second serve started on the first one's
// spool folder refuses to start with an error naming the folder (issue 8:
// two instances sharing .cache/spool lost 4,964 rows).
func TestTwoInstancesOneSpool(t *testing.T) {
	cfg, _ := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := buildApp(ctx, cfg, logger, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cleanupApp(cfg, first) })
	second, err := buildApp(ctx, cfg, logger, prometheus.NewRegistry())
	if err == nil {
		second.Close()
		t.Fatal("a second instance started on a spool folder in use")
	}
	if !errors.Is(err, inferencelog.ErrSpoolInUse) || !strings.Contains(err.Error(), cfg.ClickHouse.SpoolDir) {
		t.Errorf("second instance: err = %v, want ErrSpoolInUse naming %s", err, cfg.ClickHouse.SpoolDir)
	}
	// Two default configs on one host with different HTTP ports get
	// different, absolute folders.
	a, err := LoadConfig("", []string{"SEER_HTTP=127.0.0.1:8081"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadConfig("", []string{"SEER_HTTP=127.0.0.1:8082"})
	if err != nil {
		t.Fatal(err)
	}
	if a.ClickHouse.SpoolDir == b.ClickHouse.SpoolDir || !strings.HasPrefix(a.ClickHouse.SpoolDir, "/") {
		t.Errorf("default spool folders %q and %q: want two different absolute paths", a.ClickHouse.SpoolDir, b.ClickHouse.SpoolDir)
	}
}

// TestServePortInUseTouchesNothing: the HTTP port is bound before the
// database is migrated or the spool is created, so a port in use fails the
// start with nothing written (issue 8).
func TestServePortInUseTouchesNothing(t *testing.T) {
	cfg, _ := integrationConfig(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg.HTTP = busy.Addr().String()
	cfg.ClickHouse.SpoolDir = filepath.Join(t.TempDir(), "spool")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = serve(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "listening on "+cfg.HTTP) {
		t.Fatalf("serve on a port in use: err = %v, want a listen error", err)
	}
	conn, err := drift.Open(ctx, cfg.ClickHouse)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.databases WHERE name = '"+cfg.ClickHouse.Database+"'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("database %s was created although the HTTP port was in use", cfg.ClickHouse.Database)
	}
	if _, err := os.Stat(cfg.ClickHouse.SpoolDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spool folder %s exists (err %v) although the HTTP port was in use", cfg.ClickHouse.SpoolDir, err)
	}
}
