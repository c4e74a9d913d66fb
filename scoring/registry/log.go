package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Log reads and appends registry events on a Kafka topic of one partition,
// so that every event has one place in one order. The topic keeps its
// records forever: it is the source of truth. The serve instances' load
// events (version_loaded, load_failed) go to a topic of their own,
// LoadsTopic, so that serve's principal needs no write access to the
// registry itself. A Log is safe for concurrent use.
type Log struct {
	opts  []kgo.Opt // what every seer client shares (seed brokers, TLS, SASL…)
	topic string
	loads string
	cl    *kgo.Client

	beforeAppend func() // tests: a concurrent writer acts between read and append
}

// NewLog returns a log on topic; opts are the shared client options.
func NewLog(opts []kgo.Opt, topic string) (*Log, error) {
	cl, err := kgo.NewClient(append(slices.Clone(opts), kgo.DefaultProduceTopic(topic), kgo.RequiredAcks(kgo.AllISRAcks()))...)
	if err != nil {
		return nil, err
	}
	return &Log{opts: opts, topic: topic, loads: LoadsTopic(topic), cl: cl}, nil
}

// LoadsTopic is the topic of the serve instances' load events beside the
// registry topic.
func LoadsTopic(topic string) string { return topic + ".loads" }

// isLoad reports whether e is a serve instance's load event.
func isLoad(e Event) bool { return e.Type == VersionLoaded || e.Type == LoadFailed }

// Close releases the client.
func (l *Log) Close() { l.cl.Close() }

// Ensure creates the registry and loads topics — one partition, infinite
// retention — when the broker lacks them. (It does not list them first:
// the client would cache "unknown topic" for the reads that follow.)
func (l *Log) Ensure(ctx context.Context) error {
	retention := "-1"
	adm := kadm.NewClient(l.cl)
	for _, t := range []string{l.topic, l.loads} {
		resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"retention.ms": &retention, "retention.bytes": &retention}, t)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("creating registry topic %s: %w", t, err)
		}
	}
	return nil
}

// Append writes e, keyed by its model, and waits for the broker.
func (l *Log) Append(ctx context.Context, e Event) error {
	v, err := json.Marshal(e)
	if err != nil {
		return err
	}
	topic := l.topic
	if isLoad(e) {
		topic = l.loads
	}
	if err := l.cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(e.Model), Value: v}).FirstErr(); err != nil {
		return fmt.Errorf("appending %s to %s: %w", e.Type, topic, err)
	}
	return nil
}

// Read folds every event from the start of the log to its current end: the
// registry's, then the serve instances' load events (which only record who
// loaded the rollout step in service). Events that do not decode or do not
// apply are skipped (they are part of the log's history, not of the
// state); skipped says why, per offset. A loads topic that does not exist
// yet holds none.
func (l *Log) Read(ctx context.Context) (st *State, skipped []error, err error) {
	st = NewState()
	for _, topic := range []string{l.topic, l.loads} {
		recs, err := l.readTopic(ctx, topic)
		if err != nil {
			return nil, nil, err
		}
		for _, r := range recs {
			e, err := DecodeEvent(r.Value)
			if err == nil {
				err = st.Apply(e)
			}
			if err != nil {
				skipped = append(skipped, fmt.Errorf("%s offset %d: %w", topic, r.Offset, err))
			}
		}
	}
	st.sortHistory()
	return st, skipped, nil
}

// readTopic returns every record of partition 0 of topic up to its
// current end; none when the loads topic does not exist.
func (l *Log) readTopic(ctx context.Context, topic string) ([]*kgo.Record, error) {
	ends, err := kadm.NewClient(l.cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("reading the end of %s: %w", topic, err)
	}
	end, ok := ends.Lookup(topic, 0)
	if topic == l.loads && (!ok || errors.Is(end.Err, kerr.UnknownTopicOrPartition)) {
		return nil, nil
	}
	if !ok || end.Err != nil {
		return nil, fmt.Errorf("registry topic %s: partition 0 not found (run seer models register once, or create it): %v", topic, end.Err)
	}
	if end.Offset == 0 {
		return nil, nil
	}
	rd, err := kgo.NewClient(append(slices.Clone(l.opts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))...)
	if err != nil {
		return nil, err
	}
	defer rd.Close()
	var out []*kgo.Record
	for next := int64(0); next < end.Offset; {
		fs := rd.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := fs.Err0(); err != nil {
			return nil, fmt.Errorf("reading %s: %w", topic, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			next = r.Offset + 1
			if r.Offset < end.Offset {
				out = append(out, r)
			}
		})
	}
	return out, nil
}

// SetAlias points alias at version with optimistic concurrency: the event
// records the version the alias pointed at when this move was asked, so of
// two concurrent moves only the first in the log applies. The loser gets
// an error naming the version that won.
func (l *Log) SetAlias(ctx context.Context, model, alias, version, actor, reason string) (Event, error) {
	st, _, err := l.Read(ctx)
	if err != nil {
		return Event{}, err
	}
	e := Event{ID: NewID(), Type: AliasSet, Model: model, Version: version, Alias: alias, Actor: actor, Reason: reason, Time: time.Now().UTC()}
	if m := st.Models[model]; m != nil {
		e.Previous = m.Aliases[alias]
	}
	if err := st.Apply(e); err != nil { // checks the version exists
		return Event{}, err
	}
	if l.beforeAppend != nil {
		l.beforeAppend()
	}
	if err := l.Append(ctx, e); err != nil {
		return Event{}, err
	}
	after, _, err := l.Read(ctx)
	if err != nil {
		return Event{}, err
	}
	if !after.Applied(e.ID) {
		return Event{}, fmt.Errorf("alias %s of %s was moved to %s by another request first; your move to %s was not applied",
			alias, model, after.Models[model].Aliases[alias], version)
	}
	return e, nil
}

// Follow folds the log from its start and keeps following it until ctx
// ends: once caught up with the end the log had when Follow began, and
// after every later fetch that applied an event, it calls fn with the
// state and the events applied since the last call. It follows the loads
// topic too (when it exists at the start); across the two topics events
// come in the order they are fetched. fn runs on Follow's goroutine; an
// error from it ends Follow.
func (l *Log) Follow(ctx context.Context, fn func(st *State, applied []Event) error) error {
	ends, err := kadm.NewClient(l.cl).ListEndOffsets(ctx, l.topic, l.loads)
	if err != nil {
		return fmt.Errorf("reading the end of %s: %w", l.topic, err)
	}
	end, ok := ends.Lookup(l.topic, 0)
	if !ok || end.Err != nil {
		return fmt.Errorf("registry topic %s: partition 0 not found: %v", l.topic, end.Err)
	}
	want := map[string]int64{l.topic: end.Offset} // the offsets to reach to be caught up
	parts := map[string]map[int32]kgo.Offset{l.topic: {0: kgo.NewOffset().AtStart()}}
	if le, ok := ends.Lookup(l.loads, 0); ok && le.Err == nil {
		want[l.loads] = le.Offset
		parts[l.loads] = map[int32]kgo.Offset{0: kgo.NewOffset().AtStart()}
	}
	rd, err := kgo.NewClient(append(slices.Clone(l.opts), kgo.ConsumePartitions(parts))...)
	if err != nil {
		return err
	}
	defer rd.Close()
	st := NewState()
	var applied []Event
	caughtUp := func() bool {
		for _, w := range want {
			if w > 0 {
				return false
			}
		}
		return true
	}
	if caughtUp() {
		if err := fn(st, nil); err != nil {
			return err
		}
	}
	for {
		fs := rd.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		wasCaughtUp, changed := caughtUp(), false
		fs.EachRecord(func(r *kgo.Record) {
			e, err := DecodeEvent(r.Value)
			if err == nil && st.Apply(e) == nil {
				changed = true
				applied = append(applied, e)
			}
			if w, ok := want[r.Topic]; ok && r.Offset+1 >= w {
				want[r.Topic] = 0
			}
		})
		if caughtUp() && (changed || !wasCaughtUp) {
			if err := fn(st, applied); err != nil {
				return err
			}
			applied = nil
		}
	}
}
