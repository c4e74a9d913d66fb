package schemas

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func exampleSchema(t *testing.T) *InputSchema {
	t.Helper()
	s, err := LoadInputSchema("card_transactions.v1")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestDecodeValid(t *testing.T) {
	s := exampleSchema(t)
	src := Source{Topic: "in", Partition: 2, Offset: 7}
	ev, derr := s.Decode([]byte("u1"), []byte(`{"event_id":"e1","user_id":"u9","event_time":"2026-01-02T03:04:05Z","amount":12.5,"merchant_category":"fuel","hour":3,"card_present":true,"extra":"ignored"}`), src)
	if derr != nil {
		t.Fatalf("Decode: %v", derr)
	}
	if ev.ID != "e1" || ev.EntityID != "u1" {
		t.Errorf("id/entity = %q/%q, want e1/u1 (key wins over user_id)", ev.ID, ev.EntityID)
	}
	if want := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC); !ev.Time.Equal(want) {
		t.Errorf("time = %v, want %v", ev.Time, want)
	}
	get := func(name string) Value {
		i, ok := s.FieldIndex(name)
		if !ok {
			t.Fatalf("no field %s", name)
		}
		return ev.Values[i]
	}
	if v := get("amount"); v.Kind != KindNumber || v.Num != 12.5 {
		t.Errorf("amount = %+v, want 12.5", v)
	}
	if v := get("card_present"); v.Num != 1 {
		t.Errorf("card_present = %+v, want 1", v)
	}
	if v := get("merchant_category"); v.Kind != KindString || v.Str != "fuel" {
		t.Errorf("merchant_category = %+v, want fuel", v)
	}
}

func TestDecodeDerivesIDAndEntity(t *testing.T) {
	s := exampleSchema(t)
	body := []byte(`{"user_id":"u9","event_time":1700000000000,"amount":1,"merchant_category":"fuel","hour":3}`)
	src := Source{Topic: "in", Partition: 1, Offset: 42}
	a, derr := s.Decode(nil, body, src)
	if derr != nil {
		t.Fatal(derr)
	}
	b, _ := s.Decode(nil, body, src)
	c, _ := s.Decode(nil, body, Source{Topic: "in", Partition: 1, Offset: 43})
	if a.ID == "" || a.ID != b.ID {
		t.Errorf("derived ids %q and %q differ for the same record", a.ID, b.ID)
	}
	if a.ID == c.ID {
		t.Errorf("derived id %q is the same for different offsets", a.ID)
	}
	if a.EntityID != "u9" {
		t.Errorf("entity = %q, want u9 from entity_field", a.EntityID)
	}
	if a.Time.UnixMilli() != 1700000000000 {
		t.Errorf("time = %v, want epoch ms 1700000000000", a.Time)
	}
}

func TestDecodeRejects(t *testing.T) {
	s := exampleSchema(t)
	valid := `"user_id":"u9","event_time":"2026-01-02T03:04:05Z","merchant_category":"fuel"`
	f := func(name, body string, reason Reason, stage Stage, field string) {
		t.Helper()
		_, derr := s.Decode([]byte("k"), []byte(body), Source{})
		if derr == nil {
			t.Errorf("%s: Decode accepted %s", name, body)
			return
		}
		if derr.Reason != reason || derr.Stage != stage || derr.Field != field {
			t.Errorf("%s: got %s/%s/%q, want %s/%s/%q (%v)", name, derr.Reason, derr.Stage, derr.Field, reason, stage, field, derr)
		}
	}
	f("not json", `{"amount":`, ReasonInvalidJSON, StageDecode, "")
	f("array", `[1,2]`, ReasonInvalidJSON, StageDecode, "")
	f("missing", `{`+valid+`,"hour":3}`, ReasonMissingField, StageValidate, "amount")
	f("null", `{`+valid+`,"hour":3,"amount":null}`, ReasonMissingField, StageValidate, "amount")
	f("string number", `{`+valid+`,"hour":3,"amount":"12"}`, ReasonWrongType, StageValidate, "amount")
	f("float hour", `{`+valid+`,"hour":3.5,"amount":1}`, ReasonWrongType, StageValidate, "hour")
	f("bool", `{`+valid+`,"hour":3,"amount":1,"card_present":"yes"}`, ReasonWrongType, StageValidate, "card_present")
	f("overflow", `{`+valid+`,"hour":3,"amount":1e999}`, ReasonNotFinite, StageValidate, "amount")
	f("below", `{`+valid+`,"hour":3,"amount":-1}`, ReasonOutOfBounds, StageValidate, "amount")
	f("above", `{`+valid+`,"hour":24,"amount":1}`, ReasonOutOfBounds, StageValidate, "hour")
	f("bad time", `{"user_id":"u9","event_time":"yesterday","merchant_category":"fuel","hour":3,"amount":1}`, ReasonWrongType, StageValidate, "event_time")
	f("oversize", `{`+valid+`,"pad":"`+strings.Repeat("x", 20000)+`"}`, ReasonOversize, StageDecode, "")
	// Issue 8: the first of two "amount"s was scored; other parsers take
	// the last. A repeated key anywhere is refused.
	f("duplicate key", `{`+valid+`,"hour":3,"amount":237.4,"amount":-7}`, ReasonDuplicateKey, StageDecode, "")
	f("nested duplicate", `{`+valid+`,"hour":3,"amount":1,"meta":{"a":1,"a":2}}`, ReasonDuplicateKey, StageDecode, "")
	f("invalid utf-8", "{"+valid+",\"hour\":3,\"amount\":1,\"channel\":\"\xff\xfe\"}", ReasonInvalidUTF8, StageDecode, "")
	f("lone surrogate", `{`+valid+`,"hour":3,"amount":1,"channel":"\ud800"}`, ReasonInvalidUTF8, StageDecode, "")
	// Every non-finite spelling gets one reason, at one stage.
	for _, lit := range []string{"NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "1e400", "-1e999"} {
		f("non-finite "+lit, `{`+valid+`,"hour":3,"amount":`+lit+`}`, ReasonNotFinite, StageValidate, "amount")
	}
	f("non-finite undeclared", `{`+valid+`,"hour":3,"amount":1,"x":NaN}`, ReasonNotFinite, StageValidate, "")
	f("leading zero", `{`+valid+`,"hour":03,"amount":1}`, ReasonInvalidJSON, StageDecode, "")
	f("trailing garbage", `{`+valid+`,"hour":3,"amount":1} x`, ReasonInvalidJSON, StageDecode, "")
}

// TestInvalidJSONSaysWhere: the detail gives the byte offset and never
// echoes the payload.
func TestInvalidJSONSaysWhere(t *testing.T) {
	s := exampleSchema(t)
	body := `{"user_id":"secret-value-123","amount":12,,"hour":3}`
	_, derr := s.Decode([]byte("k"), []byte(body), Source{})
	if derr == nil || derr.Reason != ReasonInvalidJSON {
		t.Fatalf("Decode(%s) = %v, want invalid_json", body, derr)
	}
	if want := "at byte 42"; !strings.Contains(derr.Detail, want) {
		t.Errorf("detail %q does not say %q", derr.Detail, want)
	}
	if strings.Contains(derr.Error(), "secret-value") {
		t.Errorf("detail %q echoes the payload", derr.Error())
	}
	raw := "{\"user_id\":\"ab\xffcd\"}"
	if _, derr := s.Decode([]byte("k"), []byte(raw), Source{}); derr == nil || !strings.Contains(derr.Detail, "byte 14") {
		t.Errorf("invalid UTF-8 detail = %v, want it to name byte 14", derr)
	}
}

func TestParseInputSchemaErrors(t *testing.T) {
	f := func(yaml, want string) {
		t.Helper()
		_, err := ParseInputSchema([]byte(yaml))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseInputSchema(%q) error = %v, want it to mention %q", yaml, err, want)
		}
	}
	f("fields: []", "name: required")
	f("name: x\nfields: [{name: a, type: nope}]", "fields[0].type")
	f("name: x\nfields: [{name: a, type: string}, {name: a, type: string}]", "duplicate field")
	f("name: x\nid_field: b\nfields: [{name: a, type: string}]", "id_field")
	f("name: x\ntime_field: a\nfields: [{name: a, type: string}]", "must have type timestamp")
	f("name: x\nunknown: 1\nfields: [{name: a, type: string}]", "unknown")
	f("name: x\nfields: [{name: a, type: number, min: 2, max: 1}]", "greater than max")
}

// strictJSON is the reference for the decoder's syntax gate, built on
// encoding/json rather than the gate's own parser: RFC 8259 grammar, UTF-8
// text (no invalid bytes, no lone surrogate escapes) and unique keys in
// every object.
func strictJSON(b []byte) bool {
	if !json.Valid(b) || !utf8.Valid(b) || !surrogatesPaired(b) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		obj  bool
		keys map[string]bool
		key  bool // the next token of this object is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return err == io.EOF
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.obj && top.key {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				continue
			}
			k := tok.(string)
			if top.keys[k] {
				return false
			}
			top.keys[k] = true
			top.key = false
			continue
		}
		if top != nil && top.obj {
			top.key = true
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{obj: true, keys: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &frame{})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
	}
}

// surrogatesPaired reports whether every \u escape of a UTF-16 surrogate in
// grammatical JSON b is a high surrogate followed by a low one.
func surrogatesPaired(b []byte) bool {
	hex := func(i int) (int, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 32)
		return int(n), err == nil
	}
	inString := false
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '"':
			inString = !inString
		case inString && b[i] == '\\':
			u, ok := hex(i)
			if !ok {
				i++ // a two-byte escape
				continue
			}
			switch {
			case u >= 0xD800 && u <= 0xDBFF:
				lo, ok := hex(i + 6)
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return false
				}
				i += 11
			case u >= 0xDC00 && u <= 0xDFFF:
				return false
			default:
				i += 5
			}
		}
	}
	return true
}

// FuzzDecodeAgreesWithReference: the decoder accepts an event only if a
// strict reference parser accepts its JSON, and then reads the same values;
// whatever the reference rejects, the decoder rejects at the syntax gate.
func FuzzDecodeAgreesWithReference(f *testing.F) {
	s, err := LoadInputSchema("card_transactions.v1")
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"user_id":"u9","event_time":"2026-01-02T03:04:05Z","amount":12.5,"merchant_category":"fuel","hour":3}`,
		`{"user_id":"u9","event_time":"2026-01-02T03:04:05Z","amount":12.5,"amount":-7,"merchant_category":"fuel","hour":3}`,
		`{"user_id":"u9","event_time":1700000000000,"amount":NaN,"merchant_category":"fuel","hour":3}`,
		`{"user_id":"\ud83d\ude00","event_time":1700000000000,"amount":1,"merchant_category":"f\u00e9","hour":3,"x":[{"a":1},{"a":1}]}`,
		"{\"user_id\":\"u\xc3\",\"amount\":1}", `{"amount":01}`, `{"amount":1e400}`, `[{"a":1,"a":2}]`, `nul`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, value []byte) {
		ev, derr := s.Decode([]byte("k"), value, Source{Topic: "t", Offset: 1})
		if len(value) > s.MaxBytes {
			return
		}
		ref := strictJSON(value)
		gate := derr != nil && (derr.Stage == StageDecode || strings.Contains(derr.Detail, "JSON has no"))
		if derr != nil && (derr.Reason == "" || derr.Stage == "") {
			t.Fatalf("rejection without reason or stage: %+v", derr)
		}
		if !ref && !gate {
			t.Fatalf("reference rejects %q; decoder gave %v", value, derr)
		}
		if ref && gate && derr.Reason != ReasonInvalidJSON {
			t.Fatalf("reference accepts %q; decoder rejected it at the gate: %v", value, derr)
		}
		if ref && gate && derr.Reason == ReasonInvalidJSON && value[0] == '{' {
			t.Fatalf("reference accepts object %q; decoder says invalid_json: %v", value, derr)
		}
		if derr != nil {
			return
		}
		var obj map[string]any
		dec := json.NewDecoder(bytes.NewReader(value))
		dec.UseNumber()
		if err := dec.Decode(&obj); err != nil {
			t.Fatalf("reference cannot decode accepted %q: %v", value, err)
		}
		for i, fl := range s.Fields {
			v := ev.Values[i]
			switch want := obj[fl.Name].(type) {
			case string:
				if fl.Type == TypeString && v.Str != want {
					t.Fatalf("field %s = %q, reference reads %q", fl.Name, v.Str, want)
				}
			case json.Number:
				if n, _ := want.Float64(); fl.Type == TypeNumber && v.Num != n {
					t.Fatalf("field %s = %v, reference reads %v", fl.Name, v.Num, n)
				}
			}
		}
	})
}

func FuzzDecode(f *testing.F) {
	s, err := LoadInputSchema("card_transactions.v1")
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte("u1"), []byte(`{"user_id":"u9","event_time":"2026-01-02T03:04:05Z","amount":12.5,"merchant_category":"fuel","hour":3}`))
	f.Add([]byte(""), []byte(`{"amount":1e400}`))
	f.Add([]byte("k"), []byte(`nul`))
	f.Fuzz(func(t *testing.T, key, value []byte) {
		ev, derr := s.Decode(key, value, Source{Topic: "t", Offset: 1})
		if derr != nil {
			if derr.Reason == "" || derr.Stage == "" {
				t.Fatalf("rejection without reason or stage: %+v", derr)
			}
			return
		}
		if ev.ID == "" || ev.EntityID == "" || len(ev.Values) != len(s.Fields) {
			t.Fatalf("accepted event is incomplete: %+v", ev)
		}
		for i, fl := range s.Fields {
			v := ev.Values[i]
			if fl.Required && v.Kind == KindAbsent {
				t.Fatalf("required field %s absent in accepted event", fl.Name)
			}
			if v.Kind == KindNumber && ((fl.Min != nil && v.Num < *fl.Min) || (fl.Max != nil && v.Num > *fl.Max)) {
				t.Fatalf("field %s = %v outside bounds in accepted event", fl.Name, v.Num)
			}
		}
	})
}
