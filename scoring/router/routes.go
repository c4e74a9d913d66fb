package router

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

// InCanary reports whether an entity belongs to a canary of weight percent
// (0–100) in rollout rolloutID: hash(rollout id, entity) mod 10000 <
// weight × 100. The hash does not depend on the weight, so an entity in the
// canary stays in it as the weight grows, and the split differs between
// rollouts.
func InCanary(rolloutID, entity string, weight float64) bool {
	h := fnv.New64a()
	h.Write([]byte(rolloutID))
	h.Write([]byte{0})
	h.Write([]byte(entity))
	return h.Sum64()%10000 < uint64(weight*100)
}

// canary is the canary route: a candidate model (opened with
// schemas.RouteCanary) for a share of the entities.
type canary struct {
	h       *handle
	rollout string
	weight  float64
}

// shadow is the shadow route: a candidate (opened with schemas.RouteShadow)
// that scores every event, or the sample of entities InCanary(rollout,
// entity, sample) picks, besides the primary route.
type shadow struct {
	h       *handle
	rollout string
	sample  float64
}

// routedAway marks, inside Score only, an item another route scores.
var routedAway = &schemas.DecodeError{Reason: "routed", Stage: schemas.StageScore}

// SetCanary routes weight percent of the entities to m (opened with
// RouteCanary) from the next batch on; weight 0 or a nil m ends the
// canary. A canary model that no route uses any more is closed once its
// batches end.
func (r *Router) SetCanary(m *scoring.Model, rolloutID string, weight float64) error {
	if m != nil && m.Route != schemas.RouteCanary {
		return fmt.Errorf("a canary model must be opened with route canary, not %s", m.Route)
	}
	var next *canary
	if m != nil && weight > 0 {
		next = &canary{h: &handle{m: m}, rollout: rolloutID, weight: min(weight, 100)}
	}
	if old := r.canary.Swap(next); old != nil && (next == nil || old.h.m != m) {
		r.retire(old.h)
	}
	return nil
}

// retire closes a route's model once no route serves it.
func (r *Router) retire(h *handle) {
	if r.Current() == h.m {
		return
	}
	if s := r.shadow.Load(); s != nil && s.h.m == h.m {
		return
	}
	if err := h.close(); err != nil {
		r.log.Warn("closing a retired model", "err", err)
	}
}

// SetShadow makes m (opened with RouteShadow) score every event — or the
// sample percent of entities — besides the primary route; nil ends it.
// A shadow model that no route uses any more is closed once its batches
// end.
func (r *Router) SetShadow(m *scoring.Model, rolloutID string, sample float64) error {
	if m != nil && m.Route != schemas.RouteShadow {
		return fmt.Errorf("a shadow model must be opened with route shadow, not %s", m.Route)
	}
	var next *shadow
	if m != nil && sample > 0 {
		next = &shadow{h: &handle{m: m}, rollout: rolloutID, sample: min(sample, 100)}
	}
	if old := r.shadow.Swap(next); old != nil && (next == nil || old.h.m != m) {
		r.retire(old.h)
	}
	return nil
}

// scoreRoutes scores items on production, the canary's entities on the
// canary, and everything (or the sample) again on the shadow. Each item
// gets exactly one primary prediction: from the canary when its entity is
// in the canary's share and the canary scored it, else from production.
// A failing canary or shadow never costs a production prediction.
func (r *Router) scoreRoutes(ctx context.Context, prod *scoring.Model, items []schemas.Item) error {
	c, sh := r.canary.Load(), r.shadow.Load()
	var picked []int
	var sub []schemas.Item
	if c != nil {
		for i := range items {
			if items[i].Reject == nil && InCanary(c.rollout, items[i].Event.EntityID, c.weight) {
				picked = append(picked, i)
				sub = append(sub, items[i])
				items[i].Reject = routedAway
			}
		}
	}
	err := prod.Score(ctx, items)
	for _, i := range picked {
		items[i].Reject = nil
	}
	if err != nil {
		return err
	}
	if len(picked) > 0 {
		c.h.mu.RLock()
		cerr := c.h.m.Score(ctx, sub)
		c.h.mu.RUnlock()
		if cerr != nil {
			r.log.Warn("canary failed a batch; production scores its events", "records", len(sub), "err", cerr)
		}
		// What the canary could not score, production does, in one batch.
		var again []int
		var redo []schemas.Item
		for k, i := range picked {
			if cerr == nil && sub[k].Reject == nil {
				items[i] = sub[k]
				continue
			}
			items[i].CandidateFailed = true
			again = append(again, i)
			redo = append(redo, items[i])
		}
		if len(redo) > 0 {
			if err := prod.Score(ctx, redo); err != nil {
				return err
			}
			for k, i := range again {
				items[i] = redo[k]
			}
		}
	}
	if sh != nil {
		copies := make([]schemas.Item, len(items))
		copy(copies, items)
		for i := range copies {
			copies[i].Shadow = nil
			if copies[i].Reject == nil && sh.sample < 100 && !InCanary(sh.rollout, copies[i].Event.EntityID, sh.sample) {
				copies[i].Reject = routedAway
			}
		}
		sh.h.mu.RLock()
		serr := sh.h.m.Score(ctx, copies)
		sh.h.mu.RUnlock()
		if serr != nil {
			r.log.Warn("shadow failed a batch", "records", len(copies), "err", serr)
		}
		for i := range copies {
			switch {
			case items[i].Reject != nil || copies[i].Reject == routedAway:
			case serr != nil || copies[i].Reject != nil:
				items[i].CandidateFailed = true
			default:
				items[i].Shadow = &copies[i]
			}
		}
	}
	return nil
}
