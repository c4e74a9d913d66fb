package drift_test

import (
	"context"
	"testing"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/internal/chtest"
	"github.com/seer-ml/seer/schemas"
)

func TestMigrateRecordsVersions(t *testing.T) {
	conn, db := chtest.NewDB(t)
	migs, err := schemas.Migrations(db)
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
