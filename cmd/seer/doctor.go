package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync/atomic"

	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
)

// errSkip marks a check that could not be made (not a failure): its text
// says why.
var errSkip = errors.New("skipped")

// check is one line of seer doctor: what it looked at, and the fix to
// print when it fails.
type check struct {
	area, name string
	run        func(ctx context.Context) (string, error)
	hint       string
}

func newDoctorCmd(g *globals) *cobra.Command {
	var timeout time.Duration
	var principal string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a config against the real world: brokers, topics, ACLs, Redis, ClickHouse, the model, the registry",
		Long: `doctor checks what seer serve and seer monitor need, with the config's
addresses, TLS and credentials, and prints one line per check — ok, FAIL or
skip — with a fix for each failure:

  kafka       the brokers answer; each topic exists (with its partition
              count); the consumer group can be described; the principal's
              ACLs cover what serve needs (when the brokers let it list them)
  redis       the server answers; each feature view of the model has keys
  clickhouse  the server answers; the schema has every migration
  model       the package (scoring.package, or the alias's version in the
              registry) verifies, loads and reproduces its examples
  registry    the registry topic reads and the alias resolves

It changes nothing. It exits non-zero when a check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			return runDoctor(cmd.Context(), g, cfg, logger, timeout, principal)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "time each check may take")
	cmd.Flags().StringVar(&principal, "principal", "", `whose ACLs to compare with what serve needs (default: "User:" + kafka.sasl.username); run as an admin to check another principal's`)
	return cmd
}

func runDoctor(ctx context.Context, g *globals, cfg Config, logger *slog.Logger, timeout time.Duration, principal string) error {
	quiet := slog.New(slog.DiscardHandler)
	cl, err := kgo.NewClient(kafkaOpts(cfg.Kafka, "doctor", quiet, nil)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	rdb := featurestore.NewClient(cfg.Redis)
	defer rdb.Close()
	var manifest *schemas.Manifest // set by the model check, read by the views check
	var ch driver.Conn             // set by the ClickHouse server check, read by the schema check
	defer func() {
		if ch != nil {
			ch.Close()
		}
	}()
	checks := []check{
		{"kafka", "brokers", func(ctx context.Context) (string, error) {
			m, err := adm.BrokerMetadata(ctx)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%d broker(s) answer at %s", len(m.Brokers), strings.Join(cfg.Kafka.Brokers, ",")), nil
		}, "check kafka.brokers, kafka.tls and kafka.sasl (docs/security.md); the brokers must be reachable from here"},
		{"kafka", "topics", func(ctx context.Context) (string, error) { return doctorTopics(ctx, adm, cfg) },
			"create the missing topics (the input topic with as many partitions as serve instances you will run; docs/golden-path.md), or point kafka.*_topic at the right names"},
		{"kafka", "group", func(ctx context.Context) (string, error) {
			// A new cluster has no group coordinator until the offsets
			// topic exists (COORDINATOR_NOT_AVAILABLE): retry while the
			// error says it may pass.
			var gs kadm.DescribedGroups
			var err error
			for {
				gs, err = adm.DescribeGroups(ctx, cfg.Kafka.Group)
				if err == nil {
					err = gs[cfg.Kafka.Group].Err
				}
				if err == nil || errors.Is(err, kerr.GroupIDNotFound) || !kerr.IsRetriable(err) || ctx.Err() != nil {
					break
				}
				select {
				case <-ctx.Done():
				case <-time.After(250 * time.Millisecond):
				}
			}
			if err != nil && !errors.Is(err, kerr.GroupIDNotFound) {
				return "", err
			}
			d := gs[cfg.Kafka.Group]
			if errors.Is(d.Err, kerr.GroupIDNotFound) {
				return fmt.Sprintf("group %s has no members yet", cfg.Kafka.Group), nil
			}
			if d.Err != nil {
				return "", fmt.Errorf("group %s: %w", cfg.Kafka.Group, d.Err)
			}
			return fmt.Sprintf("group %s: %s, %d member(s)", cfg.Kafka.Group, d.State, len(d.Members)), nil
		}, "grant the principal READ on kafka.group (seer acls)"},
		{"kafka", "acls", func(ctx context.Context) (string, error) { return doctorACLs(ctx, adm, cfg, principal) },
			"create the missing ACLs: seer acls --apply (as a principal allowed to alter ACLs)"},
		{"clickhouse", "server", func(ctx context.Context) (string, error) {
			var err error
			if ch, err = drift.Open(ctx, cfg.ClickHouse); err != nil {
				return "", err
			}
			v, err := drift.ServerVersion(ctx, ch)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("ClickHouse %s at %s", v, cfg.ClickHouse.Addr), nil
		}, "check clickhouse.addr, clickhouse.tls, the user and SEER_CLICKHOUSE_PASSWORD"},
		{"clickhouse", "cluster", func(ctx context.Context) (string, error) {
			if cfg.ClickHouse.Cluster == "" {
				return "one server (clickhouse.cluster is not set)", nil
			}
			if ch == nil {
				return "the server does not answer (above)", errSkip
			}
			shards, replicas, err := drift.CheckCluster(ctx, ch, cfg.ClickHouse.Cluster)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("cluster %s: %d shards, %d servers, shard and replica macros set", cfg.ClickHouse.Cluster, shards, replicas), nil
		}, "check clickhouse.cluster against the servers' remote_servers and macros (deploy/operations.md)"},
		{"clickhouse", "schema", func(ctx context.Context) (string, error) {
			if ch == nil {
				return "the server does not answer (above)", errSkip
			}
			have, want, err := drift.SchemaVersion(ctx, ch, cfg.ClickHouse.Database)
			if err != nil {
				return "", err
			}
			if have < want {
				return "", fmt.Errorf("database %s has %d of %d migrations", cfg.ClickHouse.Database, have, want)
			}
			return fmt.Sprintf("database %s has all %d migrations", cfg.ClickHouse.Database, want), nil
		}, "run seer migrate (as a user allowed to create tables), or start seer serve once"},
		{"model", "package", func(ctx context.Context) (string, error) {
			m, n, err := doctorModel(ctx, cfg, quiet)
			if err != nil {
				return "", err
			}
			manifest = m
			return fmt.Sprintf("%s %s verifies, loads and reproduces its %d examples", m.Name, m.Version, n), nil
		}, "seer models validate DIR says what is wrong with the package; check onnxruntime_lib and scoring.*"},
		{"registry", "alias", func(ctx context.Context) (string, error) {
			if cfg.Scoring.Model == "" {
				return "not used: serve runs scoring.package", errSkip
			}
			log, err := registry.NewLog(kafkaOpts(cfg.Kafka, "doctor", quiet, nil), cfg.Registry.Topic)
			if err != nil {
				return "", err
			}
			defer log.Close()
			st, _, err := log.Read(ctx)
			if err != nil {
				return "", err
			}
			e, err := st.Resolve(cfg.Scoring.Model, "@"+cfg.Scoring.Alias)
			if err != nil {
				return "", err
			}
			return fmt.Sprintf("%s @%s is version %s (registry topic %s)", cfg.Scoring.Model, cfg.Scoring.Alias, e.Version, cfg.Registry.Topic), nil
		}, "register the model and set the alias: seer models register DIR; seer models alias set MODEL ALIAS VERSION --reason …"},
		{"redis", "server", func(ctx context.Context) (string, error) {
			if err := rdb.Ping(ctx).Err(); err != nil {
				return "", err
			}
			return "Redis answers at " + cfg.Redis.Where(), nil
		}, "check redis.addr, redis.tls, redis.username and SEER_REDIS_PASSWORD"},
		{"redis", "views", func(ctx context.Context) (string, error) {
			if manifest == nil {
				return "no model to read the views of", errSkip
			}
			views, _ := manifest.FeatureViews()
			var found []string
			for _, v := range views {
				pattern := featurestore.Key(cfg.Redis.KeyPrefix, v, "*")
				has, err := hasKey(ctx, rdb, pattern)
				if err != nil && strings.Contains(err.Error(), "NOPERM") {
					return fmt.Sprintf("user %q may not SCAN (as the reader should not): keys not counted", cfg.Redis.Username), errSkip
				}
				if err != nil {
					return "", err
				}
				if !has {
					return "", fmt.Errorf("view %s has no keys under %s", v, pattern)
				}
				found = append(found, v)
			}
			if len(found) == 0 {
				return "the model reads no feature view", nil
			}
			return fmt.Sprintf("views %s have keys under prefix %s", strings.Join(found, ", "), cfg.Redis.KeyPrefix), nil
		}, "load the views (seer features load, or run seer features ingest), or check redis.key_prefix against the writer's"},
	}
	failed := 0
	for _, c := range checks {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		detail, err := c.run(cctx)
		cancel()
		switch {
		case errors.Is(err, errSkip):
			fmt.Fprintf(g.stdout, "skip  %-10s %-8s %s\n", c.area, c.name, detail)
		case err != nil:
			failed++
			fmt.Fprintf(g.stdout, "FAIL  %-10s %-8s %s\n      fix: %s\n", c.area, c.name, strings.ReplaceAll(err.Error(), "\n", "\n      "), c.hint)
		default:
			fmt.Fprintf(g.stdout, "ok    %-10s %-8s %s\n", c.area, c.name, detail)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d checks failed", failed, len(checks))
	}
	logger.Debug("doctor: every check passed")
	return nil
}

// doctorTopics checks that every topic the config names exists, with its
// partition count.
func doctorTopics(ctx context.Context, adm *kadm.Client, cfg Config) (string, error) {
	k := cfg.Kafka
	names := []string{k.InputTopic, k.PredictionsTopic, k.DLQTopic}
	if k.ShadowTopic != "" {
		names = append(names, k.ShadowTopic)
	}
	// Topics seer creates on first use: the registry's (seer models,
	// monitor) and the alerts topic (auto-created by the monitor's producer
	// when the brokers allow it).
	own := map[string]bool{}
	if cfg.Scoring.Model != "" {
		for _, t := range []string{cfg.Registry.Topic, registry.LoadsTopic(cfg.Registry.Topic)} {
			names, own[t] = append(names, t), true
		}
	}
	if cfg.Monitor.AlertsTopic != "" {
		names, own[cfg.Monitor.AlertsTopic] = append(names, cfg.Monitor.AlertsTopic), true
	}
	var have, problems []string
	for _, n := range names {
		// One topic at a time: a principal may see serve's topics and not
		// the monitor's.
		td, err := adm.ListTopics(ctx, n)
		if errors.Is(err, kerr.TopicAuthorizationFailed) {
			if own[n] {
				have = append(have, n+" (not visible to this principal)")
			} else {
				problems = append(problems, "not allowed to describe "+n)
			}
			continue
		}
		if err != nil {
			return "", err
		}
		d, ok := td[n]
		switch {
		case (!ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition)) && own[n]:
			have = append(have, n+" (created on first use)")
		case !ok || errors.Is(d.Err, kerr.UnknownTopicOrPartition):
			problems = append(problems, n+" is missing")
		case d.Err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", n, d.Err))
		default:
			have = append(have, fmt.Sprintf("%s (%d)", n, len(d.Partitions)))
		}
	}
	if len(problems) > 0 {
		return "", errors.New(strings.Join(problems, "; "))
	}
	return "topics (partitions): " + strings.Join(have, ", "), nil
}

// doctorACLs compares a principal's ACLs (by default the config's SASL
// user) with what serve needs (seer acls), when the brokers let it list
// them.
func doctorACLs(ctx context.Context, adm *kadm.Client, cfg Config, principal string) (string, error) {
	if principal == "" && cfg.Kafka.SASL.Mechanism == "" {
		return "no SASL principal configured (plaintext or mutual TLS) and no --principal: not compared", errSkip
	}
	if principal == "" {
		principal = "User:" + cfg.Kafka.SASL.Username
	}
	p := defaultPrincipals()
	p.Serve = principal
	res, err := adm.DescribeACLs(ctx, kadm.NewACLs().Allow(principal).AllowHosts().
		Topics().Groups().TransactionalIDs().ResourcePatternType(kadm.ACLPatternAny).Operations(kadm.OpAny))
	if err == nil {
		for _, r := range res {
			if r.Err != nil {
				err = r.Err
				break
			}
		}
	}
	if errors.Is(err, kerr.ClusterAuthorizationFailed) || errors.Is(err, kerr.SecurityDisabled) {
		return fmt.Sprintf("%s may not list ACLs (%v): not compared", principal, err), errSkip
	}
	if err != nil {
		return "", err
	}
	have := map[string]bool{}
	for _, r := range res {
		for _, d := range r.Described {
			have[fmt.Sprintf("%s|%s|%v|%s", strings.ToLower(d.Type.String()), d.Name, d.Pattern == kadm.ACLPatternPrefixed, d.Operation)] = true
		}
	}
	var missing []string
	for _, gr := range kafkaACLs(cfg, p) {
		if gr.principal != principal {
			continue
		}
		for _, n := range gr.names {
			for _, op := range gr.ops {
				if !have[fmt.Sprintf("%s|%s|%v|%s", strings.ReplaceAll(gr.resource, "_", ""), n, gr.prefixed, op)] {
					missing = append(missing, fmt.Sprintf("%s on %s %s", op, gr.resource, n))
				}
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		return "", fmt.Errorf("%s lacks %s", principal, strings.Join(missing, ", "))
	}
	return principal + " has every ACL serve needs", nil
}

// doctorModel verifies, loads and runs the examples of the package serve
// would run: scoring.package, or the alias's version from the registry.
func doctorModel(ctx context.Context, cfg Config, quiet *slog.Logger) (*schemas.Manifest, int, error) {
	dir := cfg.Scoring.Package
	if cfg.Scoring.Model != "" {
		log, err := registry.NewLog(kafkaOpts(cfg.Kafka, "doctor", quiet, nil), cfg.Registry.Topic)
		if err != nil {
			return nil, 0, err
		}
		defer log.Close()
		store, err := registry.OpenStore(ctx, cfg.Registry.Store)
		if err != nil {
			return nil, 0, err
		}
		defer store.Close()
		cache, err := packageCache()
		if err != nil {
			return nil, 0, err
		}
		p := packages{log: log, store: store, dir: cache}
		st, _, err := log.Read(ctx)
		if err != nil {
			return nil, 0, err
		}
		e, err := st.Resolve(cfg.Scoring.Model, "@"+cfg.Scoring.Alias)
		if err != nil {
			return nil, 0, err
		}
		if dir, err = p.store.Materialize(ctx, e, p.dir); err != nil {
			return nil, 0, err
		}
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, 0, err
	}
	schema, err := schemas.LoadInputSchema(cfg.Kafka.InputSchema)
	if err != nil {
		return nil, 0, err
	}
	if err := scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
		return nil, 0, err
	}
	n, err := validatePackage(ctx, cfg.Scoring, "cpu", dir, schema)
	if err != nil {
		return nil, 0, err
	}
	m, err := schemas.LoadManifest(dir)
	return m, n, err
}

// hasKey reports whether a key matches pattern, scanning every primary of
// a Redis Cluster (each holds its own slots).
func hasKey(ctx context.Context, rdb redis.UniversalClient, pattern string) (bool, error) {
	scan := func(ctx context.Context, node redis.Cmdable) (bool, error) {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil || len(keys) > 0 {
				return len(keys) > 0, err
			}
			if cursor = next; cursor == 0 {
				return false, nil
			}
		}
	}
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return scan(ctx, rdb)
	}
	var found atomic.Bool
	err := cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
		has, err := scan(ctx, node)
		if has {
			found.Store(true)
		}
		return err
	})
	return found.Load(), err
}
