package router

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"path/filepath"
	"testing"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

// TestCanarySplit: the canary's share of 20,000 entities is within 4
// standard deviations of its weight at every step, and no entity leaves
// the canary as the weight grows.
func TestCanarySplit(t *testing.T) {
	const n = 20000
	was := make([]bool, n)
	for _, w := range []float64{1, 5, 25, 50, 100} {
		in := 0
		for e := range n {
			ok := InCanary("rollout-1", fmt.Sprintf("user-%d", e), w)
			if was[e] && !ok {
				t.Fatalf("entity user-%d left the canary when the weight grew to %v%%", e, w)
			}
			was[e] = ok
			if ok {
				in++
			}
		}
		p := w / 100
		sd := math.Sqrt(n * p * (1 - p))
		if math.Abs(float64(in)-n*p) > 4*sd+0.5 {
			t.Errorf("weight %v%%: %d of %d entities in the canary, want %.0f ± %.0f", w, in, n, n*p, 4*sd)
		}
		t.Logf("weight %5.1f%%: %5d of %d in the canary (expected %.0f, sd %.1f)", w, in, n, n*p, sd)
	}
	// Another rollout splits differently.
	same := 0
	for e := range 1000 {
		if InCanary("rollout-1", fmt.Sprint(e), 50) == InCanary("rollout-2", fmt.Sprint(e), 50) {
			same++
		}
	}
	if same > 600 || same < 400 {
		t.Errorf("two rollouts agree on %d of 1000 entities at 50%%; their splits should be independent", same)
	}
}

func openVersion(t *testing.T, dir string, route schemas.Route) (*scoring.Model, *schemas.InputSchema) {
	t.Helper()
	if err := scoring.InitRuntime(testenv.OnnxRuntime(t)); err != nil {
		t.Fatal(err)
	}
	schema, _ := schemas.LoadInputSchema("card_transactions.v1")
	m, err := schemas.LoadManifest(filepath.Join(testenv.RepoRoot(t), "deploy", "examples", dir))
	if err != nil {
		t.Fatal(err)
	}
	mod, err := scoring.Open(scoring.DefaultConfig(), m, schema, route, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return mod, schema
}

// TestRoutes: with a 30% canary and a shadow, every event gets exactly one
// primary prediction — from the canary when its entity is in the share,
// else from production — with that model's own score, and a shadow
// prediction of its own; ids are stable per route.
func TestRoutes(t *testing.T) {
	prod, schema := openVersion(t, "card-fraud", schemas.RouteProduction)
	can, _ := openVersion(t, "card-fraud-1.1.0", schemas.RouteCanary)
	sh, _ := openVersion(t, "card-fraud-1.2.0-rc.1", schemas.RouteShadow)
	r := New(prod, slog.New(slog.NewTextHandler(io.Discard, nil)))
	defer r.Close()
	if err := r.SetCanary(sh, "r1", 30); err == nil {
		t.Error("SetCanary accepted a model opened for the shadow route")
	}
	if err := r.SetCanary(can, "r1", 30); err != nil {
		t.Fatal(err)
	}
	if err := r.SetShadow(sh, "r1", 100); err != nil {
		t.Fatal(err)
	}
	mk := func() []schemas.Item {
		items := make([]schemas.Item, 400)
		for i := range items {
			ev, derr := schema.Decode([]byte(fmt.Sprintf("user-%d", i)), []byte(fmt.Sprintf(`{"user_id":"u","event_time":"2026-01-01T00:00:00Z","amount":%d,"merchant_category":"travel","hour":%d}`, 5+i*13, i%24)), schemas.Source{Offset: int64(i)})
			if derr != nil {
				t.Fatal(derr)
			}
			items[i].Event = ev
		}
		items[7].Reject = &schemas.DecodeError{Reason: schemas.ReasonWrongType}
		return items
	}
	items := mk()
	if err := r.Score(context.Background(), items); err != nil {
		t.Fatal(err)
	}
	alone := func(m *scoring.Model) []schemas.Item {
		x := mk()
		if err := m.Score(context.Background(), x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	byProd, byCan, bySh := alone(prod), alone(can), alone(sh)
	canary := 0
	for i, it := range items {
		if i == 7 {
			if it.Shadow != nil || !it.ScoredTime.IsZero() {
				t.Error("a rejected item was scored")
			}
			continue
		}
		want := byProd[i]
		if InCanary("r1", it.Event.EntityID, 30) {
			want = byCan[i]
			canary++
		}
		if it.Route != want.Route || it.ModelVersion != want.ModelVersion || it.Score != want.Score || it.PredictionID != want.PredictionID {
			t.Errorf("item %d: %s %s score %v id %s; want %s %s %v %s", i, it.Route, it.ModelVersion, it.Score, it.PredictionID, want.Route, want.ModelVersion, want.Score, want.PredictionID)
		}
		s := it.Shadow
		if s == nil || s.Route != schemas.RouteShadow || s.ModelVersion != "1.2.0-rc.1" || s.Score != bySh[i].Score || s.PredictionID == it.PredictionID || s.Event.ID != it.Event.ID {
			t.Errorf("item %d: shadow %+v", i, s)
		}
	}
	if canary < 60 || canary > 180 {
		t.Errorf("%d of 399 events on a 30%% canary", canary)
	}
	// Ending the canary sends everything to production again.
	if err := r.SetCanary(nil, "", 0); err != nil {
		t.Fatal(err)
	}
	again := mk()
	if err := r.Score(context.Background(), again); err != nil {
		t.Fatal(err)
	}
	for i, it := range again {
		if i != 7 && it.Route != schemas.RouteProduction {
			t.Fatalf("item %d on %s after the canary ended", i, it.Route)
		}
	}
}
