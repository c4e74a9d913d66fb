package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/internal/regtest"
	"github.com/seer-ml/seer/scoring/registry"
)

// TestFollowerRefusesABadVersion on the real broker: a version whose
// stored package was changed after registration is refused at load; the
// old version keeps serving, load_failed names the instance and the
// reason; a good version then swaps in, and Rollback returns to the old.
func TestFollowerRefusesABadVersion(t *testing.T) {
	reg := regtest.New(t, "card-fraud", "card-fraud-1.1.0", "card-fraud-1.2.0-rc.1")
	log, store, gates, storeDir, events := reg.Log, reg.Store, reg.Gates, reg.StoreDir, reg.Versions
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The stored 1.2.0-rc.1 is changed behind the registry's back.
	onnx := filepath.Join(storeDir, filepath.FromSlash(events["1.2.0-rc.1"].Artifact), "model.onnx")
	if err := os.WriteFile(onnx, []byte("not the registered model"), 0o644); err != nil {
		t.Fatal(err)
	}

	f := &Follower{Log: log, Store: store, Gates: gates, Model: "card-fraud", Alias: "champion", Instance: "test-instance",
		Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	outcomes := make(chan string, 4)
	r, err := f.Start(ctx, func(v string, ok bool) {
		if ok {
			outcomes <- v + " loaded"
		} else {
			outcomes <- v + " failed"
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(fctx) }()
	next := func() string {
		select {
		case o := <-outcomes:
			return o
		case <-time.After(20 * time.Second):
			return "timeout"
		}
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.2.0-rc.1", "ci", "try it"); err != nil {
		t.Fatal(err)
	}
	if o := next(); o != "1.2.0-rc.1 failed" || r.Current().Manifest.Version != "1.0.0" {
		t.Fatalf("after a move to a tampered version: %q, serving %s; want failed and 1.0.0 still serving", o, r.Current().Manifest.Version)
	}
	if _, err := log.SetAlias(ctx, "card-fraud", "champion", "1.1.0", "ci", "better"); err != nil {
		t.Fatal(err)
	}
	if o := next(); o != "1.1.0 loaded" || r.Current().Manifest.Version != "1.1.0" {
		t.Fatalf("after a move to 1.1.0: %q, serving %s", o, r.Current().Manifest.Version)
	}
	if back, err := r.Rollback(); err != nil || back.Manifest.Version != "1.0.0" || r.Current().Manifest.Version != "1.0.0" {
		t.Errorf("Rollback = %v, %v; serving %s", back, err, r.Current().Manifest.Version)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, _, _ := log.Read(ctx)
	var failed *registry.Event
	for _, e := range st.Models["card-fraud"].History {
		if e.Type == registry.LoadFailed {
			failed = &e
		}
	}
	if failed == nil || failed.Instance != "test-instance" || failed.Version != "1.2.0-rc.1" || !strings.Contains(failed.Reason, "changed") {
		t.Errorf("load_failed event = %+v; want one naming the instance, the version and the changed file", failed)
	}
}

// TestFollowerFollowsRollout on the real broker: serve's routes follow a
// rollout — shadow, then a 30% canary, the same split after a restart —
// and its end: an abort clears the routes, a promotion moves production
// to the candidate.
func TestFollowerFollowsRollout(t *testing.T) {
	reg := regtest.New(t, "card-fraud", "card-fraud-1.1.0")
	log, store, gates := reg.Log, reg.Store, reg.Gates
	schema := gates.Schema
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	newFollower := func() (*Follower, *Router, func()) {
		f := &Follower{Log: log, Store: store, Gates: gates, Model: "card-fraud", Alias: "champion", Instance: "test",
			Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		r, err := f.Start(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		fctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- f.Run(fctx) }()
		return f, r, func() {
			stop()
			if err := <-done; err != nil {
				t.Error(err)
			}
			r.Close()
		}
	}
	_, r, stop := newFollower()
	items := func() []schemas.Item {
		out := make([]schemas.Item, 200)
		for i := range out {
			ev, derr := schema.Decode([]byte(fmt.Sprintf("user-%d", i)), []byte(`{"user_id":"u","event_time":"2026-01-01T00:00:00Z","amount":120,"merchant_category":"online","hour":2}`), schemas.Source{Offset: int64(i)})
			if derr != nil {
				t.Fatal(derr)
			}
			out[i].Event = ev
		}
		if err := r.Score(ctx, out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	waitFor := func(what string, ok func([]schemas.Item) bool) []schemas.Item {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if its := items(); ok(its) {
				return its
			}
		}
		t.Fatalf("routes never showed %s", what)
		return nil
	}
	start, err := log.StartRollout(ctx, "card-fraud", "1.1.0", "champion", []string{"shadow", "30"}, time.Minute, "ci", "try 1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	waitFor("the shadow step", func(its []schemas.Item) bool {
		return its[0].Shadow != nil && its[0].Shadow.ModelVersion == "1.1.0" && its[0].Route == schemas.RouteProduction
	})
	if _, err := log.ChangeRollout(ctx, "card-fraud", registry.RolloutStepped, "ci", "shadow agrees", "agreement", map[string]float64{"label_agreement": 0.99}); err != nil {
		t.Fatal(err)
	}
	split := func(its []schemas.Item) map[string]schemas.Route {
		m := map[string]schemas.Route{}
		for _, it := range its {
			m[it.Event.EntityID] = it.Route
		}
		return m
	}
	canary := waitFor("the canary step", func(its []schemas.Item) bool {
		return its[0].Shadow == nil && split(its) != nil && countRoute(its, schemas.RouteCanary) > 0
	})
	for _, it := range canary {
		if want := InCanary(start.Rollout, it.Event.EntityID, 30); (it.Route == schemas.RouteCanary) != want || (want && it.ModelVersion != "1.1.0") {
			t.Fatalf("entity %s on %s %s; in the canary share: %v", it.Event.EntityID, it.Route, it.ModelVersion, want)
		}
	}
	stop()
	// A restart mid-rollout resumes the same split at once.
	_, r, stop = newFollower()
	again := items()
	if got, want := split(again), split(canary); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after a restart the split changed")
	}
	if _, err := log.ChangeRollout(ctx, "card-fraud", registry.RolloutRolledBack, "ci", "abort", "manual", nil); err != nil {
		t.Fatal(err)
	}
	waitFor("the end of the rollout", func(its []schemas.Item) bool {
		return countRoute(its, schemas.RouteProduction) == len(its) && its[0].Shadow == nil
	})
	if _, err := log.StartRollout(ctx, "card-fraud", "1.1.0", "champion", []string{"50"}, time.Minute, "ci", "again"); err != nil {
		t.Fatal(err)
	}
	if _, err := log.ChangeRollout(ctx, "card-fraud", registry.RolloutPromoted, "ci", "looks good", "manual", nil); err != nil {
		t.Fatal(err)
	}
	waitFor("the promotion", func(its []schemas.Item) bool {
		return countRoute(its, schemas.RouteProduction) == len(its) && its[0].ModelVersion == "1.1.0"
	})
	stop()
	st, _, _ := log.Read(ctx)
	if got := st.Models["card-fraud"].Aliases["champion"]; got != "1.1.0" {
		t.Errorf("champion = %s after the promotion", got)
	}
}

func countRoute(its []schemas.Item, route schemas.Route) int {
	n := 0
	for _, it := range its {
		if it.Route == route {
			n++
		}
	}
	return n
}
