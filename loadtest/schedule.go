package loadtest

import (
	"fmt"
	"time"
)

// Profile is a target rate over time.
type Profile struct {
	Kind     string        // constant, step or ramp
	Rate     float64       // events/s: the constant rate, the first step, or the ramp's start
	To       float64       // step or ramp: the final rate
	Steps    int           // step: number of steps from Rate to To
	Duration time.Duration // total
}

// Validate names the bad field.
func (p Profile) Validate() error {
	switch {
	case p.Kind != "constant" && p.Kind != "step" && p.Kind != "ramp":
		return fmt.Errorf("profile: %q is not constant, step or ramp", p.Kind)
	case p.Rate <= 0:
		return fmt.Errorf("rate: %v must be positive", p.Rate)
	case p.Kind != "constant" && p.To <= 0:
		return fmt.Errorf("to: %v must be positive for a %s profile", p.To, p.Kind)
	case p.Kind == "step" && p.Steps < 2:
		return fmt.Errorf("steps: %d must be at least 2", p.Steps)
	case p.Duration <= 0:
		return fmt.Errorf("duration: %v must be positive", p.Duration)
	}
	return nil
}

// RateAt returns the target rate at elapsed time e.
func (p Profile) RateAt(e time.Duration) float64 {
	frac := min(max(float64(e)/float64(p.Duration), 0), 1)
	switch p.Kind {
	case "ramp":
		return p.Rate + (p.To-p.Rate)*frac
	case "step":
		step := min(int(frac*float64(p.Steps)), p.Steps-1)
		return p.Rate + (p.To-p.Rate)*float64(step)/float64(p.Steps-1)
	}
	return p.Rate
}

// Schedule yields the due times of an open-loop run: each event is due
// 1/rate after the previous one, at the rate in force then. Due times do
// not depend on how fast events are actually sent.
type Schedule struct {
	p     Profile
	start time.Time
	next  time.Duration
}

// NewSchedule starts a schedule at start.
func NewSchedule(p Profile, start time.Time) *Schedule { return &Schedule{p: p, start: start} }

// Next returns the next due time, or false when the profile's duration is
// over.
func (s *Schedule) Next() (time.Time, bool) {
	if s.next >= s.p.Duration {
		return time.Time{}, false
	}
	due := s.start.Add(s.next)
	s.next += time.Duration(float64(time.Second) / s.p.RateAt(s.next))
	return due, true
}
