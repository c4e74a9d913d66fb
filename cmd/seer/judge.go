package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/seer-ml/seer/drift/alert"
	"github.com/seer-ml/seer/drift/judge"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
	"github.com/seer-ml/seer/scoring/rollout"
)

// rolloutJudge adapts drift/judge (ClickHouse) to scoring/rollout: a
// shadow step is judged on the same events as production, a canary step
// on the candidate's drift against its own reference profile, read from
// its package in the artifact store; both on health first.
type rolloutJudge struct {
	j    judge.Judge
	pkgs packages
}

func (a rolloutJudge) Judge(ctx context.Context, model string, r *registry.Rollout, from, to time.Time) (rollout.Judgement, error) {
	var res judge.Result
	var err error
	if shadow, _ := r.Route(); shadow {
		res, err = a.j.Shadow(ctx, model, r.From, r.Candidate, from, to)
	} else {
		var m *schemas.Manifest
		if m, err = a.pkgs.manifest(ctx, model, r.Candidate); err != nil {
			return rollout.Judgement{}, err
		}
		res, err = a.j.Canary(ctx, model, r.From, r.Candidate, m.Profile.Outputs[m.Outputs[0].Name], from, to)
	}
	if err != nil {
		return rollout.Judgement{}, err
	}
	if res.Outcome == judge.Pass {
		// Outputs that look fine may still be wrong: the labels decide.
		if res, err = a.performance(ctx, model, r, from, to, res); err != nil {
			return rollout.Judgement{}, err
		}
	}
	v := map[judge.Outcome]rollout.Verdict{judge.Pass: rollout.Pass, judge.TooFew: rollout.Hold, judge.Fail: rollout.Fail}[res.Outcome]
	return rollout.Judgement{Verdict: v, Gate: res.Gate, Figures: res.Figures}, nil
}

// performance adds the performance gate's verdict and figures to a step
// that passed the others.
func (a rolloutJudge) performance(ctx context.Context, model string, r *registry.Rollout, from, to time.Time, passed judge.Result) (judge.Result, error) {
	prod, err := a.pkgs.manifest(ctx, model, r.From)
	if err != nil {
		return judge.Result{}, err
	}
	cand, err := a.pkgs.manifest(ctx, model, r.Candidate)
	if err != nil {
		return judge.Result{}, err
	}
	route := schemas.RouteCanary
	if shadow, _ := r.Route(); shadow {
		route = schemas.RouteShadow
	}
	perf, err := a.j.Performance(ctx, prod, cand, route, from, to, time.Now())
	if err != nil {
		return judge.Result{}, err
	}
	for k, v := range perf.Figures {
		passed.Figures[k] = v
	}
	passed.Outcome, passed.Gate = perf.Outcome, perf.Gate
	return passed, nil
}

// packages reads the manifests of registered versions, fetching each
// package from the artifact store once (into dir).
type packages struct {
	log   *registry.Log
	store *registry.Store
	dir   string
}

// manifest returns the manifest of model's version ref (VERSION or @ALIAS).
func (p packages) manifest(ctx context.Context, model, ref string) (*schemas.Manifest, error) {
	st, _, err := p.log.Read(ctx)
	if err != nil {
		return nil, err
	}
	e, err := st.Resolve(model, ref)
	if err != nil {
		return nil, err
	}
	dir, err := p.store.Materialize(ctx, e, p.dir)
	if err != nil {
		return nil, err
	}
	return schemas.LoadManifest(dir)
}

// openPackages opens the registry log, the artifact store and the package
// cache; close releases the first two.
func openPackages(ctx context.Context, cfg Config, logger *slog.Logger) (p packages, close func(), err error) {
	if p.log, err = openRegistry(ctx, cfg, logger); err != nil {
		return p, nil, err
	}
	if p.store, err = registry.OpenStore(ctx, cfg.Registry.Store); err == nil {
		if p.dir, err = packageCache(); err != nil {
			p.store.Close()
		}
	}
	if err != nil {
		p.log.Close()
		return p, nil, err
	}
	return p, func() { p.store.Close(); p.log.Close() }, nil
}

// packageCache is the folder fetched packages are kept in, one per digest.
func packageCache() (string, error) {
	dir, err := filepath.Abs(filepath.Join(".cache", "packages"))
	if err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// rolloutAlert turns a rollback or a pause into an alert for the sinks.
func rolloutAlert(e registry.Event) alert.Alert {
	severity := "page"
	if e.Type == registry.RolloutPaused {
		severity = "warning"
	}
	return alert.Alert{ID: e.ID, DedupKey: "rollout|" + e.Model + "|" + e.Rollout, Rule: string(e.Type), State: alert.Firing, Severity: severity,
		Model: e.Model, Version: e.Version, Family: "rollout", Metric: e.Gate, Value: e.Figures[e.Gate], Summary: e.Reason,
		WindowStart: e.Time, StartsAt: e.Time, At: e.Time, Labels: map[string]string{"rollout": e.Rollout}}
}

// sendAll hands alerts to every sink; a failing sink does not stop the others.
func sendAll(ctx context.Context, sinks []notify.Sink, as []alert.Alert, onErr func(error)) {
	for _, s := range sinks {
		if err := s.Send(ctx, as); err != nil {
			onErr(err)
		}
	}
}
