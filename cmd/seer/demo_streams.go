package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/featurestore/ingest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/stream"
)

// demoStreams are the demo's two upstreams, each through the loop of its
// seer command: feature updates on one topic per view, written to Redis
// by seer features ingest's loop, and the labels of replayed examples,
// published delay after their event as a chargeback would come, written
// to ClickHouse by seer labels ingest's loop.
type demoStreams struct {
	cl       *kgo.Client
	base     string
	delay    time.Duration
	features atomic.Int64 // updates the features ingest has handled
	labelled atomic.Int64 // labels the labels ingest has written

	mu      sync.Mutex
	pending []demoLabel
	sent    int
	wg      sync.WaitGroup
	errs    chan error
}

type demoLabel struct {
	id    string
	label int
	due   time.Time
}

// startDemoStreams starts the ingest loops of the views and of the labels
// (as cfg's Kafka client, into a's Redis and ClickHouse) until ctx ends.
func startDemoStreams(ctx context.Context, cfg Config, a *app, base string, views []string, delay time.Duration, logger *slog.Logger) (*demoStreams, error) {
	cl, err := kgo.NewClient(append(kafkaOpts(cfg.Kafka, "demo-upstream", logger, nil), kgo.AllowAutoTopicCreation())...)
	if err != nil {
		return nil, err
	}
	d := &demoStreams{cl: cl, base: base, delay: delay, errs: make(chan error, len(views)+1)}
	dec, err := labels.NewDecoder()
	if err != nil {
		return nil, err
	}
	w := labels.Writer{Conn: a.ch, Database: cfg.ClickHouse.Database}
	start := func(name, topic string, run func(cl *kgo.Client) error) error {
		in, err := kgo.NewClient(append(kafkaOpts(cfg.Kafka, "demo-"+name, logger, nil), append(stream.IngestOpts(base+"-"+name, topic), kgo.AllowAutoTopicCreation())...)...)
		if err != nil {
			return err
		}
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			defer in.Close()
			d.errs <- run(in)
		}()
		return nil
	}
	metrics := stream.NewIngestMetrics(prometheus.NewRegistry()) // the demo serves no /metrics
	if err := start("labels", base+".labels", func(in *kgo.Client) error {
		l := &stream.Ingest[labels.Label]{Name: "labels", Client: in, DLQTopic: base + ".labels.dlq", MaxPollRecords: 5000, Logger: logger, Metrics: metrics,
			Decode: func(r *kgo.Record) (labels.Label, *schemas.DecodeError) {
				return dec.Decode(r.Value, schemas.Source{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset})
			},
			Write: func(ctx context.Context, ls []labels.Label) (int, error) { return 0, w.Write(ctx, ls) }}
		_, err := l.Run(ctx, 0, func(t stream.Totals) { d.labelled.Store(int64(t.Written)) })
		return err
	}); err != nil {
		return nil, err
	}
	fw := ingest.New(a.rdb, a.store.Prefix())
	for _, view := range views {
		if err := start("features-"+view, base+".features."+view, func(in *kgo.Client) error {
			f := &stream.Ingest[ingest.Row]{Name: "features", Client: in, DLQTopic: base + ".features.dlq", MaxPollRecords: 5000, Logger: logger, Metrics: metrics,
				Decode: func(r *kgo.Record) (ingest.Row, *schemas.DecodeError) { return ingest.Updates{}.Decode(r.Key, r.Value) },
				Write:  func(ctx context.Context, rows []ingest.Row) (int, error) { return fw.Apply(ctx, view, rows, time.Hour) }}
			var before int64
			_, err := f.Run(ctx, 0, func(t stream.Totals) {
				d.features.Add(int64(t.Written+t.Skipped) - before)
				before = int64(t.Written + t.Skipped)
			})
			return err
		}); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// publishFeatures sends every view's rows, updated at ts, as feature
// updates and waits until the ingest has handled them.
func (d *demoStreams) publishFeatures(ctx context.Context, features map[string]map[string]map[string]string, ts time.Time) error {
	var recs []*kgo.Record
	for view, byEntity := range features {
		entities := make([]string, 0, len(byEntity))
		for e := range byEntity {
			entities = append(entities, e)
		}
		sort.Strings(entities)
		for _, e := range entities {
			obj := map[string]any{"entity_id": e, "event_time": ts.UnixMilli()}
			for k, v := range byEntity[e] {
				obj[k] = v
			}
			b, _ := json.Marshal(obj)
			recs = append(recs, &kgo.Record{Topic: d.base + ".features." + view, Key: []byte(e), Value: b})
		}
	}
	want := d.features.Load() + int64(len(recs))
	if err := d.cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("publishing feature updates: %w", err)
	}
	for d.features.Load() < want {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-d.errs:
			return fmt.Errorf("feature ingest: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// label queues an event's outcome, due delay after the event.
func (d *demoStreams) label(id string, label int, eventTime time.Time) {
	d.mu.Lock()
	d.pending = append(d.pending, demoLabel{id: id, label: label, due: eventTime.Add(d.delay)})
	d.mu.Unlock()
}

// sendDue publishes the labels due by now (all of them with flush).
func (d *demoStreams) sendDue(ctx context.Context, now time.Time, flush bool) error {
	d.mu.Lock()
	var due []demoLabel
	keep := d.pending[:0]
	for _, l := range d.pending {
		if flush || !l.due.After(now) {
			due = append(due, l)
		} else {
			keep = append(keep, l)
		}
	}
	d.pending = keep
	d.mu.Unlock()
	recs := make([]*kgo.Record, len(due))
	for i, l := range due {
		recs[i] = &kgo.Record{Topic: d.base + ".labels", Key: []byte(l.id),
			Value: fmt.Appendf(nil, `{"event_id":%q,"label":%d,"label_time":%d}`, l.id, l.label, l.due.UnixMilli())}
	}
	d.sent += len(recs)
	if len(recs) == 0 {
		return nil
	}
	return d.cl.ProduceSync(ctx, recs...).FirstErr()
}

// close waits for the ingest loops (ctx must have ended) and closes the
// producer.
func (d *demoStreams) close() {
	d.wg.Wait()
	d.cl.Close()
}
