// Package notify delivers alert state changes decided by drift/alert: to
// the log, the ClickHouse alerts table, a Kafka topic, and an
// Alertmanager-compatible webhook. Each Sink is safe for concurrent use;
// a failing sink does not hold the others back (the monitor calls each).
package notify

import (
	"context"

	"github.com/seer-ml/seer/drift/alert"
)

// Sink delivers alert state changes.
type Sink interface {
	Send(ctx context.Context, alerts []alert.Alert) error
}
