package schemas

import (
	"crypto/sha256"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/segmentio/ksuid"
)

// Reason is the reason code of a dead-letter record (header seer-error).
type Reason string

// Reason codes. They are stable: dashboards and alert rules match on them.
const (
	ReasonOversize       Reason = "oversize"        // the record is larger than the schema's max_bytes
	ReasonInvalidJSON    Reason = "invalid_json"    // the value is not one JSON object (RFC 8259 grammar); the detail gives the byte offset
	ReasonInvalidUTF8    Reason = "invalid_utf8"    // the value holds bytes or \u escapes that are not valid UTF-8 text
	ReasonDuplicateKey   Reason = "duplicate_key"   // an object repeats a key: parsers disagree on which value wins
	ReasonMissingField   Reason = "missing_field"   // a required field is absent or null
	ReasonWrongType      Reason = "wrong_type"      // a field has the wrong JSON type
	ReasonNotFinite      Reason = "not_finite"      // NaN, Infinity or a number that overflows float64, however spelled
	ReasonOutOfBounds    Reason = "out_of_bounds"   // a number is outside the declared min/max
	ReasonFeatureMissing Reason = "feature_missing" // a feature view has no value and its policy is dlq
	ReasonFeatureStale   Reason = "feature_stale"   // a feature view is older than max_age and its policy is dlq
	ReasonScoreFailed    Reason = "score_failed"    // the model rejected the input
)

// Stage is the pipeline stage that rejected a record (header seer-stage).
type Stage string

// Pipeline stages.
const (
	StageDecode   Stage = "decode"
	StageValidate Stage = "validate"
	StageEnrich   Stage = "enrich"
	StageScore    Stage = "score"
)

// Dead-letter record headers. The record's key and value are the original bytes.
const (
	HeaderError           = "seer-error"
	HeaderDetail          = "seer-detail"
	HeaderStage           = "seer-stage"
	HeaderSourceTopic     = "seer-source-topic"
	HeaderSourcePartition = "seer-source-partition"
	HeaderSourceOffset    = "seer-source-offset"
	HeaderTime            = "seer-time"
)

// Route says which rollout path produced a prediction.
type Route string

// Routes.
const (
	RouteProduction Route = "production"
	RouteShadow     Route = "shadow"
	RouteCanary     Route = "canary"
)

// FeatureState is the outcome of one feature view lookup for one event.
type FeatureState struct {
	View    string
	Values  []Value // one per requested feature, in request order
	AgeMs   int64   // scored time minus the view's _ts; -1 when missing
	Missing bool    // no hash for this entity, or no _ts
	Stale   bool    // older than the view's max_age
	Flagged bool    // a default or stale value was used for scoring
}

// Item is one event on its way through the pipeline. Stages fill it in order:
// the decoder sets Event, the enricher Features, the scorer the outputs.
type Item struct {
	Event        Event
	Features     []FeatureState // one per view the model reads, in plan order
	PredictionID string
	Model        string
	ModelVersion string
	Route        Route
	Score        float32
	Label        int8
	InputNames   []string  // the model's input names (shared, read-only)
	Inputs       []float32 // the model's input vector, in manifest order
	// InputStrings and InputMissing are what the inference log keeps of each
	// input before encoding: a string input's value ("" for the others), and
	// 1 where the input was absent and its default was used.
	InputStrings []string
	InputMissing []uint8
	ScoredTime   time.Time
	ScoringTime  time.Duration // of the ONNX run that scored it, on its route
	// CandidateFailed: a rollout's candidate could not score it — the
	// canary (so production did) or the shadow.
	CandidateFailed bool
	Reject          *DecodeError // set by a stage that sends the item to the DLQ

	// Shadow is the same event as the shadow route scored it, when one
	// ran: it shares Event and Features, and has its own prediction id,
	// version, outputs and inputs. Its prediction never goes to the
	// predictions topic, only to the shadow topic and the inference log.
	Shadow *Item
}

// DeadLetter is the record of one event sent to the DLQ, as logged to
// ClickHouse (the DLQ topic itself carries the original bytes).
type DeadLetter struct {
	Source Source
	Reason Reason
	Stage  Stage
	Detail string
	Time   time.Time
	// The model, version and route that rejected it at the score stage;
	// empty when it was rejected before a route was chosen.
	Model        string
	ModelVersion string
	Route        Route
}

// Prediction is the JSON record seer publishes for each scored event.
type Prediction struct {
	PredictionID string                 `json:"prediction_id"`
	EventID      string                 `json:"event_id"`
	EntityID     string                 `json:"entity_id"`
	Model        string                 `json:"model"`
	ModelVersion string                 `json:"model_version"`
	Route        Route                  `json:"route"`
	Score        float32                `json:"score"`
	Label        int8                   `json:"label"`
	EventTime    time.Time              `json:"event_time"`
	ScoredTime   time.Time              `json:"scored_time"`
	Features     map[string]FeatureInfo `json:"features,omitempty"`
}

// FeatureInfo reports the freshness of one feature view in a prediction.
type FeatureInfo struct {
	AgeMs   int64 `json:"age_ms"`
	Missing bool  `json:"missing,omitempty"`
	Stale   bool  `json:"stale,omitempty"`
}

// PredictionOf builds the published record of a scored item.
func PredictionOf(it *Item) Prediction {
	p := Prediction{
		PredictionID: it.PredictionID,
		EventID:      it.Event.ID,
		EntityID:     it.Event.EntityID,
		Model:        it.Model,
		ModelVersion: it.ModelVersion,
		Route:        it.Route,
		Score:        it.Score,
		Label:        it.Label,
		EventTime:    it.Event.Time,
		ScoredTime:   it.ScoredTime,
	}
	if len(it.Features) > 0 {
		p.Features = make(map[string]FeatureInfo, len(it.Features))
		for _, f := range it.Features {
			p.Features[f.View] = FeatureInfo{AgeMs: f.AgeMs, Missing: f.Missing, Stale: f.Stale}
		}
	}
	return p
}

// StableKSUID returns a ksuid with timestamp t whose payload is the first 16
// bytes of the SHA-256 of parts (each followed by a zero byte), so the same
// inputs always give the same id.
func StableKSUID(t time.Time, parts ...string) string {
	var stack [256]byte
	buf := stack[:0]
	for _, p := range parts {
		buf = append(buf, p...)
		buf = append(buf, 0)
	}
	sum := sha256.Sum256(buf)
	if t.Before(ksuid.Nil.Time()) {
		t = ksuid.Nil.Time()
	}
	id, err := ksuid.FromParts(t, sum[:16])
	if err != nil { // only when the payload is not 16 bytes, which it is
		panic(err)
	}
	return id.String()
}

// AppendPrediction appends the JSON value of a scored item's prediction to
// dst: the Prediction record, written by hand on the hot path
// (encoding/json's reflection costs more than the rest of encoding
// together). Decoding it with encoding/json gives PredictionOf(it).
func AppendPrediction(dst []byte, it *Item) []byte {
	dst = append(dst, `{"prediction_id":`...)
	dst = appendJSONString(dst, it.PredictionID)
	dst = append(dst, `,"event_id":`...)
	dst = appendJSONString(dst, it.Event.ID)
	dst = append(dst, `,"entity_id":`...)
	dst = appendJSONString(dst, it.Event.EntityID)
	dst = append(dst, `,"model":`...)
	dst = appendJSONString(dst, it.Model)
	dst = append(dst, `,"model_version":`...)
	dst = appendJSONString(dst, it.ModelVersion)
	dst = append(dst, `,"route":`...)
	dst = appendJSONString(dst, string(it.Route))
	dst = append(dst, `,"score":`...)
	dst = appendFloat32(dst, it.Score)
	dst = append(dst, `,"label":`...)
	dst = strconv.AppendInt(dst, int64(it.Label), 10)
	dst = append(dst, `,"event_time":"`...)
	dst = it.Event.Time.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, `","scored_time":"`...)
	dst = it.ScoredTime.AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, '"')
	if len(it.Features) > 0 {
		dst = append(dst, `,"features":{`...)
		for i, f := range it.Features {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, f.View)
			dst = append(dst, `:{"age_ms":`...)
			dst = strconv.AppendInt(dst, f.AgeMs, 10)
			if f.Missing {
				dst = append(dst, `,"missing":true`...)
			}
			if f.Stale {
				dst = append(dst, `,"stale":true`...)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, '}')
	}
	return append(dst, '}')
}

// appendFloat32 formats like encoding/json: shortest repr, exponent only
// for very small or large magnitudes. Scores are finite (scoring rejects
// NaN and Inf).
func appendFloat32(dst []byte, f float32) []byte {
	abs := math.Abs(float64(f))
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	return strconv.AppendFloat(dst, float64(f), format, -1, 32)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
