package stream

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/schemas"
)

// TestIngestAtLeastOnce on kfake: a write that fails is retried with the
// batch kept and nothing committed; an ingest stopped while its write
// fails leaves the batch uncommitted, so the next one in the group gets
// every record again; bad records go to the DLQ with their reason; the
// metrics count written, dead-lettered records and the failed attempts.
func TestIngestAtLeastOnce(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "updates", "updates.dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prod, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range 50 {
		v := strconv.Itoa(i)
		if i%10 == 0 {
			v = "bad"
		}
		if err := prod.ProduceSync(ctx, &kgo.Record{Topic: "updates", Key: []byte(v), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	decode := func(r *kgo.Record) (int, *schemas.DecodeError) {
		n, err := strconv.Atoi(string(r.Value))
		if err != nil {
			return 0, &schemas.DecodeError{Reason: schemas.ReasonInvalidJSON, Stage: schemas.StageDecode, Detail: "not a number"}
		}
		return n, nil
	}
	run := func(write func(context.Context, []int) (int, error), idle time.Duration, stop context.Context) (Totals, *IngestMetrics, error) {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, IngestOpts("g", "updates")...)...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		m := NewIngestMetrics(prometheus.NewRegistry())
		in := &Ingest[int]{Name: "test", Client: cl, DLQTopic: "updates.dlq", Decode: decode, Write: write, MaxPollRecords: 100,
			RetryBackoffMax: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Metrics: m}
		tot, err := in.Run(stop, idle, nil)
		return tot, m, err
	}
	// An ingest whose store is down: stopped after a few attempts.
	var attempts atomic.Int32
	down, stopDown := context.WithCancel(ctx)
	_, m, err := run(func(context.Context, []int) (int, error) {
		if attempts.Add(1) == 3 {
			stopDown()
		}
		return 0, errors.New("store down")
	}, 0, down)
	if err == nil || attempts.Load() < 3 || testutil.ToFloat64(m.errors.WithLabelValues("test", "write")) < 3 {
		t.Fatalf("an ingest stopped while its store is down: %v after %d attempts", err, attempts.Load())
	}
	// The next one gets every record: none was committed. Its store fails
	// once, then takes them.
	seen := map[int]int{}
	failed := false
	tot, m, err := run(func(_ context.Context, xs []int) (int, error) {
		if !failed {
			failed = true
			return 0, errors.New("a blip")
		}
		for _, x := range xs {
			seen[x]++
		}
		return 1, nil // one of each batch "older than stored"
	}, time.Second, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 45 || tot.Dead != 5 || tot.Written+tot.Skipped != 45 || tot.Skipped < 1 {
		t.Fatalf("after the restart: %d distinct records written, totals %+v; want all 45 good ones, 5 dead", len(seen), tot)
	}
	for x, n := range seen {
		if n != 1 {
			t.Errorf("record %d written %d times", x, n)
		}
	}
	if got := testutil.ToFloat64(m.records.WithLabelValues("test", "dlq", string(schemas.ReasonInvalidJSON))); got != 5 {
		t.Errorf("dlq metric %v, want 5", got)
	}
	dlq, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("updates.dlq"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	var dead int
	for dead < 5 && ctx.Err() == nil {
		dlq.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == schemas.HeaderError && string(h.Value) == string(schemas.ReasonInvalidJSON) && string(r.Value) == "bad" {
					dead++
				}
			}
		})
	}
	if dead != 5 {
		t.Errorf("%d dead letters with their reason, want 5", dead)
	}
	// A third ingest in the group finds nothing: the offsets were committed.
	tot, _, err = run(func(_ context.Context, xs []int) (int, error) { return 0, nil }, time.Second, ctx)
	if err != nil || tot.Written+tot.Dead != 0 {
		t.Errorf("a third ingest: %+v, %v; want nothing left", tot, err)
	}
}
