package notify

import (
	"context"
	"log/slog"

	"github.com/seer-ml/seer/drift/alert"
)

// Log logs each alert.
type Log struct{ Log *slog.Logger }

// Send logs alerts at warn (firing) or info.
func (s Log) Send(_ context.Context, alerts []alert.Alert) error {
	for _, a := range alerts {
		lvl := slog.LevelInfo
		if a.State == alert.Firing {
			lvl = slog.LevelWarn
		}
		s.Log.Log(context.Background(), lvl, "alert "+a.State.String(), "component", "monitor", "rule", a.Rule, "severity", a.Severity,
			"model", a.Model, "version", a.Version, "feature", a.Feature, "metric", a.Metric, "value", a.Value, "threshold", a.Threshold, "alert_id", a.ID)
	}
	return nil
}
