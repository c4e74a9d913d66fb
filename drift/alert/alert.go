// Package alert holds the alert rules over window metrics and the alert
// state machine: inactive → pending → firing → resolved, per rule, model
// version and feature. It only decides; delivering alerts is
// drift/notify's job. An Evaluator is owned by one goroutine (the
// monitor); it reads time from the clock it is given.
package alert

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/schemas"
)

// Rule is one alert rule over window metrics.
type Rule struct {
	Name       string            `yaml:"name"`
	Family     string            `yaml:"family"`      // drift, quality, freshness or performance
	Metric     string            `yaml:"metric"`      // e.g. pvalue_adjusted, psi, age_p95_ms, dead_letter_share, rows
	Feature    string            `yaml:"feature"`     // an input, score, a feature view, "" for window-level, "*" for each
	Op         string            `yaml:"op"`          // ">" or "<"
	Threshold  float64           `yaml:"threshold"`   // breach when value op threshold
	Resolve    *float64          `yaml:"resolve"`     // hysteresis: resolve once value is back past this (default threshold)
	For        int               `yaml:"for"`         // consecutive breaching windows before firing (default 1)
	MinSamples uint64            `yaml:"min_samples"` // windows with fewer rows leave the rule's state alone
	Cooldown   int               `yaml:"cooldown"`    // windows after resolving before it may fire again
	Severity   string            `yaml:"severity"`    // page, warning or info
	Labels     map[string]string `yaml:"labels"`
}

// Validate names the bad field.
func (r *Rule) Validate() error {
	switch {
	case r.Name == "":
		return errors.New("name: required")
	case r.Family != window.FamilyDrift && r.Family != window.FamilyQuality && r.Family != window.FamilyFreshness && r.Family != window.FamilyPerformance:
		return fmt.Errorf("family: %q is not drift, quality, freshness or performance", r.Family)
	case r.Metric == "":
		return errors.New("metric: required")
	case r.Op != ">" && r.Op != "<":
		return fmt.Errorf("op: %q is not > or <", r.Op)
	case r.For < 0 || r.Cooldown < 0:
		return errors.New("for/cooldown: must not be negative")
	case r.Severity != "page" && r.Severity != "warning" && r.Severity != "info":
		return fmt.Errorf("severity: %q is not page, warning or info", r.Severity)
	case r.Resolve != nil && ((r.Op == ">" && *r.Resolve > r.Threshold) || (r.Op == "<" && *r.Resolve < r.Threshold)):
		return fmt.Errorf("resolve: %v must be on the healthy side of threshold %v", *r.Resolve, r.Threshold)
	}
	return nil
}

func (r *Rule) breach(v float64) bool {
	if r.Op == ">" {
		return v > r.Threshold
	}
	return v < r.Threshold
}

func (r *Rule) healthy(v float64) bool {
	res := r.Threshold
	if r.Resolve != nil {
		res = *r.Resolve
	}
	if r.Op == ">" {
		return v <= res
	}
	return v >= res
}

// State is where an alert stands. The zero value is Inactive.
type State int

// Alert states.
const (
	Inactive State = iota
	Pending
	Firing
	Resolved
)

var stateNames = [...]string{"inactive", "pending", "firing", "resolved"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// MarshalText writes the state's name, as JSON and the alerts table hold it.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state's name.
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("alert state %q is not inactive, pending, firing or resolved", b)
}

// Alert is one state change of one alert.
type Alert struct {
	ID          string            `json:"alert_id"`
	DedupKey    string            `json:"dedup_key"`
	Rule        string            `json:"rule"`
	State       State             `json:"state"`
	Severity    string            `json:"severity"`
	Model       string            `json:"model"`
	Version     string            `json:"model_version"`
	Feature     string            `json:"feature"`
	Family      string            `json:"family"`
	Metric      string            `json:"metric"`
	Value       float64           `json:"value"`
	Threshold   float64           `json:"threshold"`
	WindowStart time.Time         `json:"window_start"`
	StartsAt    time.Time         `json:"starts_at"`
	At          time.Time         `json:"at"`
	Summary     string            `json:"summary"`
	Labels      map[string]string `json:"labels,omitempty"`
	Fence       uint64            `json:"fence"`
}

type alertState struct {
	state    State // Inactive, Pending or Firing
	breaches int
	cooldown int
	id       string
	startsAt time.Time
}

// Evaluator is the alert state machine: inactive → pending → firing →
// resolved, per rule, model version and feature (the dedup key). A rule
// fires after For consecutive breaching windows, resolves once the value is
// back past Resolve (hysteresis), and cannot fire again for Cooldown
// windows. Windows with fewer than MinSamples rows change nothing. It is
// not safe for concurrent use; one monitor owns it.
type Evaluator struct {
	rules  []Rule
	states map[string]*alertState
	now    func() time.Time
}

// NewEvaluator validates the rules; now stamps each state change.
func NewEvaluator(rules []Rule, now func() time.Time) (*Evaluator, error) {
	for i := range rules {
		if err := rules[i].Validate(); err != nil {
			return nil, fmt.Errorf("monitor.rules[%d] (%s): %w", i, rules[i].Name, err)
		}
		if rules[i].For == 0 {
			rules[i].For = 1
		}
	}
	return &Evaluator{rules: rules, states: map[string]*alertState{}, now: now}, nil
}

// Restore marks an alert as firing, as loaded from the alerts table when a
// monitor takes over.
func (e *Evaluator) Restore(dedupKey, id string, startsAt time.Time) {
	e.states[dedupKey] = &alertState{state: Firing, id: id, startsAt: startsAt}
}

// Evaluate applies one window and returns the state changes, in a stable
// order.
func (e *Evaluator) Evaluate(w *window.Window) []Alert {
	var out []Alert
	now := e.now().UTC()
	for ri := range e.rules {
		r := &e.rules[ri]
		if w.Rows < r.MinSamples {
			continue
		}
		for _, m := range w.Metrics {
			if m.Family != r.Family || m.Name != r.Metric || (r.Feature != "*" && r.Feature != m.Feature) {
				continue
			}
			key := r.Name + "|" + w.Model + "|" + w.Version + "|" + m.Feature
			st := e.states[key]
			if st == nil {
				st = &alertState{}
				e.states[key] = st
			}
			if st.cooldown > 0 {
				st.cooldown--
			}
			emit := func(state State) {
				out = append(out, Alert{ID: st.id, DedupKey: key, Rule: r.Name, State: state, Severity: r.Severity,
					Model: w.Model, Version: w.Version, Feature: m.Feature, Family: r.Family, Metric: r.Metric,
					Value: m.Value, Threshold: r.Threshold, WindowStart: w.Start, StartsAt: st.startsAt, At: now,
					Summary: fmt.Sprintf("%s: %s %s of %s %s %s is %.4g (threshold %s %g)", r.Name, r.Family, r.Metric, w.Model, w.Version, featureName(m.Feature), m.Value, r.Op, r.Threshold),
					Labels:  withRoute(r.Labels, w.Route)})
			}
			switch st.state {
			case Inactive:
				if r.breach(m.Value) {
					st.breaches = 1
					st.id = schemas.StableKSUID(w.Start, key)
					st.startsAt = w.Start
					if st.breaches >= r.For && st.cooldown == 0 {
						st.state = Firing
						emit(Firing)
					} else {
						st.state = Pending
						emit(Pending)
					}
				}
			case Pending:
				switch {
				case r.breach(m.Value):
					st.breaches++
					if st.breaches >= r.For && st.cooldown == 0 {
						st.state = Firing
						emit(Firing)
					}
				default:
					st.state, st.breaches = Inactive, 0
				}
			case Firing:
				if r.healthy(m.Value) {
					emit(Resolved)
					st.state, st.breaches, st.cooldown = Inactive, 0, r.Cooldown
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].DedupKey < out[j].DedupKey })
	return out
}

func featureName(f string) string {
	if f == "" {
		return "(window)"
	}
	return f
}

// withRoute adds the window's route to a rule's labels.
func withRoute(labels map[string]string, route string) map[string]string {
	if route == "" {
		return labels
	}
	out := maps.Clone(labels)
	if out == nil {
		out = map[string]string{}
	}
	out["route"] = route
	return out
}
