package main

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// TestManyServeInstances runs `seer serve` as a consumer group on a
// 12-partition topic under steady load: three instances, then a fourth
// joins, one leaves by SIGTERM and one dies by SIGKILL. Every event gets
// its prediction; the only duplicates are the replay of what the killed
// instance had not committed; ClickHouse holds each row once after FINAL;
// every membership change ends with the partitions balanced and the lag
// back down. The hand-over and recovery times are logged
// (docs/performance.md, "Many serve instances").
func TestManyServeInstances(t *testing.T) {
	cfg, admin := integrationConfig(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	adm := kadm.NewClient(admin)
	const partitions = 12
	if resp, err := adm.CreatePartitions(ctx, partitions-3, cfg.Kafka.InputTopic); err != nil {
		t.Fatal(err)
	} else {
		for _, r := range resp {
			if r.Err != nil {
				t.Fatalf("adding partitions to %s: %v", r.Topic, r.Err)
			}
		}
	}
	a := helperApp(ctx, t, cfg)
	gen, _ := loadFeatures(ctx, t, a)

	procs := newServeProcs(t, cfg, "SEER_KAFKA_MAX_POLL_RECORDS=200")
	startOne := func() *exec.Cmd { return procs.start("SEER_CLICKHOUSE_SPOOL_DIR=" + t.TempDir()) }
	w := watchPredictions(t, cfg.Kafka.Brokers[0], cfg.Kafka.PredictionsTopic)

	// settled waits until the group is stable with n members that share
	// all partitions evenly and its committed lag is at most maxLag. It
	// returns the time to a stable, balanced assignment (the hand-over)
	// and to the lag's recovery, both from since.
	settled := func(what string, n int, since time.Time) (handover, recovered time.Duration) {
		t.Helper()
		const maxLag = 2000 // two seconds of the load
		var last string
		for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			lags, err := adm.Lag(ctx, cfg.Kafka.Group)
			if err != nil {
				last = err.Error()
				continue
			}
			l := lags[cfg.Kafka.Group]
			if err := l.Error(); err != nil {
				last = err.Error()
				continue
			}
			var counts []int
			for _, m := range l.Members {
				c, ok := m.Assigned.AsConsumer()
				if !ok {
					continue
				}
				k := 0
				for _, tp := range c.Topics {
					k += len(tp.Partitions)
				}
				counts = append(counts, k)
			}
			total := 0
			for _, c := range counts {
				total += c
			}
			last = fmt.Sprintf("state %s, assignment %v, lag %d", l.State, counts, l.Lag.Total())
			balanced := len(counts) == n && total == partitions && slices.Max(counts)-slices.Min(counts) <= 1
			if l.State != "Stable" || !balanced {
				handover = 0
				continue
			}
			if handover == 0 {
				handover = time.Since(since)
			}
			if l.Lag.Total() <= maxLag {
				return handover, time.Since(since)
			}
		}
		t.Fatalf("%s: the group did not settle with %d balanced members and lag ≤ %d within 90 s; last: %s", what, n, maxLag, last)
		return 0, 0
	}

	var insts []*exec.Cmd
	t0 := time.Now()
	for range 3 {
		insts = append(insts, startOne())
	}
	h, r := settled("three instances start", 3, t0)
	t.Logf("three instances start: group stable and balanced after %v, lag recovered after %v", h.Round(time.Millisecond), r.Round(time.Millisecond))

	// Steady load: 1,000 events/s until stopped.
	var ids []string
	stopLoad := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
				ids = append(ids, produceValid(ctx, t, admin, cfg.Kafka.InputTopic, gen, 100)...)
			}
		}
	}()
	time.Sleep(4 * time.Second)

	change := func(what string, n int, do func()) {
		t.Helper()
		since := time.Now()
		do()
		h, r := settled(what, n, since)
		t.Logf("%s: hand-over %v (stable, %d members, %d partitions balanced), lag back under 2,000 after %v",
			what, h.Round(time.Millisecond), n, partitions, r.Round(time.Millisecond))
	}
	change("a fourth instance joins", 4, func() { insts = append(insts, startOne()) })
	time.Sleep(3 * time.Second)
	change("one instance leaves (SIGTERM)", 3, func() {
		insts[0].Process.Signal(syscall.SIGTERM)
		if err := insts[0].Wait(); err != nil {
			t.Errorf("SIGTERM: serve exited with %v", err)
		}
	})
	time.Sleep(3 * time.Second)
	// Until now every prediction is unique: joins and clean leaves commit
	// before partitions move.
	w.mu.Lock()
	dupsBefore := 0
	for _, n := range w.seen {
		dupsBefore += n - 1
	}
	w.mu.Unlock()
	if dupsBefore != 0 {
		t.Errorf("%d duplicate predictions before the SIGKILL; a join and a clean leave must not replay", dupsBefore)
	}
	change("one instance dies (SIGKILL, session timeout 6 s)", 2, func() {
		insts[1].Process.Signal(syscall.SIGKILL)
		insts[1].Wait()
	})
	time.Sleep(2 * time.Second)
	close(stopLoad)
	<-loadDone
	total := len(ids)
	w.waitFor(t, total, 2*time.Minute)
	for _, inst := range insts[2:] {
		inst.Process.Signal(syscall.SIGTERM)
		if err := inst.Wait(); err != nil {
			t.Errorf("serve exited with %v after SIGTERM", err)
		}
	}

	dups := w.check(t, ids)
	t.Logf("%d events, %d duplicate predictions, all from the SIGKILL's replay", total, dups)
	var final, distinct uint64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if final, distinct = countRows(ctx, t, a, cfg.ClickHouse.Database); final >= uint64(total) {
			break
		}
	}
	if final != uint64(total) || distinct != uint64(total) {
		t.Errorf("inference_log FINAL = %d rows, %d distinct prediction ids; want %d and %d", final, distinct, total, total)
	}
}
