package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/internal/testenv"
)

// TestPipelineOnClusters runs the pipeline on the distributed engines: the
// features in a three-primary Redis Cluster, the inference log in a
// two-replica ClickHouse cluster (clickhouse.cluster). Mid-run the replica
// that serve writes to is killed and started again: serve spools the log
// meanwhile. Every event gets its prediction, and the other replica ends
// up with every row exactly once after FINAL: none is lost.
func TestPipelineOnClusters(t *testing.T) {
	cl := testenv.StartClickHouseCluster(t)
	cfg, admin := integrationConfig(t)
	cfg.ClickHouse.Addr, cfg.ClickHouse.Cluster = cl.Addrs[0], cl.Name
	cfg.Redis.Mode, cfg.Redis.Addrs = featurestore.ModeCluster, testenv.RedisCluster(t)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a := helperApp(ctx, t, cfg)
	gen, _ := loadFeatures(ctx, t, a)

	procs := newServeProcs(t, cfg, "SEER_KAFKA_MAX_POLL_RECORDS=100", "SEER_CLICKHOUSE_SPOOL_DIR="+t.TempDir(),
		"SEER_CLICKHOUSE_CLUSTER="+cl.Name, "SEER_REDIS_MODE=cluster", "SEER_REDIS_ADDRS="+strings.Join(cfg.Redis.Addrs, ","))
	w := watchPredictions(t, cfg.Kafka.Brokers[0], cfg.Kafka.PredictionsTopic)
	serve := procs.start()

	const total = 4000
	var ids []string
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for range total / 100 {
			ids = append(ids, produceValid(ctx, t, admin, cfg.Kafka.InputTopic, gen, 100)...)
			time.Sleep(25 * time.Millisecond)
		}
	}()
	w.waitFor(t, 1000, 90*time.Second)
	restart := cl.Kill(0) // the replica serve writes to
	time.Sleep(3 * time.Second)
	restart()
	<-produced
	w.waitFor(t, total, 2*time.Minute)
	w.check(t, ids)

	other := cfg.ClickHouse
	other.Addr = cl.Addrs[1]
	c2, err := drift.Open(ctx, other)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	// The restarted replica is read-only until ZooKeeper expires its old
	// session (up to 10 s here); meanwhile serve keeps the rows in its
	// spool and replays them once the replica takes inserts again.
	var final, distinct uint64
	since := time.Now()
	for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		c2.QueryRow(ctx, "SELECT count() FROM "+cfg.ClickHouse.Database+".inference_log FINAL").Scan(&final)
		c2.QueryRow(ctx, "SELECT uniqExact(prediction_id) FROM "+cfg.ClickHouse.Database+".inference_log").Scan(&distinct)
		if final == total && distinct == total {
			break
		}
	}
	t.Logf("%d events, %d predictions; replica 2: %d rows after FINAL, %d distinct prediction ids, %v after the last prediction",
		total, w.distinct(), final, distinct, time.Since(since).Round(time.Millisecond))
	serve.Process.Signal(syscall.SIGTERM)
	if err := serve.Wait(); err != nil {
		t.Errorf("serve exited with %v after SIGTERM", err)
	}
	if final != total || distinct != total {
		var first uint64
		a.ch.QueryRow(ctx, "SELECT count() FROM "+cfg.ClickHouse.Database+".inference_log_local FINAL").Scan(&first)
		t.Errorf("replica 2: inference_log FINAL = %d rows, %d distinct prediction ids; want %d and %d (replica 1 holds %d)", final, distinct, total, total, first)
	}
}
