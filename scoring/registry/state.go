package registry

import (
	"fmt"
	"maps"
	"slices"
)

// State is the fold of the registry log: models, their immutable versions,
// their aliases and the history of every alias move. It is not safe for
// concurrent use; readers fold their own.
type State struct {
	Models  map[string]*Model
	applied map[string]bool // event ids that changed the state
}

// Model is one model's versions, aliases and events.
type Model struct {
	Name     string
	Versions map[string]*Event // version → its version_registered event
	Aliases  map[string]string // alias → version
	History  []Event           // every applied alias move, load and rollout event, in log order
	Rollout  *Rollout          // the latest rollout, in progress or ended
}

// NewState is the empty registry.
func NewState() *State {
	return &State{Models: map[string]*Model{}, applied: map[string]bool{}}
}

func (s *State) model(name string) *Model {
	m := s.Models[name]
	if m == nil {
		m = &Model{Name: name, Versions: map[string]*Event{}, Aliases: map[string]string{}}
		s.Models[name] = m
	}
	return m
}

// Apply folds one event in. It returns an error, and changes nothing, for
// an event that cannot apply: a version registered again with another
// package, an alias moved from a version that is no longer current (the
// move lost a race), or to a version that does not exist. Registering the
// same package again is a no-op without error.
func (s *State) Apply(e Event) error {
	m := s.model(e.Model)
	switch e.Type {
	case VersionRegistered:
		if old, ok := m.Versions[e.Version]; ok {
			if old.Digest == e.Digest {
				return nil
			}
			return fmt.Errorf("%s %s is already registered with another package (digest %s…); versions are immutable", e.Model, e.Version, old.Digest[:12])
		}
		ev := e
		m.Versions[e.Version] = &ev
	case AliasSet:
		if _, ok := m.Versions[e.Version]; !ok {
			return fmt.Errorf("%s has no version %s", e.Model, e.Version)
		}
		if cur := m.Aliases[e.Alias]; cur != e.Previous {
			return fmt.Errorf("alias %s of %s points at %q, not %q: another move won", e.Alias, e.Model, cur, e.Previous)
		}
		m.Aliases[e.Alias] = e.Version
		m.History = append(m.History, e)
	case VersionLoaded, LoadFailed:
		m.Rollout.noteLoad(e)
		m.History = append(m.History, e)
	case RolloutStarted, RolloutStepped, RolloutPaused, RolloutPromoted, RolloutRolledBack:
		if err := m.applyRollout(e); err != nil {
			return err
		}
		m.History = append(m.History, e)
	}
	s.applied[e.ID] = true
	return nil
}

// Applied reports whether the event with this id changed the state.
func (s *State) Applied(id string) bool { return s.applied[id] }

// Resolve returns the version a reference names: VERSION, @ALIAS, or ""
// for the newest registered version.
func (s *State) Resolve(model, ref string) (*Event, error) {
	m, ok := s.Models[model]
	if !ok || len(m.Versions) == 0 {
		return nil, fmt.Errorf("model %s is not registered", model)
	}
	version := ref
	switch {
	case ref == "":
		var newest *Event
		for _, v := range m.Versions {
			if newest == nil || v.Time.After(newest.Time) {
				newest = v
			}
		}
		return newest, nil
	case ref[0] == '@':
		v, ok := m.Aliases[ref[1:]]
		if !ok {
			return nil, fmt.Errorf("model %s has no alias %s (aliases: %v)", model, ref[1:], slices.Sorted(maps.Keys(m.Aliases)))
		}
		version = v
	}
	v, ok := m.Versions[version]
	if !ok {
		return nil, fmt.Errorf("model %s has no version %s", model, version)
	}
	return v, nil
}

// sortHistory orders each model's history by time: Read folds the load
// events after the registry's own.
func (s *State) sortHistory() {
	for _, m := range s.Models {
		slices.SortStableFunc(m.History, func(a, b Event) int { return a.Time.Compare(b.Time) })
	}
}
