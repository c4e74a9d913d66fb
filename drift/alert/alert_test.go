package alert

import (
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift/window"
)

func win(rows uint64, v float64) *window.Window {
	return &window.Window{Model: "m", Version: "1", Start: time.Unix(1000, 0), Rows: rows,
		Metrics: []window.Metric{{Family: window.FamilyDrift, Feature: "amount", Name: "pvalue_adjusted", Value: v}}}
}

func TestEvaluatorStateMachine(t *testing.T) {
	healthy := 0.05
	e, err := NewEvaluator([]Rule{{Name: "drift", Family: window.FamilyDrift, Metric: "pvalue_adjusted", Feature: "*", Op: "<", Threshold: 0.01,
		Resolve: &healthy, For: 2, MinSamples: 100, Cooldown: 1, Severity: "warning"}}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		rows  uint64
		v     float64
		state string // emitted, "" for none
	}{
		{1000, 0.5, ""},          // healthy
		{1000, 0.001, "pending"}, // first breach
		{50, 0.9, ""},            // too few rows: ignored
		{1000, 0.001, "firing"},  // second consecutive breach
		{1000, 0.02, ""},         // between threshold and resolve: hysteresis keeps it firing
		{1000, 0.2, "resolved"},  // healthy
		{1000, 0.001, "pending"}, // breach during cooldown: pending only
		{1000, 0.001, "firing"},  // cooldown over and two breaches
	}
	var id string
	for i, s := range steps {
		out := e.Evaluate(win(s.rows, s.v))
		got := ""
		if len(out) > 1 {
			t.Fatalf("step %d: %d alerts", i, len(out))
		}
		if len(out) == 1 {
			got = out[0].State.String()
			if out[0].DedupKey != "drift|m|1|amount" || out[0].Feature != "amount" || out[0].Value != s.v {
				t.Errorf("step %d: alert %+v", i, out[0])
			}
			if i == 3 {
				id = out[0].ID
			}
			if i == 5 && out[0].ID != id {
				t.Errorf("resolved alert id %s differs from firing %s", out[0].ID, id)
			}
		}
		if got != s.state {
			t.Errorf("step %d (rows %d, value %v): emitted %q, want %q", i, s.rows, s.v, got, s.state)
		}
	}
	if _, err := NewEvaluator([]Rule{{Name: "x", Family: "drift", Metric: "psi", Op: ">=", Severity: "page"}}, time.Now); err == nil || !strings.Contains(err.Error(), "op") {
		t.Errorf("bad op accepted: %v", err)
	}
}

func TestStateNames(t *testing.T) {
	for s := Inactive; s <= Resolved; s++ {
		var back State
		b, _ := s.MarshalText()
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("state %d: text %q reads back as %v, %v", int(s), b, back, err)
		}
	}
	var zero State
	if zero != Inactive || zero.String() != "inactive" {
		t.Errorf("zero State = %v, want inactive", zero)
	}
	if err := zero.UnmarshalText([]byte("")); err == nil {
		t.Error(`"" read as a state`)
	}
}
