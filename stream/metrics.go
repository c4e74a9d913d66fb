package stream

import (
	"strconv"
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
	}
}

func (m *metrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.records, m.stage, m.batch, m.e2e, m.inFlight, m.age, m.lag, m.lagErrors, m.stalled, m.retries, m.assigned, m.brokerDown)
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
		}
		p.m.e2e.Observe(now.Sub(b.recs[i].Timestamp).Seconds())
	}
}

// setLag publishes one partition's committed lag.
func (p *Pipeline) setLag(topic string, partition int32, lag int64) {
	p.m.lag.WithLabelValues(topic, strconv.Itoa(int(partition))).Set(float64(max(lag, 0)))
}
