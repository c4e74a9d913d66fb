package stream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"golang.org/x/sync/semaphore"
)

// commitLoop commits batches in poll order as they complete. Every batch
// already complete behind the first is committed with it, in one request,
// so commits keep up however small the batches are. A commit that fails
// for a reason that can heal (the broker is away) is retried with backoff
// for as long as it takes — meanwhile the in-flight window fills and
// polling pauses. On an error that cannot heal it stops polling and leaves
// the remaining batches uncommitted, so they are replayed. drain ends the
// retries at shutdown, and the wait for batches not yet done: a writer
// that can neither insert nor spool holds their acknowledgements until
// its own context ends, which comes only after this loop returns.
func (p *Pipeline) commitLoop(drain context.Context, queue <-chan *batch, slots *semaphore.Weighted, stopPolling func()) error {
	var failed error
	var pending []*batch
	release := func(bs []*batch) {
		for _, b := range bs {
			p.m.inFlight.Sub(float64(len(b.recs)))
			slots.Release(int64(len(b.recs)))
			b.recycle()
			p.outstanding.Done()
		}
	}
	for queue != nil || len(pending) > 0 {
		if len(pending) == 0 {
			b, ok := <-queue
			if !ok {
				break
			}
			pending = append(pending, b)
		}
		select {
		case b, ok := <-queue:
			if !ok {
				queue = nil
			} else {
				pending = append(pending, b)
			}
			continue
		case <-pending[0].done:
		case <-drain.Done():
			// Not recycled: the writer may still read their items.
			var recs int
			for _, b := range pending {
				recs += len(b.recs)
				p.outstanding.Done()
			}
			p.log.Warn("stopped waiting for in-flight batches at shutdown (kafka.shutdown_timeout); they are not committed and are replayed on restart",
				"batches", len(pending), "records", recs)
			return failed
		}
		n := 0
		for n < len(pending) && closed(pending[n].done) {
			n++
		}
		done := pending[:n]
		if failed == nil {
			if failed = p.commit(drain, done); failed != nil {
				stopPolling()
			}
		}
		release(done)
		pending = pending[n:]
	}
	return failed
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// commit commits the offsets of completed batches in one request, retrying
// while the error can heal. It returns an error only for what cannot: a
// batch whose outputs failed for good, or a commit refused for a reason a
// retry does not fix (authorization, fencing).
func (p *Pipeline) commit(drain context.Context, bs []*batch) error {
	var recs []*kgo.Record
	for _, b := range bs {
		if b.ackErr != nil {
			return fmt.Errorf("batch of %d records: %w", len(b.recs), b.ackErr)
		}
		recs = append(recs, b.recs...)
	}
	t0 := time.Now()
	err := p.retry(drain, "commit", func() error {
		ctx, cancel := context.WithTimeout(drain, p.cfg.ShutdownTimeout)
		defer cancel()
		err := p.cl.CommitRecords(ctx, recs...)
		if err != nil && classify(err) != transient {
			return permanent{err}
		}
		return err
	})
	var perm permanent
	switch {
	case err == nil:
	case errors.As(err, &perm) && classify(perm.err) == rebalanced:
		p.log.Warn("commit refused because the group rebalanced; the partitions' new owner replays these records",
			"records", len(recs), "err", perm.err)
		return nil
	case errors.As(err, &perm):
		return fmt.Errorf("committing offsets: %w (%s; seer cannot recover from this by retrying)", perm.err, fatalReason(perm.err))
	default:
		p.log.Warn("stopped retrying a commit at shutdown; these records are replayed on restart", "records", len(recs), "err", err)
		return nil
	}
	p.committed()
	p.observe("commit", t0)
	for _, b := range bs {
		p.count(b)
	}
	return nil
}

// errorClass sorts a Kafka error by what the pipeline does with it.
type errorClass int

const (
	transient  errorClass = iota // the broker is away, busy or moving: retry with backoff
	rebalanced                   // the group moved on: the new owner replays the records
	fatal                        // authorization, fencing, a closed client: a retry cannot fix it
)

// classify treats every error as transient unless Kafka says otherwise:
// connection errors (refused, reset, timed out) are what a broker restart
// looks like.
func classify(err error) errorClass {
	switch {
	case errors.Is(err, kgo.ErrClientClosed):
		return fatal
	case errors.Is(err, kerr.IllegalGeneration), errors.Is(err, kerr.UnknownMemberID),
		errors.Is(err, kerr.RebalanceInProgress), errors.Is(err, kerr.StaleMemberEpoch):
		return rebalanced
	}
	var ke *kerr.Error
	if errors.As(err, &ke) && !ke.Retriable {
		return fatal
	}
	return transient
}

// fatalReason names the kind of an error that cannot heal.
func fatalReason(err error) string {
	switch {
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.GroupAuthorizationFailed),
		errors.Is(err, kerr.ClusterAuthorizationFailed), errors.Is(err, kerr.TransactionalIDAuthorizationFailed):
		return "authorization: the principal lacks an ACL"
	case errors.Is(err, kerr.SaslAuthenticationFailed):
		return "authentication failed"
	case errors.Is(err, kerr.FencedInstanceID), errors.Is(err, kerr.ProducerFenced), errors.Is(err, kerr.InvalidProducerEpoch):
		return "fenced: another instance took over this identity"
	case errors.Is(err, kgo.ErrClientClosed):
		return "the Kafka client was closed"
	}
	return "the broker rejected the request for good"
}

// permanent marks an error that retry must not retry.
type permanent struct{ err error }

func (e permanent) Error() string { return e.err.Error() }
func (e permanent) Unwrap() error { return e.err }
