package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/schemas"
)

// fakeStages stand in for Redis, ONNX Runtime and ClickHouse: the scorer
// gives each event score = amount/100, the sink records rows and can fail.
type fakeStages struct {
	mu         sync.Mutex
	logged     map[string]schemas.Item
	dead       []schemas.DeadLetter
	failWrites int // while > 0, Append holds acknowledgements back
	held       []func(error)
	enrichErrs int
}

func (f *fakeStages) Enrich(_ context.Context, items []schemas.Item) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.enrichErrs > 0 {
		f.enrichErrs--
		return errors.New("redis down")
	}
	return nil
}

func (f *fakeStages) Score(_ context.Context, items []schemas.Item) error {
	for i := range items {
		it := &items[i]
		if it.Reject != nil {
			continue
		}
		it.Score = float32(it.Event.Values[3].Num / 100)
		it.Model, it.ModelVersion, it.Route = "m", "1", schemas.RouteProduction
		it.ScoredTime = time.Now()
		it.PredictionID = schemas.StableKSUID(it.Event.Time, it.Event.ID, "m", "1")
	}
	return nil
}

// Append acknowledges at once, or — while failWrites > 0 — holds the
// acknowledgement back like a writer stuck on a full spool, releasing it
// when failWrites drops to 0.
func (f *fakeStages) Append(_ context.Context, items []schemas.Item, dls []schemas.DeadLetter, done func(error)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range items {
		if it.Reject == nil {
			f.logged[it.Event.ID] = it
		}
	}
	f.dead = append(f.dead, dls...)
	if f.failWrites > 0 {
		f.held = append(f.held, done)
		return nil
	}
	go done(nil)
	return nil
}

func (f *fakeStages) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failWrites = 0
	for _, d := range f.held {
		go d(nil)
	}
	f.held = nil
}

func testConfig(brokers []string) Config {
	c := DefaultConfig()
	c.Brokers = brokers
	c.InputTopic, c.PredictionsTopic, c.DLQTopic, c.Group = "in", "out", "dlq", "g"
	c.RetryBackoffMax = 50 * time.Millisecond
	return c
}

func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, "in", "out", "dlq")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func produceEvents(t *testing.T, brokers []string, n int, bad map[int]string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var recs []*kgo.Record
	for i := 0; i < n; i++ {
		v := fmt.Sprintf(`{"event_id":"e%d","user_id":"u%d","event_time":"2026-01-01T00:00:00Z","amount":%d,"merchant_category":"fuel","hour":1}`, i, i%7, i)
		if b, ok := bad[i]; ok {
			v = b
		}
		recs = append(recs, &kgo.Record{Topic: "in", Key: []byte("u" + strconv.Itoa(i%7)), Value: []byte(v)})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// consumeAll reads want records from topic, failing after a deadline.
func consumeAll(t *testing.T, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("topic %s: got %d records, want %d", topic, len(out), want)
		}
		out = append(out, fs.Records()...)
	}
	return out
}

func committed(t *testing.T, brokers []string) int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	req := kmsgOffsetFetch("g", "in", 3)
	resp, err := req.RequestWith(context.Background(), cl)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, tp := range resp.Groups[0].Topics {
		for _, p := range tp.Partitions {
			if p.Offset > 0 {
				sum += p.Offset
			}
		}
	}
	return sum
}

func TestPipelineScoresAndDeadLetters(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	const n = 200
	bad := map[int]string{
		5:   `{"event_id":"e5",`,
		50:  `{"event_id":"e50","user_id":"u1","event_time":"2026-01-01T00:00:00Z","amount":-3,"merchant_category":"fuel","hour":1}`,
		120: `{"event_id":"e120","user_id":"u1","event_time":"2026-01-01T00:00:00Z","merchant_category":"fuel","hour":1}`,
	}
	wantReason := map[string]schemas.Reason{"5": schemas.ReasonInvalidJSON, "50": schemas.ReasonOutOfBounds, "120": schemas.ReasonMissingField}
	st := &fakeStages{logged: map[string]schemas.Item{}, enrichErrs: 1}
	produceEvents(t, brokers, n, bad)
	stop := startPipeline(t, testConfig(brokers), st)

	preds := consumeAll(t, brokers, "out", n-len(bad))
	dlq := consumeAll(t, brokers, "dlq", len(bad))
	deadline := time.Now().Add(10 * time.Second)
	for committed(t, brokers) < n && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}

	seen := map[string]bool{}
	for _, r := range preds {
		p := decodePrediction(t, r.Value)
		if seen[p.EventID] {
			t.Errorf("event %s predicted twice", p.EventID)
		}
		seen[p.EventID] = true
		i, _ := strconv.Atoi(p.EventID[1:])
		if want := float32(float64(i) / 100); p.Score != want {
			t.Errorf("event %s score = %v, want %v", p.EventID, p.Score, want)
		}
		if string(r.Key) != p.EntityID {
			t.Errorf("prediction key %q, entity %q", r.Key, p.EntityID)
		}
	}
	for _, r := range dlq {
		h := map[string]string{}
		for _, x := range r.Headers {
			h[x.Key] = string(x.Value)
		}
		var idx string
		for k, v := range bad {
			if v == string(r.Value) {
				idx = strconv.Itoa(k)
			}
		}
		if idx == "" {
			t.Errorf("DLQ record value %q is not one of the bad inputs", r.Value)
			continue
		}
		if h[schemas.HeaderError] != string(wantReason[idx]) {
			t.Errorf("DLQ record %s: seer-error = %q, want %q", idx, h[schemas.HeaderError], wantReason[idx])
		}
		for _, k := range []string{schemas.HeaderDetail, schemas.HeaderStage, schemas.HeaderSourceTopic, schemas.HeaderSourcePartition, schemas.HeaderSourceOffset, schemas.HeaderTime} {
			if h[k] == "" {
				t.Errorf("DLQ record %s: header %s missing", idx, k)
			}
		}
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.logged) != n-len(bad) {
		t.Errorf("logged %d rows, want %d", len(st.logged), n-len(bad))
	}
	if len(st.dead) < len(bad) {
		t.Errorf("dead-letter rows = %d, want at least %d", len(st.dead), len(bad))
	}
	if got := committed(t, brokers); got != n {
		t.Errorf("committed offsets sum to %d, want %d", got, n)
	}
}

// TestNoCommitBeforeSink checks at-least-once: while the writer has not
// acknowledged a batch's rows, no offset is committed, and nothing is lost
// once it does.
func TestNoCommitBeforeSink(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	st := &fakeStages{logged: map[string]schemas.Item{}, failWrites: 1 << 30}
	produceEvents(t, brokers, 50, nil)
	stop := startPipeline(t, testConfig(brokers), st)
	// Predictions are produced before the sink write, so their arrival
	// shows the batch reached the sink stage.
	consumeAll(t, brokers, "out", 1)
	time.Sleep(300 * time.Millisecond)
	if got := committed(t, brokers); got != 0 {
		t.Fatalf("committed %d offsets while the sink was failing", got)
	}
	st.release()
	deadline := time.Now().Add(10 * time.Second)
	for committed(t, brokers) < 50 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Errorf("Run: %v", err)
	}
	if got := committed(t, brokers); got != 50 {
		t.Errorf("committed %d offsets after recovery, want 50", got)
	}
	if len(st.logged) != 50 {
		t.Errorf("logged %d rows, want 50", len(st.logged))
	}
}

// TestShutdownWhileTheWriterHoldsBatches: a writer that can neither
// insert nor spool holds its acknowledgements until its own context ends,
// and cmd/seer ends that only after Run returns. In both delivery modes
// Run must still return once kafka.shutdown_timeout has passed, with
// nothing committed (the batches are replayed); it used to wait for them
// for ever.
func TestShutdownWhileTheWriterHoldsBatches(t *testing.T) {
	for _, eos := range []bool{false, true} {
		t.Run(fmt.Sprintf("exactly_once=%v", eos), func(t *testing.T) {
			c := newCluster(t)
			brokers := c.ListenAddrs()
			st := &fakeStages{logged: map[string]schemas.Item{}, failWrites: 1 << 30}
			produceEvents(t, brokers, 50, nil)
			cfg := testConfig(brokers)
			cfg.ShutdownTimeout = 300 * time.Millisecond
			if eos {
				cfg.Delivery, cfg.TransactionalID = ExactlyOnce, "seer-test-shutdown"
			}
			stop := startPipeline(t, cfg, st)
			for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				st.mu.Lock()
				held := len(st.held)
				st.mu.Unlock()
				if held > 0 { // a batch reached the writer
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no batch reached the writer within 20 s")
				}
			}
			// stop fails the test when Run has not returned 30 s after
			// the shutdown began (kafka.shutdown_timeout is 300ms here).
			if err := stop(); err != nil {
				t.Errorf("Run: %v", err)
			}
			if got := committed(t, brokers); got != 0 {
				t.Errorf("committed %d offsets of batches the writer never acknowledged", got)
			}
		})
	}
}

// TestStartupFailsWithoutBroker: a refused port and a listener that
// accepts but never answers both fail Run within kafka.startup_timeout,
// naming the addresses tried (issue 8: a WARN every 5 s forever, or
// silence).
func TestStartupFailsWithoutBroker(t *testing.T) {
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	refused, _ := net.Listen("tcp", "127.0.0.1:0")
	refusedAddr := refused.Addr().String()
	refused.Close()
	schema, err := schemas.LoadInputSchema("card_transactions.v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{silent.Addr().String(), refusedAddr} {
		cfg := testConfig([]string{addr})
		cfg.StartupTimeout = 2 * time.Second
		st := &fakeStages{logged: map[string]schemas.Item{}}
		p, err := New(cfg, schema, st, st, st, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, kgo.SeedBrokers(cfg.Brokers...))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = p.Run(ctx)
		cancel()
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "startup_timeout") {
			t.Errorf("Run with broker %s: err = %v, want a start-up failure naming the address", addr, err)
		}
	}
}

// shadowStages scores like fakeStages and adds a shadow prediction (score
// × 2) to every scored item.
type shadowStages struct{ *fakeStages }

func (s shadowStages) Score(ctx context.Context, items []schemas.Item) error {
	if err := s.fakeStages.Score(ctx, items); err != nil {
		return err
	}
	for i := range items {
		if items[i].Reject != nil {
			continue
		}
		sh := items[i]
		sh.Route, sh.ModelVersion, sh.Score = schemas.RouteShadow, "2", items[i].Score*2
		sh.PredictionID = schemas.StableKSUID(sh.Event.Time, sh.Event.ID, "m", "2", "shadow")
		items[i].Shadow = &sh
	}
	return nil
}

// TestShadowPredictionsGoToTheirTopic: each event has exactly one
// prediction on the predictions topic, from production, and its shadow
// prediction goes to the shadow topic only.
func TestShadowPredictionsGoToTheirTopic(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(3, "out.shadow"))
	brokers := c.ListenAddrs()
	const n = 120
	produceEvents(t, brokers, n, nil)
	st := &fakeStages{logged: map[string]schemas.Item{}}
	cfg := testConfig(brokers)
	cfg.ShadowTopic = "out.shadow"
	stop := runPipeline(t, cfg, st, shadowStages{st}, st)
	preds := consumeAll(t, brokers, "out", n)
	shadows := consumeAll(t, brokers, "out.shadow", n)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	prodIDs, shadowIDs := map[string]bool{}, map[string]bool{}
	for _, r := range preds {
		pr := decodePrediction(t, r.Value)
		if pr.Route != schemas.RouteProduction || prodIDs[pr.EventID] {
			t.Errorf("predictions topic: event %s route %s (seen before: %v)", pr.EventID, pr.Route, prodIDs[pr.EventID])
		}
		prodIDs[pr.EventID] = true
	}
	for _, r := range shadows {
		pr := decodePrediction(t, r.Value)
		if pr.Route != schemas.RouteShadow || pr.ModelVersion != "2" || shadowIDs[pr.EventID] {
			t.Errorf("shadow topic: event %s route %s version %s", pr.EventID, pr.Route, pr.ModelVersion)
		}
		shadowIDs[pr.EventID] = true
	}
	if len(prodIDs) != n || len(shadowIDs) != n {
		t.Errorf("%d events with a production prediction and %d with a shadow one, want %d each", len(prodIDs), len(shadowIDs), n)
	}
}

// TestCostGauge: once predictions are committed, serve publishes its CPU
// seconds per 1,000 of them (seer_cpu_seconds_per_1000_predictions) — a
// positive figure, far below a second per prediction.
func TestCostGauge(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	cfg := testConfig(brokers)
	cfg.LagInterval = 100 * time.Millisecond
	schema, err := schemas.LoadInputSchema("card_transactions.v1")
	if err != nil {
		t.Fatal(err)
	}
	st := &fakeStages{logged: map[string]schemas.Item{}}
	reg := prometheus.NewRegistry()
	p, err := New(cfg, schema, st, st, st, slog.New(slog.NewTextHandler(io.Discard, nil)), reg, kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()
	produceEvents(t, brokers, 500, nil)
	consumeAll(t, brokers, "out", 500)
	var cost float64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && cost == 0; time.Sleep(50 * time.Millisecond) {
		cost = testutil.ToFloat64(p.m.cost)
	}
	if cost <= 0 || cost > 1000 {
		t.Errorf("seer_cpu_seconds_per_1000_predictions = %v, want a positive figure below 1000", cost)
	}
}

// TestFetchSettings: kafka.fetch_min_bytes and kafka.fetch_max_wait reach
// the consumer, and Validate refuses what the broker would not honour.
func TestFetchSettings(t *testing.T) {
	cfg := testConfig([]string{"127.0.0.1:1"})
	cfg.FetchMinBytes, cfg.FetchMaxWait = 64<<10, 10*time.Millisecond
	p := offlinePipeline(t, cfg)
	if got := p.cl.OptValue(kgo.FetchMinBytes); got != int32(64<<10) {
		t.Errorf("fetch min bytes = %v, want 65536", got)
	}
	if got := p.cl.OptValue(kgo.FetchMaxWait); got != 10*time.Millisecond {
		t.Errorf("fetch max wait = %v, want 10ms", got)
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.FetchMinBytes = 0 },
		func(c *Config) { c.FetchMaxWait = 5 * time.Millisecond },
	} {
		c := testConfig([]string{"127.0.0.1:1"})
		bad(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "kafka.fetch_") {
			t.Errorf("Validate(%+v) = %v, want an error naming kafka.fetch_*", c, err)
		}
	}
}

// TestCompressionSetting: kafka.compression reaches the producer, and
// Validate names the key of a codec franz-go does not have.
func TestCompressionSetting(t *testing.T) {
	for name, want := range map[string]kgo.CompressionCodec{"snappy": kgo.SnappyCompression(), "lz4": kgo.Lz4Compression(), "none": kgo.NoCompression()} {
		cfg := testConfig([]string{"127.0.0.1:1"})
		cfg.Compression = name
		p := offlinePipeline(t, cfg)
		if got := p.cl.OptValue(kgo.ProducerBatchCompression); !reflect.DeepEqual(got, []kgo.CompressionCodec{want}) {
			t.Errorf("kafka.compression %s: the producer's codecs are %v", name, got)
		}
	}
	cfg := testConfig([]string{"127.0.0.1:1"})
	cfg.Compression = "brotli"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "kafka.compression") {
		t.Errorf("Validate with compression brotli = %v, want an error naming kafka.compression", err)
	}
}

// TestLingerSetting: kafka.linger reaches the producer (0, the default,
// sends a batch at once), and Validate names the key of a linger out of
// range.
func TestLingerSetting(t *testing.T) {
	for _, linger := range []time.Duration{0, 5 * time.Millisecond} {
		cfg := testConfig([]string{"127.0.0.1:1"})
		cfg.Linger = linger
		p := offlinePipeline(t, cfg)
		if got := p.cl.OptValue(kgo.ProducerLinger); got != linger {
			t.Errorf("kafka.linger %v: the producer lingers %v", linger, got)
		}
	}
	if got := DefaultConfig().Linger; got != 0 {
		t.Errorf("default kafka.linger = %v, want 0", got)
	}
	for _, bad := range []time.Duration{-time.Millisecond, 2 * time.Second} {
		cfg := testConfig([]string{"127.0.0.1:1"})
		cfg.Linger = bad
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "kafka.linger") {
			t.Errorf("Validate with linger %v = %v, want an error naming kafka.linger", bad, err)
		}
	}
}

// offlinePipeline validates cfg and builds a pipeline on it without
// running it (its brokers need not answer), for checks of the client's
// options; the client is closed at the test's end.
func offlinePipeline(t *testing.T, cfg Config) *Pipeline {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	schema, err := schemas.LoadInputSchema(cfg.InputSchema)
	if err != nil {
		t.Fatal(err)
	}
	st := &fakeStages{logged: map[string]schemas.Item{}}
	p, err := New(cfg, schema, st, st, st, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.cl.Close)
	return p
}

// lateWriter reads a batch's items only when it acknowledges them, a
// while after Append, as Writer.Append's contract allows. It records, for
// every item it reads, whether the item is still the one its event gave:
// a batch whose items went to a later batch before its done shows up as
// missing or mismatched events.
type lateWriter struct {
	mu         sync.Mutex
	read       map[string]int
	rejected   int
	mismatched []string
}

func (w *lateWriter) Append(_ context.Context, items []schemas.Item, _ []schemas.DeadLetter, done func(error)) error {
	go func() {
		time.Sleep(20 * time.Millisecond)
		w.mu.Lock()
		for i := range items {
			it := &items[i]
			if it.Reject != nil {
				w.rejected++
				continue
			}
			n, err := strconv.Atoi(strings.TrimPrefix(it.Event.ID, "e"))
			if err != nil || it.Event.Values[3].Num != float64(n) || it.Score != float32(float64(n)/100) {
				w.mismatched = append(w.mismatched, fmt.Sprintf("%q (score %v)", it.Event.ID, it.Score))
				continue
			}
			w.read[it.Event.ID]++
		}
		w.mu.Unlock()
		done(nil)
	}()
	return nil
}

// TestBatchBuffersWaitForTheirCommit: a batch's buffers (its items, their
// values, its prediction records and JSON) go to a later batch only after
// its commit. Polls of 10 records put three batches in flight at once
// (max_in_flight 30), so later batches take the buffers of earlier ones.
// The writer reads each batch's items only when it acknowledges them, 20
// ms after Append; with a 100 ms linger the producer holds each batch's
// predictions longer still, and without one it acknowledges them first. A
// buffer reused any earlier would show up as a prediction or a log item
// that belongs to another event. A few bad events among them catch a
// buffer reused without being cleared: a reused item would keep its old
// reject.
func TestBatchBuffersWaitForTheirCommit(t *testing.T) {
	for _, linger := range []time.Duration{100 * time.Millisecond, 0} {
		t.Run("linger "+linger.String(), func(t *testing.T) {
			c := newCluster(t)
			brokers := c.ListenAddrs()
			const n = 400
			bad := map[int]string{3: `{"oops"`, 17: `[]`, 42: `{"event_id":"e42","user_id":"u0","event_time":"2026-01-01T00:00:00Z","amount":-3,"merchant_category":"fuel","hour":1}`}
			produceEvents(t, brokers, n, bad)
			cfg := testConfig(brokers)
			cfg.MaxPollRecords, cfg.MaxInFlight, cfg.Workers, cfg.Linger = 10, 30, 2, linger
			st := &fakeStages{logged: map[string]schemas.Item{}}
			w := &lateWriter{read: map[string]int{}}
			stop := runPipeline(t, cfg, st, st, w)
			preds := consumeAll(t, brokers, "out", n-len(bad))
			got := waitCommitted(t, brokers, n)
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			seen := map[string]bool{}
			for _, r := range preds {
				pr := decodePrediction(t, r.Value)
				i, err := strconv.Atoi(strings.TrimPrefix(pr.EventID, "e"))
				if err != nil || seen[pr.EventID] || pr.Score != float32(float64(i)/100) || string(r.Key) != "u"+strconv.Itoa(i%7) {
					t.Errorf("prediction %s (key %q, score %v) is not its event's, or came twice", pr.EventID, r.Key, pr.Score)
				}
				seen[pr.EventID] = true
			}
			w.mu.Lock()
			defer w.mu.Unlock()
			if len(w.mismatched) > 0 {
				t.Errorf("the writer read %d items changed before their batch was done, such as %s", len(w.mismatched), w.mismatched[0])
			}
			if len(w.read) != n-len(bad) || w.rejected != len(bad) || got != n {
				t.Errorf("the writer read %d distinct events and %d rejects, and %d offsets were committed; want %d, %d and %d",
					len(w.read), w.rejected, got, n-len(bad), len(bad), n)
			}
		})
	}
}
