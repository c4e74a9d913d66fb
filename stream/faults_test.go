package stream

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/seer-ml/seer/schemas"
)

// predictedIDs reads the predictions topic (read_committed) until want
// distinct event ids arrived or the deadline passes; it returns how often
// each id was seen.
func predictedIDs(t *testing.T, brokers []string, want int, within time.Duration) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("out"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	seen := map[string]int{}
	deadline := time.Now().Add(within)
	for len(seen) < want && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			var p schemas.Prediction
			if json.Unmarshal(r.Value, &p) == nil {
				seen[p.EventID]++
			}
		})
	}
	return seen
}

func waitCommitted(t *testing.T, brokers []string, want int64) int64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	got := committed(t, brokers)
	for got < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		got = committed(t, brokers)
	}
	return got
}

// drain waits for want distinct predictions (up to within) and for the
// committed offsets to reach commits, stops the pipeline (failing on its error), and
// returns the predictions seen and the committed offset sum.
func drain(t *testing.T, brokers []string, want int, commits int64, within time.Duration, stop func() error) (map[string]int, int64) {
	t.Helper()
	seen := predictedIDs(t, brokers, want, within)
	got := waitCommitted(t, brokers, commits)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	return seen, got
}

func startPipeline(t *testing.T, cfg Config, st *fakeStages) (stop func() error) {
	t.Helper()
	return runPipeline(t, cfg, st, st, st)
}

// runPipeline starts a pipeline with the given stages; stop cancels it and
// returns Run's error.
func runPipeline(t *testing.T, cfg Config, enr Enricher, sc Scorer, sink LogWriter) (stop func() error) {
	t.Helper()
	schema, err := schemas.LoadInputSchema("card_transactions.v1")
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(cfg, schema, enr, sc, sink, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, kgo.SeedBrokers(cfg.Brokers...))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("pipeline did not stop")
			return nil
		}
	}
}

// TestRetriableProduceErrors: the broker refuses prediction produces a few
// times with a retriable error; every event still gets exactly one
// prediction and all offsets are committed.
func TestRetriableProduceErrors(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "out", Err: kerr.NotEnoughReplicas, Count: 2})
	const n = 120
	produceEvents(t, brokers, n, nil)
	st := &fakeStages{logged: map[string]schemas.Item{}}
	stop := startPipeline(t, testConfig(brokers), st)
	seen, got := drain(t, brokers, n, n, 60*time.Second, stop) // franz-go backs off after the errors
	if h.Hits() == 0 {
		t.Fatal("the produce fault never fired")
	}
	if len(seen) != n || got != n {
		t.Fatalf("%d distinct predictions and %d committed, want %d and %d", len(seen), got, n, n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("event %s predicted %d times", id, k)
		}
	}
}

// TestFatalProduceErrorReplays: predictions cannot be produced at all; the
// pipeline stops with an error without committing past them, and a
// restarted pipeline predicts every event.
func TestFatalProduceErrorReplays(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: "out", Err: kerr.PolicyViolation, Count: -1})
	const n = 60
	produceEvents(t, brokers, n, nil)
	cfg := testConfig(brokers)
	st := &fakeStages{logged: map[string]schemas.Item{}}
	stop := startPipeline(t, cfg, st)
	deadline := time.Now().Add(10 * time.Second)
	for h.Hits() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if got := committed(t, brokers); got != 0 {
		t.Fatalf("committed %d offsets although no prediction could be produced", got)
	}
	err := stop()
	if err == nil {
		t.Log("pipeline stopped by cancel before it saw the produce failure")
	}
	h.Remove()
	stop = startPipeline(t, cfg, st)
	seen, got := drain(t, brokers, n, n, 20*time.Second, stop)
	if len(seen) != n || got != n {
		t.Errorf("after restart: %d distinct predictions, %d committed; want %d and %d", len(seen), got, n, n)
	}
}

// TestRetriableCommitErrors: the group coordinator refuses commits a few
// times; the pipeline keeps going and commits everything.
func TestRetriableCommitErrors(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.OffsetCommit}, Group: "g", Err: kerr.CoordinatorLoadInProgress, Count: 3})
	const n = 80
	produceEvents(t, brokers, n, nil)
	st := &fakeStages{logged: map[string]schemas.Item{}}
	stop := startPipeline(t, testConfig(brokers), st)
	seen, got := drain(t, brokers, n, n, 20*time.Second, stop)
	if h.Hits() == 0 {
		t.Fatal("the commit fault never fired")
	}
	if len(seen) != n || got != n {
		t.Errorf("%d distinct predictions, %d committed; want %d and %d", len(seen), got, n, n)
	}
}

// slowStages delays scoring so that batches are in flight when the group
// rebalances.
type slowStages struct {
	*fakeStages
	delay time.Duration
}

func (s slowStages) Score(ctx context.Context, items []schemas.Item) error {
	time.Sleep(s.delay)
	return s.fakeStages.Score(ctx, items)
}

// TestRebalanceMidBatch: a second member joins while the first has batches
// in flight. The first finishes and commits before giving partitions up:
// every event is predicted, no offset is committed past unfinished work,
// and per key the predictions keep input order.
func TestRebalanceMidBatch(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	const n = 400
	produceEvents(t, brokers, n, nil)
	cfg := testConfig(brokers)
	cfg.MaxPollRecords = 10
	schema, _ := schemas.LoadInputSchema("card_transactions.v1")
	var stops []func() error
	var scored atomic.Int64
	for i := 0; i < 2; i++ {
		st := slowStages{&fakeStages{logged: map[string]schemas.Item{}}, 15 * time.Millisecond}
		counting := countingScorer{st, &scored}
		p, err := New(cfg, schema, st, counting, st, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, kgo.SeedBrokers(cfg.Brokers...))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()
		stops = append(stops, func() error { cancel(); return <-done })
		if i == 0 { // let the first member get going, then join mid-stream
			deadline := time.Now().Add(10 * time.Second)
			for scored.Load() < 50 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	seen := predictedIDs(t, brokers, n, 30*time.Second)
	got := waitCommitted(t, brokers, n)
	for _, stop := range stops {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	if len(seen) != n || got != n {
		t.Fatalf("%d distinct predictions, %d committed; want %d and %d", len(seen), got, n, n)
	}
	dups := 0
	for _, k := range seen {
		dups += k - 1
	}
	t.Logf("duplicates after the rebalance: %d (at-least-once allows them; ids deduplicate)", dups)
	checkKeyOrder(t, brokers)
}

type countingScorer struct {
	Scorer
	n *atomic.Int64
}

func (c countingScorer) Score(ctx context.Context, items []schemas.Item) error {
	c.n.Add(int64(len(items)))
	return c.Scorer.Score(ctx, items)
}

// checkKeyOrder verifies that, per key, first predictions follow input
// order (event ids e<i> increase).
func checkKeyOrder(t *testing.T, brokers []string) {
	t.Helper()
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("out"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	last := map[string]int{}
	first := map[string]bool{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var p schemas.Prediction
			json.Unmarshal(r.Value, &p)
			if first[p.EventID] {
				return
			}
			first[p.EventID] = true
			i, _ := strconv.Atoi(p.EventID[1:])
			if prev, ok := last[p.EntityID]; ok && i < prev {
				t.Errorf("key %s: prediction for e%d after e%d", p.EntityID, i, prev)
			}
			last[p.EntityID] = i
		})
	}
}

// TestExactlyOnce: in exactly-once mode a read_committed consumer sees
// exactly one prediction per valid event, and DLQ records for the rest.
func TestExactlyOnce(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	const n = 150
	bad := map[int]string{7: `{"oops"`, 99: `[]`}
	produceEvents(t, brokers, n, bad)
	cfg := testConfig(brokers)
	cfg.Delivery, cfg.TransactionalID = ExactlyOnce, "seer-test-eos"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	st := &fakeStages{logged: map[string]schemas.Item{}}
	stop := startPipeline(t, cfg, st)
	seen, got := drain(t, brokers, n-len(bad), n, 20*time.Second, stop)
	if len(seen) != n-len(bad) || got != n {
		t.Fatalf("%d distinct predictions, %d committed; want %d and %d", len(seen), got, n-len(bad), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("event %s: %d committed predictions, want exactly 1", id, k)
		}
	}
	if d := consumeAll(t, brokers, "dlq", len(bad)); len(d) != len(bad) {
		t.Errorf("DLQ records = %d, want %d", len(d), len(bad))
	}
}

// TestWorkersKeepOrder: with several workers preparing batches at once,
// predictions still leave in poll order per key, and all are committed.
func TestWorkersKeepOrder(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	const n = 600
	produceEvents(t, brokers, n, nil)
	cfg := testConfig(brokers)
	cfg.Workers, cfg.MaxPollRecords = 3, 7
	st := slowStages{&fakeStages{logged: map[string]schemas.Item{}}, 3 * time.Millisecond}
	stop := runPipeline(t, cfg, st, st, st)
	seen := predictedIDs(t, brokers, n, 30*time.Second)
	got := waitCommitted(t, brokers, n)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(seen) != n || got != n {
		t.Fatalf("%d distinct predictions, %d committed; want %d and %d", len(seen), got, n, n)
	}
	checkKeyOrder(t, brokers)
}
