package drift

import (
	"context"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/schemas"
)

const inferenceColumns = `prediction_id, event_id, entity_id, model, model_version, route,
	event_time, scored_time, event_time_ms, scored_time_ms,
	input_names, input_values, input_strings, input_missing,
	feature_views, feature_age_ms, feature_missing, feature_stale,
	score, label, source_topic, source_partition, source_offset`

const deadLetterColumns = `source_topic, source_partition, source_offset, reason, stage, detail, dlq_time, dlq_time_ms`

// Sink writes inference-log and dead-letter rows to ClickHouse.
type Sink struct {
	conn     driver.Conn
	database string
}

// NewSink returns a sink writing to database (created by Migrate).
func NewSink(conn driver.Conn, database string) *Sink {
	return &Sink{conn: conn, database: database}
}

// WriteLog inserts one inference-log row per item whose Reject is nil, in a
// single INSERT.
func (s *Sink) WriteLog(ctx context.Context, items []schemas.Item) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.database+".inference_log ("+inferenceColumns+")")
	if err != nil {
		return fmt.Errorf("preparing inference_log insert: %w", err)
	}
	defer batch.Abort()
	n := 0
	for i := range items {
		it := &items[i]
		if it.Reject != nil {
			continue
		}
		values := make([]float64, len(it.Inputs))
		strs := make([]string, len(it.Inputs))
		missing := make([]uint8, len(it.Inputs))
		for j, v := range it.Inputs {
			values[j] = float64(v)
			if j < len(it.InputRaw) {
				r := it.InputRaw[j]
				if r.Kind == schemas.KindString {
					strs[j] = r.Str
				}
				if r.Kind == schemas.KindAbsent {
					missing[j] = 1
				}
			}
		}
		views := make([]string, len(it.Features))
		ages := make([]int64, len(it.Features))
		fMissing := make([]uint8, len(it.Features))
		fStale := make([]uint8, len(it.Features))
		for j, f := range it.Features {
			views[j], ages[j] = f.View, f.AgeMs
			fMissing[j], fStale[j] = b2u(f.Missing), b2u(f.Stale)
		}
		et := it.Event.Time
		if et.IsZero() {
			et = it.ScoredTime
		}
		if err := batch.Append(it.PredictionID, it.Event.ID, it.Event.EntityID, it.Model, it.ModelVersion, string(it.Route),
			et.UTC(), it.ScoredTime.UTC(), uint64(et.UnixMilli()), uint64(it.ScoredTime.UnixMilli()),
			it.InputNames, values, strs, missing,
			views, ages, fMissing, fStale,
			it.Score, it.Label, it.Event.Source.Topic, it.Event.Source.Partition, it.Event.Source.Offset); err != nil {
			return fmt.Errorf("appending inference_log row for event %s: %w", it.Event.ID, err)
		}
		n++
	}
	if n == 0 {
		return nil
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d inference_log rows: %w", n, err)
	}
	return nil
}

// WriteDeadLetters inserts one dead_letters row per record.
func (s *Sink) WriteDeadLetters(ctx context.Context, dls []schemas.DeadLetter) error {
	if len(dls) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.database+".dead_letters ("+deadLetterColumns+")")
	if err != nil {
		return fmt.Errorf("preparing dead_letters insert: %w", err)
	}
	defer batch.Abort()
	for _, d := range dls {
		t := d.Time
		if t.IsZero() {
			t = time.Now()
		}
		if err := batch.Append(d.Source.Topic, d.Source.Partition, d.Source.Offset, string(d.Reason), string(d.Stage), d.Detail,
			t.UTC(), uint64(t.UnixMilli())); err != nil {
			return fmt.Errorf("appending dead_letters row: %w", err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d dead_letters rows: %w", len(dls), err)
	}
	return nil
}

// Ping checks that ClickHouse answers.
func (s *Sink) Ping(ctx context.Context) error { return s.conn.Ping(ctx) }

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}
