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
	// Cluster (clickhouse.cluster) turns every table into a replicated
	// local table and a Distributed table over it, both created ON
	// CLUSTER and altered once per shard (see ForCluster); empty for a
	// single server.
	Cluster string
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
	keys := map[string]string{} // each table's shard key, from its CREATE
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
		var stmts []string
		for _, stmt := range splitSQL(d.render(strings.ReplaceAll(string(data), "{db}", database))) {
			stmts = append(stmts, d.forCluster(stmt, keys)...)
		}
		out = append(out, Migration{Version: v, Name: m[2], Statements: stmts})
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

var (
	createDatabase = regexp.MustCompile(`^CREATE DATABASE IF NOT EXISTS (\w+)$`)
	createTable    = regexp.MustCompile(`(?s)^CREATE TABLE IF NOT EXISTS (\w+)\.(\w+) (\(.*\)) ENGINE = ReplacingMergeTree\(([^)]*)\)(.*)$`)
	alterTable     = regexp.MustCompile(`(?s)^ALTER TABLE (\w+)\.(\w+) (.*)$`)
	orderBy        = regexp.MustCompile(`(?s)ORDER BY \(?([^()]*?)\)?\s*$`)
)

// shardKeys are the tables whose shard is not chosen by their whole
// sorting key: one event's log rows (every version and route) and its
// labels stay on one shard, so that FINAL deduplicates within a shard and
// the labels join runs shard-locally.
var shardKeys = map[string]string{"inference_log": "event_id", "labels": "event_id"}

// ForCluster rewrites one migration statement for d.Cluster (and returns
// it unchanged without one):
//
//   - CREATE DATABASE runs ON CLUSTER;
//   - CREATE TABLE t … ReplacingMergeTree(v) becomes t_local, a
//     ReplicatedReplacingMergeTree at /clickhouse/tables/{shard}/<db>/t with
//     replica {replica} (the servers' macros), and t, a Distributed table
//     over the t_local of every shard, sharded by cityHash64 of the
//     table's shard key: the sorting key, so that rows that replace each
//     other meet on one shard, or shardKeys' choice;
//   - ALTER TABLE t changes t_local, once per shard (OncePerShard):
//     replication carries the change to the shard's other replicas; after
//     a column change, t's Distributed table is dropped and created again
//     over the new columns, ON CLUSTER (18.16 refuses an ALTER ON CLUSTER
//     of a Distributed table over replicated shards, and a synchronously
//     written Distributed table holds no rows).
//   - INSERT … SELECT (a copy between tables) stays as it is: it runs once,
//     on the server seer is connected to, through the Distributed tables.
//
// Readers and writers keep using t: through the Distributed table they
// see every shard.
func (d Dialect) ForCluster(stmt string) []string { return d.forCluster(stmt, nil) }

// forCluster is ForCluster with the shard keys of the tables created so
// far, which a column change needs to create a Distributed table again.
func (d Dialect) forCluster(stmt string, keys map[string]string) []string {
	if d.Cluster == "" {
		return []string{stmt}
	}
	on := " ON CLUSTER " + d.Cluster
	if m := createDatabase.FindStringSubmatch(stmt); m != nil {
		return []string{stmt + on}
	}
	if m := createTable.FindStringSubmatch(stmt); m != nil {
		db, table, columns, version, rest := m[1], m[2], m[3], m[4], m[5]
		key := shardKeys[table]
		if key == "" {
			if o := orderBy.FindStringSubmatch(rest); o != nil {
				key = o[1]
			}
		}
		if keys != nil {
			keys[table] = key
		}
		args := fmt.Sprintf("'/clickhouse/tables/{shard}/%s/%s', '{replica}'", db, table)
		if version != "" {
			args += ", " + version
		}
		return []string{
			fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s_local%s %s ENGINE = ReplicatedReplacingMergeTree(%s)%s", db, table, on, columns, args, rest),
			d.distributed(db, table, key),
		}
	}
	if m := alterTable.FindStringSubmatch(stmt); m != nil {
		db, table, change := m[1], m[2], m[3]
		out := []string{fmt.Sprintf("ALTER TABLE %s.%s_local %s", db, table, change)}
		if key := keys[table]; key != "" && strings.Contains(change, "COLUMN ") {
			out = append(out, fmt.Sprintf("DROP TABLE IF EXISTS %s.%s%s", db, table, on), d.distributed(db, table, key))
		}
		return out
	}
	return []string{stmt}
}

// OncePerShard reports whether a statement of ForCluster runs on one
// replica of each shard instead of ON CLUSTER: the ALTER of a replicated
// local table, which replication carries to the shard's other replicas.
// ON CLUSTER would have every replica try it. ClickHouse 18.16 lets two
// replicas of a shard both run it when they race for the shard's lock;
// the loser fails, and its DDL worker stops for good ("Unexpected
// ZooKeeper error … Terminating"), so that every later ON CLUSTER query
// waits on that server until distributed_ddl_task_timeout.
func OncePerShard(stmt string) bool {
	return alterTable.MatchString(stmt) && !strings.Contains(stmt, " ON CLUSTER ")
}

// distributed creates table's Distributed table over table_local.
func (d Dialect) distributed(db, table, key string) string {
	return fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s.%s ON CLUSTER %s AS %s.%s_local ENGINE = Distributed(%s, %s, %s_local, cityHash64(%s))",
		db, table, d.Cluster, db, table, d.Cluster, db, table, key)
}
