// Package stream is seer's Kafka side: the consume → decode → enrich → score
// → produce → log → commit loop, the dead-letter queue, and shutdown.
//
// Delivery is at-least-once by default. A polled batch is decoded against
// the input schema (bad records go to the DLQ topic with reason headers),
// enriched and scored; its predictions and DLQ records are produced
// asynchronously and its log rows handed to the LogWriter. The poll loop
// then moves on: up to max_in_flight records are in flight at once, and
// kafka.workers batches are prepared concurrently (outputs still leave in
// poll order). A
// committer takes batches in poll order and commits each one's offsets only
// after Kafka acknowledged all its records and the writer reported its rows
// written or spooled — so commits advance as a per-partition watermark and
// never pass an unfinished record. A crash replays uncommitted records, and
// stable ids make the replay idempotent downstream.
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
// cancelled, after finishing in-flight work. The stage interfaces below are
// batch-shaped; cmd/seer passes in the featurestore, scoring and drift
// implementations.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"
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

// Delivery modes.
const (
	AtLeastOnce = "at-least-once"
	ExactlyOnce = "exactly-once"
)

// Config configures the Kafka side of the pipeline.
type Config struct {
	Brokers          []string      `yaml:"brokers"`
	ClientID         string        `yaml:"client_id"`
	Group            string        `yaml:"group"`
	InputTopic       string        `yaml:"input_topic"`
	InputSchema      string        `yaml:"input_schema"` // embedded name or file path
	PredictionsTopic string        `yaml:"predictions_topic"`
	DLQTopic         string        `yaml:"dlq_topic"`
	Delivery         string        `yaml:"delivery"`         // at-least-once or exactly-once
	TransactionalID  string        `yaml:"transactional_id"` // exactly-once: unique per serve instance
	MaxPollRecords   int           `yaml:"max_poll_records"`
	MaxInFlight      int           `yaml:"max_in_flight"`   // records polled but not yet committed (bounds memory)
	Workers          int           `yaml:"workers"`         // batches decoded, enriched and scored at once
	SessionTimeout   time.Duration `yaml:"session_timeout"` // group session: how long a dead member keeps its partitions
	RetryBackoffMax  time.Duration `yaml:"retry_backoff_max"`
	ShutdownTimeout  time.Duration `yaml:"shutdown_timeout"`
}

// DefaultConfig returns defaults for the example topics on a local broker.
func DefaultConfig() Config {
	return Config{
		Brokers:          []string{"127.0.0.1:9092"},
		ClientID:         "seer",
		Group:            "seer",
		InputTopic:       "card-transactions",
		InputSchema:      "card_transactions.v1",
		PredictionsTopic: "card-transactions.predictions",
		DLQTopic:         "card-transactions.dlq",
		Delivery:         AtLeastOnce,
		MaxPollRecords:   1000,
		MaxInFlight:      20000,
		Workers:          1,
		SessionTimeout:   45 * time.Second,
		RetryBackoffMax:  5 * time.Second,
		ShutdownTimeout:  15 * time.Second,
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka.brokers: at least one broker is required")
	case c.Group == "":
		return errors.New("kafka.group: required")
	case c.InputTopic == "":
		return errors.New("kafka.input_topic: required")
	case c.InputSchema == "":
		return errors.New("kafka.input_schema: required")
	case c.PredictionsTopic == "":
		return errors.New("kafka.predictions_topic: required")
	case c.DLQTopic == "":
		return errors.New("kafka.dlq_topic: required")
	case c.PredictionsTopic == c.InputTopic || c.DLQTopic == c.InputTopic:
		return fmt.Errorf("kafka.predictions_topic/dlq_topic: must differ from input_topic %q", c.InputTopic)
	case c.Delivery != AtLeastOnce && c.Delivery != ExactlyOnce:
		return fmt.Errorf("kafka.delivery: %q is not %s or %s", c.Delivery, AtLeastOnce, ExactlyOnce)
	case c.Delivery == ExactlyOnce && c.TransactionalID == "":
		return errors.New("kafka.transactional_id: required with delivery exactly-once (unique per instance)")
	case c.MaxPollRecords < 1:
		return fmt.Errorf("kafka.max_poll_records: %d must be at least 1", c.MaxPollRecords)
	case c.MaxInFlight < c.MaxPollRecords:
		return fmt.Errorf("kafka.max_in_flight: %d must be at least max_poll_records (%d)", c.MaxInFlight, c.MaxPollRecords)
	case c.Workers < 1:
		return fmt.Errorf("kafka.workers: %d must be at least 1", c.Workers)
	case c.SessionTimeout < 6*time.Second:
		return fmt.Errorf("kafka.session_timeout: %v is below the brokers' usual minimum of 6s", c.SessionTimeout)
	case c.RetryBackoffMax <= 0:
		return fmt.Errorf("kafka.retry_backoff_max: %v must be positive", c.RetryBackoffMax)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("kafka.shutdown_timeout: %v must be positive", c.ShutdownTimeout)
	}
	return nil
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

	outstanding sync.WaitGroup // batches not yet committed or abandoned
}

type metrics struct {
	records  *prometheus.CounterVec
	stage    *prometheus.HistogramVec
	batch    prometheus.Histogram
	e2e      prometheus.Histogram
	inFlight prometheus.Gauge
	age      prometheus.Histogram
	lag      *prometheus.GaugeVec
}

// New creates the Kafka client (it connects lazily) and the pipeline. extra
// options are appended to the client's, for tests and TLS/SASL.
func New(cfg Config, schema *schemas.InputSchema, enr Enricher, sc Scorer, sink LogWriter, logger *slog.Logger, reg prometheus.Registerer, extra ...kgo.Opt) (*Pipeline, error) {
	logger = logger.With("component", "stream")
	p := &Pipeline{cfg: cfg, schema: schema, enr: enr, sc: sc, sink: sink, log: logger}
	p.m = metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "seer_stream_records_total", Help: "Input records by outcome (scored, dlq) and DLQ reason.",
		}, []string{"topic", "outcome", "reason"}),
		stage: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "seer_stream_stage_duration_seconds", Help: "Duration of each pipeline stage per batch.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"stage"}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "seer_stream_batch_records", Help: "Records per polled batch.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		e2e: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "seer_stream_record_latency_seconds", Help: "From the input record's Kafka timestamp to its commit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		age: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "seer_stream_record_age_at_poll_seconds", Help: "From the input record's Kafka timestamp to when seer polled it.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "seer_stream_consumer_lag_records", Help: "Records behind the partition's high watermark at the last fetch.",
		}, []string{"topic", "partition"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "seer_stream_in_flight_records", Help: "Records polled but not yet committed.",
		}),
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.ConsumerGroup(cfg.Group),
		kgo.SessionTimeout(cfg.SessionTimeout),
		kgo.ConsumeTopics(cfg.InputTopic),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2 * time.Millisecond),
		kgo.WithLogger(kslog.New(logger)),
	}
	if reg != nil {
		reg.MustRegister(p.m.records, p.m.stage, p.m.batch, p.m.e2e, p.m.inFlight, p.m.age, p.m.lag)
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("seer_kafka", kprom.Registerer(reg))))
	}
	var err error
	if cfg.Delivery == ExactlyOnce {
		opts = append(opts, kgo.TransactionalID(cfg.TransactionalID), kgo.RequireStableFetchOffsets())
		p.sess, err = kgo.NewGroupTransactSession(append(opts, extra...)...)
		if err == nil {
			p.cl = p.sess.Client()
		}
	} else {
		opts = append(opts,
			kgo.BlockRebalanceOnPoll(),
			kgo.OnPartitionsRevoked(p.onRevoked),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
				p.log.Warn("partitions lost; their in-flight work will not be committed and is replayed by the new owner", "partitions", lost)
			}))
		p.cl, err = kgo.NewClient(append(opts, extra...)...)
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
}

// inflight is one polled batch on its way to being committed.
type inflight struct {
	recs    []*kgo.Record
	items   []schemas.Item
	mu      sync.Mutex
	pending int // produce acks + the writer's ack still to come
	err     error
	done    chan struct{}
}

func (b *inflight) ack(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err != nil && b.err == nil {
		b.err = err
	}
	b.pending--
	if b.pending == 0 {
		close(b.done)
	}
}

// Run consumes until ctx is cancelled, then finishes the work in flight
// (bounded by ShutdownTimeout), leaves the group and closes the client. It
// returns nil on cancel and an error when a batch cannot be completed.
func (p *Pipeline) Run(ctx context.Context) error {
	p.log.Info("consuming", "topic", p.cfg.InputTopic, "group", p.cfg.Group, "brokers", p.cfg.Brokers, "delivery", p.cfg.Delivery)
	if p.sess != nil {
		defer p.sess.Close()
		return p.runTransactional(ctx)
	}
	defer p.cl.Close()
	// Polled batches go to the workers (decode, enrich, score) and, in poll
	// order, to the sequencer, which produces and hands rows to the writer
	// in that order, then to the committer. The semaphore bounds the records
	// between poll and commit, which is what bounds memory.
	queue := make(chan *inflight, p.cfg.MaxInFlight/max(1, min(p.cfg.MaxPollRecords, 64))+1)
	slots := semaphore.NewWeighted(int64(p.cfg.MaxInFlight))
	work := make(chan *job)
	ordered := make(chan *job, p.cfg.Workers)
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	abandon := func(j *job) {
		slots.Release(int64(len(j.recs)))
		p.outstanding.Done()
	}
	grp := errgroup.Group{}
	grp.Go(func() error { return p.commitLoop(queue, slots, stopPolling) })
	for range p.cfg.Workers {
		grp.Go(func() error {
			for j := range work {
				j.items, j.err = p.prepare(pollCtx, j.recs)
				close(j.ready)
			}
			return nil
		})
	}
	grp.Go(func() error {
		defer close(queue)
		var failed error
		for j := range ordered {
			<-j.ready
			if failed == nil && j.err != nil && pollCtx.Err() == nil {
				failed = j.err
				stopPolling()
			}
			if failed != nil || j.err != nil {
				abandon(j) // not committed: replayed later
				continue
			}
			b, err := p.emit(pollCtx, j)
			if err != nil {
				failed = err
				stopPolling()
				abandon(j)
				continue
			}
			p.m.inFlight.Add(float64(len(j.recs)))
			queue <- b
		}
		return failed
	})
	grp.Go(func() error {
		defer close(work)
		defer close(ordered)
		for {
			fetches := p.cl.PollRecords(pollCtx, p.cfg.MaxPollRecords)
			if fetches.IsClientClosed() || pollCtx.Err() != nil {
				p.cl.AllowRebalance()
				return nil
			}
			fetches.EachError(func(topic string, part int32, err error) {
				p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
			})
			p.observeLag(fetches)
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
			j := &job{recs: recs, ready: make(chan struct{})}
			ordered <- j
			work <- j
			p.cl.AllowRebalance()
		}
	})
	return grp.Wait()
}

// job is a polled batch on its way through the workers.
type job struct {
	recs  []*kgo.Record
	items []schemas.Item
	err   error
	ready chan struct{} // closed when items and err are set
}

// commitLoop commits batches in poll order as they complete. Every batch
// already complete behind the first is committed with it, in one request,
// so commits keep up however small the batches are. On the first failure
// it stops polling and leaves the remaining batches uncommitted, so they
// are replayed.
func (p *Pipeline) commitLoop(queue <-chan *inflight, slots *semaphore.Weighted, stopPolling func()) error {
	var failed error
	var pending []*inflight
	release := func(bs []*inflight) {
		for _, b := range bs {
			p.m.inFlight.Sub(float64(len(b.recs)))
			slots.Release(int64(len(b.recs)))
			p.outstanding.Done()
		}
	}
	ackLimit := p.cfg.ShutdownTimeout + time.Minute
	for queue != nil || len(pending) > 0 {
		if len(pending) == 0 {
			b, ok := <-queue
			if !ok {
				break
			}
			pending = append(pending, b)
		}
		timer := time.NewTimer(ackLimit)
		select {
		case b, ok := <-queue:
			timer.Stop()
			if !ok {
				queue = nil
			} else {
				pending = append(pending, b)
			}
			continue
		case <-pending[0].done:
			timer.Stop()
		case <-timer.C:
			if failed == nil {
				failed = fmt.Errorf("batch of %d records not acknowledged within %v", len(pending[0].recs), ackLimit)
				stopPolling()
			}
			release(pending[:1])
			pending = pending[1:]
			continue
		}
		n := 0
		for n < len(pending) && closed(pending[n].done) {
			n++
		}
		done := pending[:n]
		if failed == nil {
			if failed = p.commit(done); failed != nil {
				stopPolling()
			}
		}
		release(done)
		pending = pending[n:]
	}
	return failed
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// commit commits the offsets of completed batches in one request.
func (p *Pipeline) commit(bs []*inflight) error {
	var recs []*kgo.Record
	for _, b := range bs {
		if b.err != nil {
			return fmt.Errorf("batch of %d records: %w", len(b.recs), b.err)
		}
		recs = append(recs, b.recs...)
	}
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownTimeout)
	defer cancel()
	if err := p.cl.CommitRecords(ctx, recs...); err != nil {
		return fmt.Errorf("committing offsets: %w", err)
	}
	p.observe("commit", t0)
	for _, b := range bs {
		p.count(b.recs, b.items)
	}
	return nil
}

// emit hands a prepared batch's records to the producer and its rows to
// the writer without waiting for either.
func (p *Pipeline) emit(ctx context.Context, j *job) (*inflight, error) {
	out, dls, err := p.outputs(j.recs, j.items)
	if err != nil {
		return nil, err
	}
	b := &inflight{recs: j.recs, items: j.items, pending: len(out) + 1, done: make(chan struct{})}
	// Records in flight finish even during shutdown; Run waits for them.
	pctx := context.WithoutCancel(ctx)
	for _, r := range out {
		p.cl.Produce(pctx, r, func(_ *kgo.Record, err error) { b.ack(err) })
	}
	if err := p.sink.Append(ctx, j.items, dls, b.ack); err != nil {
		b.ack(fmt.Errorf("handing rows to the log writer: %w", err))
	}
	return b, nil
}

// prepare decodes, enriches and scores one polled batch.
func (p *Pipeline) prepare(ctx context.Context, recs []*kgo.Record) ([]schemas.Item, error) {
	p.m.batch.Observe(float64(len(recs)))
	t0 := time.Now()
	p.m.age.Observe(t0.Sub(recs[0].Timestamp).Seconds())
	items := make([]schemas.Item, len(recs))
	nf := len(p.schema.Fields)
	values := make([]schemas.Value, len(recs)*nf)
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
	if err := p.retry(ctx, "feature lookup", func() error { return p.enr.Enrich(ctx, items) }); err != nil {
		return nil, err
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
	return items, nil
}

// outputs builds the prediction and DLQ records, in input order, and the
// dead-letter rows.
func (p *Pipeline) outputs(recs []*kgo.Record, items []schemas.Item) ([]*kgo.Record, []schemas.DeadLetter, error) {
	out := make([]*kgo.Record, 0, len(items))
	var dls []schemas.DeadLetter
	now := time.Now().UTC()
	// One array of records and one buffer of JSON for the whole batch; the
	// producer only reads them.
	preds := make([]kgo.Record, len(items))
	buf := make([]byte, 0, 320*len(items))
	for i := range items {
		it := &items[i]
		if it.Reject != nil {
			out = append(out, p.deadLetter(recs[i], it.Reject, now))
			dls = append(dls, schemas.DeadLetter{Source: it.Event.Source, Reason: it.Reject.Reason, Stage: it.Reject.Stage, Detail: it.Reject.Error(), Time: now})
			continue
		}
		start := len(buf)
		buf = schemas.AppendPrediction(buf, it)
		preds[i] = kgo.Record{Topic: p.cfg.PredictionsTopic, Key: recs[i].Key, Value: buf[start:len(buf):len(buf)], Timestamp: it.ScoredTime}
		out = append(out, &preds[i])
	}
	return out, dls, nil
}

// runTransactional is the exactly-once loop: one transaction per batch.
func (p *Pipeline) runTransactional(ctx context.Context) error {
	for {
		fetches := p.sess.PollRecords(ctx, p.cfg.MaxPollRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(topic string, part int32, err error) {
			p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
		})
		recs := fetches.Records()
		if len(recs) == 0 {
			continue
		}
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout+time.Minute)
		err := p.transact(bctx, recs)
		cancel()
		if err != nil {
			return err
		}
	}
}

func (p *Pipeline) transact(ctx context.Context, recs []*kgo.Record) error {
	items, err := p.prepare(ctx, recs)
	if err != nil {
		return err
	}
	out, dls, err := p.outputs(recs, items)
	if err != nil {
		return err
	}
	if err := p.sess.Begin(); err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	var produceErr error
	var mu sync.Mutex
	for _, r := range out {
		p.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				produceErr = errors.Join(produceErr, err)
				mu.Unlock()
			}
		})
	}
	// Log rows are written before the commit; a later abort replays the
	// batch and the rows deduplicate on their ids.
	written := make(chan error, 1)
	if err := p.sink.Append(ctx, items, dls, func(err error) { written <- err }); err != nil {
		written <- err
	}
	werr := <-written
	t0 := time.Now()
	commit := kgo.TryCommit
	if werr != nil {
		commit = kgo.TryAbort
	}
	committed, err := p.sess.End(ctx, commit)
	if err := errors.Join(werr, err); err != nil {
		return fmt.Errorf("ending transaction: %w", err)
	}
	if !committed {
		mu.Lock()
		p.log.Warn("transaction aborted (rebalance or produce error); the batch will be re-polled", "records", len(recs), "produce_err", produceErr)
		mu.Unlock()
		return nil
	}
	p.observe("commit", t0)
	p.count(recs, items)
	return nil
}

func (p *Pipeline) count(recs []*kgo.Record, items []schemas.Item) {
	now := time.Now()
	for i := range items {
		if r := items[i].Reject; r != nil {
			p.m.records.WithLabelValues(p.cfg.InputTopic, "dlq", string(r.Reason)).Inc()
		} else {
			p.m.records.WithLabelValues(p.cfg.InputTopic, "scored", "").Inc()
		}
		p.m.e2e.Observe(now.Sub(recs[i].Timestamp).Seconds())
	}
}

func (p *Pipeline) deadLetter(r *kgo.Record, why *schemas.DecodeError, now time.Time) *kgo.Record {
	return &kgo.Record{
		Topic: p.cfg.DLQTopic,
		Key:   r.Key,
		Value: r.Value,
		Headers: []kgo.RecordHeader{
			{Key: schemas.HeaderError, Value: []byte(why.Reason)},
			{Key: schemas.HeaderDetail, Value: []byte(why.Error())},
			{Key: schemas.HeaderStage, Value: []byte(why.Stage)},
			{Key: schemas.HeaderSourceTopic, Value: []byte(r.Topic)},
			{Key: schemas.HeaderSourcePartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			{Key: schemas.HeaderSourceOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			{Key: schemas.HeaderTime, Value: []byte(now.Format(time.RFC3339Nano))},
		},
	}
}

// observeLag records, per partition fetched, how far the last record is
// behind the high watermark.
func (p *Pipeline) observeLag(fs kgo.Fetches) {
	fs.EachPartition(func(ftp kgo.FetchTopicPartition) {
		if n := len(ftp.Records); n > 0 {
			lag := ftp.HighWatermark - ftp.Records[n-1].Offset - 1
			p.m.lag.WithLabelValues(ftp.Topic, strconv.Itoa(int(ftp.Partition))).Set(float64(max(lag, 0)))
		}
	})
}

func (p *Pipeline) observe(stage string, since time.Time) {
	p.m.stage.WithLabelValues(stage).Observe(time.Since(since).Seconds())
}

// retry calls fn until it succeeds or ctx ends, backing off exponentially
// up to RetryBackoffMax. Consumption waits meanwhile: that is the
// backpressure. Repeated failures are logged once per backoff step.
func (p *Pipeline) retry(ctx context.Context, what string, fn func() error) error {
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			if attempt > 1 {
				p.log.Info(what+" recovered", "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		if attempt == 1 || backoff >= p.cfg.RetryBackoffMax {
			p.log.Warn(what+" failed; retrying", "attempt", attempt, "backoff", backoff, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, p.cfg.RetryBackoffMax)
	}
}
