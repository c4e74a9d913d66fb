package drift

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/schemas"
)

// Rule is one alert rule over window metrics.
type Rule struct {
	Name       string            `yaml:"name"`
	Family     string            `yaml:"family"`      // drift, quality or freshness
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
	case r.Family != FamilyDrift && r.Family != FamilyQuality && r.Family != FamilyFreshness:
		return fmt.Errorf("family: %q is not drift, quality or freshness", r.Family)
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

// Alert states.
const (
	StatePending  = "pending"
	StateFiring   = "firing"
	StateResolved = "resolved"
)

// Alert is one state change of one alert.
type Alert struct {
	ID          string            `json:"alert_id"`
	DedupKey    string            `json:"dedup_key"`
	Rule        string            `json:"rule"`
	State       string            `json:"state"`
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
	state    string // "" (inactive), pending or firing
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
}

// NewEvaluator validates the rules.
func NewEvaluator(rules []Rule) (*Evaluator, error) {
	for i := range rules {
		if err := rules[i].Validate(); err != nil {
			return nil, fmt.Errorf("monitor.rules[%d] (%s): %w", i, rules[i].Name, err)
		}
		if rules[i].For == 0 {
			rules[i].For = 1
		}
	}
	return &Evaluator{rules: rules, states: map[string]*alertState{}}, nil
}

// Restore marks an alert as firing, as loaded from the alerts table when a
// monitor takes over.
func (e *Evaluator) Restore(dedupKey, id string, startsAt time.Time) {
	e.states[dedupKey] = &alertState{state: StateFiring, id: id, startsAt: startsAt}
}

// Evaluate applies one window and returns the state changes, in a stable
// order.
func (e *Evaluator) Evaluate(w *Window) []Alert {
	var out []Alert
	now := time.Now().UTC()
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
			emit := func(state string) {
				out = append(out, Alert{ID: st.id, DedupKey: key, Rule: r.Name, State: state, Severity: r.Severity,
					Model: w.Model, Version: w.Version, Feature: m.Feature, Family: r.Family, Metric: r.Metric,
					Value: m.Value, Threshold: r.Threshold, WindowStart: w.Start, StartsAt: st.startsAt, At: now,
					Summary: fmt.Sprintf("%s: %s %s of %s %s %s is %.4g (threshold %s %g)", r.Name, r.Family, r.Metric, w.Model, w.Version, featureName(m.Feature), m.Value, r.Op, r.Threshold),
					Labels:  r.Labels})
			}
			switch st.state {
			case "":
				if r.breach(m.Value) {
					st.breaches = 1
					st.id = schemas.StableKSUID(w.Start, key)
					st.startsAt = w.Start
					if st.breaches >= r.For && st.cooldown == 0 {
						st.state = StateFiring
						emit(StateFiring)
					} else {
						st.state = StatePending
						emit(StatePending)
					}
				}
			case StatePending:
				switch {
				case r.breach(m.Value):
					st.breaches++
					if st.breaches >= r.For && st.cooldown == 0 {
						st.state = StateFiring
						emit(StateFiring)
					}
				default:
					st.state, st.breaches = "", 0
				}
			case StateFiring:
				if r.healthy(m.Value) {
					emit(StateResolved)
					st.state, st.breaches, st.cooldown = "", 0, r.Cooldown
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

// AlertSink delivers alert state changes.
type AlertSink interface {
	Send(ctx context.Context, alerts []Alert) error
}

// LogSink logs each alert.
type LogSink struct{ Log *slog.Logger }

// Send logs alerts at warn (firing) or info.
func (s LogSink) Send(_ context.Context, alerts []Alert) error {
	for _, a := range alerts {
		lvl := slog.LevelInfo
		if a.State == StateFiring {
			lvl = slog.LevelWarn
		}
		s.Log.Log(context.Background(), lvl, "alert "+a.State, "component", "monitor", "rule", a.Rule, "severity", a.Severity,
			"model", a.Model, "version", a.Version, "feature", a.Feature, "metric", a.Metric, "value", a.Value, "threshold", a.Threshold, "alert_id", a.ID)
	}
	return nil
}

// ClickHouseAlertSink writes alerts to the alerts table.
type ClickHouseAlertSink struct {
	Conn     driver.Conn
	Database string
}

// Send inserts one row per alert state change.
func (s ClickHouseAlertSink) Send(ctx context.Context, alerts []Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	b, err := s.Conn.PrepareBatch(ctx, "INSERT INTO "+s.Database+".alerts (alert_id, dedup_key, rule, state, severity, model, model_version, feature, metric, value, threshold, window_start, summary, label_keys, label_values, fence, at, at_ms)")
	if err != nil {
		return fmt.Errorf("preparing alerts insert: %w", err)
	}
	defer b.Abort()
	for _, a := range alerts {
		keys := make([]string, 0, len(a.Labels))
		for k := range a.Labels {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		vals := make([]string, len(keys))
		for i, k := range keys {
			vals[i] = a.Labels[k]
		}
		if err := b.Append(a.ID, a.DedupKey, a.Rule, a.State, a.Severity, a.Model, a.Version, a.Feature, a.Metric, a.Value, a.Threshold,
			a.WindowStart.UTC(), a.Summary, keys, vals, a.Fence, a.At.UTC(), uint64(a.At.UnixMilli())); err != nil {
			return err
		}
	}
	return b.Send()
}

// KafkaAlertSink produces alerts as JSON to a topic, keyed by dedup key.
type KafkaAlertSink struct {
	Client *kgo.Client
	Topic  string
}

// Send produces and waits for the acknowledgements.
func (s KafkaAlertSink) Send(ctx context.Context, alerts []Alert) error {
	recs := make([]*kgo.Record, 0, len(alerts))
	for _, a := range alerts {
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		recs = append(recs, &kgo.Record{Topic: s.Topic, Key: []byte(a.DedupKey), Value: v})
	}
	return s.Client.ProduceSync(ctx, recs...).FirstErr()
}

// WebhookSink posts alerts in Alertmanager's API v2 format (a JSON list of
// {labels, annotations, startsAt, endsAt, generatorURL}); resolved alerts
// carry endsAt.
type WebhookSink struct {
	URL    string
	Client *http.Client
}

// Send posts firing and resolved alerts (pending ones are not sent).
func (s WebhookSink) Send(ctx context.Context, alerts []Alert) error {
	type amAlert struct {
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       *time.Time        `json:"endsAt,omitempty"`
		GeneratorURL string            `json:"generatorURL,omitempty"`
	}
	var body []amAlert
	for _, a := range alerts {
		if a.State == StatePending {
			continue
		}
		labels := map[string]string{"alertname": a.Rule, "severity": a.Severity, "model": a.Model, "model_version": a.Version, "feature": a.Feature, "service": "seer"}
		for k, v := range a.Labels {
			labels[k] = v
		}
		am := amAlert{Labels: labels, StartsAt: a.StartsAt,
			Annotations: map[string]string{"summary": a.Summary, "runbook": path.Join("deploy/runbooks", a.Family+".md"), "alert_id": a.ID}}
		if a.State == StateResolved {
			at := a.At
			am.EndsAt = &at
		}
		body = append(body, am)
	}
	if len(body) == 0 {
		return nil
	}
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("alert webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("alert webhook: %s", resp.Status)
	}
	return nil
}
