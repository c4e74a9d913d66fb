package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// health is what the loops report for /readyz and /healthz. The times are
// Unix nanoseconds.
type health struct {
	running      atomic.Bool
	inPoll       atomic.Bool  // the poll loop waits for records: idle, not stuck
	lastProgress atomic.Int64 // a poll returned or a commit finished
	lastRetry    atomic.Int64 // a dependency failed and is being retried
	lastCommit   atomic.Int64

	mu       sync.Mutex
	joined   bool
	assigned map[int32]bool // input partitions owned now
}

func (p *Pipeline) progressed() { p.h.lastProgress.Store(time.Now().UnixNano()) }

func (p *Pipeline) committed() {
	now := time.Now().UnixNano()
	p.h.lastCommit.Store(now)
	p.h.lastProgress.Store(now)
}

func (p *Pipeline) lastCommit() time.Time { return time.Unix(0, p.h.lastCommit.Load()) }

func (p *Pipeline) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	p.h.joined = true
	for _, part := range assigned[p.cfg.InputTopic] {
		p.h.assigned[part] = true
	}
	p.m.assigned.Set(float64(len(p.h.assigned)))
	p.log.Info("partitions assigned", "partitions", assigned)
}

// dropped forgets revoked or lost partitions; lost ones also mean this
// member is out of the group until it rejoins.
func (p *Pipeline) dropped(parts map[string][]int32, lost bool) {
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	for _, part := range parts[p.cfg.InputTopic] {
		delete(p.h.assigned, part)
		p.m.lag.DeleteLabelValues(p.cfg.InputTopic, strconv.Itoa(int(part)))
	}
	if lost {
		p.h.joined = false
	}
	p.m.assigned.Set(float64(len(p.h.assigned)))
}

func (p *Pipeline) assignedPartitions() []int32 {
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	out := make([]int32, 0, len(p.h.assigned))
	for part := range p.h.assigned {
		out = append(out, part)
	}
	slices.Sort(out)
	return out
}

// Ready reports whether this instance is consuming: Run is running and the
// member has joined its group and received an assignment. After a restart
// that takes until the old member's session expires.
func (p *Pipeline) Ready() error {
	if !p.h.running.Load() {
		return errors.New("the pipeline is not running")
	}
	if p.sess != nil { // exactly-once: the session owns the group callbacks
		return nil
	}
	p.h.mu.Lock()
	defer p.h.mu.Unlock()
	if !p.h.joined {
		return fmt.Errorf("not a member of group %s yet (waiting for a partition assignment)", p.cfg.Group)
	}
	return nil
}

// Alive reports whether the loops make progress: Run is running, and the
// poll loop is waiting for records, or a batch was polled or committed
// within LivenessTimeout, or a dependency
// (Redis, the broker) is being retried — waiting for one is not a reason
// to restart. The caller adds what it knows of the log writer.
func (p *Pipeline) Alive(now time.Time) error {
	if !p.h.running.Load() {
		return errors.New("the pipeline loop has stopped")
	}
	since := func(t *atomic.Int64) time.Duration { return now.Sub(time.Unix(0, t.Load())) }
	if p.h.inPoll.Load() || since(&p.h.lastProgress) < p.cfg.LivenessTimeout || since(&p.h.lastRetry) < p.cfg.LivenessTimeout {
		return nil
	}
	return fmt.Errorf("no batch polled or committed for %v and no dependency being retried", since(&p.h.lastProgress).Round(time.Second))
}
