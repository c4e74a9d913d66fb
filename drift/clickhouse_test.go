package drift_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/schemas"
)

func TestMigrateRecordsVersions(t *testing.T) {
	conn, db := chtest.NewDB(t)
	migs, err := schemas.Migrations(db, schemas.Dialect{})
	if err != nil {
		t.Fatal(err)
	}
	// NewDB migrated twice: each version is applied and recorded once
	// (issue 8: every start logged "migration applied" and added rows).
	if got := chtest.Count(t, conn, "SELECT count() FROM "+db+".schema_migrations"); got != uint64(len(migs)) {
		t.Errorf("schema_migrations holds %d rows after two Migrate runs, want %d (one per version)", got, len(migs))
	}
	v, err := drift.ServerVersion(context.Background(), conn)
	if err != nil || v == "" {
		t.Errorf("ServerVersion = %q, %v", v, err)
	}
}

// TestDialects: 18.16 gets plain types, no codec and no TTL (its server
// says so, and Migrate picked that dialect: the tables exist with String
// columns); a Modern server gets LowCardinality and codecs; no
// placeholder is left in either.
func TestDialects(t *testing.T) {
	conn, db := chtest.NewDB(t)
	ctx := context.Background()
	d, err := drift.ServerDialect(ctx, conn)
	if err != nil || d.Modern {
		t.Fatalf("ServerDialect of the local 18.16 = %+v, %v; want plain", d, err)
	}
	var typ string
	if err := conn.QueryRow(ctx, "SELECT type FROM system.columns WHERE database = '"+db+"' AND table = 'inference_log' AND name = 'model'").Scan(&typ); err != nil || typ != "String" {
		t.Errorf("inference_log.model on 18.16 is %q, %v; want String", typ, err)
	}
	cfg := drift.DefaultConfig()
	cfg.Database, cfg.Retention = db, 72*time.Hour
	if err := drift.ApplyRetention(ctx, conn, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Errorf("ApplyRetention on 18.16: %v; want a warning, not an error", err)
	}
	for _, dl := range []schemas.Dialect{{}, {Modern: true}} {
		migs, err := schemas.Migrations(db, dl)
		if err != nil {
			t.Fatal(err)
		}
		var all strings.Builder
		for _, m := range migs {
			all.WriteString(strings.Join(m.Statements, "\n"))
		}
		sql := all.String()
		if strings.Contains(sql, "{lc") || strings.Contains(sql, "{zstd}") || strings.Contains(sql, "{delta}") {
			t.Errorf("modern %v: a placeholder is left", dl.Modern)
		}
		if got := strings.Count(sql, "LowCardinality(String)"); (got > 0) != dl.Modern || (dl.Modern && strings.Count(sql, "CODEC(") < 5) {
			t.Errorf("modern %v: %d LowCardinality columns, %d codecs", dl.Modern, got, strings.Count(sql, "CODEC("))
		}
	}
}
