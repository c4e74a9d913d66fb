package drift_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/drift/judge"
	"github.com/seer-ml/seer/drift/labels"
	"github.com/seer-ml/seer/drift/monitor"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/drift/window"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
)

// seerSQL is every DDL statement and query seer emits against ClickHouse
// (inserts go through native batches with column lists, not SQL text), the
// DDL in the dialect d — and, for a Modern server, the retention TTLs.
func seerSQL(t *testing.T, db string, d schemas.Dialect) []string {
	t.Helper()
	migs, err := schemas.Migrations(db, d)
	if err != nil {
		t.Fatal(err)
	}
	var stmts []string
	for _, m := range migs {
		stmts = append(stmts, m.Statements...)
	}
	if d.Modern {
		stmts = append(stmts, schemas.RetentionStatements(db, 30)...)
	}
	m, err := schemas.LoadManifest(testenv.ExamplePackage(t))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	stmts = append(stmts, window.New(nil, db, m).Queries(t0, t0.Add(time.Hour))...)
	jd := judge.Judge{Database: db}
	stmts = append(stmts, jd.ShadowQuery(m.Name, "1.0.0", "1.1.0", t0, t0.Add(time.Hour)), jd.CanaryQuery(m.Name, "1.1.0", m.Profile.Outputs["score"].Edges, t0, t0.Add(time.Hour)),
		jd.RouteQuery(m.Name, "1.0.0", "1.1.0", t0, t0.Add(time.Hour)), jd.DeadLetterQuery(m.Name, "1.0.0", "1.1.0", t0, t0.Add(time.Hour)))
	stmts = append(stmts, labels.Performance{Database: db}.Queries(m, []schemas.Route{schemas.RouteProduction, schemas.RouteCanary}, t0, t0.Add(time.Hour))...)
	stmts = append(stmts, monitor.MaturityQuery(db, m.Name))
	return append(stmts, notify.FiringQuery(db, m.Name), (&window.Versions{Database: db, Model: m.Name}).Query(t0, t0.Add(time.Hour)), window.LastEndQuery(db, m.Name), strings.ReplaceAll(registry.LineageQuery, "seer.", db+"."), inferencelog.InputQuery(db, "amount", "model = 'card-fraud'"))
}

// TestSQLRunsOnCurrentClickHouse runs all of seer's SQL in chDB, a current
// ClickHouse engine (PyPI chdb).
func TestSQLRunsOnCurrentClickHouse(t *testing.T) {
	stmts := seerSQL(t, "seer_conformance", schemas.Dialect{Modern: true})
	in, _ := json.Marshal(stmts)
	cmd := exec.Command(testenv.Python(t), filepath.Join("testdata", "chdb_conformance.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chdb_conformance.py: %v\n%s", err, stderr.String())
	}
	var res struct {
		Version  string
		Failures []struct {
			Index      int
			Error, SQL string
		}
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%s: %v", out, err)
	}
	t.Logf("chDB ClickHouse %s ran %d statements", res.Version, len(stmts))
	for _, f := range res.Failures {
		t.Errorf("statement %d fails on ClickHouse %s: %s\n%s", f.Index, res.Version, f.Error, f.SQL)
	}
}

// TestSQLRunsOnDebianClickHouse runs the same statements on the local
// ClickHouse server (18.16 from Debian): the migrations through Migrate,
// the queries directly.
func TestSQLRunsOnDebianClickHouse(t *testing.T) {
	conn, db := chtest.NewDB(t) // runs every migration statement
	v, _ := drift.ServerVersion(context.Background(), conn)
	migs, _ := schemas.Migrations(db, schemas.Dialect{})
	skip := 0
	for _, m := range migs {
		skip += len(m.Statements)
	}
	for i, sql := range seerSQL(t, db, schemas.Dialect{})[skip:] {
		rows, err := conn.Query(context.Background(), sql)
		if err != nil {
			t.Errorf("statement %d fails on ClickHouse %s: %v\n%s", i, v, err, sql)
			continue
		}
		rows.Close()
	}
}
