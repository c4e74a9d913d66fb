package notify

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/alert"
)

// ClickHouse writes alerts to the alerts table.
type ClickHouse struct {
	Conn     driver.Conn
	Database string
}

// Send inserts one row per alert state change.
func (s ClickHouse) Send(ctx context.Context, alerts []alert.Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	b, err := s.Conn.PrepareBatch(ctx, "INSERT INTO "+s.Database+".alerts (alert_id, dedup_key, rule, state, severity, model, model_version, feature, metric, value, threshold, window_start, summary, label_keys, label_values, fence, at, at_ms)")
	if err != nil {
		return fmt.Errorf("preparing alerts insert: %w", err)
	}
	defer b.Abort()
	for _, a := range alerts {
		keys := slices.Sorted(maps.Keys(a.Labels))
		vals := make([]string, len(keys))
		for i, k := range keys {
			vals[i] = a.Labels[k]
		}
		if err := b.Append(a.ID, a.DedupKey, a.Rule, a.State.String(), a.Severity, a.Model, a.Version, a.Feature, a.Metric, a.Value, a.Threshold,
			a.WindowStart.UTC(), a.Summary, keys, vals, a.Fence, a.At.UTC(), uint64(a.At.UnixMilli())); err != nil {
			return err
		}
	}
	return b.Send()
}

// FiringQuery is the SQL Firing runs: the latest state of each alert of a
// model, every version.
func FiringQuery(db, model string) string {
	return fmt.Sprintf(`SELECT dedup_key, argMax(alert_id, at_ms), argMax(toString(state), at_ms), min(window_start)
FROM %s.alerts WHERE model = %s GROUP BY dedup_key`, db, drift.Quote(model))
}

// Firing returns the alerts of a model, every version, whose latest state
// is firing, for a monitor that takes over to restore.
func (s ClickHouse) Firing(ctx context.Context, model string) ([]alert.Alert, error) {
	rows, err := s.Conn.Query(ctx, FiringQuery(s.Database, model))
	if err != nil {
		return nil, fmt.Errorf("reading open alerts: %w", err)
	}
	defer rows.Close()
	var out []alert.Alert
	for rows.Next() {
		var a alert.Alert
		var state string
		if err := rows.Scan(&a.DedupKey, &a.ID, &state, &a.StartsAt); err != nil {
			return nil, err
		}
		if err := a.State.UnmarshalText([]byte(state)); err != nil {
			return nil, err
		}
		if a.State == alert.Firing {
			out = append(out, a)
		}
	}
	return out, rows.Err()
}
