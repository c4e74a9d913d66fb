// Package drift owns seer's ClickHouse side. The root holds the connection
// (Open) and the embedded, versioned migrations (Migrate), which every
// other room builds on:
//
//   - drift/inferencelog: log rows, the batching writer and its disk spool;
//   - drift/stats: the statistics, pure functions;
//   - drift/window: the windowed drift, quality and freshness jobs (SQL);
//   - drift/alert: alert rules and the alert state machine;
//   - drift/notify: alert sinks (log, ClickHouse, Kafka, Alertmanager);
//   - drift/monitor: the leader-elected monitor loop and its Redis lease;
//   - drift/report: the offline drift report between two files.
//
// Open and Migrate are safe to call from several processes: migrations are
// idempotent and each version is recorded once.
package drift

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/seer-ml/seer/drift/inferencelog"
	"github.com/seer-ml/seer/schemas"
)

// Config configures the ClickHouse connection.
type Config struct {
	Addr         string         `yaml:"addr"` // native protocol, host:port
	Database     string         `yaml:"database"`
	Username     string         `yaml:"username"`
	PasswordFile string         `yaml:"password_file"` // or SEER_CLICKHOUSE_PASSWORD; never in YAML
	Password     schemas.Secret `yaml:"-"`
	TLS          schemas.TLS    `yaml:"tls"` // TLS on the secure native port: ca_file, cert_file, key_file, server_name
	DialTimeout  time.Duration  `yaml:"dial_timeout"`
	// Cluster names the cluster (remote_servers) whose servers share the
	// tables: migrations create replicated local tables and Distributed
	// tables over them (schemas.Dialect.ForCluster), and seer
	// reads and writes through the Distributed ones. Empty: one server.
	Cluster string `yaml:"cluster"`
	// Retention: how long the inference log, the dead letters and the
	// labels keep rows (a TTL, in whole days), on servers that have TTL
	// (20.1 and later); 0 keeps them.
	Retention           time.Duration `yaml:"retention"`
	inferencelog.Config `yaml:",inline"`
}

// DefaultConfig returns the local defaults.
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:9000", Database: "seer", Username: "default", DialTimeout: 5 * time.Second, Config: inferencelog.DefaultConfig()}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.Addr == "" {
		return errors.New("clickhouse.addr: required")
	}
	if c.Database == "" || strings.ContainsAny(c.Database, " .-`'\"") {
		return fmt.Errorf("clickhouse.database: %q must be a plain identifier", c.Database)
	}
	if c.Retention < 0 || (c.Retention > 0 && c.Retention < 24*time.Hour) {
		return fmt.Errorf("clickhouse.retention: %v must be 0 (keep) or at least 24h", c.Retention)
	}
	if c.Cluster != "" && !clusterName.MatchString(c.Cluster) {
		return fmt.Errorf("clickhouse.cluster: %q must be a plain identifier", c.Cluster)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("clickhouse.dial_timeout: %v must be positive", c.DialTimeout)
	}
	return c.Config.Validate()
}

var clusterName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Open connects with the native protocol (the HTTP protocol of
// clickhouse-go fails on 18.16) and pings the server. It connects to the
// "default" database, so that Migrate can create the configured one.
func Open(ctx context.Context, c Config) (driver.Conn, error) {
	opts := &clickhouse.Options{
		Addr:         []string{c.Addr},
		Protocol:     clickhouse.Native,
		Auth:         clickhouse.Auth{Database: "default", Username: c.Username, Password: c.Password.Reveal()},
		DialTimeout:  c.DialTimeout,
		MaxOpenConns: 8,
	}
	if c.Cluster != "" {
		// An insert returns once every shard has its rows, not when the
		// receiving server has queued them: a committed offset never
		// waits in a queue that dies with a server.
		opts.Settings = clickhouse.Settings{"insert_distributed_sync": 1}
	}
	if d := c.TLS.Dialer(); d != nil {
		opts.DialContext = func(ctx context.Context, addr string) (net.Conn, error) { return d(ctx, "tcp", addr) }
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("opening clickhouse %s: %w", c.Addr, err)
	}
	if err := conn.Ping(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("connecting to clickhouse %s: %w", c.Addr, err)
	}
	return conn, nil
}

// Migrate applies the embedded migrations that cfg.Database does not have
// yet, in version order, and records each in schema_migrations once.
// Every statement is idempotent too, so a migration cut short by a crash
// is safe to run again. With a cluster (cfg.Cluster), a statement runs ON
// CLUSTER and reaches every server, but for the ALTER of a replicated
// table, which runs once per shard (see clusterDDL).
func Migrate(ctx context.Context, conn driver.Conn, cfg Config, logger *slog.Logger) error {
	d, err := ServerDialect(ctx, conn)
	if err != nil {
		return err
	}
	d.Cluster = cfg.Cluster
	migs, err := schemas.Migrations(cfg.Database, d)
	if err != nil {
		return err
	}
	applied, err := appliedMigrations(ctx, conn, cfg.Database)
	if err != nil {
		return err
	}
	ddl := &clusterDDL{cfg: cfg, conn: conn}
	defer ddl.close()
	for _, m := range migs {
		if applied[uint32(m.Version)] {
			continue
		}
		for i, stmt := range m.Statements {
			if err := ddl.exec(ctx, stmt); err != nil {
				return fmt.Errorf("migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := recordMigration(ctx, conn, cfg.Database, m); err != nil {
			return fmt.Errorf("recording migration %04d_%s: %w", m.Version, m.Name, err)
		}
		logger.Info("migration applied", "component", "drift", "database", cfg.Database, "version", m.Version, "name", m.Name)
	}
	return nil
}

// clusterDDL runs DDL through conn, except the statements that run once
// per shard (schemas.OncePerShard): those go to one replica of each shard
// of cfg.Cluster, and replication carries them to the shard's other
// replicas. It reaches each shard at its first replica, in remote_servers
// order, that takes a connection, with cfg's user, password and TLS; the
// connections open on first use. An ADD COLUMN that a stopped migration
// already applied (on a server, or on one shard of several) counts as
// done (columnExists).
type clusterDDL struct {
	cfg    Config
	conn   driver.Conn
	shards []driver.Conn
}

func (x *clusterDDL) exec(ctx context.Context, stmt string) error {
	if x.cfg.Cluster == "" || !schemas.OncePerShard(stmt) {
		if err := x.conn.Exec(ctx, stmt); err != nil && !columnExists(err) {
			return err
		}
		return nil
	}
	if x.shards == nil {
		if err := x.openShards(ctx); err != nil {
			return err
		}
	}
	for i, c := range x.shards {
		if err := c.Exec(ctx, stmt); err != nil && !columnExists(err) {
			return fmt.Errorf("shard %d of cluster %s: %w", i+1, x.cfg.Cluster, err)
		}
	}
	return nil
}

func (x *clusterDDL) openShards(ctx context.Context) error {
	shards, err := clusterShards(ctx, x.conn, x.cfg.Cluster)
	if err != nil {
		return err
	}
	for i, replicas := range shards {
		var errs []error
		for _, addr := range replicas {
			cfg := x.cfg
			cfg.Addr = addr
			c, err := Open(ctx, cfg)
			if err == nil {
				x.shards = append(x.shards, c)
				break
			}
			errs = append(errs, err)
		}
		if len(errs) == len(replicas) {
			x.close()
			return fmt.Errorf("clickhouse.cluster %s: no replica of shard %d takes a connection: %w", x.cfg.Cluster, i+1, errors.Join(errs...))
		}
	}
	return nil
}

// clusterShards returns the servers (host:port) of each shard of
// cluster, in remote_servers order; an error when the server does not
// know the cluster.
func clusterShards(ctx context.Context, conn driver.Conn, cluster string) ([][]string, error) {
	rows, err := conn.Query(ctx, "SELECT shard_num, host_name, port FROM system.clusters WHERE cluster = "+Quote(cluster)+" ORDER BY shard_num, replica_num")
	if err != nil {
		return nil, fmt.Errorf("reading system.clusters: %w", err)
	}
	defer rows.Close()
	var shards [][]string
	last := uint32(0)
	for rows.Next() {
		var (
			shard uint32
			host  string
			port  uint16
		)
		if err := rows.Scan(&shard, &host, &port); err != nil {
			return nil, err
		}
		if shard != last {
			shards, last = append(shards, nil), shard
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], net.JoinHostPort(host, strconv.Itoa(int(port))))
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(shards) == 0 {
		return nil, fmt.Errorf("clickhouse.cluster: this server has no cluster %q in its remote_servers", cluster)
	}
	return shards, nil
}

func (x *clusterDDL) close() {
	for _, c := range x.shards {
		c.Close()
	}
	x.shards = nil
}

// columnExists reports ClickHouse's "Cannot add column: column with this
// name already exists" (code 44): 18.16 has no ADD COLUMN IF NOT EXISTS, so
// an ADD COLUMN that a stopped migration already applied counts as done.
func columnExists(err error) bool {
	var e *clickhouse.Exception
	return errors.As(err, &e) && e.Code == 44 && strings.Contains(e.Message, "already exists")
}

// ServerDialect is what the server's DDL may use: Modern from ClickHouse
// 20.1 (LowCardinality, codecs, TTL), plain on 18.16.
func ServerDialect(ctx context.Context, conn driver.Conn) (schemas.Dialect, error) {
	v, err := ServerVersion(ctx, conn)
	if err != nil {
		return schemas.Dialect{}, err
	}
	major, _, _ := strings.Cut(v, ".")
	n, err := strconv.Atoi(major)
	if err != nil {
		return schemas.Dialect{}, fmt.Errorf("clickhouse version %q: %w", v, err)
	}
	return schemas.Dialect{Modern: n >= 20}, nil
}

// ApplyRetention sets clickhouse.retention's TTLs (whole days) on a server
// that has TTL; on one that has not (18.16) it says so, and rows are kept:
// drop old monthly partitions by hand (ALTER TABLE … DROP PARTITION).
// Setting it again is harmless.
func ApplyRetention(ctx context.Context, conn driver.Conn, cfg Config, logger *slog.Logger) error {
	if cfg.Retention <= 0 {
		return nil
	}
	d, err := ServerDialect(ctx, conn)
	if err != nil {
		return err
	}
	days := int((cfg.Retention + 24*time.Hour - 1) / (24 * time.Hour))
	if !d.Modern {
		logger.Warn("clickhouse.retention needs ClickHouse 20.1 or later (TTL); this server keeps every row: drop old monthly partitions by hand",
			"component", "drift", "retention_days", days)
		return nil
	}
	d.Cluster = cfg.Cluster
	ddl := &clusterDDL{cfg: cfg, conn: conn}
	defer ddl.close()
	for _, s := range schemas.RetentionStatements(cfg.Database, days) {
		for _, stmt := range d.ForCluster(s) {
			if err := ddl.exec(ctx, stmt); err != nil {
				return fmt.Errorf("clickhouse.retention: %s: %w", stmt, err)
			}
		}
	}
	logger.Info("retention set", "component", "drift", "database", cfg.Database, "days", days)
	return nil
}

// SchemaVersion returns how many of the embedded migrations database has
// applied, and how many there are.
func SchemaVersion(ctx context.Context, conn driver.Conn, database string) (applied, embedded int, err error) {
	migs, err := schemas.Migrations(database, schemas.Dialect{})
	if err != nil {
		return 0, 0, err
	}
	have, err := appliedMigrations(ctx, conn, database)
	if err != nil {
		return 0, 0, err
	}
	for _, m := range migs {
		if have[uint32(m.Version)] {
			applied++
		}
	}
	return applied, len(migs), nil
}

// appliedMigrations returns the versions recorded in schema_migrations;
// none when the database or the table does not exist yet.
func appliedMigrations(ctx context.Context, conn driver.Conn, database string) (map[uint32]bool, error) {
	var n uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = '"+database+"' AND name = 'schema_migrations'").Scan(&n); err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	applied := map[uint32]bool{}
	if n == 0 {
		return applied, nil
	}
	rows, err := conn.Query(ctx, "SELECT DISTINCT version FROM "+database+".schema_migrations")
	if err != nil {
		return nil, fmt.Errorf("reading applied migrations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("reading applied migrations: %w", err)
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

// Quote writes s as a ClickHouse string literal; every query seer builds
// with a value in it goes through it.
func Quote(s string) string { return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'" }

// DropDatabase drops database and everything in it, for a run that must
// start empty (seer demo).
func DropDatabase(ctx context.Context, conn driver.Conn, database string) error {
	if _, err := schemas.Migrations(database, schemas.Dialect{}); err != nil { // validates the name
		return err
	}
	if err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+database); err != nil {
		return fmt.Errorf("dropping database %s: %w", database, err)
	}
	return nil
}

// CheckCluster verifies that the server knows cluster (its remote_servers)
// and has the {shard} and {replica} macros that the replicated tables
// need; it returns the cluster's shard and replica counts.
func CheckCluster(ctx context.Context, conn driver.Conn, cluster string) (shards, replicas uint64, err error) {
	servers, err := clusterShards(ctx, conn, cluster)
	if err != nil {
		return 0, 0, err
	}
	shards = uint64(len(servers))
	for _, s := range servers {
		replicas += uint64(len(s))
	}
	var macros uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM system.macros WHERE macro IN ('shard', 'replica')").Scan(&macros); err != nil {
		return 0, 0, fmt.Errorf("reading system.macros: %w", err)
	}
	if macros != 2 {
		return 0, 0, fmt.Errorf("clickhouse.cluster %s: the server needs both the shard and the replica macros (<macros> in its config)", cluster)
	}
	return shards, replicas, nil
}

// ServerVersion returns the server's version string.
func ServerVersion(ctx context.Context, conn driver.Conn) (string, error) {
	var v string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&v); err != nil {
		return "", fmt.Errorf("reading clickhouse version: %w", err)
	}
	return v, nil
}

// recordMigration inserts through a batch with a column list: the native
// INSERT ... VALUES path of clickhouse-go does not work against 18.16.
func recordMigration(ctx context.Context, conn driver.Conn, database string, m schemas.Migration) error {
	b, err := conn.PrepareBatch(ctx, "INSERT INTO "+database+".schema_migrations (version, name, applied_at)")
	if err != nil {
		return err
	}
	if err := b.Append(uint32(m.Version), m.Name, time.Now().UTC()); err != nil {
		b.Abort()
		return err
	}
	return b.Send()
}
