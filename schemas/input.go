package schemas

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/segmentio/ksuid"
	"github.com/valyala/fastjson"
)

//go:embed events/*.yaml
var embeddedEvents embed.FS

// FieldType is the JSON type an input field must have.
type FieldType string

// The field types an input schema can declare.
const (
	TypeString    FieldType = "string"
	TypeNumber    FieldType = "number"
	TypeInteger   FieldType = "integer"
	TypeBoolean   FieldType = "boolean"
	TypeTimestamp FieldType = "timestamp" // RFC 3339 string or epoch milliseconds
)

// Field is one declared field of an input event.
type Field struct {
	Name     string    `yaml:"name"`
	Type     FieldType `yaml:"type"`
	Required bool      `yaml:"required"`
	Min      *float64  `yaml:"min"`
	Max      *float64  `yaml:"max"`
}

// InputSchema declares the JSON events of one input topic.
type InputSchema struct {
	Name        string  `yaml:"name"`
	MaxBytes    int     `yaml:"max_bytes"`
	IDField     string  `yaml:"id_field"`
	TimeField   string  `yaml:"time_field"`
	EntityField string  `yaml:"entity_field"`
	Fields      []Field `yaml:"fields"`

	index map[string]int
}

// LoadInputSchema reads an input schema from a file path, or, when ref has no
// path separator and no such file exists, from the schemas embedded in seer
// (for example "card_transactions.v1").
func LoadInputSchema(ref string) (*InputSchema, error) {
	data, err := os.ReadFile(ref)
	if err != nil && errors.Is(err, os.ErrNotExist) && !strings.ContainsRune(ref, '/') {
		data, err = embeddedEvents.ReadFile("events/" + strings.TrimSuffix(ref, ".yaml") + ".yaml")
	}
	if err != nil {
		return nil, fmt.Errorf("reading input schema %q: %w", ref, err)
	}
	return ParseInputSchema(data)
}

// ParseInputSchema decodes and validates an input schema (strict YAML).
func ParseInputSchema(data []byte) (*InputSchema, error) {
	var s InputSchema
	if err := DecodeStrictYAML(data, &s); err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	if err := s.validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *InputSchema) validate() error {
	if s.Name == "" {
		return errors.New("input schema: name: required")
	}
	if s.MaxBytes <= 0 {
		s.MaxBytes = 1 << 20
	}
	if len(s.Fields) == 0 {
		return fmt.Errorf("input schema %s: fields: at least one field is required", s.Name)
	}
	s.index = make(map[string]int, len(s.Fields))
	for i, f := range s.Fields {
		where := fmt.Sprintf("input schema %s: fields[%d]", s.Name, i)
		if f.Name == "" {
			return fmt.Errorf("%s.name: required", where)
		}
		if _, dup := s.index[f.Name]; dup {
			return fmt.Errorf("%s.name: duplicate field %q", where, f.Name)
		}
		switch f.Type {
		case TypeString, TypeBoolean, TypeTimestamp:
			if f.Min != nil || f.Max != nil {
				return fmt.Errorf("%s (%s): min/max only apply to number and integer fields", where, f.Name)
			}
		case TypeNumber, TypeInteger:
			if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
				return fmt.Errorf("%s (%s): min %v is greater than max %v", where, f.Name, *f.Min, *f.Max)
			}
		default:
			return fmt.Errorf("%s.type (%s): %q is not one of string, number, integer, boolean, timestamp", where, f.Name, f.Type)
		}
		s.index[f.Name] = i
	}
	for _, ref := range []struct{ key, name string }{{"id_field", s.IDField}, {"time_field", s.TimeField}, {"entity_field", s.EntityField}} {
		if ref.name == "" {
			continue
		}
		if _, ok := s.index[ref.name]; !ok {
			return fmt.Errorf("input schema %s: %s: field %q is not declared", s.Name, ref.key, ref.name)
		}
	}
	if s.TimeField != "" && s.Fields[s.index[s.TimeField]].Type != TypeTimestamp {
		return fmt.Errorf("input schema %s: time_field: field %q must have type timestamp", s.Name, s.TimeField)
	}
	return nil
}

// FieldIndex returns the position of a declared field in Event.Values.
func (s *InputSchema) FieldIndex(name string) (int, bool) {
	i, ok := s.index[name]
	return i, ok
}

// Kind says whether a Value is present and how to read it.
type Kind uint8

// Value kinds. KindAbsent is the zero value: the field was missing or null.
const (
	KindAbsent Kind = iota
	KindNumber      // Num holds the value (booleans are 0 or 1, timestamps epoch ms)
	KindString      // Str holds the value
)

// Value is one decoded field or feature value.
type Value struct {
	Kind Kind
	Num  float64
	Str  string
}

// Source locates a Kafka record.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Event is a decoded, validated input event.
type Event struct {
	ID       string
	EntityID string
	Time     time.Time
	Values   []Value // one per InputSchema.Fields, in order
	Source   Source
}

// DecodeError says why a record was rejected; it becomes a DLQ record.
type DecodeError struct {
	Reason Reason
	Stage  Stage
	Field  string
	Detail string
}

func (e *DecodeError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: field %q: %s", e.Reason, e.Field, e.Detail)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Detail)
}

// maxEpochMs is 9999-12-31T23:59:59.999Z: times must print as RFC 3339.
const maxEpochMs = 253402300799999

// parsers are reused across Decode calls; fastjson parses without
// allocating per value.
var parsers fastjson.ParserPool

// Decode parses and validates one Kafka record against the schema. The key,
// when not empty, is the entity id; otherwise entity_field is used. When the
// event carries no id, a stable one is derived from src so that replays of
// the same record get the same id. Decode is safe for concurrent use.
func (s *InputSchema) Decode(key, value []byte, src Source) (Event, *DecodeError) {
	return s.DecodeInto(make([]Value, len(s.Fields)), key, value, src)
}

// DecodeInto is Decode with the caller's storage for Event.Values:
// len(values) must be len(s.Fields). A batch decodes into one array.
func (s *InputSchema) DecodeInto(values []Value, key, value []byte, src Source) (Event, *DecodeError) {
	ev := Event{Source: src}
	if len(value) > s.MaxBytes {
		return ev, &DecodeError{Reason: ReasonOversize, Stage: StageDecode,
			Detail: fmt.Sprintf("record is %d bytes, limit is %d", len(value), s.MaxBytes)}
	}
	// The gate is strict (RFC 8259 grammar, UTF-8, unique keys at every
	// depth): fastjson alone accepts NaN, 01 and duplicate keys (keeping the
	// first), where other parsers keep the last — a way to smuggle a value
	// past validation.
	if !jsontext.Value(value).IsValid() {
		return ev, s.syntaxError(value)
	}
	p := parsers.Get()
	defer parsers.Put(p)
	root, err := p.ParseBytes(value)
	if err != nil { // not reached: the gate is stricter than fastjson
		return ev, &DecodeError{Reason: ReasonInvalidJSON, Stage: StageDecode, Detail: "value is not valid JSON"}
	}
	obj, err := root.Object()
	if err != nil {
		return ev, &DecodeError{Reason: ReasonInvalidJSON, Stage: StageDecode, Detail: "want a JSON object, got " + root.Type().String()}
	}
	clear(values)
	ev.Values = values
	for i := range s.Fields {
		f := &s.Fields[i]
		v := obj.Get(f.Name)
		if v == nil || v.Type() == fastjson.TypeNull {
			if f.Required {
				return ev, &DecodeError{Reason: ReasonMissingField, Stage: StageValidate, Field: f.Name, Detail: "required field is missing or null"}
			}
			continue
		}
		val, derr := f.parse(v)
		if derr != nil {
			return ev, derr
		}
		ev.Values[i] = val
	}
	if s.IDField != "" {
		ev.ID = ev.Values[s.index[s.IDField]].Str
	}
	if ev.ID == "" {
		ev.ID = DerivedEventID(src)
	}
	ev.EntityID = string(key)
	if ev.EntityID == "" && s.EntityField != "" {
		ev.EntityID = ev.Values[s.index[s.EntityField]].Str
	}
	if ev.EntityID == "" {
		return ev, &DecodeError{Reason: ReasonMissingField, Stage: StageValidate, Field: s.EntityField, Detail: "no record key and no entity id field"}
	}
	if s.TimeField != "" && ev.Values[s.index[s.TimeField]].Kind == KindNumber {
		ev.Time = time.UnixMilli(int64(ev.Values[s.index[s.TimeField]].Num)).UTC()
	}
	return ev, nil
}

func (f *Field) parse(v *fastjson.Value) (Value, *DecodeError) {
	t := v.Type()
	wrong := func(want string) *DecodeError {
		return &DecodeError{Reason: ReasonWrongType, Stage: StageValidate, Field: f.Name,
			Detail: fmt.Sprintf("want %s, got %s", want, t)}
	}
	switch f.Type {
	case TypeString:
		if t != fastjson.TypeString {
			return Value{}, wrong("string")
		}
		return Value{Kind: KindString, Str: string(v.GetStringBytes())}, nil
	case TypeBoolean:
		switch t {
		case fastjson.TypeTrue:
			return Value{Kind: KindNumber, Num: 1}, nil
		case fastjson.TypeFalse:
			return Value{Kind: KindNumber, Num: 0}, nil
		}
		return Value{}, wrong("boolean")
	case TypeTimestamp:
		if t == fastjson.TypeString {
			ts, err := time.Parse(time.RFC3339Nano, string(v.GetStringBytes()))
			if err == nil && (ts.UnixMilli() < 0 || ts.UnixMilli() > maxEpochMs) {
				return Value{}, &DecodeError{Reason: ReasonOutOfBounds, Stage: StageValidate, Field: f.Name, Detail: "time outside years 1970-9999"}
			}
			if err != nil {
				return Value{}, &DecodeError{Reason: ReasonWrongType, Stage: StageValidate, Field: f.Name, Detail: "want an RFC 3339 time or epoch milliseconds"}
			}
			return Value{Kind: KindNumber, Num: float64(ts.UnixMilli())}, nil
		}
		n, derr := f.number(v, wrong)
		if derr != nil {
			return Value{}, derr
		}
		if n < 0 || n > maxEpochMs {
			return Value{}, &DecodeError{Reason: ReasonOutOfBounds, Stage: StageValidate, Field: f.Name, Detail: "epoch milliseconds outside years 1970-9999"}
		}
		return Value{Kind: KindNumber, Num: math.Trunc(n)}, nil
	case TypeNumber, TypeInteger:
		n, derr := f.number(v, wrong)
		if derr != nil {
			return Value{}, derr
		}
		if f.Type == TypeInteger && n != math.Trunc(n) {
			return Value{}, &DecodeError{Reason: ReasonWrongType, Stage: StageValidate, Field: f.Name, Detail: fmt.Sprintf("want an integer, got %v", n)}
		}
		if (f.Min != nil && n < *f.Min) || (f.Max != nil && n > *f.Max) {
			return Value{}, &DecodeError{Reason: ReasonOutOfBounds, Stage: StageValidate, Field: f.Name,
				Detail: fmt.Sprintf("%v is outside [%s, %s]", n, bound(f.Min, "-inf"), bound(f.Max, "+inf"))}
		}
		return Value{Kind: KindNumber, Num: n}, nil
	}
	return Value{}, wrong(string(f.Type))
}

// number reads a finite float64: a number that overflows (1e400) is
// not_finite, like the NaN and Infinity literals the gate rejects.
func (f *Field) number(v *fastjson.Value, wrong func(string) *DecodeError) (float64, *DecodeError) {
	if v.Type() != fastjson.TypeNumber {
		return 0, wrong("number")
	}
	n, err := v.Float64()
	if err != nil || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, &DecodeError{Reason: ReasonNotFinite, Stage: StageValidate, Field: f.Name, Detail: "number is not finite in float64"}
	}
	return n, nil
}

func bound(p *float64, none string) string {
	if p == nil {
		return none
	}
	return strconv.FormatFloat(*p, 'g', -1, 64)
}

// DerivedEventID returns the stable id of an event that carries none: a ksuid
// whose payload is a hash of its topic, partition and offset, with timestamp
// zero, so that a replay of the record gets the same id.
func DerivedEventID(src Source) string {
	return StableKSUID(time.Unix(ksuid.Nil.Time().Unix(), 0), src.Topic, strconv.Itoa(int(src.Partition)), strconv.FormatInt(src.Offset, 10))
}

// syntaxError says why value failed the strict gate, at which byte, without
// echoing the payload. Every non-finite spelling (NaN, Infinity, -inf, …)
// gets not_finite at stage validate, as an overflowing number does.
func (s *InputSchema) syntaxError(value []byte) *DecodeError {
	if !utf8.Valid(value) {
		off := 0
		for off < len(value) {
			r, n := utf8.DecodeRune(value[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return &DecodeError{Reason: ReasonInvalidUTF8, Stage: StageDecode, Detail: fmt.Sprintf("byte %d is not valid UTF-8", off)}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(value))
	var err error
	for err == nil {
		_, err = dec.ReadToken()
	}
	var se *jsontext.SyntacticError
	if !errors.As(err, &se) {
		// io.EOF inside the value: it was cut short.
		return &DecodeError{Reason: ReasonInvalidJSON, Stage: StageDecode, Detail: fmt.Sprintf("unexpected end of input at byte %d", len(value))}
	}
	off := se.ByteOffset
	field := ""
	if toks := slices.Collect(se.JSONPointer.Tokens()); len(toks) == 1 {
		if _, ok := s.index[toks[0]]; ok {
			field = toks[0]
		}
	}
	switch {
	case errors.Is(se.Err, jsontext.ErrDuplicateName):
		return &DecodeError{Reason: ReasonDuplicateKey, Stage: StageDecode,
			Detail: fmt.Sprintf("at byte %d: %s", off, truncate(se.Err.Error(), 120))}
	case strings.Contains(se.Err.Error(), "surrogate") || strings.Contains(se.Err.Error(), "UTF-8"):
		return &DecodeError{Reason: ReasonInvalidUTF8, Stage: StageDecode, Detail: fmt.Sprintf("at byte %d: invalid \\u escape", off)}
	case off < int64(len(value)) && nonFiniteLiteral(value[literalStart(value, int(off)):]):
		return &DecodeError{Reason: ReasonNotFinite, Stage: StageValidate, Field: field, Detail: fmt.Sprintf("at byte %d: JSON has no NaN or Infinity", off)}
	}
	return &DecodeError{Reason: ReasonInvalidJSON, Stage: StageDecode, Detail: fmt.Sprintf("at byte %d: %s", off, truncate(se.Err.Error(), 120))}
}

// nonFiniteLiteral reports whether b starts with a spelling of NaN or
// infinity that lenient encoders write (NaN, Infinity, -Infinity, inf, …).
func nonFiniteLiteral(b []byte) bool {
	b = bytes.TrimLeft(b, "+-")
	for _, lit := range []string{"nan", "inf"} {
		if len(b) >= len(lit) && strings.EqualFold(string(b[:len(lit)]), lit) {
			return true
		}
	}
	return false
}

// literalStart backs up from off to the start of the bare word around it:
// the parser may stop inside one ("nan" fails at 'a', as "null").
func literalStart(b []byte, off int) int {
	for off > 0 && off > len(b)-1 {
		off--
	}
	for off > 0 {
		c := b[off-1]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '+' || c == '-') {
			break
		}
		off--
	}
	return off
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
