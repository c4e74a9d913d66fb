package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/valyala/fastjson"

	"github.com/seer-ml/seer/schemas"
)

// RunConfig describes one load run against a running seer serve.
type RunConfig struct {
	InputTopic       string
	PredictionsTopic string
	DLQTopic         string
	Profile          Profile // open-loop target rate over time
	Preload          int     // > 0: send this many events as fast as possible instead (max throughput)
	MalformedShare   float64 // share of events malformed on purpose
	DrainTimeout     time.Duration
	// DeliveryTimeout bounds how long an event may wait to reach the
	// broker (30 s when 0). Past it the event counts as a produce error,
	// which fails the run: a broker that died mid-run ends the run, where
	// franz-go would otherwise retry, and the run wait, forever.
	DeliveryTimeout time.Duration
	// Warmup: the first seconds of a run left out of SteadyLatency (the
	// figure a throughput search judges a rate on).
	Warmup     time.Duration
	Partitions int32     // topics missing on the broker are created with this many partitions
	Progress   io.Writer // live progress line; nil for none
	ClientOpts []kgo.Opt // seed brokers, client id, TLS and SASL: the options every seer client gets
	// EachSecond, when set, is called once a second from the sending
	// goroutine with the time since the start, between two sends: the
	// place to change the generator (inject drift) mid-run.
	EachSecond func(elapsed time.Duration) error
}

// Window is one second of a run.
type Window struct {
	ElapsedS     float64 `json:"elapsed_s"`
	TargetRate   float64 `json:"target_rate"`
	SentRate     float64 `json:"sent_rate"`
	AchievedRate float64 `json:"achieved_rate"` // predictions matched per second
	Latency      Latency `json:"latency"`
}

// Report is the outcome of one run.
type Report struct {
	Mode            string           `json:"mode"` // profile kind, or preload
	Started         string           `json:"started"`
	Host            string           `json:"host"`
	CPUs            int              `json:"cpus"`
	TargetRate      float64          `json:"target_rate,omitempty"`
	DurationS       float64          `json:"duration_s"`
	Sent            int64            `json:"sent"`
	Malformed       int64            `json:"malformed"` // of Sent, malformed on purpose
	Predicted       int64            `json:"predicted"`
	DeadLettered    int64            `json:"dead_lettered"`
	DLQByReason     map[string]int64 `json:"dlq_by_reason"`
	DuplicatesOrFor int64            `json:"duplicate_or_foreign_predictions"`
	Missing         int64            `json:"missing"` // sent, valid, and never predicted
	ProduceErrors   int64            `json:"produce_errors"`
	FirstError      string           `json:"first_produce_error,omitempty"`
	AchievedRate    float64          `json:"achieved_rate"` // predictions per second over the run
	Latency         Latency          `json:"latency"`
	SteadyLatency   Latency          `json:"steady_latency"` // events due after the warm-up
	WarmupS         float64          `json:"warmup_s"`
	ProduceLatency  Latency          `json:"produce_ack_latency"` // scheduled send to broker ack: the generator's and broker's share
	Windows         []Window         `json:"windows"`
}

// Run sends generated events and matches the predictions that come back.
func Run(ctx context.Context, cfg RunConfig, gen *Generator) (*Report, error) {
	start := time.Now()
	host, _ := os.Hostname()
	rep := &Report{Mode: cfg.Profile.Kind, Started: start.UTC().Format(time.RFC3339), Host: host, CPUs: runtime.NumCPU()}
	if cfg.Preload > 0 {
		rep.Mode = "preload"
	} else if err := cfg.Profile.Validate(); err != nil {
		return nil, err
	}
	if err := EnsureTopics(ctx, cfg); err != nil {
		return nil, err
	}
	rec := NewRecorder()
	rec.SteadyFrom(start.Add(cfg.Warmup))
	rep.WarmupS = cfg.Warmup.Seconds()
	consumer, err := kgo.NewClient(append(slices.Clone(cfg.ClientOpts),
		kgo.ConsumeTopics(cfg.PredictionsTopic, cfg.DLQTopic),
		// Only this run's records: everything since just before it began.
		kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(start.Add(-time.Second).UnixMilli())),
		kgo.FetchMaxWait(20*time.Millisecond))...)
	if err != nil {
		return nil, err
	}
	defer consumer.Close()
	delivery := cfg.DeliveryTimeout
	if delivery <= 0 {
		delivery = 30 * time.Second
	}
	producer, err := kgo.NewClient(append(slices.Clone(cfg.ClientOpts), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000),
		// Time out also the events of a request the dead broker never
		// answered: the run never produces an event twice, so the
		// duplicates this risks on a retry cannot happen.
		kgo.RecordDeliveryTimeout(delivery), kgo.AllowIdempotentProduceCancellation())...)
	if err != nil {
		return nil, err
	}
	defer producer.Close()

	cctx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		var p fastjson.Parser
		for cctx.Err() == nil {
			fs := consumer.PollFetches(cctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				if r.Topic == cfg.DLQTopic {
					reason := ""
					for _, h := range r.Headers {
						if h.Key == schemas.HeaderError {
							reason = string(h.Value)
						}
					}
					rec.DeadLettered(reason)
					return
				}
				v, err := p.ParseBytes(r.Value)
				if err != nil {
					rec.Predicted("", now)
					return
				}
				rec.Predicted(string(v.GetStringBytes("event_id")), now)
			})
		}
	}()

	var produceErrs atomic.Int64
	var firstErr atomic.Value
	var sentMalformed int64
	every := 0
	if cfg.MalformedShare > 0 {
		every = int(1 / cfg.MalformedShare)
	}
	send := func(due time.Time, i int64) {
		bad := every > 0 && i%int64(every) == int64(every-1)
		ev := gen.Next(due, bad)
		if bad {
			sentMalformed++
		} else {
			rec.Sent(ev.ID, due)
		}
		producer.Produce(ctx, &kgo.Record{Topic: cfg.InputTopic, Key: ev.Key, Value: ev.Value, Timestamp: due}, func(_ *kgo.Record, err error) {
			rec.Acked(due, time.Now())
			if err != nil {
				produceErrs.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		})
	}

	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	var i, lastSent, lastMatched int64
	lastTick := start
	var hookErr error
	window := func(target float64) {
		if cfg.EachSecond != nil && hookErr == nil {
			hookErr = cfg.EachSecond(time.Since(start))
		}
		now := time.Now()
		_, matched, _, _ := rec.Counts()
		secs := now.Sub(lastTick).Seconds()
		w := Window{ElapsedS: now.Sub(start).Seconds(), TargetRate: target, SentRate: float64(i-lastSent) / secs,
			AchievedRate: float64(matched-lastMatched) / secs, Latency: rec.Window()}
		rep.Windows = append(rep.Windows, w)
		lastSent, lastMatched, lastTick = i, matched, now
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\r[%5.1fs] target %7.0f/s  sent %7.0f/s  predicted %7.0f/s  p50 %7.1fms  p99 %7.1fms  outstanding %7d ",
				w.ElapsedS, target, w.SentRate, w.AchievedRate, w.Latency.P50, w.Latency.P99, rec.Outstanding())
		}
	}

	if cfg.Preload > 0 {
		for ; i < int64(cfg.Preload) && ctx.Err() == nil; i++ {
			send(time.Now(), i)
			select {
			case <-ticker.C:
				window(0)
			default:
			}
		}
	} else {
		sched := NewSchedule(cfg.Profile, start)
		wait := time.NewTimer(0)
		defer wait.Stop()
		for ctx.Err() == nil && hookErr == nil {
			due, ok := sched.Next()
			if !ok {
				break
			}
			if d := time.Until(due); d > 0 {
				wait.Reset(d)
				select {
				case <-wait.C:
				case <-ctx.Done():
				}
			}
			send(due, i)
			i++
			select {
			case <-ticker.C:
				window(cfg.Profile.RateAt(time.Since(start)))
			default:
			}
		}
	}
	if err := producer.Flush(ctx); err != nil {
		return nil, fmt.Errorf("flushing load: %w", err)
	}
	deadline := time.Now().Add(cfg.DrainTimeout)
	// Drained: every valid event predicted and every malformed one's DLQ
	// record read (the last ones may come after the last prediction).
	drained := func() bool {
		_, _, dlq, _ := rec.Counts()
		return rec.Outstanding() == 0 && dlq >= sentMalformed
	}
	for !drained() && time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-ticker.C:
			window(0)
		case <-time.After(20 * time.Millisecond):
		}
	}
	end := time.Now()
	stopConsumer()
	<-consumed
	if cfg.Progress != nil {
		fmt.Fprintln(cfg.Progress)
	}
	sent, matched, dlq, dups := rec.Counts()
	rep.Sent, rep.Malformed = sent+sentMalformed, sentMalformed
	rep.Predicted, rep.DeadLettered, rep.DuplicatesOrFor = matched, dlq, dups
	rep.DLQByReason = rec.DeadLetterReasons()
	rep.Missing = int64(rec.Outstanding())
	rep.ProduceErrors = produceErrs.Load()
	if e, ok := firstErr.Load().(string); ok {
		rep.FirstError = e
	}
	rep.DurationS = end.Sub(start).Seconds()
	rep.AchievedRate = float64(matched) / rep.DurationS
	if cfg.Preload == 0 {
		rep.TargetRate = float64(rep.Sent) / cfg.Profile.Duration.Seconds()
	}
	rep.Latency = rec.Total()
	rep.SteadyLatency = rec.Steady()
	rep.ProduceLatency = rec.AckLatency()
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	if hookErr != nil {
		return rep, hookErr
	}
	if rep.ProduceErrors > 0 {
		return rep, fmt.Errorf("%d events could not be produced: %s", rep.ProduceErrors, rep.FirstError)
	}
	if rep.Missing > 0 {
		return rep, fmt.Errorf("%d events got no prediction within %v of the last send", rep.Missing, cfg.DrainTimeout)
	}
	return rep, nil
}

// Summary is a short human-readable account of a report.
func (r *Report) Summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "mode %s: sent %d, predicted %d, dead-lettered %d, missing %d, produce errors %d\n", r.Mode, r.Sent, r.Predicted, r.DeadLettered, r.Missing, r.ProduceErrors)
	if r.TargetRate > 0 {
		fmt.Fprintf(&b, "target %.0f events/s, achieved %.0f predictions/s over %.1fs\n", r.TargetRate, r.AchievedRate, r.DurationS)
	} else {
		fmt.Fprintf(&b, "achieved %.0f predictions/s over %.1fs\n", r.AchievedRate, r.DurationS)
	}
	l := r.Latency
	fmt.Fprintf(&b, "latency (from scheduled send to prediction): p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, max %.1f ms\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	a := r.ProduceLatency
	fmt.Fprintf(&b, "of which producing (scheduled send to broker ack): p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", a.P50, a.P99, a.Max)
	return b.String()
}

// DeleteTopics deletes the run's input, predictions and DLQ topics, those
// that exist, so that a benchmark's records do not stay on the broker's
// disk.
func DeleteTopics(ctx context.Context, cfg RunConfig) error {
	cl, err := kgo.NewClient(cfg.ClientOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	resp, err := kadm.NewClient(cl).DeleteTopics(ctx, cfg.InputTopic, cfg.PredictionsTopic, cfg.DLQTopic)
	if err != nil {
		return fmt.Errorf("deleting topics: %w", err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			return fmt.Errorf("deleting topic %s: %w", r.Topic, r.Err)
		}
	}
	return nil
}

// EnsureTopics creates those of the run's topics the broker lacks, with
// cfg.Partitions partitions (4 when unset).
func EnsureTopics(ctx context.Context, cfg RunConfig) error {
	cl, err := kgo.NewClient(cfg.ClientOpts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	parts := cfg.Partitions
	if parts <= 0 {
		parts = 4
	}
	// Only the missing ones: a principal allowed to use a topic need not be
	// allowed to create it (with ACLs, creating an existing topic is refused).
	adm := kadm.NewClient(cl)
	have, err := adm.ListTopics(ctx, cfg.InputTopic, cfg.PredictionsTopic, cfg.DLQTopic)
	if err != nil {
		return fmt.Errorf("listing topics: %w", err)
	}
	var missing []string
	for _, t := range []string{cfg.InputTopic, cfg.PredictionsTopic, cfg.DLQTopic} {
		if d, ok := have[t]; !ok || d.Err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	resp, err := adm.CreateTopics(ctx, parts, -1, nil, missing...)
	if err != nil {
		return fmt.Errorf("creating topics: %w", err)
	}
	for _, r := range resp {
		if r.Err != nil && !errors.Is(r.Err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating topic %s: %w", r.Topic, r.Err)
		}
	}
	return awaitTopics(ctx, adm, missing)
}

// awaitTopics waits until the broker's metadata shows every topic with a
// leader on each partition. CreateTopics returns when the controller has
// the topic, before every broker's metadata cache does; a serve started
// in that gap would not see its input topic until its next metadata
// refresh, seconds later.
func awaitTopics(ctx context.Context, adm *kadm.Client, topics []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		details, err := adm.ListTopics(ctx, topics...)
		pending := ""
		if err == nil {
			for _, t := range topics {
				if d, ok := details[t]; !ok || d.Err != nil || len(d.Partitions) == 0 || !leaders(d) {
					pending = t
					break
				}
			}
			if pending == "" {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("waiting for the created topics: %w", err)
			}
			return fmt.Errorf("topic %s created but not in the broker's metadata after 30 s", pending)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func leaders(d kadm.TopicDetail) bool {
	for _, p := range d.Partitions {
		if p.Err != nil || p.Leader < 0 {
			return false
		}
	}
	return true
}
