package featurestore

import (
	"bufio"
	"bytes"
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
)

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
func (s *Store) Load(ctx context.Context, r io.Reader, o LoadOptions) (int, error) {
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

// Put writes rows of one view in one pipelined round trip. Each hash is
// replaced whole, so a feature dropped upstream does not linger.
func (s *Store) Put(ctx context.Context, view string, rows []Row, ttl time.Duration) error {
	pipe := s.rdb.TxPipeline()
	for _, r := range rows {
		key := Key(s.prefix, view, r.Entity)
		args := make([]any, 0, 2*len(r.Values)+2)
		for k, v := range r.Values {
			args = append(args, k, v)
		}
		args = append(args, TimestampField, strconv.FormatInt(r.TsMs, 10))
		pipe.Del(ctx, key)
		pipe.HSet(ctx, key, args...)
		if ttl > 0 {
			pipe.PExpire(ctx, key, ttl)
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("writing %d rows of view %s: %w", len(rows), view, err)
	}
	return nil
}

// PutViews writes, for every view, one row per entity with the given
// feature values, all updated at ts: the way demo, loadtest and tests seed
// the store with generated features.
func (s *Store) PutViews(ctx context.Context, views map[string]map[string]map[string]string, ts time.Time, ttl time.Duration) error {
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
	if f, err := strconv.ParseFloat(v, 64); err == nil && (math.IsNaN(f) || math.IsInf(f, 0)) {
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
			if len(strings.TrimSpace(string(b))) == 0 {
				continue
			}
			var obj map[string]any
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.UseNumber() // keep numbers as written: no float rounding or exponents
			if err := dec.Decode(&obj); err != nil {
				return Row{}, line, fmt.Errorf("invalid JSON object: %v", err)
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
					return Row{}, line, fmt.Errorf("field %q: want a string, number or boolean", k)
				}
				switch k {
				case o.EntityColumn:
					row.Entity = s
				case o.TimeColumn:
					ms, err := parseTime(s)
					if err != nil {
						return Row{}, line, fmt.Errorf("field %q: %w", k, err)
					}
					row.TsMs = ms
				default:
					row.Values[k] = s
				}
			}
			if row.Entity == "" {
				return Row{}, line, fmt.Errorf("field %q: missing or empty entity id", o.EntityColumn)
			}
			return row, line, nil
		}
		if err := sc.Err(); err != nil {
			return Row{}, line, err
		}
		return Row{}, line, io.EOF
	}
}
