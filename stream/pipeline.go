// Package stream is seer's Kafka side: the consume → decode → enrich → score
// → produce → log → commit loop, the dead-letter queue, and shutdown.
//
// Delivery is at-least-once. A polled batch is decoded against the input
// schema (bad records go to the DLQ topic with reason headers), enriched,
// scored, and its predictions and DLQ records are produced and acknowledged
// by Kafka; then its inference-log and dead-letter rows are written to
// ClickHouse; only then are its offsets committed. A crash replays the
// uncommitted batch, and stable ids make the replay idempotent downstream.
// Rebalances are blocked while a batch is in flight (BlockRebalanceOnPoll),
// so a revoked partition is never committed past what was processed.
//
// Pipeline.Run owns the Kafka client and returns nil when its context is
// cancelled. The stage interfaces below are batch-shaped; cmd/seer passes in
// the featurestore, scoring and drift implementations.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kprom"
	"github.com/twmb/franz-go/plugin/kslog"

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

// LogWriter writes the inference log and dead-letter rows.
type LogWriter interface {
	WriteLog(ctx context.Context, items []schemas.Item) error
	WriteDeadLetters(ctx context.Context, dls []schemas.DeadLetter) error
}

// Config configures the Kafka side of the pipeline.
type Config struct {
	Brokers          []string      `yaml:"brokers"`
	ClientID         string        `yaml:"client_id"`
	Group            string        `yaml:"group"`
	InputTopic       string        `yaml:"input_topic"`
	InputSchema      string        `yaml:"input_schema"` // embedded name or file path
	PredictionsTopic string        `yaml:"predictions_topic"`
	DLQTopic         string        `yaml:"dlq_topic"`
	MaxPollRecords   int           `yaml:"max_poll_records"`
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
		MaxPollRecords:   1000,
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
	case c.MaxPollRecords < 1:
		return fmt.Errorf("kafka.max_poll_records: %d must be at least 1", c.MaxPollRecords)
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
	log    *slog.Logger
	m      metrics
}

type metrics struct {
	records *prometheus.CounterVec
	stage   *prometheus.HistogramVec
	batch   prometheus.Histogram
	e2e     prometheus.Histogram
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
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.InputTopic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(2 * time.Millisecond),
		kgo.WithLogger(kslog.New(logger)),
	}
	if reg != nil {
		reg.MustRegister(p.m.records, p.m.stage, p.m.batch, p.m.e2e)
		opts = append(opts, kgo.WithHooks(kprom.NewMetrics("seer_kafka", kprom.Registerer(reg))))
	}
	cl, err := kgo.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("creating kafka client: %w", err)
	}
	p.cl = cl
	return p, nil
}

// Client returns the underlying Kafka client (for readiness checks).
func (p *Pipeline) Client() *kgo.Client { return p.cl }

// Run consumes until ctx is cancelled, then finishes the batch in flight
// (bounded by ShutdownTimeout), leaves the group and closes the client. It
// returns nil on cancel and an error when a batch cannot be completed.
func (p *Pipeline) Run(ctx context.Context) error {
	defer p.cl.Close()
	p.log.Info("consuming", "topic", p.cfg.InputTopic, "group", p.cfg.Group, "brokers", p.cfg.Brokers)
	for {
		fetches := p.cl.PollRecords(ctx, p.cfg.MaxPollRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			p.cl.AllowRebalance()
			return nil
		}
		fetches.EachError(func(topic string, part int32, err error) {
			p.log.Warn("fetch error", "topic", topic, "partition", part, "err", err)
		})
		recs := fetches.Records()
		if len(recs) == 0 {
			p.cl.AllowRebalance()
			continue
		}
		// The batch in flight is finished even after ctx is cancelled, within
		// the shutdown deadline.
		bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		stop := context.AfterFunc(ctx, func() {
			time.AfterFunc(p.cfg.ShutdownTimeout, cancel)
		})
		err := p.processBatch(bctx, recs)
		stop()
		cancel()
		p.cl.AllowRebalance()
		if err != nil {
			if ctx.Err() != nil {
				p.log.Warn("shutdown deadline passed with a batch in flight; it was not committed and will be replayed", "records", len(recs), "err", err)
				return nil
			}
			return err
		}
	}
}

func (p *Pipeline) processBatch(ctx context.Context, recs []*kgo.Record) error {
	p.m.batch.Observe(float64(len(recs)))
	t0 := time.Now()
	items := make([]schemas.Item, len(recs))
	for i, r := range recs {
		src := schemas.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset}
		ev, derr := p.schema.Decode(r.Key, r.Value, src)
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

	t0 = time.Now()
	out := make([]*kgo.Record, 0, len(items))
	var dls []schemas.DeadLetter
	now := time.Now().UTC()
	for i := range items {
		it := &items[i]
		if it.Reject != nil {
			out = append(out, p.deadLetter(recs[i], it.Reject, now))
			dls = append(dls, schemas.DeadLetter{Source: it.Event.Source, Reason: it.Reject.Reason, Stage: it.Reject.Stage, Detail: it.Reject.Error(), Time: now})
			continue
		}
		v, err := schemas.EncodePrediction(it)
		if err != nil {
			return fmt.Errorf("encoding prediction for event %s: %w", it.Event.ID, err)
		}
		out = append(out, &kgo.Record{Topic: p.cfg.PredictionsTopic, Key: recs[i].Key, Value: v, Timestamp: it.ScoredTime})
	}
	if err := p.cl.ProduceSync(ctx, out...).FirstErr(); err != nil {
		return fmt.Errorf("producing %d predictions and dead letters: %w", len(out), err)
	}
	p.observe("produce", t0)

	t0 = time.Now()
	if err := p.retry(ctx, "clickhouse insert", func() error {
		return errors.Join(p.sink.WriteLog(ctx, items), p.sink.WriteDeadLetters(ctx, dls))
	}); err != nil {
		return err
	}
	p.observe("log", t0)

	t0 = time.Now()
	if err := p.cl.CommitRecords(ctx, recs...); err != nil {
		return fmt.Errorf("committing offsets: %w", err)
	}
	p.observe("commit", t0)

	commit := time.Now()
	for i := range items {
		if r := items[i].Reject; r != nil {
			p.m.records.WithLabelValues(p.cfg.InputTopic, "dlq", string(r.Reason)).Inc()
		} else {
			p.m.records.WithLabelValues(p.cfg.InputTopic, "scored", "").Inc()
		}
		p.m.e2e.Observe(commit.Sub(recs[i].Timestamp).Seconds())
	}
	return nil
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
