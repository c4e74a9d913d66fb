// Package ingest writes feature rows to the Redis online store in the
// layout of DESIGN.md ({prefix}:{view}:{entity} → features and _ts): file
// loads (seer features load), which replace each entity's hash, and the
// stream of updates from a Kafka feature topic (seer features ingest),
// which never lets an older update overwrite a newer one. A Writer is safe
// for concurrent use.
package ingest

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/redis/go-redis/v9"

	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/schemas"
)

// Writer writes feature rows under one key prefix.
type Writer struct {
	rdb    redis.UniversalClient
	prefix string
	now    func() time.Time
}

// New returns a Writer over rdb for keys under prefix (redis.key_prefix).
func New(rdb redis.UniversalClient, prefix string) *Writer {
	return &Writer{rdb: rdb, prefix: prefix, now: time.Now}
}

// LoadOptions say how to read a feature file.
type LoadOptions struct {
	View         string
	Format       string        // csv or jsonl
	EntityColumn string        // column holding the entity id
	TimeColumn   string        // optional column with the update time (RFC 3339 or epoch ms); else now
	TTL          time.Duration // optional key TTL
	BatchSize    int           // rows per pipelined write; default 1000
	Progress     func(rows int)
}

// Row is one feature row: the entity, the update time and feature values.
type Row struct {
	Entity string
	TsMs   int64
	Values map[string]string
}

// Load reads feature rows from r and writes them to Redis, BatchSize rows per
// pipelined round trip. A bad row stops the load with an error that names
// its line; rows before it are written. It returns the rows written.
func (s *Writer) Load(ctx context.Context, r io.Reader, o LoadOptions) (int, error) {
	if o.View == "" || strings.ContainsAny(o.View, " :") {
		return 0, fmt.Errorf("view: %q must be non-empty without spaces or ':'", o.View)
	}
	if o.EntityColumn == "" {
		return 0, errors.New("entity column: required")
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 1000
	}
	var next func() (Row, int, error)
	switch o.Format {
	case "csv":
		next = csvRows(r, o)
	case "jsonl":
		next = jsonlRows(r, o)
	default:
		return 0, fmt.Errorf("format: %q is not csv or jsonl", o.Format)
	}
	written := 0
	batch := make([]Row, 0, o.BatchSize)
	flush := func() error {
		if err := s.Put(ctx, o.View, batch, o.TTL); err != nil {
			return err
		}
		written += len(batch)
		batch = batch[:0]
		if o.Progress != nil {
			o.Progress(written)
		}
		return nil
	}
	for {
		row, line, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return written, fmt.Errorf("line %d: %w", line, err)
		}
		if row.TsMs == 0 {
			row.TsMs = s.now().UnixMilli()
		}
		batch = append(batch, row)
		if len(batch) == o.BatchSize {
			if err := flush(); err != nil {
				return written, err
			}
		}
	}
	if len(batch) > 0 {
		if err := flush(); err != nil {
			return written, err
		}
	}
	return written, nil
}

// Put writes rows of one view in one pipelined round trip, whatever the
// stored _ts (a load, or a test's fault injection). Each hash is replaced
// whole, atomically (one script run per key: it works on a Redis Cluster,
// where a MULTI cannot span slots), so a feature dropped upstream does
// not linger.
func (s *Writer) Put(ctx context.Context, view string, rows []Row, ttl time.Duration) error {
	if _, err := s.run(ctx, putScript, view, rows, ttl); err != nil {
		return fmt.Errorf("writing %d rows of view %s: %w", len(rows), view, err)
	}
	return nil
}

// PutViews writes, for every view, one row per entity with the given
// feature values, all updated at ts: the way demo, loadtest and tests seed
// the store with generated features.
func (s *Writer) PutViews(ctx context.Context, views map[string]map[string]map[string]string, ts time.Time, ttl time.Duration) error {
	for view, byEntity := range views {
		rows := make([]Row, 0, len(byEntity))
		for entity, vals := range byEntity {
			rows = append(rows, Row{Entity: entity, TsMs: ts.UnixMilli(), Values: vals})
		}
		if err := s.Put(ctx, view, rows, ttl); err != nil {
			return err
		}
	}
	return nil
}

func parseTime(s string) (int64, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("time %q is neither RFC 3339 nor epoch milliseconds", s)
	}
	return t.UnixMilli(), nil
}

func checkValue(col, v string) error {
	// A number too large for float64 parses as ±Inf with ErrRange.
	if f, err := strconv.ParseFloat(v, 64); (err == nil || errors.Is(err, strconv.ErrRange)) && (math.IsNaN(f) || math.IsInf(f, 0)) {
		return fmt.Errorf("column %q: %q is not a finite number", col, v)
	}
	return nil
}

func csvRows(r io.Reader, o LoadOptions) func() (Row, int, error) {
	cr := csv.NewReader(bufio.NewReader(r))
	cr.ReuseRecord = true
	var header []string
	entity, ts := -1, -1
	line := 0
	return func() (Row, int, error) {
		if header == nil {
			h, err := cr.Read()
			line++
			if err != nil {
				if errors.Is(err, io.EOF) {
					return Row{}, line, errors.New("empty file: want a header row")
				}
				return Row{}, line, err
			}
			header = append([]string(nil), h...)
			for i, c := range header {
				switch c {
				case o.EntityColumn:
					entity = i
				case o.TimeColumn:
					ts = i
				}
			}
			if entity < 0 {
				return Row{}, line, fmt.Errorf("header has no entity column %q", o.EntityColumn)
			}
			if o.TimeColumn != "" && ts < 0 {
				return Row{}, line, fmt.Errorf("header has no time column %q", o.TimeColumn)
			}
		}
		rec, err := cr.Read()
		line++
		if err != nil {
			return Row{}, line, err
		}
		row := Row{Entity: rec[entity], Values: make(map[string]string, len(rec))}
		if row.Entity == "" {
			return Row{}, line, fmt.Errorf("column %q: empty entity id", o.EntityColumn)
		}
		for i, v := range rec {
			switch {
			case i == entity:
			case i == ts:
				if row.TsMs, err = parseTime(v); err != nil {
					return Row{}, line, fmt.Errorf("column %q: %w", o.TimeColumn, err)
				}
			case v != "":
				if err := checkValue(header[i], v); err != nil {
					return Row{}, line, err
				}
				row.Values[header[i]] = v
			}
		}
		return row, line, nil
	}
}

func jsonlRows(r io.Reader, o LoadOptions) func() (Row, int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	line := 0
	return func() (Row, int, error) {
		for sc.Scan() {
			line++
			b := sc.Bytes()
			if len(bytes.TrimSpace(b)) == 0 {
				continue
			}
			row, derr := parseRow(b, nil, o)
			if derr != nil {
				return Row{}, line, derr
			}
			return row, line, nil
		}
		if err := sc.Err(); err != nil {
			return Row{}, line, err
		}
		return Row{}, line, io.EOF
	}
}

// parseRow reads one JSON object of feature values: the entity id in
// o.EntityColumn (or key, when the object has none), the update time in
// o.TimeColumn, and every other field a feature (a string, number or
// boolean; null leaves it out). The JSON is checked strictly, as events
// are: RFC 8259 grammar, UTF-8, no repeated key.
func parseRow(b, key []byte, o LoadOptions) (Row, *schemas.DecodeError) {
	bad := func(reason schemas.Reason, field, detail string) (Row, *schemas.DecodeError) {
		stage := schemas.StageValidate
		if reason == schemas.ReasonInvalidJSON {
			stage = schemas.StageDecode
		}
		return Row{}, &schemas.DecodeError{Reason: reason, Stage: stage, Field: field, Detail: detail}
	}
	if !jsontext.Value(b).IsValid() {
		return bad(schemas.ReasonInvalidJSON, "", "not one valid JSON object (strict: UTF-8, no repeated key, no NaN)")
	}
	var obj map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber() // keep numbers as written: no float rounding or exponents
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return bad(schemas.ReasonInvalidJSON, "", "want a JSON object")
	}
	row := Row{Values: make(map[string]string, len(obj))}
	for k, v := range obj {
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		case bool:
			s = strconv.FormatBool(x)
		case nil:
			continue
		default:
			return bad(schemas.ReasonWrongType, k, "want a string, number or boolean")
		}
		switch k {
		case o.EntityColumn:
			row.Entity = s
		case o.TimeColumn:
			ms, err := parseTime(s)
			if err != nil {
				return bad(schemas.ReasonWrongType, k, err.Error())
			}
			row.TsMs = ms
		default:
			if err := checkValue(k, s); err != nil {
				return bad(schemas.ReasonNotFinite, k, err.Error())
			}
			row.Values[k] = s
		}
	}
	if row.Entity == "" {
		row.Entity = string(key)
	}
	if row.Entity == "" {
		return bad(schemas.ReasonMissingField, o.EntityColumn, "missing or empty entity id, and no record key")
	}
	if strings.ContainsAny(row.Entity, " :") {
		return bad(schemas.ReasonWrongType, o.EntityColumn, fmt.Sprintf("entity id %q holds a space or ':'", truncate(row.Entity, 64)))
	}
	return row, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Updates decodes the records of a feature topic: one JSON object per
// entity, as parseRow reads them, whose update time is required.
type Updates struct {
	EntityField string // default entity_id
	TimeField   string // default event_time
	MaxBytes    int    // default 64 KiB
}

// Decode checks one feature update record.
func (u Updates) Decode(key, value []byte) (Row, *schemas.DecodeError) {
	entity, ts, maxBytes := cmp.Or(u.EntityField, "entity_id"), cmp.Or(u.TimeField, "event_time"), cmp.Or(u.MaxBytes, 64<<10)
	if len(value) > maxBytes {
		return Row{}, &schemas.DecodeError{Reason: schemas.ReasonOversize, Stage: schemas.StageDecode, Detail: fmt.Sprintf("record is %d bytes, limit is %d", len(value), maxBytes)}
	}
	row, derr := parseRow(value, key, LoadOptions{EntityColumn: entity, TimeColumn: ts})
	if derr != nil {
		return Row{}, derr
	}
	if row.TsMs <= 0 {
		return Row{}, &schemas.DecodeError{Reason: schemas.ReasonMissingField, Stage: schemas.StageValidate, Field: ts, Detail: "an update needs its event time"}
	}
	return row, nil
}

// replaceScript replaces one hash: KEYS[1] the hash; ARGV[1] the update's
// _ts, ARGV[2] the TTL in ms (0 for none), then field, value pairs. It
// returns 1.
const replaceScript = `
redis.call('DEL', KEYS[1])
if #ARGV > 2 then
  redis.call('HSET', KEYS[1], '` + featurestore.TimestampField + `', ARGV[1], unpack(ARGV, 3))
else
  redis.call('HSET', KEYS[1], '` + featurestore.TimestampField + `', ARGV[1])
end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1`

var (
	// putScript replaces a hash whatever it holds.
	putScript = redis.NewScript(replaceScript)
	// applyScript replaces a hash unless its stored _ts is newer than the
	// update's, and returns 0 then. An update as old as the stored one is
	// written (a replay is idempotent).
	applyScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], '` + featurestore.TimestampField + `')
if cur and tonumber(cur) > tonumber(ARGV[1]) then return 0 end
` + replaceScript)
)

// Apply writes updates of one view in one pipelined round trip, each by
// one run of a Lua script, so that an update older than the stored _ts
// never overwrites a newer one, whatever order they arrive in; it returns
// how many it skipped as stale. Each hash is replaced whole.
func (s *Writer) Apply(ctx context.Context, view string, rows []Row, ttl time.Duration) (skipped int, err error) {
	cmds, err := s.run(ctx, applyScript, view, rows, ttl)
	if err != nil {
		return 0, fmt.Errorf("writing %d updates of view %s: %w", len(rows), view, err)
	}
	for _, c := range cmds {
		if n, _ := c.Int(); n == 0 {
			skipped++
		}
	}
	return skipped, nil
}

// run runs script once per row, on the row's hash, in one pipeline (one
// round trip per node of a cluster). After a SCRIPT FLUSH or a Redis
// restart the script is loaded again and the pipeline rerun: a rerun
// writes the same values with the same _ts.
func (s *Writer) run(ctx context.Context, script *redis.Script, view string, rows []Row, ttl time.Duration) ([]*redis.Cmd, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(rows))
		for i, r := range rows {
			args := make([]any, 0, 2*len(r.Values)+2)
			args = append(args, r.TsMs, ttl.Milliseconds())
			for k, v := range r.Values {
				args = append(args, k, v)
			}
			cmds[i] = script.EvalSha(ctx, pipe, []string{featurestore.Key(s.prefix, view, r.Entity)}, args...)
		}
		_, err := pipe.Exec(ctx)
		if err != nil && attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if err := script.Load(ctx, s.rdb).Err(); err != nil {
				return nil, fmt.Errorf("loading the feature script: %w", err)
			}
			continue
		}
		return cmds, err
	}
}
