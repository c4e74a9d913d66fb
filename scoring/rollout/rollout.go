// Package rollout is the rollout state machine: it asks a Judge for the
// verdict on each step of a model's rollout once the step's duration has
// passed, and records the consequence in the registry — the next step,
// the promotion after the last step, an automatic rollback when a gate
// fails, a pause when the samples stay too few. The serve instances follow
// those events (scoring/router). A Controller is run by one goroutine, on
// the one monitor instance that holds its lease.
package rollout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/seer-ml/seer/scoring/registry"
)

// Verdict is a step's outcome.
type Verdict int

// Verdicts.
const (
	Pass Verdict = iota // every gate passed
	Hold                // too few samples to judge yet
	Fail                // a gate failed: roll back
)

func (v Verdict) String() string { return [...]string{"pass", "hold", "fail"}[v] }

// Judgement is a step's verdict, the gate that decided it and every
// figure measured.
type Judgement struct {
	Verdict Verdict
	Gate    string
	Figures map[string]float64
	Detail  string // what the figures do not say, for the reason
}

// Judge measures a rollout's current step over [from, to).
type Judge interface {
	Judge(ctx context.Context, model string, r *registry.Rollout, from, to time.Time) (Judgement, error)
}

// Config sets how often steps are judged and how long too few samples
// are waited for.
type Config struct {
	Interval time.Duration `yaml:"interval"`  // how often the controller looks at the rollout
	MaxHolds int           `yaml:"max_holds"` // judgements with too few samples before the rollout pauses
}

// DefaultConfig: every 10 s, pause after 30 holds.
func DefaultConfig() Config { return Config{Interval: 10 * time.Second, MaxHolds: 30} }

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.Interval <= 0 || c.MaxHolds < 1 {
		return errors.New("rollout.interval and rollout.max_holds: must be positive")
	}
	return nil
}

// Controller drives one model's rollouts.
type Controller struct {
	Log    *registry.Log
	Judge  Judge
	Model  string
	Actor  string // names the controller in registry events
	Config Config
	Now    func() time.Time
	Logger *slog.Logger
	// OnEnd, when set, is called with every rollback and pause (alerts).
	OnEnd func(e registry.Event)
	// Leader, when set, says whether this instance may act now (its lease).
	Leader func(ctx context.Context) bool
	// Fleet, when set, lists the live serve instances by the names they
	// record in registry events. A step is judged only once every one of
	// them has put it in service, over the time since the last did; an
	// instance that refused the candidate rolls the rollout back.
	Fleet func(ctx context.Context) ([]string, error)

	holds map[string]int
}

// Step judges the current step if its time is up and records what
// follows; it returns the event it appended, if any.
func (c *Controller) Step(ctx context.Context) (*registry.Event, error) {
	if c.Leader != nil && !c.Leader(ctx) {
		return nil, nil
	}
	st, _, err := c.Log.Read(ctx)
	if err != nil {
		return nil, err
	}
	m := st.Models[c.Model]
	if m == nil || m.Rollout == nil || m.Rollout.State != registry.RolloutRunning {
		return nil, nil
	}
	r := m.Rollout
	now := c.Now()
	j, since, err := c.fleet(ctx, r)
	if err != nil {
		return nil, err
	}
	if j == nil {
		if now.Before(since.Add(r.StepDuration)) {
			return nil, nil
		}
		jj, err := c.Judge.Judge(ctx, c.Model, r, since, now)
		if err != nil {
			return nil, fmt.Errorf("judging rollout %s step %s: %w", r.ID, r.Steps[r.Step], err)
		}
		j = &jj
	}
	step := r.Steps[r.Step]
	detail := ""
	if j.Detail != "" {
		detail = ": " + j.Detail
	}
	var e registry.Event
	switch j.Verdict {
	case Pass:
		if r.Step == len(r.Steps)-1 {
			e, err = c.Log.ChangeRollout(ctx, c.Model, registry.RolloutPromoted, c.Actor, fmt.Sprintf("every gate passed at the last step (%s)", step), j.Gate, j.Figures)
		} else {
			e, err = c.Log.ChangeRollout(ctx, c.Model, registry.RolloutStepped, c.Actor, fmt.Sprintf("every gate passed at step %s", step), j.Gate, j.Figures)
		}
	case Fail:
		e, err = c.Log.ChangeRollout(ctx, c.Model, registry.RolloutRolledBack, c.Actor, fmt.Sprintf("gate %s failed at step %s%s", j.Gate, step, detail), j.Gate, j.Figures)
	case Hold:
		if c.holds == nil {
			c.holds = map[string]int{}
		}
		key := r.ID + "/" + step
		if c.holds[key]++; c.holds[key] < c.Config.MaxHolds {
			c.Logger.Info("rollout step waits", "model", c.Model, "rollout", r.ID, "step", step, "gate", j.Gate, "figures", j.Figures, "detail", j.Detail, "holds", c.holds[key])
			return nil, nil
		}
		e, err = c.Log.ChangeRollout(ctx, c.Model, registry.RolloutPaused, c.Actor,
			fmt.Sprintf("step %s still held by gate %s after %d judgements%s", step, j.Gate, c.holds[key], detail), j.Gate, j.Figures)
	}
	if err != nil {
		return nil, err
	}
	c.Logger.Warn("rollout "+string(e.Type), "model", c.Model, "rollout", r.ID, "step", step, "gate", j.Gate, "figures", j.Figures, "reason", e.Reason)
	if c.OnEnd != nil && (e.Type == registry.RolloutRolledBack || e.Type == registry.RolloutPaused) {
		c.OnEnd(e)
	}
	return &e, nil
}

// fleet checks the live serve instances against the step: a Fail when one
// refused the candidate, a Hold while some have not put it in service (or
// none is live), else nil and the time the step has been in service
// everywhere since.
func (c *Controller) fleet(ctx context.Context, r *registry.Rollout) (*Judgement, time.Time, error) {
	if c.Fleet == nil {
		return nil, r.StepStartedAt, nil
	}
	live, err := c.Fleet(ctx)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("listing the live serve instances: %w", err)
	}
	for _, in := range live {
		if why, ok := r.Refused[in]; ok {
			return &Judgement{Verdict: Fail, Gate: "candidate_load", Figures: map[string]float64{"instances": float64(len(live)), "refused": float64(len(r.Refused))},
				Detail: fmt.Sprintf("serve instance %s refused the candidate: %s", in, why)}, time.Time{}, nil
		}
	}
	waiting, since := r.Waiting(live)
	if len(live) == 0 || len(waiting) > 0 {
		return &Judgement{Verdict: Hold, Gate: "instances_loaded", Figures: map[string]float64{"instances": float64(len(live)), "waiting": float64(len(waiting))},
			Detail: fmt.Sprintf("waiting for serve instances to put the step in service: %v", waiting)}, time.Time{}, nil
	}
	return nil, since, nil
}

// Run steps every Config.Interval until ctx ends; it returns nil then.
func (c *Controller) Run(ctx context.Context) error {
	tick := time.NewTicker(c.Config.Interval)
	defer tick.Stop()
	for {
		if _, err := c.Step(ctx); err != nil && ctx.Err() == nil {
			c.Logger.Error("rollout controller step failed; retrying", "model", c.Model, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
