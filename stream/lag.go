package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// GroupLag reads a consumer group's lag from the brokers: per partition,
// the high watermark minus the group's committed offset. Unlike the lag a
// fetch reports, it is right when nothing is being fetched — exactly when
// a stalled pipeline needs it.
type GroupLag struct {
	adm   *kadm.Client
	group string
}

// NewGroupLag reads the lag of group through cl (which it does not own).
func NewGroupLag(cl *kgo.Client, group string) *GroupLag {
	return &GroupLag{adm: kadm.NewClient(cl), group: group}
}

// Read returns the lag of every partition the group consumes or committed.
func (g *GroupLag) Read(ctx context.Context) (kadm.GroupLag, error) {
	lags, err := g.adm.Lag(ctx, g.group)
	if err != nil {
		return nil, fmt.Errorf("reading lag of group %s: %w", g.group, err)
	}
	l, ok := lags[g.group]
	if !ok {
		return nil, fmt.Errorf("reading lag of group %s: group not described", g.group)
	}
	if err := l.Error(); err != nil {
		return nil, fmt.Errorf("reading lag of group %s: %w", g.group, err)
	}
	return l.Lag, nil
}

// Total returns the group's lag summed over its partitions.
func (g *GroupLag) Total(ctx context.Context) (int64, error) {
	l, err := g.Read(ctx)
	if err != nil {
		return 0, err
	}
	return l.Total(), nil
}

// lagLoop publishes, every LagInterval, the committed lag of the partitions
// assigned to this instance and how long it has been stalled: the time
// since its last commit while that lag is positive.
func (p *Pipeline) lagLoop(ctx context.Context) {
	lag := NewGroupLag(p.cl, p.cfg.Group)
	tick := time.NewTicker(p.cfg.LagInterval)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, p.cfg.LagInterval)
		l, err := lag.Read(rctx)
		cancel()
		if err != nil {
			p.m.lagErrors.Inc()
			if !failing && ctx.Err() == nil {
				p.log.Warn("cannot read consumer lag; the lag gauges keep their last values", "err", err)
			}
			failing = true
			continue
		}
		if failing {
			p.log.Info("consumer lag readable again")
			failing = false
		}
		var total int64
		for _, part := range p.assignedPartitions() {
			if m, ok := l.Lookup(p.cfg.InputTopic, part); ok && m.Lag >= 0 {
				p.setLag(p.cfg.InputTopic, part, m.Lag)
				total += m.Lag
			}
		}
		stalled := 0.0
		if total > 0 {
			stalled = time.Since(p.lastCommit()).Seconds()
		}
		p.m.stalled.Set(stalled)
	}
}

// GroupMembers returns the client ids of group's members, sorted: with
// serve naming each instance's consumer by its instance name, the live
// serve instances. A group the broker does not know has none.
func GroupMembers(ctx context.Context, cl *kgo.Client, group string) ([]string, error) {
	groups, err := kadm.NewClient(cl).DescribeGroups(ctx, group)
	if err != nil {
		return nil, fmt.Errorf("describing group %s: %w", group, err)
	}
	g, ok := groups[group]
	if !ok {
		return nil, fmt.Errorf("describing group %s: not described", group)
	}
	if errors.Is(g.Err, kerr.GroupIDNotFound) {
		return nil, nil
	}
	if g.Err != nil {
		return nil, fmt.Errorf("describing group %s: %w", group, g.Err)
	}
	ids := make([]string, 0, len(g.Members))
	for _, m := range g.Members {
		ids = append(ids, m.ClientID)
	}
	slices.Sort(ids)
	return ids, nil
}
