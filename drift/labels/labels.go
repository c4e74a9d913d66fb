// Package labels is delayed labels: their contract (schemas' labels.v1),
// their table in ClickHouse (labels, the latest label of an event wins),
// and a model version's performance per window, measured on the labels
// joined to the inference log IN ClickHouse and finalized in Go, next to an
// estimate from the scores alone (CBPE) for the time before the labels
// come. A Writer and a Performance are safe for concurrent use.
package labels

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/schemas"
)

// Schema is the name of the embedded label contract.
const Schema = "labels.v1"

// Label is one outcome of a scored event.
type Label struct {
	EventID  string
	Label    uint8 // 0 or 1
	Time     time.Time
	Value    float64 // a business amount, when HasValue
	HasValue bool
	Source   string // where it came from: topic/partition/offset, or file:line
}

// Decoder checks label records against the contract.
type Decoder struct{ s *schemas.InputSchema }

// NewDecoder loads the embedded contract.
func NewDecoder() (*Decoder, error) {
	s, err := schemas.LoadInputSchema(Schema)
	if err != nil {
		return nil, err
	}
	return &Decoder{s: s}, nil
}

// Decode checks one JSON label record as the event decoder checks events
// (strict JSON, required fields, types, bounds), so a bad record gets the
// same reason codes and goes to the DLQ.
func (d *Decoder) Decode(value []byte, src schemas.Source) (Label, *schemas.DecodeError) {
	ev, derr := d.s.Decode(nil, value, src)
	if derr != nil {
		return Label{}, derr
	}
	l := Label{EventID: ev.Values[0].Str, Label: uint8(ev.Values[1].Num), Time: time.UnixMilli(int64(ev.Values[2].Num)).UTC(),
		Source: fmt.Sprintf("%s/%d/%d", src.Topic, src.Partition, src.Offset)}
	if ev.Values[3].Kind == schemas.KindNumber {
		l.Value, l.HasValue = ev.Values[3].Num, true
	}
	if l.EventID == "" {
		return Label{}, &schemas.DecodeError{Reason: schemas.ReasonMissingField, Stage: schemas.StageValidate, Field: "event_id", Detail: "empty event id"}
	}
	return l, nil
}

// FromText reads one row of a labels file, whose columns are text
// (CSV, or JSON Lines and Parquet read as text): event_id, label (0, 1,
// true or false), label_time (RFC 3339 or epoch milliseconds) and,
// optionally, value. The error names the column.
func FromText(row map[string]string) (Label, error) {
	var l Label
	if l.EventID = row["event_id"]; l.EventID == "" {
		return l, fmt.Errorf("column event_id: missing or empty")
	}
	switch strings.ToLower(row["label"]) {
	case "0", "false", "0.0":
		l.Label = 0
	case "1", "true", "1.0":
		l.Label = 1
	case "":
		return l, fmt.Errorf("column label: missing")
	default:
		return l, fmt.Errorf("column label: %q is not 0, 1, true or false", row["label"])
	}
	t := row["label_time"]
	if ms, err := strconv.ParseInt(t, 10, 64); err == nil {
		l.Time = time.UnixMilli(ms).UTC()
	} else if l.Time, err = time.Parse(time.RFC3339Nano, t); err != nil {
		return l, fmt.Errorf("column label_time: %q is neither RFC 3339 nor epoch milliseconds", t)
	}
	if l.Time.UnixMilli() < 0 || l.Time.Year() > 9999 {
		return l, fmt.Errorf("column label_time: %q is outside years 1970-9999", t)
	}
	if v := row["value"]; v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return l, fmt.Errorf("column value: %q is not a finite number", v)
		}
		l.Value, l.HasValue = f, true
	}
	return l, nil
}

// Writer inserts labels into the labels table of one database.
type Writer struct {
	Conn     driver.Conn
	Database string
	Now      func() time.Time // stamps ingested_ms; time.Now when nil
}

// Write inserts labels in one batch.
func (w Writer) Write(ctx context.Context, ls []Label) error {
	if len(ls) == 0 {
		return nil
	}
	b, err := w.Conn.PrepareBatch(ctx, "INSERT INTO "+w.Database+".labels (event_id, label, value, has_value, label_time, label_time_ms, ingested_ms, source)")
	if err != nil {
		return fmt.Errorf("preparing labels insert: %w", err)
	}
	defer b.Abort()
	now := time.Now
	if w.Now != nil {
		now = w.Now
	}
	ingested := uint64(now().UnixMilli())
	for _, l := range ls {
		hv := uint8(0)
		if l.HasValue {
			hv = 1
		}
		if err := b.Append(l.EventID, l.Label, l.Value, hv, l.Time, uint64(l.Time.UnixMilli()), ingested, l.Source); err != nil {
			return fmt.Errorf("appending the label of %s: %w", l.EventID, err)
		}
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("inserting %d labels: %w", len(ls), err)
	}
	return nil
}
