package schemas

import (
	"strings"
	"testing"
	"time"
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
