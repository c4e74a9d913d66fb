// Package loadtest generates realistic traffic for a model package and
// measures seer end to end.
//
// Generator samples events whose model inputs follow the package's
// reference profile (so a healthy run shows no drift), optionally with
// malformed records mixed in. A Generator is not safe for concurrent use.
package loadtest

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/valyala/fastjson"

	"github.com/seer-ml/seer/schemas"
)

// Generator produces JSON events for one input schema and model package.
type Generator struct {
	schema   *schemas.InputSchema
	manifest *schemas.Manifest
	rng      *rand.Rand
	users    int
	inputs   []genInput
	bad      int                // malformed events so far, for the rotation
	shift    map[string]float64 // numeric event input → mean shift in reference standard deviations
	examples []schemas.Example  // when set, user u's event fields and features are example u mod len
	events   []map[string]any   // the examples' events, decoded once
	onLabel  func(eventID string, label int, eventTime time.Time)
	arena    fastjson.Arena // the event being built; reset per event
	lastLen  int            // the last event's length in bytes, to size the next one's buffer
}

// genInput is one model input, its source parsed once.
type genInput struct {
	*schemas.Input
	src    schemas.ParsedSource
	sample sampler
}

// OnLabel makes the generator report the known outcome of each valid
// event that replays a labelled example — what a labels source would
// send later (seer demo's delayed labels).
func (g *Generator) OnLabel(f func(eventID string, label int, eventTime time.Time)) { g.onLabel = f }

// UseExamples makes the traffic replay the package's held-out examples
// instead of sampling each input on its own: user u sends the event fields
// of example u mod len(exs) (with a fresh id and time) and has its feature
// values, so events keep the correlations of real data and a healthy run
// shows no drift in the score either. Shifts still apply.
func (g *Generator) UseExamples(exs []schemas.Example) error {
	if len(exs) == 0 {
		return fmt.Errorf("no examples to replay")
	}
	events := make([]map[string]any, len(exs))
	for i := range exs {
		if err := json.Unmarshal(exs[i].Event, &events[i]); err != nil {
			return fmt.Errorf("example on line %d: %w", exs[i].Line, err)
		}
	}
	g.examples, g.events = exs, events
	return nil
}

// SetShift injects drift: from now on each named numeric event input is
// shifted by that many reference standard deviations (nil stops it).
func (g *Generator) SetShift(shift map[string]float64) { g.shift = shift }

type sampler func(r *rand.Rand) schemas.Value

// NewGenerator returns a generator over users entity ids ("u000000"...),
// seeded for reproducible traffic.
func NewGenerator(schema *schemas.InputSchema, m *schemas.Manifest, users int, seed uint64) (*Generator, error) {
	if users < 1 {
		return nil, fmt.Errorf("users: %d must be at least 1", users)
	}
	g := &Generator{schema: schema, manifest: m, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), users: users}
	for i := range m.Inputs {
		in := &m.Inputs[i]
		p, ok := m.Profile.Features[in.Name]
		if !ok {
			return nil, fmt.Errorf("input %s has no reference profile", in.Name)
		}
		src, err := schemas.ParseSource(in.Source)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", in.Name, err)
		}
		g.inputs = append(g.inputs, genInput{Input: in, src: src, sample: newSampler(in, p)})
	}
	return g, nil
}

func newSampler(in *schemas.Input, p schemas.ColumnProfile) sampler {
	if p.Kind == schemas.ProfileCategorical {
		names := make([]string, 0, len(p.Frequencies))
		for k := range p.Frequencies {
			names = append(names, k)
		}
		sort.Strings(names)
		cum := make([]float64, len(names))
		total := 0.0
		for i, k := range names {
			total += float64(p.Frequencies[k])
			cum[i] = total
		}
		return func(r *rand.Rand) schemas.Value {
			x := r.Float64() * total
			s := names[sort.SearchFloat64s(cum, x)]
			if in.Dtype == schemas.DtypeBool {
				return schemas.Value{Kind: schemas.KindNumber, Num: b2f(s == "true"), Str: s}
			}
			return schemas.Value{Kind: schemas.KindString, Str: s}
		}
	}
	// Numeric: pick a bin by its reference count, then a uniform value in it.
	// Underflow and overflow take the outer edges.
	weights := append(append([]int64{p.Underflow}, p.Counts...), p.Overflow)
	cum := make([]float64, len(weights))
	total := 0.0
	for i, w := range weights {
		total += float64(w)
		cum[i] = total
	}
	return func(r *rand.Rand) schemas.Value {
		b := sort.SearchFloat64s(cum, r.Float64()*total)
		var x float64
		switch {
		case b == 0:
			x = p.Edges[0]
		case b == len(weights)-1:
			x = p.Edges[len(p.Edges)-1]
		default:
			lo, hi := p.Edges[b-1], p.Edges[b]
			x = lo + r.Float64()*(hi-lo)
		}
		if in.Dtype == schemas.DtypeInt {
			x = math.Floor(x)
		}
		if in.Min != nil {
			x = max(x, *in.Min)
		}
		if in.Max != nil {
			x = min(x, *in.Max)
		}
		return schemas.Value{Kind: schemas.KindNumber, Num: x}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Event is one generated record.
type Event struct {
	ID        string
	Key       []byte
	Value     []byte
	Malformed string // the defect injected, or "" for a valid event
}

// Malformations the generator can inject, in rotation. Each maps to the DLQ
// reason seer must give it.
var Malformations = []struct {
	Name   string
	Reason schemas.Reason
}{
	{"truncated_json", schemas.ReasonInvalidJSON},
	{"missing_required", schemas.ReasonMissingField},
	{"wrong_type", schemas.ReasonWrongType},
	{"out_of_bounds", schemas.ReasonOutOfBounds},
	{"oversize", schemas.ReasonOversize},
}

// Next returns the next event, stamped with event time t. When malformed is
// true it carries one of Malformations, in rotation.
func (g *Generator) Next(t time.Time, malformed bool) Event {
	id := ksuid.New().String()
	u := g.rng.IntN(g.users)
	user := userID(u)
	a := &g.arena
	a.Reset()
	obj := a.NewObject()
	var example map[string]any
	if len(g.events) > 0 {
		example = g.events[u%len(g.events)]
	}
	for _, in := range g.inputs {
		if in.src.Kind != schemas.SourceEvent {
			continue
		}
		var v schemas.Value
		if example != nil {
			if v = exampleValue(example[in.src.Field]); v.Kind == schemas.KindAbsent {
				continue
			}
		} else {
			v = in.sample(g.rng)
		}
		if d := g.shift[in.Name]; d != 0 && v.Kind == schemas.KindNumber {
			v.Num += d * g.manifest.Profile.Features[in.Name].Std
			if in.Max != nil {
				v.Num = min(v.Num, *in.Max)
			}
		}
		var jv *fastjson.Value
		switch {
		case in.Dtype == schemas.DtypeBool && v.Num == 1:
			jv = a.NewTrue()
		case in.Dtype == schemas.DtypeBool:
			jv = a.NewFalse()
		case v.Kind == schemas.KindString:
			jv = a.NewString(v.Str)
		case in.Dtype == schemas.DtypeInt:
			jv = a.NewNumberInt(int(v.Num))
		case example != nil: // as the example has it
			jv = a.NewNumberFloat64(v.Num)
		default:
			jv = a.NewNumberFloat64(math.Round(v.Num*100) / 100)
		}
		obj.Set(in.src.Field, jv)
	}
	if g.schema.IDField != "" {
		obj.Set(g.schema.IDField, a.NewString(id))
	}
	if g.schema.EntityField != "" {
		obj.Set(g.schema.EntityField, a.NewString(user))
	}
	if g.schema.TimeField != "" {
		obj.Set(g.schema.TimeField, a.NewString(t.UTC().Format(time.RFC3339Nano)))
	}
	ev := Event{ID: id, Key: []byte(user)}
	if malformed {
		m := Malformations[g.bad%len(Malformations)]
		g.bad++
		ev.Malformed = m.Name
		g.malform(obj, m.Name)
	}
	ev.Value = obj.MarshalTo(make([]byte, 0, g.lastLen+g.lastLen/8))
	g.lastLen = len(ev.Value)
	if ev.Malformed == "truncated_json" {
		ev.Value = ev.Value[:len(ev.Value)/2]
	}
	if !malformed && g.onLabel != nil && len(g.examples) > 0 {
		if l := g.examples[u%len(g.examples)].Label; l != nil {
			g.onLabel(id, *l, t)
		}
	}
	return ev
}

// userID is user u's entity id: "u000000" and on.
func userID(u int) string { return "u" + strconv.Itoa(100000 + u)[1:] }

// exampleValue reads an example's event field as a generated value.
func exampleValue(raw any) schemas.Value {
	switch x := raw.(type) {
	case float64:
		return schemas.Value{Kind: schemas.KindNumber, Num: x}
	case bool:
		return schemas.Value{Kind: schemas.KindNumber, Num: b2f(x)}
	case string:
		return schemas.Value{Kind: schemas.KindString, Str: x}
	}
	return schemas.Value{}
}

// malform breaks obj in the named way, using the schema's declared fields
// (Next cuts a truncated_json event in half once it is encoded).
func (g *Generator) malform(obj *fastjson.Value, kind string) {
	a := &g.arena
	if kind == "oversize" {
		obj.Set("padding", a.NewString(strings.Repeat("x", g.schema.MaxBytes)))
		return
	}
	for _, f := range g.schema.Fields {
		switch {
		case kind == "missing_required" && f.Required && f.Name != g.schema.EntityField:
			obj.Del(f.Name)
			return
		case kind == "wrong_type" && (f.Type == schemas.TypeNumber || f.Type == schemas.TypeInteger):
			obj.Set(f.Name, a.NewString("not a number"))
			return
		case kind == "out_of_bounds" && f.Max != nil:
			obj.Set(f.Name, a.NewNumberFloat64(*f.Max+1))
			return
		}
	}
}

// FeatureRows returns one row per user for every feature view the model
// reads, sampled from the reference profile: view → entity → feature → value.
// Every skipEvery-th user (if > 0) is left out, so that lookups miss.
func (g *Generator) FeatureRows(skipEvery int) map[string]map[string]map[string]string {
	out := map[string]map[string]map[string]string{}
	for u := 0; u < g.users; u++ {
		if skipEvery > 0 && u%skipEvery == skipEvery-1 {
			continue
		}
		user := userID(u)
		for _, in := range g.inputs {
			src := in.src
			if src.Kind != schemas.SourceFeature {
				continue
			}
			if out[src.View] == nil {
				out[src.View] = map[string]map[string]string{}
			}
			if out[src.View][user] == nil {
				out[src.View][user] = map[string]string{}
			}
			var v schemas.Value
			if len(g.examples) > 0 {
				if v, _ = g.examples[u%len(g.examples)].FeatureValue(src.View, src.Feature); v.Kind == schemas.KindAbsent {
					continue
				}
			} else {
				v = in.sample(g.rng)
			}
			s := v.Str
			if v.Kind == schemas.KindNumber {
				s = strconv.FormatFloat(v.Num, 'f', -1, 64)
			}
			out[src.View][user][src.Feature] = s
		}
	}
	return out
}
