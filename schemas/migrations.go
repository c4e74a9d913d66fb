package schemas

import (
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Dialect says which ClickHouse features the DDL may use. The migrations
// are written once, with placeholders the dialect fills:
//
//	{lc}     LowCardinality(String), or String
//	{lca}    Array(LowCardinality(String)), or Array(String)
//	{zstd}   CODEC(ZSTD(1)) after a column's type, or nothing
//	{delta}  CODEC(Delta, ZSTD(1)) for a growing number or time, or nothing
type Dialect struct {
	// Modern: ClickHouse 20.1 or later, which has LowCardinality, codecs
	// and TTL. Debian's 18.16 has none of them: the zero Dialect.
	Modern bool
}

// render fills a migration's placeholders for the dialect.
func (d Dialect) render(sql string) string {
	if d.Modern {
		return strings.NewReplacer("{lc}", "LowCardinality(String)", "{lca}", "Array(LowCardinality(String))",
			"{zstd}", " CODEC(ZSTD(1))", "{delta}", " CODEC(Delta, ZSTD(1))").Replace(sql)
	}
	return strings.NewReplacer("{lc}", "String", "{lca}", "Array(String)", "{zstd}", "", "{delta}", "").Replace(sql)
}

// RetentionStatements are the TTLs of clickhouse.retention (a Modern
// server's): the log, the dead letters and the labels keep that many days
// of rows; window metrics, alerts and the registry mirror are kept.
func RetentionStatements(database string, days int) []string {
	return []string{
		fmt.Sprintf("ALTER TABLE %s.inference_log MODIFY TTL event_time + INTERVAL %d DAY", database, days),
		fmt.Sprintf("ALTER TABLE %s.dead_letters MODIFY TTL dlq_time + INTERVAL %d DAY", database, days),
		fmt.Sprintf("ALTER TABLE %s.labels MODIFY TTL label_time + INTERVAL %d DAY", database, days),
	}
}

// Migration is one embedded ClickHouse migration: numbered, idempotent
// statements (CREATE ... IF NOT EXISTS and the like).
type Migration struct {
	Version    int
	Name       string
	Statements []string
}

var migrationName = regexp.MustCompile(`^(\d+)_([a-z0-9_]+)\.sql$`)

// Migrations returns the embedded migrations in version order, with {db}
// replaced by database and the column types of the dialect.
func Migrations(database string, d Dialect) ([]Migration, error) {
	if !identRE.MatchString(database) || strings.Contains(database, "-") {
		return nil, fmt.Errorf("clickhouse database name %q must be letters, digits and '_'", database)
	}
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration file %s: name must be NNNN_name.sql", e.Name())
		}
		data, err := migrationFS.ReadFile("migrations/" + e.Name())
		if err != nil {
			return nil, err
		}
		v, _ := strconv.Atoi(m[1])
		out = append(out, Migration{Version: v, Name: m[2], Statements: splitSQL(d.render(strings.ReplaceAll(string(data), "{db}", database)))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// splitSQL splits a script on semicolons at line ends and drops comments.
func splitSQL(script string) []string {
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(script, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(t, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if s := strings.TrimSpace(cur.String()); s != "" {
		stmts = append(stmts, s)
	}
	return stmts
}
