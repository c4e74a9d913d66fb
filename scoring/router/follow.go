package router

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
)

// Follower keeps a Router on the version behind one alias of a model in
// the registry. For each new version it fetches the package from the
// artifact store, verifies it (file hashes; the signature with the gates'
// trusted keys, required when they say so), opens it, warms it up on its
// examples (their outputs must match), and only then swaps it in. A load
// that fails keeps the old version serving and appends a load_failed event
// naming this instance and the reason; a load that succeeds appends
// version_loaded.
type Follower struct {
	Log      *registry.Log
	Store    *registry.Store
	Gates    registry.Gates // schema, scoring config, trusted keys, signature policy
	Model    string
	Alias    string
	Instance string // names this serve instance in load events
	Dir      string // where fetched packages are kept, one folder per digest
	Logger   *slog.Logger
	// OnRollout, when set, is called with every rollout event of the model
	// recorded after Run started (not the history it catches up on): the
	// rollout metric serve exports.
	OnRollout func(e registry.Event)

	router  *Router
	version string              // the version in service
	plan    map[string][]string // the feature plan the enricher was built with
	rollout string              // "ID/step" of the rollout step the routes serve; "" for none
	failed  map[string]bool     // versions that failed to load, not retried
	loaded  func(version string, ok bool)
}

// Start loads the version the alias points at now and returns a Router
// serving it. serve starts only when this succeeds.
func (f *Follower) Start(ctx context.Context, onLoad func(version string, ok bool)) (*Router, error) {
	f.failed, f.loaded = map[string]bool{}, onLoad
	st, _, err := f.Log.Read(ctx)
	if err != nil {
		return nil, err
	}
	e, err := st.Resolve(f.Model, "@"+f.Alias)
	if err != nil {
		return nil, fmt.Errorf("scoring.model %s, scoring.alias %s: %w", f.Model, f.Alias, err)
	}
	m, err := f.load(ctx, e, schemas.RouteProduction)
	if err != nil {
		return nil, fmt.Errorf("loading %s %s (@%s): %w", f.Model, e.Version, f.Alias, err)
	}
	views, features := m.Manifest.FeatureViews()
	f.plan = map[string][]string{}
	for _, v := range views {
		f.plan[v] = features[v]
	}
	f.router, f.version = New(m, f.Logger), e.Version
	f.event(ctx, registry.VersionLoaded, e.Version, "started serving @"+f.Alias, nil)
	f.followRollout(ctx, st) // a restart mid-rollout resumes the same split
	return f.router, nil
}

// Run follows the registry until ctx ends and swaps in every version the
// alias moves to. It returns nil on cancel.
func (f *Follower) Run(ctx context.Context) error {
	started := time.Now()
	err := f.Log.Follow(ctx, func(st *registry.State, applied []registry.Event) error {
		defer f.followRollout(ctx, st)
		for _, e := range applied {
			if f.OnRollout != nil && e.Model == f.Model && e.Rollout != "" && e.Type != registry.VersionLoaded && e.Type != registry.LoadFailed && e.Time.After(started) {
				f.OnRollout(e)
			}
		}
		e, err := st.Resolve(f.Model, "@"+f.Alias)
		if err != nil || e.Version == f.version || f.failed[e.Version] {
			return nil
		}
		t0 := time.Now()
		m, err := f.load(ctx, e, schemas.RouteProduction)
		if err != nil {
			f.failed[e.Version] = true
			f.Logger.Error("new version refused; the old one keeps serving", "model", f.Model, "version", e.Version, "serving", f.version, "err", err)
			f.event(ctx, registry.LoadFailed, e.Version, err.Error(), nil)
			if f.loaded != nil {
				f.loaded(e.Version, false)
			}
			return nil
		}
		f.router.Swap(m)
		f.version = e.Version
		f.Logger.Info("new version in service", "model", f.Model, "version", e.Version, "alias", f.Alias, "load_took", time.Since(t0).Round(time.Millisecond))
		f.event(ctx, registry.VersionLoaded, e.Version, "swapped in for @"+f.Alias, nil)
		if f.loaded != nil {
			f.loaded(e.Version, true)
		}
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// event records a load or a refusal by this instance; r names the rollout
// step it was for (nil for the alias's version), which the rollout
// controller waits on.
func (f *Follower) event(ctx context.Context, t registry.EventType, version, reason string, r *registry.Rollout) {
	e := registry.Event{ID: registry.NewID(), Type: t, Model: f.Model, Version: version, Actor: f.Instance, Instance: f.Instance,
		Reason: reason, Time: time.Now().UTC()}
	if r != nil {
		e.Rollout, e.Steps, e.Step = r.ID, r.Steps, r.Step
	}
	if err := f.Log.Append(context.WithoutCancel(ctx), e); err != nil {
		f.Logger.Warn("could not record a load event in the registry", "type", t, "err", err)
	}
}

// followRollout points the canary and shadow routes at the candidate of
// the rollout in progress behind the alias, as its current step says, and
// clears them when the rollout ends. A candidate that does not load is
// refused (load_failed) and its step gets no traffic here.
func (f *Follower) followRollout(ctx context.Context, st *registry.State) {
	var r *registry.Rollout
	var m *registry.Model
	if m = st.Models[f.Model]; m != nil {
		r = m.Rollout
	}
	if r == nil || !r.Active() || r.Alias != f.Alias {
		if f.rollout != "" {
			f.router.SetCanary(nil, "", 0)
			f.router.SetShadow(nil, "", 0)
			f.Logger.Info("rollout ended; every event on production", "model", f.Model)
			f.rollout = ""
		}
		return
	}
	key := r.ID + "/" + strconv.Itoa(r.Step)
	if key == f.rollout || f.failed[key] {
		return
	}
	shadow, weight := r.Route()
	route := schemas.RouteCanary
	if shadow {
		route = schemas.RouteShadow
	}
	mod, err := f.load(ctx, m.Versions[r.Candidate], route)
	if err != nil {
		f.failed[key] = true
		f.Logger.Error("rollout candidate refused; production keeps every event", "model", f.Model, "version", r.Candidate, "err", err)
		f.event(ctx, registry.LoadFailed, r.Candidate, fmt.Sprintf("candidate of rollout %s, step %s: %v", r.ID, r.Steps[r.Step], err), r)
		return
	}
	if shadow {
		f.router.SetCanary(nil, "", 0)
		f.router.SetShadow(mod, r.ID, 100)
	} else {
		f.router.SetShadow(nil, "", 0)
		f.router.SetCanary(mod, r.ID, weight)
	}
	f.rollout = key
	f.Logger.Info("rollout step in service", "model", f.Model, "candidate", r.Candidate, "step", r.Steps[r.Step])
	f.event(ctx, registry.VersionLoaded, r.Candidate, fmt.Sprintf("candidate of rollout %s, step %s", r.ID, r.Steps[r.Step]), r)
}

// load fetches, verifies, opens (for route) and warms up one registered
// version.
func (f *Follower) load(ctx context.Context, e *registry.Event, route schemas.Route) (*scoring.Model, error) {
	dir, err := f.Store.Materialize(ctx, e, f.Dir)
	if err != nil {
		return nil, err
	}
	if _, signed := e.Package.Files[registry.SignatureFile]; signed && len(f.Gates.TrustedKeys) > 0 {
		if _, _, err := registry.Verify(ctx, dir, f.Gates.TrustedKeys...); err != nil {
			return nil, err
		}
	} else if f.Gates.RequireSignature {
		return nil, fmt.Errorf("%w: registry.require_signature is on", registry.ErrUnsigned)
	}
	m, err := schemas.LoadManifest(dir)
	if err != nil {
		return nil, err
	}
	if f.plan != nil {
		views, features := m.FeatureViews()
		for _, v := range views {
			if !slices.Equal(f.plan[v], features[v]) || len(views) != len(f.plan) {
				return nil, fmt.Errorf("%s %s reads other features than the version serving (%v); restart serve to change features", m.Name, m.Version, views)
			}
		}
	}
	exs, err := schemas.LoadExamples(dir)
	if err != nil {
		return nil, err
	}
	mod, err := scoring.Open(f.Gates.Scoring, m, f.Gates.Schema, route, f.Logger)
	if err != nil {
		return nil, err
	}
	if err := mod.CheckExamples(ctx, f.Gates.Schema, exs); err != nil {
		mod.Close()
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	return mod, nil
}
