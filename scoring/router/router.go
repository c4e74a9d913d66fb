// Package router implements stream.Scorer over routes — production, a
// key-sticky canary for a share of the entities, and a shadow that scores
// besides production — and swaps the production version without stopping
// the stream: a new version is
// loaded, verified and warmed up off the hot path (Follower), then put in
// service with an atomic pointer between two batches — a batch is scored
// by one version, never by a half-loaded one. The version it replaces
// stays loaded for an instant switch back (Rollback). Score is safe for
// concurrent use with Swap and Rollback.
package router

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

// handle is a loaded model that Score may be using: Close waits for the
// batches in flight on it.
type handle struct {
	m      *scoring.Model
	mu     sync.RWMutex
	closed bool
}

func (h *handle) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	return h.m.Close()
}

// Router scores every batch with its current model.
type Router struct {
	cur    atomic.Pointer[handle]
	canary atomic.Pointer[canary]
	shadow atomic.Pointer[shadow]
	mu     sync.Mutex // serializes Swap and Rollback
	prev   *handle
	log    *slog.Logger

	// OnSwap, when set, is called after every swap with the model now in
	// service (metrics, events).
	OnSwap func(m *scoring.Model)
}

// New puts initial in service.
func New(initial *scoring.Model, logger *slog.Logger) *Router {
	r := &Router{log: logger.With("component", "router")}
	r.cur.Store(&handle{m: initial})
	return r
}

// ErrNoPrevious is returned by Rollback when no earlier version is loaded.
var ErrNoPrevious = errors.New("no previous version is loaded")

// Score scores the batch with the model in service when it starts.
func (r *Router) Score(ctx context.Context, items []schemas.Item) error {
	for {
		h := r.cur.Load()
		h.mu.RLock()
		if h.closed { // swapped out and closed between Load and RLock
			h.mu.RUnlock()
			continue
		}
		err := r.scoreRoutes(ctx, h.m, items)
		h.mu.RUnlock()
		return err
	}
}

// Current returns the model in service.
func (r *Router) Current() *scoring.Model { return r.cur.Load().m }

// Swap puts m in service. The model it replaces stays loaded as the
// previous version; the one before that is closed once its batches end.
func (r *Router) Swap(m *scoring.Model) {
	r.mu.Lock()
	old := r.cur.Swap(&handle{m: m})
	drop := r.prev
	r.prev = old
	r.mu.Unlock()
	if drop != nil && drop.m != m {
		if err := drop.close(); err != nil {
			r.log.Warn("closing a retired model", "err", err)
		}
	}
	r.log.Info("model swapped in", "model", m.Manifest.Name, "version", m.Manifest.Version, "previous", old.m.Manifest.Version)
	if r.OnSwap != nil {
		r.OnSwap(m)
	}
}

// Rollback puts the previous version back in service at once.
func (r *Router) Rollback() (*scoring.Model, error) {
	r.mu.Lock()
	if r.prev == nil {
		r.mu.Unlock()
		return nil, ErrNoPrevious
	}
	back := r.prev
	r.prev = r.cur.Swap(back)
	r.mu.Unlock()
	r.log.Warn("rolled back", "model", back.m.Manifest.Name, "version", back.m.Manifest.Version)
	if r.OnSwap != nil {
		r.OnSwap(back.m)
	}
	return back.m, nil
}

// Close closes every loaded model; call it after the pipeline stopped.
func (r *Router) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	errs = append(errs, r.cur.Load().close())
	if r.prev != nil {
		errs = append(errs, r.prev.close())
	}
	if c := r.canary.Swap(nil); c != nil {
		errs = append(errs, c.h.close())
	}
	if s := r.shadow.Swap(nil); s != nil {
		errs = append(errs, s.h.close())
	}
	return errors.Join(errs...)
}
