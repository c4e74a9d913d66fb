// Package stream is seer's Kafka side: the consume → decode → enrich → score
// → produce → log → commit loop, the dead-letter queue, and shutdown.
//
// Delivery is at-least-once by default. A polled batch is decoded against
// the input schema (bad records go to the DLQ topic with reason headers),
// enriched and scored; its predictions and DLQ records are produced
// asynchronously and its log rows handed to the LogWriter. The poll loop
// then moves on: up to max_in_flight records are in flight at once, and
// kafka.workers batches are prepared concurrently (outputs still leave in
// poll order). A committer takes batches in poll order and commits each
// one's offsets only after Kafka acknowledged all its records and the
// writer reported its rows written or spooled — so commits advance as a
// per-partition watermark and never pass an unfinished record. A crash
// replays uncommitted records, and stable ids make the replay idempotent
// downstream.
//
// Outages are waited out, not fatal: a failed feature lookup, produce or
// commit is retried with backoff for as long as its dependency is away,
// while the full in-flight window pauses polling. Run returns an error only
// for what a retry cannot fix — authorization, fencing, a record the broker
// refuses for good — and the error says which.
//
// Before a partition is revoked, in-flight work is finished and committed
// (bounded by shutdown_timeout); lost partitions are never committed.
// Per-partition order of predictions is the poll order.
//
// With delivery: exactly-once, predictions, dead letters and consumed
// offsets go in one Kafka transaction per batch (GroupTransactSession);
// consumers reading predictions with read_committed see each input's
// prediction once. A rebalance aborts the open transaction and the batch is
// re-polled.
//
// Pipeline.Run owns the Kafka client and returns nil when its context is
// cancelled, after finishing in-flight work. Ready and Alive are safe to
// call concurrently with Run. The stage interfaces below are batch-shaped;
// cmd/seer passes in the featurestore, scoring and drift implementations.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/seer-ml/seer/schemas"
)

// Enricher fills Item.Features for a batch; an error means the batch could
// not be read at all and will be retried.
type Enricher interface {
	Enrich(ctx context.Context, items []schemas.Item) error
}

// Scorer fills the outputs of every item whose Reject is nil.
type Scorer interface {
	Score(ctx context.Context, items []schemas.Item) error
}

// LogWriter takes the log rows of scored items and the dead letters of a
// batch; done(nil) runs once they are written or durably spooled, done(err)
// if they never will be. Append blocks while the writer is behind.
type LogWriter interface {
	Append(ctx context.Context, items []schemas.Item, dls []schemas.DeadLetter, done func(error)) error
}

// Pipeline is one consumer-group member running the scoring loop.
type Pipeline struct {
	cfg    Config
	schema *schemas.InputSchema
	enr    Enricher
	sc     Scorer
	sink   LogWriter
	cl     *kgo.Client
	sess   *kgo.GroupTransactSession // exactly-once only
	log    *slog.Logger
	m      metrics
	h      health

	outstanding sync.WaitGroup // batches not yet committed or abandoned
	// predBytes is the JSON bytes per input of the last batch's
	// predictions, an eighth over: outputs sizes the next batch's buffer
	// with it, so that the buffer is allocated once, not grown.
	predBytes atomic.Int64
}

// New creates the Kafka client (it connects lazily) and the pipeline.
// client holds what every seer client shares — seed brokers, client id,
// TLS, SASL, logger and metrics hooks (cmd/seer builds it); New adds the
// consumer group, delivery and producer settings of the pipeline.
func New(cfg Config, schema *schemas.InputSchema, enr Enricher, sc Scorer, sink LogWriter, logger *slog.Logger, reg prometheus.Registerer, client ...kgo.Opt) (*Pipeline, error) {
	logger = logger.With("component", "stream")
	p := &Pipeline{cfg: cfg, schema: schema, enr: enr, sc: sc, sink: sink, log: logger, m: newMetrics()}
	p.h.assigned = map[int32]bool{}
	p.predBytes.Store(320)
	opts := append(slices.Clone(client),
		kgo.ConsumerGroup(cfg.Group),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.ConsumeTopics(cfg.InputTopic),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMinBytes(int32(cfg.FetchMinBytes)),
		kgo.FetchMaxWait(cfg.FetchMaxWait),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchCompression(codecs[cfg.Compression]()),
	)
	if reg != nil {
		p.m.register(reg)
	}
	var err error
	if cfg.Delivery == ExactlyOnce {
		opts = append(opts, kgo.TransactionalID(cfg.TransactionalID), kgo.RequireStableFetchOffsets())
		p.sess, err = kgo.NewGroupTransactSession(opts...)
		if err == nil {
			p.cl = p.sess.Client()
		}
	} else {
		opts = append(opts,
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsAssigned(p.onAssigned),
			kgo.OnPartitionsRevoked(p.onRevoked),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
				p.dropped(lost, true)
				p.log.Warn("partitions lost; their in-flight work will not be committed and is replayed by the new owner", "partitions", lost)
			}))
		p.cl, err = kgo.NewClient(opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("creating kafka client: %w", err)
	}
	return p, nil
}

// Client returns the underlying Kafka client (for readiness checks).
func (p *Pipeline) Client() *kgo.Client { return p.cl }

// onRevoked finishes and commits in-flight work before partitions move.
func (p *Pipeline) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	done := make(chan struct{})
	go func() { p.outstanding.Wait(); close(done) }()
	select {
	case <-done:
		p.log.Info("partitions revoked after committing in-flight work", "partitions", revoked)
	case <-time.After(p.cfg.ShutdownTimeout):
		p.log.Warn("partitions revoked with work still in flight; it will be replayed by the new owner", "partitions", revoked)
	}
	p.dropped(revoked, false)
}

// batch is one polled batch on its way from poll to commit: the workers
// prepare it (items, err, then ready is closed), the sequencer hands its
// outputs on, and the producer's and writer's acknowledgements close done.
type batch struct {
	recs []*kgo.Record
	// items (set by prepare), their values and the outputs: given back
	// to bufferPool once the batch is committed (recycle).
	*batchBuffers
	err   error         // prepare failed: the batch is abandoned and replayed
	ready chan struct{} // closed when items and err are set

	mu      sync.Mutex
	pending int   // produce acks + the writer's ack still to come
	ackErr  error // the first output that failed for good
	done    chan struct{}
}

func newBatch(recs []*kgo.Record) *batch {
	return &batch{recs: recs, batchBuffers: bufferPool.Get().(*batchBuffers), ready: make(chan struct{}), done: make(chan struct{})}
}

// batchBuffers are what a batch allocates in proportion to its size: its
// items and their decoded values, its prediction records and their JSON.
// A committed batch gives them back to bufferPool for a later batch (about
// a fifth of serve's bytes allocated went to them). Until then the producer
// and the log writer read them (Writer.Append's contract), so a batch that
// is abandoned, or whose transaction fails, does not give them back. They
// are cleared and emptied when given back, so that the pool holds nothing
// of an old batch: every element of a pooled slice, up to its capacity, is
// zero.
type batchBuffers struct {
	items  []schemas.Item
	values []schemas.Value
	preds  []kgo.Record
	json   []byte
}

var bufferPool = sync.Pool{New: func() any { return new(batchBuffers) }}

// resize returns s with length n, on its own array when that holds n.
func resize[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// recycle gives a committed batch's buffers back to the pool.
func (b *batch) recycle() {
	bb := b.batchBuffers
	clear(bb.items)
	clear(bb.values)
	clear(bb.preds)
	bb.items, bb.values, bb.preds, bb.json = bb.items[:0], bb.values[:0], bb.preds[:0], bb.json[:0]
	b.batchBuffers = nil
	bufferPool.Put(bb)
}

func (b *batch) ack(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && b.ackErr == nil {
		b.ackErr = err
	}
	b.pending--
	if b.pending == 0 {
		close(b.done)
	}
}

// Run waits (up to StartupTimeout) for a broker to answer, then consumes
// until ctx is cancelled, finishes the work in flight (bounded by
// ShutdownTimeout), leaves the group and closes the client. It returns nil
// on cancel and an error when no broker answered at start or an error
// cannot heal.
func (p *Pipeline) Run(ctx context.Context) error {
	if err := p.waitForBrokers(ctx); err != nil {
		p.cl.Close()
		return err
	}
	p.log.Info("consuming", "topic", p.cfg.InputTopic, "group", p.cfg.Group, "brokers", p.cfg.Brokers, "delivery", p.cfg.Delivery)
	p.h.running.Store(true)
	defer p.h.running.Store(false)
	p.committed() // the stall clock starts now
	lctx, stopLag := context.WithCancel(ctx)
	defer stopLag()
	go p.lagLoop(lctx)
	go p.costLoop(lctx)
	if p.sess != nil {
		defer p.sess.Close()
		return p.runTransactional(ctx)
	}
	defer p.cl.Close()
	// Polled batches go to the workers (decode, enrich, score) and, in poll
	// order, to the sequencer, which produces and hands rows to the writer
	// in that order, then to the committer. The semaphore bounds the records
	// between poll and commit, which is what bounds memory.
	queue := make(chan *batch, p.cfg.MaxInFlight/max(1, min(p.cfg.MaxPollRecords, 64))+1)
	slots := semaphore.NewWeighted(int64(p.cfg.MaxInFlight))
	work := make(chan *batch)
	ordered := make(chan *batch, p.cfg.Workers)
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	drain, stopDrain := p.drainContext(ctx)
	defer stopDrain()
	abandon := func(b *batch) {
		slots.Release(int64(len(b.recs)))
		p.outstanding.Done()
	}
	grp := errgroup.Group{}
	grp.Go(func() error { return p.commitLoop(drain, queue, slots, stopPolling) })
	for range p.cfg.Workers {
		grp.Go(func() error {
			for b := range work {
				b.err = p.prepare(pollCtx, b)
				close(b.ready)
			}
			return nil
		})
	}
	grp.Go(func() error {
		defer close(queue)
		var failed error
		for b := range ordered {
			<-b.ready
			if failed == nil && b.err != nil && pollCtx.Err() == nil {
				failed = b.err
				stopPolling()
			}
			if failed != nil || b.err != nil {
				abandon(b) // not committed: replayed later
				continue
			}
			p.emit(pollCtx, b)
			p.m.inFlight.Add(float64(len(b.recs)))
			queue <- b
		}
		return failed
	})
	grp.Go(func() error {
		defer close(work)
		defer close(ordered)
		for {
			fetches := p.poll(pollCtx, p.cl.PollRecords)
			if fetches.IsClientClosed() || pollCtx.Err() != nil {
				p.cl.AllowRebalance()
				return nil
			}
			recs := fetches.Records()
			if len(recs) == 0 {
				p.cl.AllowRebalance()
				continue
			}
			// Blocks at max_in_flight records: backpressure.
			if err := slots.Acquire(pollCtx, int64(len(recs))); err != nil {
				p.cl.AllowRebalance()
				return nil // shutdown; these records are not committed and are replayed
			}
			p.outstanding.Add(1)
			b := newBatch(recs)
			ordered <- b
			work <- b
			p.cl.AllowRebalance()
		}
	})
	return grp.Wait()
}

// drainContext returns a context that ends ShutdownTimeout after ctx
// does: commits still retry, and in-flight batches are still waited for,
// until then.
func (p *Pipeline) drainContext(ctx context.Context) (context.Context, context.CancelFunc) {
	drain, stop := context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, func() { time.AfterFunc(p.cfg.ShutdownTimeout, stop) })
	return drain, stop
}

// poll calls pollFn and handles what both delivery modes share: progress
// for liveness and logging fetch errors (a context ending is no error).
func (p *Pipeline) poll(ctx context.Context, pollFn func(context.Context, int) kgo.Fetches) kgo.Fetches {
	p.h.inPoll.Store(true)
	fetches := pollFn(ctx, p.cfg.MaxPollRecords)
	p.h.inPoll.Store(false)
	p.progressed()
	fetches.EachError(func(topic string, part int32, err error) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, kgo.ErrClientClosed) {
			return
		}
		p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
	})
	return fetches
}

// waitForBrokers pings until a broker answers or StartupTimeout passes:
// a wrong address or a broker that accepts connections but never answers
// fails the start instead of waiting silently forever. Credentials or a
// certificate the brokers refuse fail it at once: waiting would not help.
func (p *Pipeline) waitForBrokers(ctx context.Context) error {
	deadline := time.Now().Add(p.cfg.StartupTimeout)
	var err, last error
	for attempt := 0; ; attempt++ {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		err = p.cl.Ping(pctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, kerr.SaslAuthenticationFailed) || errors.Is(err, kerr.UnsupportedSaslMechanism) || errors.Is(err, kerr.IllegalSaslState) {
			return fmt.Errorf("kafka: %v refused kafka.sasl (mechanism %s, username %q): %w", p.cfg.Brokers, p.cfg.SASL.Mechanism, p.cfg.SASL.Username, err)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			last = err
		}
		if time.Now().After(deadline) {
			break
		}
		if attempt == 0 {
			p.log.Warn("no Kafka broker answers yet; waiting", "brokers", p.cfg.Brokers, "startup_timeout", p.cfg.StartupTimeout, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(min(time.Second, time.Until(deadline))):
		}
	}
	if last != nil {
		err = last
	}
	return fmt.Errorf("kafka: no broker answered within kafka.startup_timeout (%v); tried %v: %w", p.cfg.StartupTimeout, p.cfg.Brokers, err)
}

// emit hands a prepared batch's records to the producer and its rows to
// the writer without waiting for either. A produce that fails for a reason
// that can heal is produced again (kgo already retried it with backoff);
// re-producing from the callback keeps the partition's order, since a
// failed partition fails its buffered records in order.
func (p *Pipeline) emit(ctx context.Context, b *batch) {
	out, dls := p.outputs(b)
	b.pending = len(out) + 1
	// Records in flight finish even during shutdown; Run waits for them.
	pctx := context.WithoutCancel(ctx)
	var promise func(*kgo.Record, error)
	promise = func(r *kgo.Record, err error) {
		switch {
		case err == nil || classify(err) != transient:
			b.ack(err)
		case errors.Is(err, kgo.ErrMaxBuffered):
			// The buffer is full: Produce would block inside a promise,
			// which is what frees the buffer. Wait outside it.
			go func() {
				time.Sleep(100 * time.Millisecond)
				p.cl.Produce(pctx, r, promise)
			}()
		default:
			p.m.retries.WithLabelValues("produce").Inc()
			p.h.lastRetry.Store(time.Now().UnixNano())
			p.cl.TryProduce(pctx, r, promise)
		}
	}
	for _, r := range out {
		p.cl.Produce(pctx, r, promise)
	}
	if err := p.sink.Append(ctx, b.items, dls, b.ack); err != nil {
		b.ack(fmt.Errorf("handing rows to the log writer: %w", err))
	}
}

// prepare decodes, enriches and scores one polled batch.
func (p *Pipeline) prepare(ctx context.Context, b *batch) error {
	recs := b.recs
	p.m.batch.Observe(float64(len(recs)))
	t0 := time.Now()
	p.m.age.Observe(t0.Sub(recs[0].Timestamp).Seconds())
	nf := len(p.schema.Fields)
	b.items, b.values = resize(b.items, len(recs)), resize(b.values, len(recs)*nf)
	items, values := b.items, b.values
	for i, r := range recs {
		src := schemas.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
		ev, derr := p.schema.DecodeInto(values[i*nf:(i+1)*nf:(i+1)*nf], r.Key, r.Value, src)
		items[i].Event = ev
		items[i].Event.Source = src
		if derr != nil {
			items[i].Reject = derr
			continue
		}
		if items[i].Event.Time.IsZero() {
			items[i].Event.Time = r.Timestamp.UTC()
		}
	}
	p.observe("decode", t0)

	t0 = time.Now()
	if err := p.retry(ctx, "feature_lookup", func() error { return p.enr.Enrich(ctx, items) }); err != nil {
		return err
	}
	p.observe("enrich", t0)

	t0 = time.Now()
	if err := p.sc.Score(ctx, items); err != nil {
		p.log.Error("scoring failed for a whole batch; sending it to the DLQ", "records", len(items), "err", err)
		for i := range items {
			if items[i].Reject == nil {
				items[i].Reject = &schemas.DecodeError{Reason: schemas.ReasonScoreFailed, Stage: schemas.StageScore, Detail: err.Error()}
			}
		}
	}
	p.observe("score", t0)
	return nil
}

// retry calls fn until it succeeds, returns a permanent error, or ctx
// ends, backing off exponentially up to RetryBackoffMax. Consumption waits
// meanwhile: that is the backpressure. It logs once when the failures
// start and once when they end, and counts every failed attempt in
// seer_stream_retries_total{what}.
func (p *Pipeline) retry(ctx context.Context, what string, fn func() error) error {
	start := time.Now()
	attempts, err := retryBackoff(ctx, p.cfg.RetryBackoffMax, fn, func(attempt int, err error) bool {
		var perm permanent
		if errors.As(err, &perm) || ctx.Err() != nil {
			return false
		}
		p.m.retries.WithLabelValues(what).Inc()
		p.h.lastRetry.Store(time.Now().UnixNano())
		if what == "commit" {
			p.m.brokerDown.Set(1)
		}
		if attempt == 1 {
			p.log.Warn(what+" failed; retrying with backoff until it recovers", "backoff_max", p.cfg.RetryBackoffMax, "err", err)
		}
		return true
	})
	var perm permanent
	switch {
	case err == nil && attempts > 1:
		p.m.brokerDown.Set(0)
		p.log.Info(what+" recovered", "attempts", attempts, "after", time.Since(start).Round(time.Millisecond))
	case err != nil && !errors.As(err, &perm):
		return fmt.Errorf("%s: %w", what, err)
	}
	return err
}

// retryBackoff runs fn until it succeeds or ctx ends, backing off from
// 100 ms up to maxBackoff. After each failure it calls failed with the
// attempt number and the error; false ends the retries (a permanent
// error). It returns the attempts made and the last error.
func retryBackoff(ctx context.Context, maxBackoff time.Duration, fn func() error, failed func(attempt int, err error) bool) (int, error) {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			return attempt, nil
		}
		if !failed(attempt, err) {
			return attempt, err
		}
		select {
		case <-ctx.Done():
			return attempt, err
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}
