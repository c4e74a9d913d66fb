package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// runTransactional is the exactly-once loop: one transaction per batch.
func (p *Pipeline) runTransactional(ctx context.Context) error {
	drain, stopDrain := p.drainContext(ctx)
	defer stopDrain()
	for {
		fetches := p.poll(ctx, func(ctx context.Context, n int) kgo.Fetches { return p.sess.PollRecords(ctx, n) })
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		recs := fetches.Records()
		if len(recs) == 0 {
			continue
		}
		bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.ShutdownTimeout+time.Minute)
		err := p.transact(bctx, drain, newBatch(recs))
		cancel()
		if err != nil {
			return err
		}
	}
}

// transact runs one batch's transaction. drain ends the wait for the log
// writer at shutdown: a writer that can neither insert nor spool would
// hold it for ever (its own context ends only after Run returns).
func (p *Pipeline) transact(ctx, drain context.Context, b *batch) error {
	if err := p.prepare(ctx, b); err != nil {
		return err
	}
	out, dls := p.outputs(b)
	if err := p.sess.Begin(); err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	var produceErr error
	var mu sync.Mutex
	for _, r := range out {
		p.cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				produceErr = errors.Join(produceErr, err)
				mu.Unlock()
			}
		})
	}
	// Log rows are written before the commit; a later abort replays the
	// batch and the rows deduplicate on their ids.
	written := make(chan error, 1)
	if err := p.sink.Append(ctx, b.items, dls, func(err error) { written <- err }); err != nil {
		written <- err
	}
	var werr error
	select {
	case werr = <-written:
	case <-drain.Done():
		// Not recycled: the writer may still read the items. Rows it
		// writes later collapse with the replay's on their ids.
		p.log.Warn("stopped waiting for the log writer at shutdown (kafka.shutdown_timeout); the transaction is aborted and the batch is replayed on restart",
			"records", len(b.recs))
		if _, err := p.sess.End(ctx, kgo.TryAbort); err != nil {
			return fmt.Errorf("aborting transaction: %w", err)
		}
		return nil
	}
	t0 := time.Now()
	commit := kgo.TryCommit
	if werr != nil {
		commit = kgo.TryAbort
	}
	committed, err := p.sess.End(ctx, commit)
	if err := errors.Join(werr, err); err != nil {
		return fmt.Errorf("ending transaction: %w", err)
	}
	// End flushed or aborted the batch's records, and the writer is done
	// with its items.
	defer b.recycle()
	if !committed {
		mu.Lock()
		p.log.Warn("transaction aborted (rebalance or produce error); the batch will be re-polled", "records", len(b.recs), "produce_err", produceErr)
		mu.Unlock()
		return nil
	}
	p.committed()
	p.observe("commit", t0)
	p.count(b)
	return nil
}
