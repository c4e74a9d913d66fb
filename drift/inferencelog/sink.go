// Package inferencelog writes seer's inference log: one row per scored
// event and one per dead letter, into ClickHouse. The Writer batches rows by
// size and time and, while ClickHouse fails, spools whole batches to a disk
// queue (Spool) that one process owns, replaying them in order once
// ClickHouse is back. A Sink is safe for concurrent use; each Insert is one
// INSERT per table with an explicit column list (clickhouse-go v2 batch
// inserts without one fail on ClickHouse 18.16). Tables are
// ReplacingMergeTree keyed on ids, so a replay after a crash does not
// double count.
package inferencelog

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/column"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/schemas"
)

const inferenceColumns = `prediction_id, event_id, entity_id, model, model_version, route,
	event_time, scored_time, event_time_ms, scored_time_ms,
	input_values, input_strings, input_missing,
	feature_views, feature_age_ms, feature_missing, feature_stale,
	score, label, source_topic, source_partition, source_offset, scoring_us, candidate_failed`

const deadLetterColumns = `source_topic, source_partition, source_offset, reason, stage, detail, dlq_time, dlq_time_ms, model, model_version, route`

// LogRow is one inference_log row. It is what the spool stores, so its
// JSON form is part of the on-disk format. InputNames are the version's,
// which the sink writes to model_inputs, not to the row.
type LogRow struct {
	PredictionID    string    `json:"pid"`
	EventID         string    `json:"eid"`
	EntityID        string    `json:"ent"`
	Model           string    `json:"m"`
	ModelVersion    string    `json:"v"`
	Route           string    `json:"r"`
	EventTimeMs     int64     `json:"et"`
	ScoredTimeMs    int64     `json:"st"`
	InputNames      []string  `json:"in"`
	InputValues     []float64 `json:"iv"`
	InputStrings    []string  `json:"is"`
	InputMissing    []uint8   `json:"im"`
	FeatureViews    []string  `json:"fv"`
	FeatureAgeMs    []int64   `json:"fa"`
	FeatureMissing  []uint8   `json:"fm"`
	FeatureStale    []uint8   `json:"fs"`
	Score           float32   `json:"s"`
	Label           int8      `json:"l"`
	SourceTopic     string    `json:"t"`
	SourcePartition int32     `json:"p"`
	SourceOffset    int64     `json:"o"`
	ScoringUs       uint32    `json:"su,omitempty"` // the route's ONNX run this row was scored in
	CandidateFailed uint8     `json:"cf,omitempty"` // 1: the canary (so production scored it) or the shadow could not score it
}

// AppendRows appends the log rows of the scored items (Reject == nil),
// and of their shadow predictions, to dst. The rows' slices share a few
// backing arrays per call, not one allocation per row and column, and
// their input strings and missing flags are the items' own (the scorer
// builds them in the log's shape). An item whose InputStrings or
// InputMissing do not match its Inputs in length gets arrays of its own,
// so that a row's input arrays stay parallel.
func AppendRows(dst []LogRow, items []schemas.Item) []LogRow {
	var nIn, nFeat int
	for i := range items {
		if it := &items[i]; it.Reject == nil {
			nIn += len(it.Inputs)
			nFeat += len(it.Features)
			if it.Shadow != nil {
				nIn += len(it.Shadow.Inputs)
				nFeat += len(it.Shadow.Features)
			}
		}
	}
	values := make([]float64, 0, nIn)
	views, ages := make([]string, 0, nFeat), make([]int64, 0, nFeat)
	fMissing, fStale := make([]uint8, 0, nFeat), make([]uint8, 0, nFeat)
	add := func(it *schemas.Item) {
		r := LogRow{
			PredictionID: it.PredictionID, EventID: it.Event.ID, EntityID: it.Event.EntityID,
			Model: it.Model, ModelVersion: it.ModelVersion, Route: string(it.Route),
			EventTimeMs: it.Event.Time.UnixMilli(), ScoredTimeMs: it.ScoredTime.UnixMilli(),
			InputNames: it.InputNames, Score: it.Score, Label: it.Label,
			SourceTopic: it.Event.Source.Topic, SourcePartition: it.Event.Source.Partition, SourceOffset: it.Event.Source.Offset,
			ScoringUs: uint32(min(it.ScoringTime.Microseconds(), math.MaxUint32)), CandidateFailed: b2u(it.CandidateFailed),
		}
		if it.Event.Time.IsZero() {
			r.EventTimeMs = r.ScoredTimeMs
		}
		start := len(values)
		for _, v := range it.Inputs {
			values = append(values, float64(v))
		}
		r.InputValues = values[start:len(values):len(values)]
		r.InputStrings, r.InputMissing = it.InputStrings, it.InputMissing
		if n := len(it.Inputs); len(r.InputStrings) != n || len(r.InputMissing) != n {
			r.InputStrings, r.InputMissing = make([]string, n), make([]uint8, n)
			copy(r.InputStrings, it.InputStrings)
			copy(r.InputMissing, it.InputMissing)
		}
		start = len(views)
		for _, f := range it.Features {
			views, ages = append(views, f.View), append(ages, f.AgeMs)
			fMissing, fStale = append(fMissing, b2u(f.Missing)), append(fStale, b2u(f.Stale))
		}
		end := len(views)
		r.FeatureViews, r.FeatureAgeMs = views[start:end:end], ages[start:end:end]
		r.FeatureMissing, r.FeatureStale = fMissing[start:end:end], fStale[start:end:end]
		dst = append(dst, r)
	}
	for i := range items {
		if it := &items[i]; it.Reject == nil {
			add(it)
			if it.Shadow != nil {
				add(it.Shadow) // the shadow route's row: its own id, version and outputs
			}
		}
	}
	return dst
}

// Batch is a unit of rows written together: to ClickHouse in one INSERT per
// table, or to the spool as one file.
type Batch struct {
	Log  []LogRow             `json:"log"`
	Dead []schemas.DeadLetter `json:"dead"`
}

// Sink inserts batches into ClickHouse.
type Sink struct {
	conn     driver.Conn
	database string

	mu    sync.Mutex // one log insert at a time: it owns cols, named and plainStr
	cols  logColumns
	named map[[2]string]bool // model and version whose input names model_inputs has
	// plainStr marks the strColumns whose type in this table is String or
	// Array(String), not LowCardinality, as the first insert's block
	// showed; nil before it.
	plainStr []bool
}

// NewSink returns a sink writing to database (created by Migrate).
func NewSink(conn driver.Conn, database string) *Sink {
	presize.once.Do(func() { column.WithColStrProvider(provideColStr) })
	return &Sink{conn: conn, database: database, named: map[[2]string]bool{}}
}

// Insert writes a batch: one INSERT for the log rows, one for the dead
// letters. Rows are keyed by ids, so inserting a batch twice does not
// change FINAL counts.
func (s *Sink) Insert(ctx context.Context, b *Batch) error {
	if len(b.Log) > 0 {
		if err := s.insertLog(ctx, b.Log); err != nil {
			return err
		}
	}
	if len(b.Dead) > 0 {
		return s.insertDead(ctx, b.Dead)
	}
	return nil
}

func (s *Sink) insertLog(ctx context.Context, rows []LogRow) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.insertNames(ctx, rows); err != nil {
		return err
	}
	batch, err := s.prepareLog(ctx, rows)
	if err != nil {
		return fmt.Errorf("preparing inference_log insert: %w", err)
	}
	defer batch.Abort()
	if err := s.cols.append(batch, rows); err != nil {
		return err
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting %d inference_log rows: %w", len(rows), err)
	}
	return nil
}

// strColumns are the inference_log columns of strings, in the order
// strSizes counts them: the row's scalar strings first (scalarStrings).
var strColumns = [...]string{"prediction_id", "event_id", "entity_id", "model", "model_version", "source_topic", "input_strings", "feature_views"}

// scalarStrings are a row's values of the scalar string columns, in
// strColumns' order.
func (r *LogRow) scalarStrings() [6]string {
	return [...]string{r.PredictionID, r.EventID, r.EntityID, r.Model, r.ModelVersion, r.SourceTopic}
}

// presize sizes the String columns of the inference_log insert being
// prepared. clickhouse-go makes a fresh block for every batch, and its
// String column grows its two buffers one value at a time, so a 10,000-row
// insert allocated and copied about five times the bytes its strings
// need: more than a kilobyte per row, the largest allocation of serve at
// saturation (docs/performance.md, "Presized string columns"). The
// driver's hook for this, column.WithColStrProvider, is process-wide and
// is given only a column's name. So a sink sets sizes for its own
// PrepareBatch alone, under mu. A query that another goroutine reads in
// that window, with a column of the same name, gets a presized buffer of
// its own: the memory of one batch, never a shared buffer.
var presize struct {
	once  sync.Once
	mu    sync.Mutex
	sizes atomic.Pointer[map[string]strSize]
}

// strSize is what one String column of a batch holds: n values of bytes
// bytes in all.
type strSize struct{ n, bytes int }

// provideColStr is clickhouse-go's ColStrProvider while a Sink is in use:
// an empty column, or a presized one for a column of the insert being
// prepared.
func provideColStr(name string) proto.ColStr {
	if m := presize.sizes.Load(); m != nil {
		if sz, ok := (*m)[name]; ok {
			return proto.ColStr{Buf: make([]byte, 0, sz.bytes), Pos: make([]proto.Position, 0, sz.n)}
		}
	}
	return proto.ColStr{}
}

// strSizes counts the values and bytes of each of strColumns in rows.
func strSizes(rows []LogRow) (sz [len(strColumns)]strSize) {
	for i := range rows {
		r := &rows[i]
		for j, v := range r.scalarStrings() {
			sz[j].n, sz[j].bytes = sz[j].n+1, sz[j].bytes+len(v)
		}
		for _, v := range r.InputStrings {
			sz[6].n, sz[6].bytes = sz[6].n+1, sz[6].bytes+len(v)
		}
		for _, v := range r.FeatureViews {
			sz[7].n, sz[7].bytes = sz[7].n+1, sz[7].bytes+len(v)
		}
	}
	return sz
}

// prepareLog prepares the inference_log insert of rows, its String
// columns presized to hold them. A LowCardinality column keeps only its
// distinct values, so it is not presized; the first insert, which has not
// seen the table's types yet, is not either.
func (s *Sink) prepareLog(ctx context.Context, rows []LogRow) (driver.Batch, error) {
	query := "INSERT INTO " + s.database + ".inference_log (" + inferenceColumns + ")"
	if s.plainStr == nil {
		batch, err := s.conn.PrepareBatch(ctx, query)
		if err == nil {
			s.plainStr = make([]bool, len(strColumns))
			for _, c := range batch.Columns() {
				if i := slices.Index(strColumns[:], c.Name()); i >= 0 {
					s.plainStr[i] = c.Type() == "String" || c.Type() == "Array(String)"
				}
			}
		}
		return batch, err
	}
	sizes := make(map[string]strSize, len(strColumns))
	for i, sz := range strSizes(rows) {
		if s.plainStr[i] {
			sizes[strColumns[i]] = sz
		}
	}
	presize.mu.Lock()
	defer presize.mu.Unlock()
	presize.sizes.Store(&sizes)
	defer presize.sizes.Store(nil)
	return s.conn.PrepareBatch(ctx, query)
}

// insertNames writes the input names of the rows' model versions to
// model_inputs, once per version and sink, before the version's first log
// rows: inference_log rows do not carry them (0006_model_inputs.sql). A
// version's rows all have the same names, in manifest order. The table is
// a ReplacingMergeTree keyed on the version, so the rows of other sinks and
// of replays collapse.
func (s *Sink) insertNames(ctx context.Context, rows []LogRow) error {
	var batch driver.Batch
	var added [][2]string
	var last *LogRow
	for i := range rows {
		r := &rows[i]
		if last != nil && r.Model == last.Model && r.ModelVersion == last.ModelVersion {
			continue
		}
		last = r
		k := [2]string{r.Model, r.ModelVersion}
		if s.named[k] || slices.Contains(added, k) || len(r.InputNames) == 0 {
			continue
		}
		if batch == nil {
			var err error
			if batch, err = s.conn.PrepareBatch(ctx, "INSERT INTO "+s.database+".model_inputs (model, model_version, input_names, logged_ms)"); err != nil {
				return fmt.Errorf("preparing model_inputs insert: %w", err)
			}
			defer batch.Abort()
		}
		if err := batch.Append(r.Model, r.ModelVersion, r.InputNames, uint64(r.ScoredTimeMs)); err != nil {
			return fmt.Errorf("appending model_inputs row of %s %s: %w", r.Model, r.ModelVersion, err)
		}
		added = append(added, k)
	}
	if batch == nil {
		return nil
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("inserting the input names of %d model versions: %w", len(added), err)
	}
	for _, k := range added {
		s.named[k] = true
	}
	return nil
}

// logColumns holds the scalar columns of an inference_log insert, kept
// across batches so that their buffers are reused. They are appended a
// whole column at a time: a value per row through the driver's row API
// costs an interface conversion (and often an allocation) per value. The
// array columns have no such column API in clickhouse-go (its Array.Append
// reflects), so they still go row by row, through rowArrays.
type logColumns struct {
	str                   [6][]string // prediction_id … source_topic (scalarStrings)
	route                 []int8
	eventTime, scoredTime []time.Time
	eventMs, scoredMs     []uint64
	score                 []float32
	label                 []int8
	partition             []int32
	offset                []int64
	scoringUs             []uint32
	candidateFailed       []uint8
	// The array columns of the row being appended.
	nums                        rowArray[*float64]
	strs, views                 rowArray[*string]
	ages                        rowArray[*int64]
	inMissing, fMissing, fStale rowArray[uint8]
}

// rowArray holds one array column's elements for the row being appended,
// in a buffer reused from row to row, and hands them to clickhouse-go
// without an allocation. The driver takes a row's array as an interface,
// and two conversions would allocate on every row:
//   - an element passed by value is boxed, one allocation per number or
//     string. clickhouse-go takes []*T for Array(T) as well, and a pointer
//     is boxed for free, so numbers and strings go as pointers into the
//     row;
//   - the slice itself is boxed. rowArray boxes each length of its buffer
//     once; a box holds the buffer, not a copy, so it sees what the buffer
//     holds now. A longer row replaces the buffer, and the boxes with it.
type rowArray[T any] struct {
	buf   []T
	boxes []any // boxes[n] is buf[:n]
}

// row returns the buffer cut to n elements, for the caller to fill.
func (a *rowArray[T]) row(n int) []T {
	if n > cap(a.buf) {
		a.buf, a.boxes = make([]T, max(n, 16)), nil
	}
	return a.buf[:n]
}

// box returns the buffer's first n elements as an interface.
func (a *rowArray[T]) box(n int) any {
	for len(a.boxes) <= n {
		a.boxes = append(a.boxes, a.buf[:len(a.boxes)])
	}
	return a.boxes[n]
}

// pointTo fills a with pointers to src's elements and returns them boxed.
func pointTo[T any](a *rowArray[*T], src []T) any {
	dst := a.row(len(src))
	for i := range src {
		dst[i] = &src[i]
	}
	return a.box(len(src))
}

// copyOf fills a with a copy of src and returns it boxed.
func copyOf[T any](a *rowArray[T], src []T) any {
	copy(a.row(len(src)), src)
	return a.box(len(src))
}

// routeEnum is the Enum8 value of each route in inference_log.route.
var routeEnum = map[string]int8{string(schemas.RouteProduction): 1, string(schemas.RouteShadow): 2, string(schemas.RouteCanary): 3}

// append adds rows to batch, whose columns are inferenceColumns in order.
func (c *logColumns) append(batch driver.Batch, rows []LogRow) error {
	for i := range c.str {
		c.str[i] = c.str[i][:0]
	}
	c.route, c.eventTime, c.scoredTime = c.route[:0], c.eventTime[:0], c.scoredTime[:0]
	c.eventMs, c.scoredMs, c.score, c.label = c.eventMs[:0], c.scoredMs[:0], c.score[:0], c.label[:0]
	c.partition, c.offset, c.scoringUs, c.candidateFailed = c.partition[:0], c.offset[:0], c.scoringUs[:0], c.candidateFailed[:0]
	for i := range rows {
		r := &rows[i]
		route, ok := routeEnum[r.Route]
		if !ok {
			return fmt.Errorf("inference_log row for event %s: unknown route %q", r.EventID, r.Route)
		}
		for j, v := range r.scalarStrings() {
			c.str[j] = append(c.str[j], v)
		}
		c.route = append(c.route, route)
		c.eventTime, c.scoredTime = append(c.eventTime, msTime(r.EventTimeMs)), append(c.scoredTime, msTime(r.ScoredTimeMs))
		c.eventMs, c.scoredMs = append(c.eventMs, uint64(r.EventTimeMs)), append(c.scoredMs, uint64(r.ScoredTimeMs))
		c.score, c.label = append(c.score, r.Score), append(c.label, r.Label)
		c.partition, c.offset = append(c.partition, r.SourcePartition), append(c.offset, r.SourceOffset)
		c.scoringUs, c.candidateFailed = append(c.scoringUs, r.ScoringUs), append(c.candidateFailed, r.CandidateFailed)
	}
	// The column order of inferenceColumns.
	scalars := []struct {
		col  int
		name string
		vals any
	}{
		{0, "prediction_id", c.str[0]}, {1, "event_id", c.str[1]}, {2, "entity_id", c.str[2]},
		{3, "model", c.str[3]}, {4, "model_version", c.str[4]}, {5, "route", c.route},
		{6, "event_time", c.eventTime}, {7, "scored_time", c.scoredTime}, {8, "event_time_ms", c.eventMs}, {9, "scored_time_ms", c.scoredMs},
		{17, "score", c.score}, {18, "label", c.label}, {19, "source_topic", c.str[5]}, {20, "source_partition", c.partition},
		{21, "source_offset", c.offset}, {22, "scoring_us", c.scoringUs}, {23, "candidate_failed", c.candidateFailed},
	}
	for _, sc := range scalars {
		if err := batch.Column(sc.col).Append(sc.vals); err != nil {
			return fmt.Errorf("appending inference_log column %s: %w", sc.name, err)
		}
	}
	arrays := [...]string{"input_values", "input_strings", "input_missing", "feature_views", "feature_age_ms", "feature_missing", "feature_stale"}
	var cols [len(arrays)]driver.BatchColumn
	for j := range cols {
		cols[j] = batch.Column(10 + j)
	}
	for i := range rows {
		r := &rows[i]
		for j, v := range [...]any{pointTo(&c.nums, r.InputValues), pointTo(&c.strs, r.InputStrings), copyOf(&c.inMissing, r.InputMissing),
			pointTo(&c.views, r.FeatureViews), pointTo(&c.ages, r.FeatureAgeMs), copyOf(&c.fMissing, r.FeatureMissing), copyOf(&c.fStale, r.FeatureStale)} {
			if err := cols[j].AppendRow(v); err != nil {
				return fmt.Errorf("appending inference_log column %s for event %s: %w", arrays[j], r.EventID, err)
			}
		}
	}
	return nil
}

func (s *Sink) insertDead(ctx context.Context, dls []schemas.DeadLetter) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO "+s.database+".dead_letters ("+deadLetterColumns+")")
	if err != nil {
		return fmt.Errorf("preparing dead_letters insert: %w", err)
	}
	defer batch.Abort()
	for _, d := range dls {
		if err := batch.Append(d.Source.Topic, d.Source.Partition, d.Source.Offset, string(d.Reason), string(d.Stage), d.Detail,
			d.Time.UTC(), uint64(d.Time.UnixMilli()), d.Model, d.ModelVersion, string(d.Route)); err != nil {
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

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// TopicCounts are the log rows of one source topic.
type TopicCounts struct {
	Rows          uint64 // inference_log rows of predictions (after deduplication; shadow rows apart)
	FeatureMisses uint64 // of those, scored with a missing feature view
	ShadowRows    uint64 // rows of a shadow route's predictions
	DeadLetters   uint64 // dead_letters rows
	// Routes counts the rows per model version and route
	// ("1.1.0/canary").
	Routes map[string]uint64
}

// CountTopic counts the rows logged for events of topic.
func (s *Sink) CountTopic(ctx context.Context, topic string) (TopicCounts, error) {
	c := TopicCounts{Routes: map[string]uint64{}}
	rows, err := s.conn.Query(ctx, fmt.Sprintf("SELECT model_version, toString(route), count(), countIf(has(feature_missing, 1)) FROM %s.inference_log FINAL WHERE source_topic = ? GROUP BY model_version, route", s.database), topic)
	if err != nil {
		return c, fmt.Errorf("counting inference_log rows: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var version, route string
		var n, misses uint64
		if err := rows.Scan(&version, &route, &n, &misses); err != nil {
			return c, fmt.Errorf("counting inference_log rows: %w", err)
		}
		c.Routes[version+"/"+route] = n
		if route == string(schemas.RouteShadow) {
			c.ShadowRows += n
			continue
		}
		c.Rows, c.FeatureMisses = c.Rows+n, c.FeatureMisses+misses
	}
	if err := rows.Err(); err != nil {
		return c, fmt.Errorf("counting inference_log rows: %w", err)
	}
	if err := s.conn.QueryRow(ctx, fmt.Sprintf("SELECT count() FROM %s.dead_letters FINAL WHERE source_topic = ?", s.database), topic).Scan(&c.DeadLetters); err != nil {
		return c, fmt.Errorf("counting dead_letters rows: %w", err)
	}
	return c, nil
}

// InputQuery reads one input of the log by name (a manifest's input
// names are identifiers, which may hold '-'): its quantiles per hour,
// over the rows that where selects. Rows hold the input values in their version's manifest
// order, and model_inputs the version's names (0006_model_inputs.sql), so
// the join finds the position once per version. Rows written before that
// migration kept their names on the row; the migration copied them to
// model_inputs, so the query reads them too. docs/clickhouse.md gives
// InputQuery("seer", "amount", "model = 'card-fraud'").
func InputQuery(database, input, where string) string {
	return fmt.Sprintf(`SELECT toStartOfHour(event_time) AS hour,
       quantiles(0.5, 0.9, 0.99)(input_values[indexOf(names, '%[2]s')]) AS %[4]s_q
FROM %[1]s.inference_log FINAL
ANY LEFT JOIN (SELECT model, model_version, input_names AS names FROM %[1]s.model_inputs FINAL) AS v USING (model, model_version)
WHERE %[3]s
GROUP BY hour ORDER BY hour`, database, input, where, strings.ReplaceAll(input, "-", "_"))
}

// ExampleQueries are analyst queries over one source topic's rows, to paste
// into clickhouse-client; input names one of the model's inputs.
func ExampleQueries(database, topic, input string) []string {
	where := fmt.Sprintf("source_topic = '%s'", topic)
	return []string{
		fmt.Sprintf("SELECT toStartOfMinute(scored_time) AS minute, count() AS predictions, avg(score) AS mean_score, countIf(label = 1) AS flagged FROM %s.inference_log FINAL WHERE %s GROUP BY minute ORDER BY minute", database, where),
		fmt.Sprintf("SELECT reason, stage, count() AS records FROM %s.dead_letters FINAL WHERE %s GROUP BY reason, stage ORDER BY records DESC", database, where),
		strings.Join(strings.Fields(InputQuery(database, input, where)), " "),
	}
}
