package drift_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// TestClickHouseUsers on the local ClickHouse: the writer migrates and
// writes its database and is denied another; the analyst reads but cannot
// INSERT, ALTER or DROP; a wrong password is refused. Over the secure
// native port, the test CA connects and another CA is named in the error.
func TestClickHouseUsers(t *testing.T) {
	ctx := context.Background()
	dir := testenv.SecureDir(t)
	addr := testenv.ClickHouse(t)
	password := func(user string) schemas.Secret {
		b, err := os.ReadFile(filepath.Join(dir, user+".password"))
		if err != nil {
			t.Fatal(err)
		}
		return schemas.Secret(strings.TrimSpace(string(b)))
	}
	open := func(user string, pw schemas.Secret, mutate func(*drift.Config)) (drift.Config, error) {
		cfg := drift.DefaultConfig()
		cfg.Addr, cfg.Database, cfg.Username, cfg.Password = addr, "seer_secure", user, pw
		if mutate != nil {
			mutate(&cfg)
		}
		if err := cfg.TLS.Load("clickhouse.tls", time.Now()); err != nil {
			return cfg, err
		}
		conn, err := drift.Open(ctx, cfg)
		if err == nil {
			conn.Close()
		}
		return cfg, err
	}
	admin, err := drift.Open(ctx, func() drift.Config { c := drift.DefaultConfig(); c.Addr = addr; return c }())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	drop := func() { admin.Exec(context.Background(), "DROP DATABASE IF EXISTS seer_secure") }
	drop()
	t.Cleanup(drop)

	writerCfg, err := open("seer_writer", password("seer_writer"), nil)
	if err != nil {
		t.Fatalf("the writer connecting: %v", err)
	}
	w, _ := drift.Open(ctx, writerCfg)
	defer w.Close()
	if err := drift.Migrate(ctx, w, writerCfg, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("the writer migrating its database: %v", err)
	}
	row := inferencelog.LogRow{PredictionID: "p1", EventID: "e1", Model: "m", ModelVersion: "1", Route: "production", EventTimeMs: time.Now().UnixMilli(), ScoredTimeMs: time.Now().UnixMilli()}
	if err := inferencelog.NewSink(w, "seer_secure").Insert(ctx, &inferencelog.Batch{Log: []inferencelog.LogRow{row}}); err != nil {
		t.Errorf("the writer inserting: %v", err)
	}
	if err := w.Exec(ctx, "CREATE DATABASE IF NOT EXISTS seer_not_granted"); err == nil || !strings.Contains(err.Error(), "Access denied") {
		admin.Exec(ctx, "DROP DATABASE IF EXISTS seer_not_granted")
		t.Errorf("the writer creating another database: %v; want access denied", err)
	}

	analystCfg, err := open("seer_analyst", password("seer_analyst"), nil)
	if err != nil {
		t.Fatalf("the analyst connecting: %v", err)
	}
	an, _ := drift.Open(ctx, analystCfg)
	defer an.Close()
	var n uint64
	if err := an.QueryRow(ctx, "SELECT count() FROM seer_secure.inference_log").Scan(&n); err != nil || n != 1 {
		t.Errorf("the analyst reading: %d rows, %v; want 1", n, err)
	}
	for _, q := range []string{"INSERT INTO seer_secure.inference_log (prediction_id) VALUES ('x')", "ALTER TABLE seer_secure.inference_log DELETE WHERE 1",
		"DROP TABLE seer_secure.inference_log"} {
		if err := an.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "readonly") {
			t.Errorf("the analyst ran %q: %v; want refused in readonly mode", q, err)
		}
	}
	if _, err := open("seer_analyst", "wrong", nil); err == nil {
		t.Error("a wrong password was let in")
	}

	tlsAddr := testenv.ClickHouseTLS(t)
	if _, err := open("seer_analyst", password("seer_analyst"), func(c *drift.Config) {
		c.Addr, c.TLS = tlsAddr, schemas.TLS{CAFile: filepath.Join(dir, "ca.crt")}
	}); err != nil {
		t.Errorf("TLS with the test CA: %v", err)
	}
	if _, err := open("seer_analyst", password("seer_analyst"), func(c *drift.Config) {
		c.Addr, c.TLS = tlsAddr, schemas.TLS{CAFile: filepath.Join(dir, "other-ca.crt")}
	}); err == nil || !strings.Contains(err.Error(), "clickhouse.tls.ca_file") {
		t.Errorf("TLS with another CA: %v; want clickhouse.tls.ca_file named", err)
	}
}
