package stream

import (
	"context"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	records    *prometheus.CounterVec
	stage      *prometheus.HistogramVec
	batch      prometheus.Histogram
	e2e        prometheus.Histogram
	inFlight   prometheus.Gauge
	age        prometheus.Histogram
	lag        *prometheus.GaugeVec
	lagErrors  prometheus.Counter
	stalled    prometheus.Gauge
	retries    *prometheus.CounterVec
	assigned   prometheus.Gauge
	brokerDown prometheus.Gauge
	cost       prometheus.Gauge
	scored     atomic.Int64 // predictions committed, for cost
}

func newMetrics() metrics {
	return metrics{
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
			Name: "seer_stream_consumer_lag_records", Help: "Records between the group's committed offset and the partition's high watermark, read every kafka.lag_interval.",
		}, []string{"topic", "partition"}),
		lagErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "seer_stream_lag_read_errors_total", Help: "Failed reads of the group's committed lag (the gauges keep their last value).",
		}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "seer_stream_stalled_seconds", Help: "Seconds since this instance last committed while its group has lag; 0 when there is no lag.",
		}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "seer_stream_retries_total", Help: "Failed attempts that were retried, by what failed (feature_lookup, commit, produce).",
		}, []string{"what"}),
		assigned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "seer_stream_assigned_partitions", Help: "Input partitions assigned to this instance.",
		}),
		brokerDown: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "seer_stream_broker_unavailable", Help: "1 while commits or lag reads fail for want of a broker, else 0.",
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "seer_stream_in_flight_records", Help: "Records polled but not yet committed.",
		}),
		cost: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "seer_cpu_seconds_per_1000_predictions",
			Help: "This process's CPU time (user and system, every thread) per 1,000 predictions committed, over the last kafka.lag_interval with predictions: its share of the cost per 1,000 predictions (the brokers', Redis's and ClickHouse's shares are theirs).",
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.records, m.stage, m.batch, m.e2e, m.inFlight, m.age, m.lag, m.lagErrors, m.stalled, m.retries, m.assigned, m.brokerDown, m.cost)
}

func (p *Pipeline) observe(stage string, since time.Time) {
	p.m.stage.WithLabelValues(stage).Observe(time.Since(since).Seconds())
}

// count records the outcome and end-to-end latency of committed records.
func (p *Pipeline) count(b *batch) {
	now := time.Now()
	for i := range b.items {
		if r := b.items[i].Reject; r != nil {
			p.m.records.WithLabelValues(p.cfg.InputTopic, "dlq", string(r.Reason)).Inc()
		} else {
			p.m.records.WithLabelValues(p.cfg.InputTopic, "scored", "").Inc()
			p.m.scored.Add(1)
		}
		p.m.e2e.Observe(now.Sub(b.recs[i].Timestamp).Seconds())
	}
}

// setLag publishes one partition's committed lag.
func (p *Pipeline) setLag(topic string, partition int32, lag int64) {
	p.m.lag.WithLabelValues(topic, strconv.Itoa(int(partition))).Set(float64(max(lag, 0)))
}

// processCPU is this process's user and system CPU time so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// costLoop publishes, every LagInterval in which predictions were
// committed, the process's CPU seconds per 1,000 of them.
func (p *Pipeline) costLoop(ctx context.Context) {
	tick := time.NewTicker(p.cfg.LagInterval)
	defer tick.Stop()
	cpu, scored := processCPU(), p.m.scored.Load()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		c, n := processCPU(), p.m.scored.Load()
		if n > scored {
			p.m.cost.Set((c - cpu).Seconds() / float64(n-scored) * 1000)
		}
		cpu, scored = c, n
	}
}
