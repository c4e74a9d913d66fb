package drift_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/segmentio/ksuid"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// TestClusterMode migrates a database on the local two-replica cluster
// (clickhouse.cluster: seer) and writes the log through replica 1:
//   - every table is a replicated local table on both replicas, under a
//     Distributed table of the same name, and a second Migrate changes
//     nothing;
//   - rows inserted (twice, as a replay) through replica 1 read back
//     exactly once through replica 2's Distributed table, FINAL;
//   - a join of the log with the labels, and every other query seer
//     runs, work through the Distributed tables, and a window job gives
//     the same figures as on one server;
//   - with replica 2 killed, inserts go on, and once it is back it holds
//     every row: none is lost.
func TestClusterMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cl, c1, c2, cfg := clusterDB(ctx, t)
	db := cfg.Database
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := drift.Migrate(ctx, c1, cfg, log); err != nil { // a second time: nothing to do
		t.Fatalf("Migrate again: %v", err)
	}
	if shards, replicas, err := drift.CheckCluster(ctx, c2, cl.Name); err != nil || shards != 1 || replicas != 2 {
		t.Errorf("CheckCluster = %d shards, %d servers, %v; want 1 and 2", shards, replicas, err)
	}
	if _, _, err := drift.CheckCluster(ctx, c2, "nosuch"); err == nil || !strings.Contains(err.Error(), "remote_servers") {
		t.Errorf("CheckCluster of an unknown cluster: %v", err)
	}
	migs, _ := schemas.Migrations(db, schemas.Dialect{})
	for i, c := range []driver.Conn{c1, c2} {
		if applied, embedded, err := drift.SchemaVersion(ctx, c, db); err != nil || applied != embedded || applied != len(migs) {
			t.Errorf("replica %d: schema version %d of %d, %v", i+1, applied, embedded, err)
		}
		for _, table := range []string{"inference_log", "dead_letters", "labels", "window_metrics", "alerts", "model_versions", "model_events", "model_inputs", "schema_migrations"} {
			var local, dist string
			q := "SELECT engine FROM system.tables WHERE database = '" + db + "' AND name = '"
			if err := c.QueryRow(ctx, q+table+"_local'").Scan(&local); err != nil || local != "ReplicatedReplacingMergeTree" {
				t.Errorf("replica %d: %s_local engine %q, %v", i+1, table, local, err)
			}
			if err := c.QueryRow(ctx, q+table+"'").Scan(&dist); err != nil || dist != "Distributed" {
				t.Errorf("replica %d: %s engine %q, %v", i+1, table, dist, err)
			}
		}
	}
	// Both replicas have every column the migrations add (the ALTERs ran
	// once, on replica 1, and replication carried them to replica 2), as
	// on one server.
	single, sdb := chtest.NewDB(t)
	columns := func(c driver.Conn, db, suffix string) string {
		var cols []string
		rows, err := c.Query(ctx, "SELECT table, name, type FROM system.columns WHERE database = '"+db+"' AND table LIKE '%"+suffix+"' ORDER BY table, name")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var table, name, typ string
			if err := rows.Scan(&table, &name, &typ); err != nil {
				t.Fatal(err)
			}
			cols = append(cols, strings.TrimSuffix(table, suffix)+"."+name+" "+typ)
		}
		return strings.Join(cols, "\n")
	}
	wantColumns := columns(single, sdb, "")
	for i, c := range []driver.Conn{c1, c2} {
		if got := columns(c, db, "_local"); got != wantColumns {
			t.Errorf("replica %d: the _local tables' columns differ from one server's:\n%s\nwant\n%s", i+1, got, wantColumns)
		}
	}
	if got := chtest.Count(t, c2, "SELECT count() FROM "+db+".schema_migrations FINAL"); got != uint64(len(migs)) {
		t.Errorf("schema_migrations through replica 2: %d versions, want %d", got, len(migs))
	}

	sink := inferencelog.NewSink(c1, db)
	for range 2 { // the second insert is a replay
		if err := sink.Insert(ctx, batch(0, 500)); err != nil {
			t.Fatal(err)
		}
	}
	// Replica 2 reads its own copy: replication is asynchronous.
	eventually := func(c driver.Conn, q string, want uint64) uint64 {
		var got uint64
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
			if got = chtest.Count(t, c, q); got == want {
				break
			}
		}
		return got
	}
	if got := eventually(c2, "SELECT count() FROM "+db+".inference_log FINAL", 500); got != 500 {
		t.Errorf("inference_log FINAL through replica 2 = %d, want 500", got)
	}
	var ls []labels.Label
	for i := range 100 {
		ls = append(ls, labels.Label{EventID: fmt.Sprintf("e%d", i), Label: uint8(i % 2), Time: time.Now().UTC(), Source: "test"})
	}
	if err := (labels.Writer{Conn: c1, Database: db}).Write(ctx, ls); err != nil {
		t.Fatal(err)
	}
	if got := eventually(c2, "SELECT count() FROM (SELECT event_id FROM "+db+".inference_log FINAL) ANY INNER JOIN (SELECT event_id FROM "+db+".labels FINAL) USING event_id", 100); got != 100 {
		t.Errorf("log rows with a label, through the Distributed tables = %d, want 100", got)
	}

	// Every query seer runs works through the Distributed tables.
	migs, _ = schemas.Migrations(db, schemas.Dialect{Cluster: cl.Name})
	skip := 0
	for _, m := range migs {
		skip += len(m.Statements)
	}
	for i, sql := range seerSQL(t, db, schemas.Dialect{Cluster: cl.Name})[skip:] {
		rows, err := c2.Query(ctx, sql)
		if err != nil {
			t.Errorf("query %d fails on the cluster: %v\n%s", i, err, sql)
			continue
		}
		rows.Close()
	}
	// A window job over the same rows gives the same figures on the
	// cluster as on one server.
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 10, 0, 0, 0, time.UTC)
	rows := chtest.WindowRows(rand.New(rand.NewPCG(3, 4)), m, 5000, t0, map[string]float64{"amount": 0.3})
	for _, target := range []struct {
		conn driver.Conn
		db   string
	}{{single, sdb}, {c1, db}} {
		if err := inferencelog.NewSink(target.conn, target.db).Insert(ctx, &inferencelog.Batch{Log: rows}); err != nil {
			t.Fatal(err)
		}
	}
	want, err := window.New(single, sdb, m).Run(ctx, t0, t0.Add(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got *window.Window
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if got, err = window.New(c2, db, m).Run(ctx, t0, t0.Add(10*time.Minute)); err == nil && got.Rows == want.Rows {
			break
		}
	}
	if err != nil || got.Rows != 5000 || !reflect.DeepEqual(got.Metrics, want.Metrics) {
		t.Errorf("window on the cluster: %d rows, %v; on one server %d rows; metrics equal: %v", got.Rows, err, want.Rows, err == nil && reflect.DeepEqual(got.Metrics, want.Metrics))
	}

	restart := cl.Kill(1)
	for i := range 4 {
		if err := sink.Insert(ctx, batch(500+i*500, 500)); err != nil {
			t.Fatalf("insert %d with replica 2 down: %v", i+1, err)
		}
	}
	restart()
	if got := eventually(c2, "SELECT count() FROM "+db+".inference_log_local FINAL", 7500); got != 7500 {
		t.Errorf("replica 2 holds %d rows after its restart, want 7500 (none lost)", got)
	}
}

// clusterDB starts the local cluster and migrates a new database on it
// (clickhouse.cluster: seer) through replica 2 (the ALTERs, once per
// shard, go to the shard's first replica: replica 1); it returns
// connections to both replicas, and replica 2's config. The database is
// dropped ON CLUSTER afterwards.
func clusterDB(ctx context.Context, tb testing.TB) (cl *testenv.ClickHouseCluster, c1, c2 driver.Conn, cfg drift.Config) {
	tb.Helper()
	cl = testenv.StartClickHouseCluster(tb)
	cfg = drift.DefaultConfig()
	cfg.Database, cfg.Cluster, cfg.SpoolDir = "seertest_cl_"+strings.ToLower(ksuid.New().String()[:12]), cl.Name, tb.TempDir()
	open := func(addr string) driver.Conn {
		cfg.Addr = addr
		if err := cfg.Validate(); err != nil {
			tb.Fatal(err)
		}
		conn, err := drift.Open(ctx, cfg)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { conn.Close() })
		return conn
	}
	c1, c2 = open(cl.Addrs[0]), open(cl.Addrs[1])
	tb.Cleanup(func() { c1.Exec(context.Background(), "DROP DATABASE IF EXISTS "+cfg.Database+" ON CLUSTER "+cl.Name) })
	if err := drift.Migrate(ctx, c2, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return cl, c1, c2, cfg
}

// batch returns n log rows of events from, from+1, ….
func batch(from, n int) *inferencelog.Batch {
	now := time.Now().UTC()
	items := make([]schemas.Item, n)
	for i := range items {
		id := fmt.Sprintf("e%d", from+i)
		items[i] = schemas.Item{Event: schemas.Event{ID: id, EntityID: "u", Time: now, Source: schemas.Source{Topic: "in", Offset: int64(from + i)}},
			PredictionID: schemas.StableKSUID(now, id, "m", "1"), Model: "m", ModelVersion: "1", Route: schemas.RouteProduction,
			Score: 0.5, ScoredTime: now, InputNames: []string{"x"}, Inputs: []float32{1}}
	}
	return &inferencelog.Batch{Log: inferencelog.AppendRows(nil, items)}
}

// BenchmarkClusterInsert inserts 5,000-row batches on the local cluster
// through the Distributed table (what seer does, synchronously) and
// straight into a replicated local table: ns/op is per row.
func BenchmarkClusterInsert(b *testing.B) {
	ctx := context.Background()
	cl, c1, _, cfg := clusterDB(ctx, b)
	db := cfg.Database
	direct := db + "_direct"
	b.Cleanup(func() { c1.Exec(context.Background(), "DROP DATABASE IF EXISTS "+direct+" ON CLUSTER "+cl.Name) })
	for _, q := range []string{
		"CREATE DATABASE IF NOT EXISTS " + direct + " ON CLUSTER " + cl.Name,
		"CREATE TABLE IF NOT EXISTS " + direct + ".inference_log ON CLUSTER " + cl.Name + " AS " + db + ".inference_log_local ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/" + direct + "/inference_log', '{replica}', scored_time_ms) PARTITION BY toYYYYMM(event_time) ORDER BY (model, model_version, route, event_id)",
		// The sink writes each version's input names too (migration 0006).
		"CREATE TABLE IF NOT EXISTS " + direct + ".model_inputs ON CLUSTER " + cl.Name + " AS " + db + ".model_inputs_local ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/" + direct + "/model_inputs', '{replica}', logged_ms) ORDER BY (model, model_version)",
	} {
		if err := c1.Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	rows := batch(0, 5000)
	for _, tc := range []struct{ name, database string }{{"distributed", db}, {"local", direct}} {
		b.Run(tc.name, func(b *testing.B) {
			sink := inferencelog.NewSink(c1, tc.database)
			for done := 0; done < b.N; done += len(rows.Log) {
				if err := sink.Insert(ctx, rows); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
