package schemas

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
)

// ExamplesFile is the name of a package's held-out examples.
const ExamplesFile = "examples.jsonl"

// Example is one line of a package's examples.jsonl: a held-out event as
// its topic carries it, the feature values seer would read for it (view →
// feature → number or string; a view or feature left out is missing), the
// outputs the model must give for it, and its label when known.
type Example struct {
	Line     int                                   `json:"-"`
	Event    json.RawMessage                       `json:"event"`
	Features map[string]map[string]json.RawMessage `json:"features"`
	Outputs  map[string]float64                    `json:"outputs"`
	Label    *int                                  `json:"label,omitempty"`
}

// FeatureValue reads one feature value of an example as the feature store
// would: a JSON number is a number, a JSON string a string.
func (e *Example) FeatureValue(view, feature string) (Value, error) {
	raw, ok := e.Features[view][feature]
	if !ok || string(raw) == "null" {
		return Value{}, nil
	}
	var n float64
	if err := json.Unmarshal(raw, &n); err == nil {
		return Value{Kind: KindNumber, Num: n}, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return Value{Kind: KindString, Str: s}, nil
	}
	return Value{}, fmt.Errorf("line %d: features.%s.%s: want a number or a string", e.Line, view, feature)
}

// LoadExamples reads dir/examples.jsonl; a package without one has none.
func LoadExamples(dir string) ([]Example, error) {
	f, err := os.Open(filepath.Join(dir, ExamplesFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	exs, err := ParseExamples(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ExamplesFile), err)
	}
	return exs, nil
}

// ParseExamples decodes JSON Lines of examples strictly: an unknown key, a
// missing event or outputs, or a non-finite output is an error naming the
// line. Blank lines are skipped.
func ParseExamples(r io.Reader) ([]Example, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []Example
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		var ex Example
		if err := dec.Decode(&ex); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("line %d: more than one JSON value", line)
		}
		ex.Line = line
		switch {
		case len(ex.Event) == 0 || ex.Event[0] != '{':
			return nil, fmt.Errorf("line %d: event: want a JSON object", line)
		case len(ex.Outputs) == 0:
			return nil, fmt.Errorf("line %d: outputs: at least one output is required", line)
		}
		for name, v := range ex.Outputs {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("line %d: outputs.%s: not finite", line, name)
			}
		}
		out = append(out, ex)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
