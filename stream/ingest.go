package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/schemas"
)

// Ingest consumes one topic in a consumer group into a store, at least
// once: each polled batch is decoded record by record, the good ones are
// written in one call, the bad ones go to the DLQ with their reasons, and
// the batch's offsets are committed only after both succeeded. A failed
// write is retried with backoff, the batch kept, until it succeeds or ctx
// ends; a crash replays the uncommitted batch, so the write must be
// idempotent. seer labels ingest and seer features ingest run on it.
type Ingest[T any] struct {
	Name     string // the ingest's name in metrics and logs: labels, features
	Client   *kgo.Client
	DLQTopic string
	// Decode checks one record.
	Decode func(r *kgo.Record) (T, *schemas.DecodeError)
	// Write stores a batch's good records and returns how many of them it
	// skipped (for example an update older than the stored value).
	Write           func(ctx context.Context, items []T) (skipped int, err error)
	MaxPollRecords  int
	RetryBackoffMax time.Duration
	Logger          *slog.Logger
	Metrics         *IngestMetrics

	mu  sync.Mutex
	lag map[int32]int64
}

// IngestOpts are the consumer options of an Ingest: its group and topic,
// commits only by the ingest, and no rebalance between a poll and its
// commit.
func IngestOpts(group, topic string) []kgo.Opt {
	return []kgo.Opt{kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}
}

// IngestMetrics are an ingest's Prometheus metrics.
type IngestMetrics struct {
	records *prometheus.CounterVec
	errors  *prometheus.CounterVec
	lag     *prometheus.GaugeVec
}

// NewIngestMetrics registers the ingest metrics with reg.
func NewIngestMetrics(reg prometheus.Registerer) *IngestMetrics {
	m := &IngestMetrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "seer_ingest_records_total", Help: "Ingested records by outcome: written, skipped (older than the stored value) or dlq (with the reason).",
		}, []string{"ingest", "outcome", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "seer_ingest_errors_total", Help: "Failed attempts to write, produce dead letters or commit, each retried.",
		}, []string{"ingest", "what"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "seer_ingest_lag_records", Help: "Records between this consumer's position and the high watermark, summed over its partitions, as of the last fetch.",
		}, []string{"ingest"}),
	}
	reg.MustRegister(m.records, m.errors, m.lag)
	return m
}

// Totals are what an ingest did so far; Busy is the time from the first
// record fetched to the last batch committed.
type Totals struct {
	Written, Skipped, Dead int
	Busy                   time.Duration
}

// Run consumes until ctx ends, or until idle passes with nothing to fetch
// when idle > 0 (then the topic is drained); progress, when set, is called
// after each committed batch.
func (in *Ingest[T]) Run(ctx context.Context, idle time.Duration, progress func(Totals)) (Totals, error) {
	var tot Totals
	var first time.Time
	last := time.Now()
	for {
		pctx := ctx
		cancel := func() {}
		if idle > 0 {
			pctx, cancel = context.WithTimeout(ctx, time.Second)
		}
		fetches := in.Client.PollRecords(pctx, in.MaxPollRecords)
		cancel()
		if fetches.IsClientClosed() || ctx.Err() != nil {
			in.Client.AllowRebalance()
			return tot, nil
		}
		fetches.EachError(func(topic string, part int32, err error) {
			if !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
				in.Logger.Warn("fetch error", "ingest", in.Name, "topic", topic, "partition", part, "err", err)
			}
		})
		in.observeLag(fetches)
		recs := fetches.Records()
		if len(recs) == 0 {
			in.Client.AllowRebalance()
			if idle > 0 && time.Since(last) >= idle {
				return tot, nil
			}
			continue
		}
		last = time.Now()
		if first.IsZero() {
			first = last
		}
		t, err := in.batch(ctx, recs)
		in.Client.AllowRebalance()
		if err != nil {
			return tot, err
		}
		tot.Written, tot.Skipped, tot.Dead, tot.Busy = tot.Written+t.Written, tot.Skipped+t.Skipped, tot.Dead+t.Dead, time.Since(first)
		if progress != nil {
			progress(tot)
		}
	}
}

// batch decodes, writes, dead-letters and commits one polled batch.
func (in *Ingest[T]) batch(ctx context.Context, recs []*kgo.Record) (Totals, error) {
	items := make([]T, 0, len(recs))
	var dead []*kgo.Record
	now := time.Now().UTC()
	for _, r := range recs {
		it, why := in.Decode(r)
		if why != nil {
			dead = append(dead, DeadLetterRecord(in.DLQTopic, r, why, now))
			in.Metrics.records.WithLabelValues(in.Name, "dlq", string(why.Reason)).Inc()
			continue
		}
		items = append(items, it)
	}
	var skipped int
	if err := in.retry(ctx, "write", func() (err error) { skipped, err = in.Write(ctx, items); return err }); err != nil {
		return Totals{}, err
	}
	if len(dead) > 0 {
		if err := in.retry(ctx, "dead_letters", func() error { return in.Client.ProduceSync(ctx, dead...).FirstErr() }); err != nil {
			return Totals{}, err
		}
	}
	if err := in.retry(ctx, "commit", func() error { return in.Client.CommitRecords(ctx, recs...) }); err != nil {
		return Totals{}, err
	}
	in.Metrics.records.WithLabelValues(in.Name, "written", "").Add(float64(len(items) - skipped))
	in.Metrics.records.WithLabelValues(in.Name, "skipped", "").Add(float64(skipped))
	return Totals{Written: len(items) - skipped, Skipped: skipped, Dead: len(dead)}, nil
}

// retry runs fn until it succeeds, backing off up to RetryBackoffMax; it
// gives up only when ctx ends (the batch is then not committed, and is
// consumed again).
func (in *Ingest[T]) retry(ctx context.Context, what string, fn func() error) error {
	attempts, err := retryBackoff(ctx, max(in.RetryBackoffMax, 100*time.Millisecond), fn, func(attempt int, err error) bool {
		in.Metrics.errors.WithLabelValues(in.Name, what).Inc()
		if attempt == 1 {
			in.Logger.Warn("ingest step failed; retrying with backoff until it recovers", "ingest", in.Name, "what", what, "err", err)
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%s ingest: %s: %w (not committed; it is consumed again on restart)", in.Name, what, err)
	}
	if attempts > 1 {
		in.Logger.Info("ingest step recovered", "ingest", in.Name, "what", what, "attempts", attempts)
	}
	return nil
}

// observeLag keeps, per partition, the high watermark minus the position
// after the last record fetched, and publishes their sum.
func (in *Ingest[T]) observeLag(fetches kgo.Fetches) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.lag == nil {
		in.lag = map[int32]int64{}
	}
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			in.lag[p.Partition] = max(p.HighWatermark-p.Records[n-1].Offset-1, 0)
		}
	})
	var total int64
	for _, l := range in.lag {
		total += l
	}
	in.Metrics.lag.WithLabelValues(in.Name).Set(float64(total))
}
