package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/seer-ml/seer/scoring/registry"

	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/schemas"
)

// principals names the Kafka principal of each seer client.
type principals struct {
	Serve, Monitor, Registry, Loadtest, Labels, Features string
}

func defaultPrincipals() principals {
	return principals{Serve: "User:serve", Monitor: "User:monitor", Registry: "User:registry", Loadtest: "User:loadtest",
		Labels: "User:labels", Features: "User:features"}
}

// grant is one line of a principal's least privilege: operations on named
// resources of one type (literal names, or prefixed).
type grant struct {
	principal string
	resource  string // topic, group or transactional_id
	names     []string
	prefixed  bool
	ops       []kadm.ACLOperation
}

// kafkaACLs is every grant seer's principals need for cfg's topics, group
// and transactional ids, and nothing more:
//   - serve reads the input topic in its group, writes predictions, dead
//     letters and shadow predictions (under its transactional id prefix
//     for exactly-once), reads the registry, and appends its load events
//     to the loads topic: it cannot write the registry itself;
//   - monitor describes the group and the input topic (lag, members),
//     reads and appends to the registry (rollout events), reads the loads
//     and writes alerts;
//   - registry (seer models, seer rollout) reads and appends to the registry
//     and describes the group (the serve instances a rollout waits for);
//   - loadtest writes the input topic and reads predictions and dead letters;
//   - labels (seer labels ingest) reads the labels topic in its group and
//     writes its dead letters;
//   - features (seer features ingest) reads the topics under the feature
//     topic prefix in its groups (<ingest.group>-features-<view>) and writes
//     its dead letters.
//
// The registry and alerts topics may be created by whoever first needs them.
func kafkaACLs(cfg Config, p principals) []grant {
	k := cfg.Kafka
	read, write := []kadm.ACLOperation{kadm.OpRead, kadm.OpDescribe}, []kadm.ACLOperation{kadm.OpWrite, kadm.OpDescribe}
	out := []string{k.PredictionsTopic, k.DLQTopic}
	if k.ShadowTopic != "" {
		out = append(out, k.ShadowTopic)
	}
	owner := []kadm.ACLOperation{kadm.OpRead, kadm.OpWrite, kadm.OpDescribe, kadm.OpCreate}
	loads, readLoads := registry.LoadsTopic(cfg.Registry.Topic), []kadm.ACLOperation{kadm.OpRead, kadm.OpDescribe, kadm.OpCreate}
	g := []grant{
		{p.Serve, "topic", []string{k.InputTopic}, false, read},
		{p.Serve, "topic", out, false, write},
		{p.Serve, "group", []string{k.Group}, false, read},
		{p.Serve, "topic", []string{cfg.Registry.Topic}, false, read},
		{p.Serve, "topic", []string{loads}, false, []kadm.ACLOperation{kadm.OpRead, kadm.OpWrite, kadm.OpDescribe}},
		{p.Monitor, "group", []string{k.Group}, false, []kadm.ACLOperation{kadm.OpDescribe}},
		{p.Monitor, "topic", []string{k.InputTopic}, false, []kadm.ACLOperation{kadm.OpDescribe}},
		{p.Monitor, "topic", []string{cfg.Registry.Topic}, false, owner},
		{p.Monitor, "topic", []string{loads}, false, readLoads},
		{p.Registry, "topic", []string{cfg.Registry.Topic}, false, owner},
		{p.Registry, "topic", []string{loads}, false, readLoads},
		{p.Registry, "group", []string{k.Group}, false, []kadm.ACLOperation{kadm.OpDescribe}}, // seer rollout status: the live instances
		{p.Loadtest, "topic", []string{k.InputTopic}, false, write},
		{p.Loadtest, "topic", []string{k.PredictionsTopic, k.DLQTopic}, false, read},
		{p.Labels, "topic", []string{cfg.Ingest.LabelsTopic}, false, read},
		{p.Labels, "group", []string{cfg.Ingest.Group + "-labels"}, false, read},
		{p.Labels, "topic", []string{cfg.Ingest.LabelsDLQTopic}, false, write},
		{p.Features, "topic", []string{cfg.Ingest.FeaturesTopicPrefix}, true, read},
		{p.Features, "group", []string{cfg.Ingest.Group + "-features-"}, true, read},
		{p.Features, "topic", []string{cfg.Ingest.FeaturesDLQTopic}, false, write},
	}
	if k.TransactionalID != "" {
		g = append(g, grant{p.Serve, "transactional_id", []string{k.TransactionalID}, true, write})
	}
	if cfg.Monitor.AlertsTopic != "" {
		g = append(g, grant{p.Monitor, "topic", []string{cfg.Monitor.AlertsTopic}, false, []kadm.ACLOperation{kadm.OpWrite, kadm.OpDescribe, kadm.OpCreate}})
	}
	return g
}

// builder is the kadm form of a grant.
func (g grant) builder() *kadm.ACLBuilder {
	b := kadm.NewACLs().Allow(g.principal).AllowHosts().Operations(g.ops...)
	switch g.resource {
	case "topic":
		b.Topics(g.names...)
	case "group":
		b.Groups(g.names...)
	case "transactional_id":
		b.TransactionalIDs(g.names...)
	}
	if g.prefixed {
		b.ResourcePatternType(kadm.ACLPatternPrefixed)
	}
	return b
}

func (g grant) String() string {
	ops := make([]string, len(g.ops))
	for i, o := range g.ops {
		ops[i] = o.String()
	}
	pattern := "literal"
	if g.prefixed {
		pattern = "prefixed"
	}
	return fmt.Sprintf("%s ALLOW %s on %s %s (%s)", g.principal, strings.Join(ops, ","), g.resource, strings.Join(g.names, ","), pattern)
}

// applyACLs creates the grants through cl, whose principal must be allowed
// to alter ACLs (a super user); creating an ACL that exists changes nothing.
func applyACLs(ctx context.Context, cl *kgo.Client, grants []grant, w io.Writer) error {
	adm := kadm.NewClient(cl)
	for _, g := range grants {
		res, err := adm.CreateACLs(ctx, g.builder())
		if err != nil {
			return fmt.Errorf("creating %s: %w", g, err)
		}
		for _, r := range res {
			if r.Err != nil {
				return fmt.Errorf("creating %s: %w", g, r.Err)
			}
		}
		fmt.Fprintf(w, "created: %s\n", g)
	}
	return nil
}

// redisUser is one Redis ACL user of the feature store.
type redisUser struct {
	name, passwordFile string
	rules              []string
}

// redisUsers are the reader (serve), the loader (features load) and the
// monitor (its leases).
func redisUsers(cfg Config, reader, loader, mon redisUser) []redisUser {
	p := cfg.Redis.KeyPrefix
	reader.rules, loader.rules, mon.rules = featurestore.ReaderRules(p), featurestore.LoaderRules(p), featurestore.MonitorRules(p)
	return []redisUser{reader, loader, mon}
}

func (u redisUser) String() string {
	return fmt.Sprintf("redis user %s: %s", u.name, strings.Join(u.rules, " "))
}

func newACLsCmd(g *globals) *cobra.Command {
	var apply, onKafka, onRedis bool
	reader, loader, mon := redisUser{name: "seer-reader"}, redisUser{name: "seer-loader"}, redisUser{name: "seer-monitor"}
	p := defaultPrincipals()
	cmd := &cobra.Command{
		Use:   "acls",
		Short: "Print, or create with --apply, the least-privilege Kafka ACLs of seer's principals",
		Long: `acls derives from the config (kafka topics, group and transactional id,
registry.topic, monitor.alerts_topic) the Kafka ACLs each seer client needs
and nothing more: serve reads its input topic in its group and writes its
predictions, dead-letter and shadow topics (and, for exactly-once, under its
transactional id prefix), reads the registry and appends its load events;
monitor describes the group and the input topic, reads and appends to the
registry and writes alerts; registry (seer models, seer rollout) reads and
appends to the registry; loadtest writes the input topic and reads the
predictions and dead letters; labels (seer labels ingest) reads the labels
topic in its group and writes its dead letters; features (seer features
ingest) reads the topics under ingest.features_topic_prefix in its groups
and writes its dead letters. It prints them; --apply creates them on the
brokers, connecting with the config's kafka.tls and kafka.sasl as a
principal that may alter ACLs (a super user). Name the principals with
--serve, --monitor, --registry, --loadtest, --labels and --features.

For Redis it gives three users of redis.key_prefix's keys: the reader
(serve: HMGET and PING only), the loader (seer features load and ingest:
also replaces the hashes, or runs the update script) and the monitor (its leases only). --apply creates them,
through redis.addr as a user allowed to run ACL SETUSER, with the passwords
in --redis-reader-password-file, --redis-loader-password-file and
--redis-monitor-password-file. --kafka=false or --redis=false leaves one
side out.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			grants, users := kafkaACLs(cfg, p), redisUsers(cfg, reader, loader, mon)
			if !apply {
				for _, gr := range grants {
					if onKafka {
						fmt.Fprintln(g.stdout, gr)
					}
				}
				for _, u := range users {
					if onRedis {
						fmt.Fprintln(g.stdout, u)
					}
				}
				return nil
			}
			if onKafka {
				cl, err := kgo.NewClient(kafkaOpts(cfg.Kafka, "acls", logger, nil)...)
				if err != nil {
					return err
				}
				defer cl.Close()
				if err := applyACLs(c.Context(), cl, grants, g.stdout); err != nil {
					return err
				}
			}
			if !onRedis {
				return nil
			}
			rdb := featurestore.NewClient(cfg.Redis)
			defer rdb.Close()
			for _, u := range users {
				if u.passwordFile == "" {
					return fmt.Errorf("--redis-%s-password-file: required to create %s", strings.TrimPrefix(u.name, "seer-"), u.name)
				}
				pw, err := schemas.LoadSecret(nil, "", u.passwordFile, "--redis-password-file")
				if err != nil {
					return err
				}
				if err := featurestore.SetUser(c.Context(), rdb, u.name, pw, u.rules); err != nil {
					return err
				}
				fmt.Fprintf(g.stdout, "created: %s\n", u)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&apply, "apply", false, "create the ACLs on the brokers")
	f.StringVar(&p.Serve, "serve", p.Serve, "principal of seer serve")
	f.StringVar(&p.Monitor, "monitor", p.Monitor, "principal of seer monitor")
	f.StringVar(&p.Registry, "registry", p.Registry, "principal of the registry commands (seer models, seer rollout)")
	f.StringVar(&p.Loadtest, "loadtest", p.Loadtest, "principal of seer loadtest")
	f.StringVar(&p.Labels, "labels", p.Labels, "principal of seer labels ingest")
	f.StringVar(&p.Features, "features", p.Features, "principal of seer features ingest")
	f.BoolVar(&onKafka, "kafka", true, "the Kafka ACLs")
	f.BoolVar(&onRedis, "redis", true, "the Redis users")
	f.StringVar(&reader.name, "redis-reader", reader.name, "the Redis user serve reads features as")
	f.StringVar(&loader.name, "redis-loader", loader.name, "the Redis user features are loaded as")
	f.StringVar(&reader.passwordFile, "redis-reader-password-file", "", "the reader's password (with --apply)")
	f.StringVar(&loader.passwordFile, "redis-loader-password-file", "", "the loader's password (with --apply)")
	f.StringVar(&mon.name, "redis-monitor", mon.name, "the Redis user seer monitor holds its leases as")
	f.StringVar(&mon.passwordFile, "redis-monitor-password-file", "", "the monitor's password (with --apply)")
	return cmd
}
