package inferencelog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/seer-ml/seer/schemas"
)

// Config sets how log rows are batched and spooled.
type Config struct {
	FlushRows     int           `yaml:"flush_rows"`      // insert when this many rows are buffered
	FlushInterval time.Duration `yaml:"flush_interval"`  // or when the oldest buffered row is this old
	SpoolDir      string        `yaml:"spool_dir"`       // where batches wait while ClickHouse is down; one folder per instance
	SpoolMaxBytes int64         `yaml:"spool_max_bytes"` // at this size consumption pauses
}

// DefaultConfig suits one seer serve process. SpoolDir is left empty:
// the caller picks a folder of this instance's own (cmd/seer derives one
// from the host name and HTTP port).
func DefaultConfig() Config {
	return Config{FlushRows: 10000, FlushInterval: 400 * time.Millisecond, SpoolMaxBytes: 1 << 30}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case c.FlushRows < 1:
		return fmt.Errorf("clickhouse.flush_rows: %d must be at least 1", c.FlushRows)
	case c.FlushInterval <= 0:
		return fmt.Errorf("clickhouse.flush_interval: %v must be positive", c.FlushInterval)
	case c.SpoolDir == "":
		return errors.New("clickhouse.spool_dir: required")
	case c.SpoolMaxBytes < 1<<20:
		return fmt.Errorf("clickhouse.spool_max_bytes: %d is below 1 MiB", c.SpoolMaxBytes)
	}
	return nil
}

// Inserter writes one batch; *Sink is the ClickHouse one.
type Inserter interface {
	Insert(ctx context.Context, b *Batch) error
}

// Writer buffers log rows and dead letters, inserts them in batches by size
// and time, and spools batches to disk while ClickHouse fails. Each Append's
// done callback runs once its rows are in ClickHouse or durably spooled —
// that is when the caller may commit the source offsets. While the spool
// holds batches, new batches are spooled behind them, so rows reach
// ClickHouse in order. When the spool is full, flushing waits, Append
// blocks, and the consumer stops: nothing is dropped.
//
// The invariant the pipeline relies on: an offset is committed only after
// done(nil), so a committed offset implies its row is in ClickHouse or in a
// batch file of this instance's spool (which only this process can write,
// see OpenSpool). A spooled file that is later found missing or corrupt is
// quarantined and counted in seer_drift_spool_quarantined_total, the one way
// a committed row can fail to reach ClickHouse.
//
// Append is safe for concurrent use; Run must run exactly once.
type Writer struct {
	cfg   Config
	ins   Inserter
	spool *Spool
	in    chan pending
	log   *slog.Logger

	rows        prometheus.Counter
	spoolBytes  prometheus.GaugeFunc
	spoolMax    prometheus.Gauge
	inserts     *prometheus.CounterVec
	flushSecs   prometheus.Histogram
	quarantined prometheus.Counter
}

type pending struct {
	items []schemas.Item // their log rows are built by Run, into its buffer
	dead  []schemas.DeadLetter
	done  func(error)
}

// NewWriter opens the spool (replaying what an earlier run left) and
// returns a writer; start it with Run.
func NewWriter(cfg Config, ins Inserter, logger *slog.Logger, reg prometheus.Registerer) (*Writer, error) {
	sp, err := OpenSpool(cfg.SpoolDir, cfg.SpoolMaxBytes)
	if err != nil {
		return nil, err
	}
	w := &Writer{cfg: cfg, ins: ins, spool: sp, in: make(chan pending, 1), log: logger.With("component", "drift")}
	w.rows = prometheus.NewCounter(prometheus.CounterOpts{Name: "seer_drift_log_rows_total", Help: "Inference-log rows accepted by the writer."})
	w.spoolBytes = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "seer_drift_spool_bytes", Help: "Bytes of batches waiting in the local spool."},
		func() float64 { return float64(sp.Bytes()) })
	w.spoolMax = prometheus.NewGauge(prometheus.GaugeOpts{Name: "seer_drift_spool_max_bytes", Help: "The spool's limit (clickhouse.spool_max_bytes): at it, consumption pauses."})
	w.spoolMax.Set(float64(cfg.SpoolMaxBytes))
	w.inserts = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "seer_drift_batches_total", Help: "Log batches by outcome (inserted, spooled, replayed, failed, replay_failed)."}, []string{"outcome"})
	w.flushSecs = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "seer_drift_insert_duration_seconds", Help: "Duration of one ClickHouse batch insert.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	w.quarantined = prometheus.NewCounter(prometheus.CounterOpts{Name: "seer_drift_spool_quarantined_total",
		Help: "Spooled batches that were missing or unreadable at replay and were moved to the spool's quarantine folder (their rows did not reach ClickHouse)."})
	if reg != nil {
		reg.MustRegister(w.rows, w.spoolBytes, w.spoolMax, w.inserts, w.flushSecs, w.quarantined)
	}
	if n := sp.Len(); n > 0 {
		w.log.Warn("spool holds batches from an earlier run; replaying them first", "batches", n, "bytes", sp.Bytes())
	}
	return w, nil
}

// Spool exposes the spool, for readiness and tests.
func (w *Writer) Spool() *Spool { return w.spool }

// Close releases the spool folder's lock; call it after Run returned.
func (w *Writer) Close() error { return w.spool.Close() }

// Append queues the log rows of the scored items (Reject == nil) and the
// dead letters. The writer reads items until done runs: the caller must
// not change them before. done(nil) runs once they are in ClickHouse or spooled;
// done(err) when the writer shut down before either (do not commit). Append
// blocks while the writer is behind (backpressure); it returns ctx's error
// if ctx ends first.
func (w *Writer) Append(ctx context.Context, items []schemas.Item, dls []schemas.DeadLetter, done func(error)) error {
	select {
	case w.in <- pending{items: items, dead: dls, done: done}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run batches and flushes until ctx ends, then flushes what is buffered
// (bounded by a short deadline) and returns nil. Batching and inserting
// run in separate goroutines, so Append does not wait on a ClickHouse round
// trip unless maxQueuedFlushes batches are already waiting for one.
func (w *Writer) Run(ctx context.Context) error {
	type job struct {
		batch Batch
		dones []func(error)
	}
	jobs := make(chan job, maxQueuedFlushes)
	// Written batches come back for their row buffers to be reused.
	free := make(chan []LogRow, maxQueuedFlushes+1)
	flusherDone := make(chan struct{})
	// The flusher owns ClickHouse and the spool; it outlives ctx to write
	// the last batches with a short deadline of its own.
	fctx, cancelFlush := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelFlush()
	go func() {
		defer close(flusherDone)
		replay := time.NewTicker(time.Second)
		defer replay.Stop()
		for {
			select {
			case j, ok := <-jobs:
				if !ok {
					return
				}
				err := w.write(fctx, &j.batch)
				for _, d := range j.dones {
					d(err)
				}
				// Cleared first: a row left in the buffer would keep its
				// item's inputs and features alive until overwritten.
				clear(j.batch.Log)
				select {
				case free <- j.batch.Log[:0]:
				default:
				}
			case <-replay.C:
				w.replay(fctx)
			}
		}
	}()

	var buf Batch
	var dones []func(error)
	add := func(p pending) {
		if buf.Log == nil {
			select {
			case buf.Log = <-free:
			default:
				buf.Log = make([]LogRow, 0, w.cfg.FlushRows)
			}
		}
		n := len(buf.Log)
		buf.Log = AppendRows(buf.Log, p.items)
		w.rows.Add(float64(len(buf.Log) - n))
		buf.Dead = append(buf.Dead, p.dead...)
		if p.done != nil {
			dones = append(dones, p.done)
		}
	}
	flush := func() {
		if len(buf.Log)+len(buf.Dead) == 0 && len(dones) == 0 {
			return
		}
		jobs <- job{batch: buf, dones: dones}
		buf, dones = Batch{}, nil
	}
	timer := time.NewTicker(w.cfg.FlushInterval)
	defer timer.Stop()
	for {
		select {
		case p := <-w.in:
			add(p)
			if len(buf.Log)+len(buf.Dead) >= w.cfg.FlushRows {
				flush()
			}
		case <-timer.C:
			flush()
		case <-ctx.Done():
			// Take what callers already handed over, then a last flush.
			for drained := false; !drained; {
				select {
				case p := <-w.in:
					add(p)
				default:
					drained = true
				}
			}
			flush()
			close(jobs)
			stop := time.AfterFunc(10*time.Second, cancelFlush)
			<-flusherDone
			stop.Stop()
			return nil
		}
	}
}

// maxQueuedFlushes is how many full batches may wait for the flusher
// before Append blocks.
const maxQueuedFlushes = 4

// write inserts b, or spools it when ClickHouse fails or the spool already
// holds older batches. It returns nil once b is in one of the two; while
// the spool is full it keeps retrying (replaying frees space) until ctx
// ends, and then returns the error.
func (w *Writer) write(ctx context.Context, b *Batch) error {
	for attempt := 0; ; attempt++ {
		if w.spool.Len() > 0 {
			w.replay(ctx)
		}
		if w.spool.Len() == 0 {
			start := time.Now()
			err := w.ins.Insert(ctx, b)
			if err == nil {
				w.flushSecs.Observe(time.Since(start).Seconds())
				w.inserts.WithLabelValues("inserted").Inc()
				return nil
			}
			w.inserts.WithLabelValues("failed").Inc()
			if attempt == 0 {
				w.log.Warn("clickhouse insert failed; spooling to disk", "rows", len(b.Log), "dead_letters", len(b.Dead), "err", err)
			}
		}
		err := w.spool.Append(b)
		if err == nil {
			w.inserts.WithLabelValues("spooled").Inc()
			return nil
		}
		if attempt == 0 || attempt%30 == 0 {
			w.log.Error("cannot spool; consumption is paused until ClickHouse takes the spooled batches", "spool_bytes", w.spool.Bytes(), "err", err)
		}
		if ctx.Err() != nil {
			w.log.Error("shutdown with an unwritten batch; its offsets stay uncommitted and it will be replayed from Kafka", "rows", len(b.Log))
			return fmt.Errorf("log batch of %d rows neither inserted nor spooled: %w", len(b.Log), err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// replay inserts spooled batches, oldest first, until one fails.
func (w *Writer) replay(ctx context.Context) {
	for ctx.Err() == nil {
		b, seq, ok, err := w.spool.Oldest()
		if !ok {
			return
		}
		if err != nil {
			// A batch that cannot be read must not hold up the ones behind
			// it: move it aside, count it and go on.
			w.quarantined.Inc()
			dst, qerr := w.spool.Quarantine(seq)
			w.log.Error("spooled batch unreadable; quarantined it and replaying the rest",
				"err", err, "quarantined_to", dst, "quarantine_err", qerr)
			continue
		}
		if err := w.ins.Insert(ctx, b); err != nil {
			w.inserts.WithLabelValues("replay_failed").Inc()
			return
		}
		if err := w.spool.Remove(seq); err != nil {
			w.log.Error("removing replayed spool batch", "err", err)
			return
		}
		w.inserts.WithLabelValues("replayed").Inc()
		if w.spool.Len() == 0 {
			w.log.Info("spool drained; ClickHouse is back")
		}
	}
}
