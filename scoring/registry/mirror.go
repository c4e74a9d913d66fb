package registry

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Mirror copies registry events into the ClickHouse tables model_versions
// and model_events (migration 0003), so that analysts can join predictions
// to lineage. Rows deduplicate on their keys, so mirroring an event twice
// is harmless. A Mirror is safe for concurrent use.
type Mirror struct {
	Conn     driver.Conn
	Database string
}

// Write inserts the events: every event into model_events, and each
// version_registered into model_versions too.
func (m Mirror) Write(ctx context.Context, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	eb, err := m.Conn.PrepareBatch(ctx, "INSERT INTO "+m.Database+".model_events (event_id, type, model, version, alias, previous, actor, reason, instance, at, at_ms, rollout, step, gate, figure_names, figure_values)")
	if err != nil {
		return fmt.Errorf("preparing model_events insert: %w", err)
	}
	defer eb.Abort()
	var versions []Event
	for _, e := range events {
		var step string
		if e.Rollout != "" && e.Step < len(e.Steps) {
			step = e.Steps[e.Step]
		}
		names, vals := figures(e.Figures)
		if err := eb.Append(e.ID, string(e.Type), e.Model, e.Version, e.Alias, e.Previous, e.Actor, e.Reason, e.Instance, e.Time.UTC(), uint64(e.Time.UnixMilli()),
			e.Rollout, step, e.Gate, names, vals); err != nil {
			return err
		}
		if e.Type == VersionRegistered {
			versions = append(versions, e)
		}
	}
	if err := eb.Send(); err != nil {
		return fmt.Errorf("inserting %d model_events: %w", len(events), err)
	}
	if len(versions) == 0 {
		return nil
	}
	vb, err := m.Conn.PrepareBatch(ctx, "INSERT INTO "+m.Database+".model_versions (model, version, digest, registered_at, registered_ms, actor, reason, owner, description, onnx_sha256, dataset, code, code_sha256, signed_by, artifact, metric_names, metric_values, event_id)")
	if err != nil {
		return fmt.Errorf("preparing model_versions insert: %w", err)
	}
	defer vb.Abort()
	for _, e := range versions {
		p := e.Package
		names, vals := figures(p.Metrics)
		if err := vb.Append(e.Model, e.Version, e.Digest, e.Time.UTC(), uint64(e.Time.UnixMilli()), e.Actor, e.Reason, p.Owner, p.Description,
			p.ONNXSHA256, p.Dataset, p.Code, p.CodeSHA256, p.SignedBy, e.Artifact, names, vals, e.ID); err != nil {
			return err
		}
	}
	if err := vb.Send(); err != nil {
		return fmt.Errorf("inserting %d model_versions: %w", len(versions), err)
	}
	return nil
}

// MirrorLoop follows the log and mirrors every applied event until ctx
// ends; a failed write is retried with the next batch of events.
func (l *Log) MirrorLoop(ctx context.Context, m Mirror, onErr func(error)) error {
	var pending []Event
	return l.Follow(ctx, func(_ *State, applied []Event) error {
		pending = append(pending, applied...)
		if err := m.Write(ctx, pending); err != nil {
			onErr(err)
			return nil
		}
		pending = pending[:0]
		return nil
	})
}

// LineageQuery joins each prediction of the inference log to the lineage
// of the version that scored it (owner, training data, held-out AUC). It
// runs on ClickHouse 18.16; docs/clickhouse.md shows it to analysts, and a
// test runs it.
const LineageQuery = `SELECT l.prediction_id, l.model_version, v.owner, v.dataset, v.auc
FROM seer.inference_log AS l
ANY LEFT JOIN (
    SELECT model, version AS model_version, owner, dataset,
           metric_values[indexOf(metric_names, 'auc')] AS auc
    FROM seer.model_versions FINAL
) AS v USING (model, model_version)
WHERE l.model = 'card-fraud'`

// figures flattens named figures into sorted names and their values.
func figures(m map[string]float64) ([]string, []float64) {
	names := slices.Sorted(maps.Keys(m))
	vals := make([]float64, len(names))
	for i, n := range names {
		vals[i] = m[n]
	}
	return names, vals
}
