package rollout

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/scoring/internal/regtest"
	"github.com/seer-ml/seer/scoring/registry"
)

// fakeJudge returns its verdicts in order.
type fakeJudge struct{ verdicts []Judgement }

func (f *fakeJudge) Judge(context.Context, string, *registry.Rollout, time.Time, time.Time) (Judgement, error) {
	j := f.verdicts[0]
	f.verdicts = f.verdicts[1:]
	return j, nil
}

// TestControllerOutcomes on the real broker: passing steps lead to the
// promotion (the alias moves); a failed gate rolls back at once, with the
// gate and its figures in the registry and an alert; too few samples hold
// and then pause.
func TestControllerOutcomes(t *testing.T) {
	log := regtest.New(t, "card-fraud", "card-fraud-1.1.0", "card-fraud-1.2.0-rc.1").Log
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	later := func() time.Time { return time.Now().Add(time.Hour) } // every step's time is up
	var alerts []registry.Event
	j := &fakeJudge{}
	c := &Controller{Log: log, Judge: j, Model: "card-fraud", Actor: "monitor", Config: Config{Interval: time.Second, MaxHolds: 2},
		Now: later, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), OnEnd: func(e registry.Event) { alerts = append(alerts, e) }}
	state := func() *registry.Model {
		st, _, err := log.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st.Models["card-fraud"]
	}

	// The bad candidate: its shadow step fails a gate.
	if _, err := log.StartRollout(ctx, "card-fraud", "1.2.0-rc.1", "champion", []string{"shadow", "10"}, time.Minute, "ci", "try rc.1"); err != nil {
		t.Fatal(err)
	}
	j.verdicts = []Judgement{{Verdict: Fail, Gate: "score_correlation", Figures: map[string]float64{"score_correlation": 0.01}}}
	e, err := c.Step(ctx)
	if err != nil || e == nil || e.Type != registry.RolloutRolledBack || e.Gate != "score_correlation" || e.Figures["score_correlation"] != 0.01 {
		t.Fatalf("a failed gate: event %+v, %v; want rolled back naming the gate and its figure", e, err)
	}
	if m := state(); m.Rollout.State != registry.RolloutReverted || m.Aliases["champion"] != "1.0.0" || len(alerts) != 1 {
		t.Errorf("after the rollback: state %s, champion %s, %d alerts", m.Rollout.State, m.Aliases["champion"], len(alerts))
	}

	// Too few samples: hold, then pause.
	if _, err := log.StartRollout(ctx, "card-fraud", "1.1.0", "champion", []string{"shadow", "50"}, time.Minute, "ci", "try 1.1.0"); err != nil {
		t.Fatal(err)
	}
	j.verdicts = []Judgement{{Verdict: Hold, Gate: "min_samples"}, {Verdict: Hold, Gate: "min_samples"}}
	if e, err := c.Step(ctx); err != nil || e != nil {
		t.Fatalf("first hold: %+v, %v; want nothing recorded", e, err)
	}
	if e, err := c.Step(ctx); err != nil || e == nil || e.Type != registry.RolloutPaused {
		t.Fatalf("second hold: %+v, %v; want paused", e, err)
	}
	if m := state(); m.Rollout.State != registry.RolloutPausedAt {
		t.Errorf("state %s after too few samples, want paused (not passed)", m.Rollout.State)
	}
	if e, err := c.Step(ctx); err != nil || e != nil {
		t.Errorf("a paused rollout was judged again: %+v, %v", e, err)
	}
	if _, err := log.ChangeRollout(ctx, "card-fraud", registry.RolloutRolledBack, "ci", "restart it", "manual", nil); err != nil {
		t.Fatal(err)
	}

	// The good candidate passes every step and is promoted.
	if _, err := log.StartRollout(ctx, "card-fraud", "1.1.0", "champion", []string{"shadow", "50"}, time.Minute, "ci", "again"); err != nil {
		t.Fatal(err)
	}
	j.verdicts = []Judgement{{Verdict: Pass}, {Verdict: Pass}}
	if e, err := c.Step(ctx); err != nil || e == nil || e.Type != registry.RolloutStepped || state().Rollout.Step != 1 {
		t.Fatalf("first pass: %+v, %v; want the next step", e, err)
	}
	c.Now = func() time.Time { return time.Now() } // the new step's time is not up
	if e, err := c.Step(ctx); err != nil || e != nil {
		t.Fatalf("a step judged before its duration: %+v, %v", e, err)
	}
	c.Now = later
	if e, err := c.Step(ctx); err != nil || e == nil || e.Type != registry.RolloutPromoted {
		t.Fatalf("last pass: %+v, %v; want promoted", e, err)
	}
	if m := state(); m.Aliases["champion"] != "1.1.0" || m.Rollout.State != registry.RolloutDone {
		t.Errorf("after the promotion: champion %s, state %s", m.Aliases["champion"], m.Rollout.State)
	}
}

// recordingJudge passes every step and records the span it judged.
type recordingJudge struct{ from []time.Time }

func (r *recordingJudge) Judge(_ context.Context, _ string, _ *registry.Rollout, from, _ time.Time) (Judgement, error) {
	r.from = append(r.from, from)
	return Judgement{Verdict: Pass}, nil
}

// TestControllerWaitsForEveryInstance on the real broker: a step is not
// judged while a live serve instance has not put it in service, is judged
// from the time the last one did, and an instance that refused the
// candidate rolls the rollout back; instances that left the fleet no
// longer count.
func TestControllerWaitsForEveryInstance(t *testing.T) {
	log := regtest.New(t, "card-fraud", "card-fraud-1.1.0", "card-fraud-1.2.0-rc.1").Log
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live := []string{"serve-a", "serve-b"}
	j := &recordingJudge{}
	var alerts []registry.Event
	c := &Controller{Log: log, Judge: j, Model: "card-fraud", Actor: "monitor", Config: Config{Interval: time.Second, MaxHolds: 100},
		Now: func() time.Time { return time.Now().Add(time.Hour) }, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Fleet: func(context.Context) ([]string, error) { return live, nil }, OnEnd: func(e registry.Event) { alerts = append(alerts, e) }}
	start, err := log.StartRollout(ctx, "card-fraud", "1.1.0", "champion", []string{"shadow", "50"}, time.Minute, "ci", "try 1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	loaded := func(instance string, typ registry.EventType, step int, at time.Time) {
		t.Helper()
		e := registry.Event{ID: registry.NewID(), Type: typ, Model: "card-fraud", Version: "1.1.0", Actor: instance, Instance: instance,
			Reason: "test", Time: at, Rollout: start.Rollout, Step: step}
		if err := log.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now().UTC()
	loaded("serve-a", registry.VersionLoaded, 0, t0.Add(2*time.Second))
	if e, err := c.Step(ctx); err != nil || e != nil || len(j.from) != 0 {
		t.Fatalf("serve-b has not loaded the step: event %+v, %v, %d judgements; want none", e, err, len(j.from))
	}
	loaded("serve-b", registry.VersionLoaded, 0, t0.Add(5*time.Second))
	loaded("serve-b", registry.VersionLoaded, 0, t0.Add(9*time.Second)) // a second load does not move its time
	e, err := c.Step(ctx)
	if err != nil || e == nil || e.Type != registry.RolloutStepped {
		t.Fatalf("every instance loaded the step: %+v, %v; want the next step", e, err)
	}
	if len(j.from) != 1 || !j.from[0].Equal(t0.Add(5*time.Second)) {
		t.Errorf("judged from %v; want from serve-b's load at %v", j.from, t0.Add(5*time.Second))
	}

	// Step 2: serve-b leaves the fleet, serve-c joins and refuses the candidate.
	live = []string{"serve-a", "serve-c"}
	loaded("serve-a", registry.VersionLoaded, 1, time.Now().UTC())
	loaded("serve-b", registry.LoadFailed, 1, time.Now().UTC()) // gone: does not count
	if e, err := c.Step(ctx); err != nil || e != nil {
		t.Fatalf("serve-c has not loaded step 2: %+v, %v; want nothing recorded", e, err)
	}
	loaded("serve-c", registry.LoadFailed, 1, time.Now().UTC())
	e, err = c.Step(ctx)
	if err != nil || e == nil || e.Type != registry.RolloutRolledBack || e.Gate != "candidate_load" || len(alerts) != 1 {
		t.Fatalf("serve-c refused the candidate: %+v, %v, %d alerts; want a rollback on gate candidate_load with an alert", e, err, len(alerts))
	}
	if !strings.Contains(e.Reason, "serve-c") {
		t.Errorf("rollback reason %q does not name the instance that refused", e.Reason)
	}
}
