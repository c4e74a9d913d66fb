package window

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/schemas"
)

// Versions picks a model's jobs for each window: one per version with rows
// in the window (production or canary; shadow rows are a trial, not
// traffic), each measured against its own package's reference, so that
// the drift of production and of a canary are never mixed; and always the
// version in production now, so that a window without rows is measured
// too (no-data). It keeps one job per version. Not safe for concurrent
// use; one monitor owns it.
type Versions struct {
	Conn     driver.Conn
	Database string
	Model    string
	// Production returns the package of the version in production now.
	Production func(ctx context.Context) (*schemas.Manifest, error)
	// Package returns the package of another version; nil measures the
	// production version only.
	Package func(ctx context.Context, version string) (*schemas.Manifest, error)
	// Reference, when set (monitor.reference START/END), is the log range
	// each version is compared with; a version without rows in it is
	// compared with its package's profile.
	Reference [2]time.Time
	Logger    *slog.Logger

	jobs map[string]*Job
}

// Query is the SQL that lists the versions with rows in [start, end).
func (v *Versions) Query(start, end time.Time) string {
	return fmt.Sprintf("SELECT DISTINCT model_version FROM %s.inference_log WHERE model = %s AND route != 'shadow' AND event_time_ms >= %d AND event_time_ms < %d ORDER BY model_version",
		v.Database, drift.Quote(v.Model), start.UnixMilli(), end.UnixMilli())
}

// Jobs returns the jobs of the window [start, end), production's first.
func (v *Versions) Jobs(ctx context.Context, start, end time.Time) ([]*Job, error) {
	prod, err := v.Production(ctx)
	if err != nil {
		return nil, fmt.Errorf("the version in production: %w", err)
	}
	versions := []string{prod.Version}
	if v.Package != nil {
		rows, err := v.Conn.Query(ctx, v.Query(start, end))
		if err != nil {
			return nil, fmt.Errorf("listing the versions of the window: %w", err)
		}
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return nil, err
			}
			if s != prod.Version {
				versions = append(versions, s)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	out := make([]*Job, 0, len(versions))
	for i, ver := range versions {
		j := v.jobs[ver]
		if j == nil {
			m := prod
			if i > 0 {
				if m, err = v.Package(ctx, ver); err != nil {
					v.Logger.Warn("a version with rows in the window cannot be measured", "model", v.Model, "version", ver, "err", err)
					continue
				}
			}
			j = New(v.Conn, v.Database, m)
			if !v.Reference[0].IsZero() {
				if err := j.UseReferenceRange(ctx, v.Reference[0], v.Reference[1]); err != nil {
					v.Logger.Warn("measuring against the package profile instead of monitor.reference", "model", v.Model, "version", ver, "err", err)
				}
			}
			if v.jobs == nil {
				v.jobs = map[string]*Job{}
			}
			v.jobs[ver] = j
		}
		j.Production = i == 0
		out = append(out, j)
	}
	return out, nil
}

// LastEnd returns the end of the model's last stored window (any version);
// the zero time when there is none.
func (v *Versions) LastEnd(ctx context.Context) (time.Time, error) {
	var last time.Time
	if err := v.Conn.QueryRow(ctx, LastEndQuery(v.Database, v.Model)).Scan(&last); err != nil {
		return time.Time{}, fmt.Errorf("reading the last window: %w", err)
	}
	if last.Unix() <= 0 {
		return time.Time{}, nil
	}
	return last, nil
}

// LastEndQuery is the SQL LastEnd runs.
func LastEndQuery(database, model string) string {
	return fmt.Sprintf("SELECT max(window_end) FROM %s.window_metrics WHERE model = %s", database, drift.Quote(model))
}
