package registry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// RolloutState is where a rollout stands.
type RolloutState string

// Rollout states.
const (
	RolloutRunning  RolloutState = "running"
	RolloutPausedAt RolloutState = "paused"
	RolloutDone     RolloutState = "promoted"
	RolloutReverted RolloutState = "rolled_back"
	ShadowStep                   = "shadow" // the step name of a shadow step
)

// Rollout is one candidate version's progress through its steps.
type Rollout struct {
	ID            string
	Candidate     string // the version rolled out
	From          string // the alias's version when the rollout began
	Alias         string
	Steps         []string
	Step          int // index into Steps
	StepDuration  time.Duration
	State         RolloutState
	StartedAt     time.Time
	StepStartedAt time.Time
	Reason        string // of the last change
	Gate          string
	Figures       map[string]float64
	// The serve instances that put the current step in service (when
	// each did first) or refused its candidate (why), from their
	// version_loaded and load_failed events.
	Loaded  map[string]time.Time
	Refused map[string]string
}

// noteLoad records a serve instance's load or refusal of the current
// step's candidate.
func (r *Rollout) noteLoad(e Event) {
	if !r.Active() || e.Rollout != r.ID || e.Step != r.Step || e.Instance == "" {
		return
	}
	if e.Type == LoadFailed {
		r.Refused[e.Instance] = e.Reason
		return
	}
	if _, ok := r.Loaded[e.Instance]; !ok {
		r.Loaded[e.Instance] = e.Time
	}
}

// Waiting returns, of the live serve instances, those that have not put
// the current step in service yet, and the time the last of the others
// did: a step is judged only from then on.
func (r *Rollout) Waiting(live []string) (waiting []string, since time.Time) {
	since = r.StepStartedAt
	for _, in := range live {
		t, ok := r.Loaded[in]
		if !ok {
			waiting = append(waiting, in)
		} else if t.After(since) {
			since = t
		}
	}
	return waiting, since
}

// Active reports whether the rollout still routes traffic to the candidate.
func (r *Rollout) Active() bool {
	return r != nil && (r.State == RolloutRunning || r.State == RolloutPausedAt)
}

// Route returns what the current step routes to the candidate: shadow
// (every event scored besides production), or a canary weight in percent.
func (r *Rollout) Route() (shadow bool, weight float64) {
	s := r.Steps[r.Step]
	if s == ShadowStep {
		return true, 0
	}
	w, _ := strconv.ParseFloat(s, 64)
	return false, w
}

// ParseSteps checks a rollout's steps: "shadow" or canary weights in
// (0, 100], the weights increasing, the last 100 or a weight before a
// promotion.
func ParseSteps(steps []string) error {
	if len(steps) == 0 {
		return errors.New("at least one step is required")
	}
	last := 0.0
	for i, s := range steps {
		if s == ShadowStep {
			if last > 0 {
				return fmt.Errorf("step %d: a shadow step comes before the canary steps", i+1)
			}
			continue
		}
		w, err := strconv.ParseFloat(s, 64)
		if err != nil || w <= 0 || w > 100 || w <= last {
			return fmt.Errorf("step %d: %q is not shadow or a canary weight in (%v, 100]", i+1, s, last)
		}
		last = w
	}
	return nil
}

// applyRollout folds a rollout event into m.
func (m *Model) applyRollout(e Event) error {
	r := m.Rollout
	if e.Type == RolloutStarted {
		if r.Active() {
			return fmt.Errorf("%s already has rollout %s of %s in progress", e.Model, r.ID, r.Candidate)
		}
		if _, ok := m.Versions[e.Version]; !ok {
			return fmt.Errorf("%s has no version %s", e.Model, e.Version)
		}
		d, err := time.ParseDuration(e.StepDuration)
		if err != nil || d <= 0 {
			return fmt.Errorf("step_duration %q is not a positive duration", e.StepDuration)
		}
		m.Rollout = &Rollout{ID: e.Rollout, Candidate: e.Version, From: m.Aliases[e.Alias], Alias: e.Alias, Steps: e.Steps,
			StepDuration: d, State: RolloutRunning, StartedAt: e.Time, StepStartedAt: e.Time, Reason: e.Reason,
			Loaded: map[string]time.Time{}, Refused: map[string]string{}}
		return nil
	}
	if r == nil || r.ID != e.Rollout || !r.Active() {
		return fmt.Errorf("rollout %s of %s is not in progress", e.Rollout, e.Model)
	}
	r.Reason, r.Gate, r.Figures = e.Reason, e.Gate, e.Figures
	switch e.Type {
	case RolloutStepped:
		if e.Step != r.Step+1 || e.Step >= len(r.Steps) {
			return fmt.Errorf("rollout %s is at step %d of %d; it cannot go to step %d", r.ID, r.Step+1, len(r.Steps), e.Step+1)
		}
		r.Step, r.State, r.StepStartedAt = e.Step, RolloutRunning, e.Time
		r.Loaded, r.Refused = map[string]time.Time{}, map[string]string{}
	case RolloutPaused:
		r.State = RolloutPausedAt
	case RolloutPromoted:
		r.State = RolloutDone
		m.Aliases[r.Alias] = r.Candidate
	case RolloutRolledBack:
		r.State = RolloutReverted
	}
	return nil
}

// StartRollout begins rolling version out behind alias in steps.
func (l *Log) StartRollout(ctx context.Context, model, version, alias string, steps []string, stepDuration time.Duration, actor, reason string) (Event, error) {
	if err := ParseSteps(steps); err != nil {
		return Event{}, fmt.Errorf("--steps: %w", err)
	}
	e := Event{ID: NewID(), Type: RolloutStarted, Model: model, Version: version, Alias: alias, Actor: actor, Reason: reason,
		Time: time.Now().UTC(), Rollout: NewID(), Steps: steps, StepDuration: stepDuration.String()}
	return e, l.appendChecked(ctx, e)
}

// ChangeRollout records what happens to the model's rollout in progress:
// the next step (RolloutStepped), a pause, the promotion (the alias moves
// to the candidate) or a rollback, with the reason, the gate that decided
// it and its figures.
func (l *Log) ChangeRollout(ctx context.Context, model string, t EventType, actor, reason, gate string, figures map[string]float64) (Event, error) {
	st, _, err := l.Read(ctx)
	if err != nil {
		return Event{}, err
	}
	m := st.Models[model]
	if m == nil || !m.Rollout.Active() {
		return Event{}, fmt.Errorf("%s has no rollout in progress", model)
	}
	r := m.Rollout
	e := Event{ID: NewID(), Type: t, Model: model, Version: r.Candidate, Alias: r.Alias, Previous: m.Aliases[r.Alias], Actor: actor,
		Reason: reason, Time: time.Now().UTC(), Rollout: r.ID, Steps: r.Steps, Step: r.Step, Gate: gate, Figures: figures}
	if t == RolloutStepped {
		e.Step = r.Step + 1
	}
	return e, l.appendChecked(ctx, e)
}

// appendChecked appends e and confirms, by reading the log back, that it
// applied; a concurrent change that won is reported.
func (l *Log) appendChecked(ctx context.Context, e Event) error {
	st, _, err := l.Read(ctx)
	if err != nil {
		return err
	}
	if err := st.Apply(e); err != nil {
		return err
	}
	if err := l.Append(ctx, e); err != nil {
		return err
	}
	after, _, err := l.Read(ctx)
	if err != nil {
		return err
	}
	if !after.Applied(e.ID) {
		return fmt.Errorf("%s of %s was not applied: another change came first", e.Type, e.Model)
	}
	return nil
}
