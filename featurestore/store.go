// Package featurestore is seer's Redis online feature store.
//
// Layout (DESIGN.md): one hash per feature view and entity,
// {prefix}:{view}:{entity} → {feature: value, ..., _ts: epoch ms of the update}.
// Values are decimal strings, or plain strings for categoricals.
//
// Store.Enrich reads the features of a whole batch in one pipelined round
// trip (one HMGET per view and entity), computes each view's age from _ts and
// applies the view's freshness policy. Store.Load writes a file of feature
// rows. A Store is safe for concurrent use.
package featurestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/seer-ml/seer/schemas"
)

// TimestampField is the hash field that holds the epoch-ms time of the update.
const TimestampField = "_ts"

// Policy says what to do with a view value that is missing or stale.
type Policy string

// Freshness policies.
const (
	PolicyDefault Policy = "default" // score with the model's defaults; flag the event
	PolicyUse     Policy = "use"     // (stale only) score with the stale value; flag the event
	PolicyDLQ     Policy = "dlq"     // send the event to the DLQ
)

// ViewConfig is the freshness policy of one feature view.
type ViewConfig struct {
	Name      string        `yaml:"name"`
	MaxAge    time.Duration `yaml:"max_age"`    // 0: values never go stale
	OnMissing Policy        `yaml:"on_missing"` // default or dlq
	OnStale   Policy        `yaml:"on_stale"`   // use, default or dlq
}

// Redis deployments NewClient connects to (Config.Mode).
const (
	ModeSingle   = "single"   // one server (addr)
	ModeCluster  = "cluster"  // Redis Cluster: addrs are seed nodes, the rest is discovered
	ModeSentinel = "sentinel" // a primary and its replicas behind Sentinel: addrs are the sentinels
)

// Config configures the Redis connection and the views.
type Config struct {
	Mode         string         `yaml:"mode"`        // single (default), cluster or sentinel
	Addr         string         `yaml:"addr"`        // single: the server
	Addrs        []string       `yaml:"addrs"`       // cluster: seed nodes; sentinel: the sentinels
	MasterName   string         `yaml:"master_name"` // sentinel: the monitored primary's name
	DB           int            `yaml:"db"`
	Username     string         `yaml:"username"`
	PasswordFile string         `yaml:"password_file"` // or SEER_REDIS_PASSWORD; never in YAML
	Password     schemas.Secret `yaml:"-"`
	TLS          schemas.TLS    `yaml:"tls"` // TLS to Redis: ca_file, cert_file, key_file, server_name
	KeyPrefix    string         `yaml:"key_prefix"`
	Timeout      time.Duration  `yaml:"timeout"`
	Views        []ViewConfig   `yaml:"views"`
}

// DefaultConfig returns the defaults: local Redis, prefix "seer".
func DefaultConfig() Config {
	return Config{Addr: "127.0.0.1:6379", KeyPrefix: "seer", Timeout: 2 * time.Second}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch c.Mode {
	case "", ModeSingle:
		if c.Addr == "" {
			return errors.New("redis.addr: required")
		}
	case ModeCluster, ModeSentinel:
		if len(c.Addrs) == 0 {
			return fmt.Errorf("redis.addrs: required with mode %s", c.Mode)
		}
		if c.Mode == ModeCluster && c.DB != 0 {
			return fmt.Errorf("redis.db: %d, but Redis Cluster has only database 0", c.DB)
		}
		if c.Mode == ModeSentinel && c.MasterName == "" {
			return errors.New("redis.master_name: required with mode sentinel")
		}
	default:
		return fmt.Errorf("redis.mode: %q is not single, cluster or sentinel", c.Mode)
	}
	if c.KeyPrefix == "" || strings.ContainsAny(c.KeyPrefix, " :") {
		return fmt.Errorf("redis.key_prefix: %q must be non-empty without spaces or ':'", c.KeyPrefix)
	}
	if c.Timeout <= 0 {
		return fmt.Errorf("redis.timeout: %v must be positive", c.Timeout)
	}
	for i, v := range c.Views {
		if v.Name == "" {
			return fmt.Errorf("redis.views[%d].name: required", i)
		}
		if v.MaxAge < 0 {
			return fmt.Errorf("redis.views[%d].max_age: %v is negative", i, v.MaxAge)
		}
		switch v.OnMissing {
		case "", PolicyDefault, PolicyDLQ:
		default:
			return fmt.Errorf("redis.views[%d].on_missing: %q is not default or dlq", i, v.OnMissing)
		}
		switch v.OnStale {
		case "", PolicyUse, PolicyDefault, PolicyDLQ:
		default:
			return fmt.Errorf("redis.views[%d].on_stale: %q is not use, default or dlq", i, v.OnStale)
		}
	}
	return nil
}

// Where names the Redis deployment c points at, for logs and errors.
func (c Config) Where() string {
	switch c.Mode {
	case ModeCluster:
		return "the Redis Cluster of " + strings.Join(c.Addrs, ",")
	case ModeSentinel:
		return "primary " + c.MasterName + " of sentinels " + strings.Join(c.Addrs, ",")
	}
	return c.Addr
}

// NewClient opens a go-redis client for c's mode: a single node, a Redis
// Cluster or a Sentinel-managed primary. The same credentials and TLS
// apply to every node (and to the sentinels).
func NewClient(c Config) redis.UniversalClient {
	opts := &redis.UniversalOptions{
		Addrs: c.Addrs, MasterName: c.MasterName, DB: c.DB, Username: c.Username, Password: c.Password.Reveal(),
		SentinelUsername: c.Username, SentinelPassword: c.Password.Reveal(),
		ReadTimeout: c.Timeout, WriteTimeout: c.Timeout, DialTimeout: c.Timeout,
		PoolSize: 8,
		// Deadlines of the caller's context win over the timeouts above, so
		// a readiness probe's 500 ms is not stretched to Timeout.
		ContextTimeoutEnabled: true,
	}
	if d := c.TLS.Dialer(); d != nil {
		opts.Dialer = d
	}
	switch c.Mode {
	case ModeCluster:
		return redis.NewClusterClient(opts.Cluster())
	case ModeSentinel:
		return redis.NewFailoverClient(opts.Failover())
	}
	opts.Addrs = []string{c.Addr}
	return redis.NewClient(opts.Simple())
}

// Store reads and writes feature views in Redis.
type Store struct {
	rdb      redis.UniversalClient
	prefix   string
	views    []view
	now      func() time.Time
	log      *slog.Logger
	lookups  *prometheus.CounterVec
	misses   *prometheus.CounterVec
	stale    *prometheus.CounterVec
	lookupNs prometheus.Histogram
}

type view struct {
	ViewConfig
	features []string
	// hmget is the view's HMGET command with the key left nil: "hmget",
	// key, the features, _ts. Its strings are boxed into interfaces once,
	// here, not once per field and event (go-redis's HMGet boxes each).
	hmget []any
}

// New returns a Store that enriches with the given views and features (as
// returned by schemas.Manifest.FeatureViews). Views without a ViewConfig get
// the safe default: never stale, missing values replaced by the model's
// defaults and flagged.
func New(cfg Config, rdb redis.UniversalClient, views []string, features map[string][]string, logger *slog.Logger, reg prometheus.Registerer) *Store {
	s := &Store{rdb: rdb, prefix: cfg.KeyPrefix, now: time.Now, log: logger.With("component", "featurestore")}
	for _, name := range views {
		vc := ViewConfig{Name: name, OnMissing: PolicyDefault, OnStale: PolicyUse}
		for _, c := range cfg.Views {
			if c.Name == name {
				vc = c
			}
		}
		if vc.OnMissing == "" {
			vc.OnMissing = PolicyDefault
		}
		if vc.OnStale == "" {
			vc.OnStale = PolicyUse
		}
		f := features[name]
		hmget := []any{"hmget", nil}
		for _, field := range f {
			hmget = append(hmget, field)
		}
		hmget = append(hmget, TimestampField)
		s.views = append(s.views, view{ViewConfig: vc, features: f, hmget: hmget})
	}
	s.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "seer_featurestore_lookups_total", Help: "Feature view lookups (one per event and view), by view: the total of the freshness SLI.",
	}, []string{"view"})
	s.misses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "seer_featurestore_lookup_misses_total", Help: "Feature view lookups that found no value, by view.",
	}, []string{"view"})
	s.stale = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "seer_featurestore_stale_total", Help: "Feature view lookups older than the view's max_age, by view.",
	}, []string{"view"})
	s.lookupNs = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "seer_featurestore_lookup_duration_seconds", Help: "Duration of one pipelined batch lookup.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	if reg != nil {
		reg.MustRegister(s.lookups, s.misses, s.stale, s.lookupNs)
	}
	return s
}

// Key returns the Redis key of a view and entity.
func Key(prefix, view, entity string) string { return prefix + ":" + view + ":" + entity }

// Prefix is the key prefix the store reads under.
func (s *Store) Prefix() string { return s.prefix }

// Ping checks that Redis answers.
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Enrich fills Features of every item whose Reject is nil, in one pipelined
// round trip. An item whose view policy says DLQ gets Reject set. It returns
// an error only when Redis cannot be read; the batch is then untouched and
// must be retried.
func (s *Store) Enrich(ctx context.Context, items []schemas.Item) error {
	if len(s.views) == 0 {
		return nil
	}
	start := s.now()
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.SliceCmd, 0, len(items)*len(s.views))
	// The commands' arguments, all of them in one allocation.
	width := 0
	for _, v := range s.views {
		width += len(v.hmget)
	}
	args := make([]any, 0, len(items)*width)
	for i := range items {
		if items[i].Reject != nil {
			continue
		}
		for _, v := range s.views {
			n := len(args)
			args = append(args, v.hmget...)
			args[n+1] = Key(s.prefix, v.Name, items[i].Event.EntityID)
			cmd := redis.NewSliceCmd(ctx, args[n:len(args):len(args)]...)
			_ = pipe.Process(ctx, cmd) // only queues it; Exec reports
			cmds = append(cmds, cmd)
		}
	}
	if len(cmds) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis feature lookup of %d keys: %w", len(cmds), err)
	}
	now := s.now()
	replies := make([][]any, len(cmds))
	for i, c := range cmds {
		replies[i] = c.Val()
	}
	s.Apply(items, replies, now)
	s.lookupNs.Observe(now.Sub(start).Seconds())
	return nil
}

// Apply is the client side of Enrich: it fills Features from the HMGET
// replies (one per item whose Reject is nil and view, in that order),
// computes ages against now and applies each view's policy.
func (s *Store) Apply(items []schemas.Item, replies [][]any, now time.Time) {
	nowMs := now.UnixMilli()
	width := 0
	for _, v := range s.views {
		width += len(v.features)
	}
	// One array of states and one of values for the whole batch.
	states := make([]schemas.FeatureState, len(replies))
	values := make([]schemas.Value, len(replies)/max(len(s.views), 1)*width)
	c := 0
	for i := range items {
		it := &items[i]
		if it.Reject != nil {
			continue
		}
		it.Features = states[c : c : c+len(s.views)]
		for _, v := range s.views {
			n := len(v.features)
			st := decodeView(v, replies[c], nowMs, values[:n:n])
			values = values[n:]
			c++
			switch {
			case st.Missing:
				s.misses.WithLabelValues(v.Name).Inc()
				if v.OnMissing == PolicyDLQ && it.Reject == nil {
					it.Reject = &schemas.DecodeError{Reason: schemas.ReasonFeatureMissing, Stage: schemas.StageEnrich, Field: v.Name, Detail: "no feature values for entity"}
				}
				st.Flagged = true
			case st.Stale:
				s.stale.WithLabelValues(v.Name).Inc()
				switch v.OnStale {
				case PolicyDLQ:
					if it.Reject == nil {
						it.Reject = &schemas.DecodeError{Reason: schemas.ReasonFeatureStale, Stage: schemas.StageEnrich, Field: v.Name,
							Detail: fmt.Sprintf("age %dms exceeds max_age %v", st.AgeMs, v.MaxAge)}
					}
				case PolicyDefault:
					clear(st.Values)
				}
				st.Flagged = true
			}
			it.Features = append(it.Features, st)
		}
	}
	if n := c / max(len(s.views), 1); n > 0 {
		for _, v := range s.views {
			s.lookups.WithLabelValues(v.Name).Add(float64(n))
		}
	}
}

func decodeView(v view, vals []any, nowMs int64, into []schemas.Value) schemas.FeatureState {
	st := schemas.FeatureState{View: v.Name, Values: into, AgeMs: -1}
	ts, ok := vals[len(vals)-1].(string)
	if !ok {
		st.Missing = true
		return st
	}
	tsMs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		st.Missing = true
		return st
	}
	st.AgeMs = max(nowMs-tsMs, 0)
	if v.MaxAge > 0 && st.AgeMs > v.MaxAge.Milliseconds() {
		st.Stale = true
	}
	for j := range v.features {
		raw, ok := vals[j].(string)
		if !ok {
			st.Flagged = true
			continue
		}
		if n, err := strconv.ParseFloat(raw, 64); err == nil && !math.IsNaN(n) && !math.IsInf(n, 0) {
			st.Values[j] = schemas.Value{Kind: schemas.KindNumber, Num: n, Str: raw}
		} else {
			st.Values[j] = schemas.Value{Kind: schemas.KindString, Str: raw}
		}
	}
	return st
}
