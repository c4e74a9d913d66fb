package main

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/drift/judge"
	"github.com/seer-ml/seer/drift/monitor"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
	"github.com/seer-ml/seer/scoring/registry"
	"github.com/seer-ml/seer/scoring/rollout"
	"github.com/seer-ml/seer/stream"
)

// Config is seer's one config file. Every key can be overridden by an
// environment variable named SEER_ plus the key path in upper case, joined
// with '_' (kafka.brokers → SEER_KAFKA_BROKERS; lists are comma-separated).
// Secrets are never read from YAML: SEER_REDIS_PASSWORD and
// SEER_CLICKHOUSE_PASSWORD, or the *.password_file keys.
type Config struct {
	OnnxRuntimeLib string              `yaml:"onnxruntime_lib"`
	HTTP           string              `yaml:"http"`
	LogLevel       string              `yaml:"log_level"`
	LogFormat      string              `yaml:"log_format"`
	Pprof          bool                `yaml:"pprof"`
	MemoryLimit    int64               `yaml:"memory_limit"` // soft Go heap limit in bytes (GOMEMLIMIT wins); 0 for none
	GCPercent      int                 `yaml:"gc_percent"`   // heap growth over the live heap before a GC, in percent (GOGC wins)
	Kafka          stream.Config       `yaml:"kafka"`
	Redis          featurestore.Config `yaml:"redis"`
	ClickHouse     drift.Config        `yaml:"clickhouse"`
	Scoring        scoring.Config      `yaml:"scoring"`
	Monitor        monitor.Config      `yaml:"monitor"`
	Registry       registry.Config     `yaml:"registry"`
	Rollout        rollout.Config      `yaml:"rollout"`
	RolloutGates   judge.Config        `yaml:"rollout_gates"`
	Ingest         IngestConfig        `yaml:"ingest"`
}

// IngestConfig is where seer labels ingest and seer features ingest read
// and what they write their dead letters to.
type IngestConfig struct {
	LabelsTopic         string `yaml:"labels_topic"`          // the labels topic (labels.v1 records)
	LabelsDLQTopic      string `yaml:"labels_dlq_topic"`      // bad label records
	FeaturesTopicPrefix string `yaml:"features_topic_prefix"` // features ingest --view V reads <prefix><V> unless --topic says otherwise
	FeaturesDLQTopic    string `yaml:"features_dlq_topic"`    // bad feature updates
	// Group is the prefix of the ingests' consumer groups: <group>-labels
	// and <group>-features-<view>.
	Group string `yaml:"group"`
}

// Validate names the first bad field.
func (c IngestConfig) Validate() error {
	for _, f := range []struct{ key, v string }{{"labels_topic", c.LabelsTopic}, {"labels_dlq_topic", c.LabelsDLQTopic},
		{"features_topic_prefix", c.FeaturesTopicPrefix}, {"features_dlq_topic", c.FeaturesDLQTopic}, {"group", c.Group}} {
		if f.v == "" {
			return fmt.Errorf("ingest.%s: required", f.key)
		}
	}
	if c.LabelsDLQTopic == c.LabelsTopic {
		return fmt.Errorf("ingest.labels_dlq_topic: must differ from labels_topic %q", c.LabelsTopic)
	}
	return nil
}

// DefaultConfig is what seer runs with when no file is given: everything on
// 127.0.0.1, the example model package and topics.
func DefaultConfig() Config {
	return Config{
		OnnxRuntimeLib: ".cache/onnxruntime/libonnxruntime.so.1",
		HTTP:           "127.0.0.1:8080",
		LogLevel:       "info",
		LogFormat:      "text",
		MemoryLimit:    200 << 20,
		GCPercent:      200,
		Kafka:          stream.DefaultConfig(),
		Redis:          featurestore.DefaultConfig(),
		ClickHouse:     drift.DefaultConfig(),
		Scoring:        scoring.DefaultConfig(),
		Monitor:        monitor.DefaultConfig(),
		Registry:       registry.DefaultConfig(),
		Rollout:        rollout.DefaultConfig(),
		RolloutGates:   judge.DefaultConfig(),
		Ingest: IngestConfig{LabelsTopic: "labels", LabelsDLQTopic: "labels.dlq", FeaturesTopicPrefix: "features.",
			FeaturesDLQTopic: "features.dlq", Group: "seer-ingest"},
	}
}

// secretKeys are the YAML keys that would hold a secret; the file must not.
var secretKeys = map[string]string{
	"redis.password":      "SEER_REDIS_PASSWORD or redis.password_file",
	"clickhouse.password": "SEER_CLICKHOUSE_PASSWORD or clickhouse.password_file",
	"kafka.sasl.password": "SEER_KAFKA_SASL_PASSWORD or kafka.sasl.password_file",
}

// toolVars are SEER_* variables that are not config keys: the secrets, and
// those the stack script and the tests read.
var toolVars = map[string]bool{
	"SEER_REDIS_PASSWORD": true, "SEER_CLICKHOUSE_PASSWORD": true, "SEER_KAFKA_SASL_PASSWORD": true,
	"SEER_CACHE_DIR": true, "SEER_PYTHON": true, "SEER_PYTHON_EVIDENTLY": true, "SEER_REQUIRE_SERVICES": true,
	"SEER_KAFKA_PORT": true, "SEER_KAFKA_CONTROLLER_PORT": true, "SEER_KAFKA_SASL_PORT": true, "SEER_KAFKA_MTLS_PORT": true, "SEER_REDIS_TLS_PORT": true, "SEER_CLICKHOUSE_TLS_PORT": true, "SEER_REDIS_PORT": true,
	"SEER_CLICKHOUSE_PORT": true, "SEER_CLICKHOUSE_HTTP_PORT": true, "SEER_ALERTMANAGER_PORT": true,
	"SEER_REDIS_CLUSTER_PORT": true, "SEER_REDIS_CLUSTER_ADDRS": true, "SEER_CLICKHOUSE_CLUSTER_PORT": true,
	"SEER_CLICKHOUSE_CLUSTER_ADDRS": true, "SEER_ZOOKEEPER_PORT": true,
}

// LoadConfig reads path (strict YAML: an unknown key is an error) over the
// defaults, applies the SEER_* variables of environ (KEY=value strings, as
// os.Environ gives) and validates. An unknown SEER_* variable is an error,
// as an unknown YAML key is.
func LoadConfig(path string, environ []string) (Config, error) {
	cfg := DefaultConfig()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("reading config: %w", err)
		}
		if err := schemas.DecodeStrictYAML(data, &cfg); err != nil {
			var ke *schemas.YAMLKeyError
			if errors.As(err, &ke) && ke.Unknown && secretKeys[ke.Path] != "" {
				err = fmt.Errorf("%s (line %d): secrets are not read from the config file; set %s", ke.Path, ke.Line, secretKeys[ke.Path])
			}
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "SEER_") {
			env[k] = v
		}
	}
	known := map[string]bool{}
	if err := applyEnv(reflect.ValueOf(&cfg).Elem(), "SEER", env, known); err != nil {
		return cfg, err
	}
	if err := unknownEnv(env, known); err != nil {
		return cfg, err
	}
	var rerr, cerr, kerr error
	cfg.Redis.Password, rerr = schemas.LoadSecret(environ, "SEER_REDIS_PASSWORD", cfg.Redis.PasswordFile, "redis.password_file")
	cfg.ClickHouse.Password, cerr = schemas.LoadSecret(environ, "SEER_CLICKHOUSE_PASSWORD", cfg.ClickHouse.PasswordFile, "clickhouse.password_file")
	cfg.Kafka.SASL.Password, kerr = schemas.LoadSecret(environ, "SEER_KAFKA_SASL_PASSWORD", cfg.Kafka.SASL.PasswordFile, "kafka.sasl.password_file")
	if err := errors.Join(rerr, cerr, kerr); err != nil {
		return cfg, err
	}
	// The performance gate waits for the labels as the monitor does.
	cfg.RolloutGates.LabelDelay = cfg.Monitor.LabelDelay
	if err := cfg.loadTLS(time.Now()); err != nil {
		return cfg, err
	}
	if err := cfg.resolveSpoolDir(); err != nil {
		return cfg, err
	}
	if cfg.Registry.Store == "" {
		dir, err := filepath.Abs(filepath.Join(".cache", "artifacts"))
		if err != nil {
			return cfg, fmt.Errorf("registry.store: %w", err)
		}
		cfg.Registry.Store = "file://" + filepath.ToSlash(dir) + "?create_dir=1"
	}
	return cfg, cfg.Validate()
}

// unknownEnv names every SEER_* variable that is neither a config key nor
// a known tool variable, with the closest key.
func unknownEnv(env map[string]string, known map[string]bool) error {
	names := slices.Sorted(maps.Keys(known))
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(env)) {
		if known[k] || toolVars[k] {
			continue
		}
		msg := fmt.Sprintf("%s: no such setting", k)
		if near := schemas.Closest(k, names); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

// resolveSpoolDir makes clickhouse.spool_dir absolute and, when it is not
// set, gives this instance a folder of its own: .cache/spool/HOST-PORT
// under the working directory, PORT being the http port (two instances on
// one host cannot share it). The spool's lock refuses a folder that is in
// use all the same.
func (c *Config) resolveSpoolDir() error {
	dir := c.ClickHouse.SpoolDir
	if dir == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(c.HTTP)
		if port == "" || port == "0" {
			port = "pid" + strconv.Itoa(os.Getpid())
		}
		dir = filepath.Join(".cache", "spool", safeName(host)+"-"+port)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("clickhouse.spool_dir: %w", err)
	}
	c.ClickHouse.SpoolDir = abs
	return nil
}

// safeName keeps letters, digits, '.', '-' and '_' of s for a file name.
func safeName(s string) string {
	out := []byte(s)
	for i, b := range out {
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '.' || b == '-' || b == '_') {
			out[i] = '_'
		}
	}
	if len(out) == 0 {
		return "localhost"
	}
	return string(out)
}

// Validate checks every section; errors name the field.
func (c *Config) Validate() error {
	var errs []error
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q is not debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log_format: %q is not text or json", c.LogFormat))
	}
	if c.MemoryLimit < 0 {
		errs = append(errs, fmt.Errorf("memory_limit: %d is negative", c.MemoryLimit))
	}
	if c.GCPercent < 1 {
		errs = append(errs, fmt.Errorf("gc_percent: %d must be at least 1", c.GCPercent))
	}
	if c.HTTP == "" {
		errs = append(errs, errors.New("http: required (host:port for /metrics, /healthz, /readyz)"))
	}
	errs = append(errs, c.Kafka.Validate(), c.Redis.Validate(), c.ClickHouse.Validate(), c.Scoring.Validate(), c.Monitor.Validate(), c.Registry.Validate(), c.Rollout.Validate(), c.RolloutGates.Validate(), c.Ingest.Validate())
	return errors.Join(errs...)
}

var durationType = reflect.TypeOf(time.Duration(0))

// applyEnv overrides the fields of v from variables named prefix_KEY and
// adds every such name to known.
func applyEnv(v reflect.Value, prefix string, env map[string]string, known map[string]bool) error {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		fv := v.Field(i)
		if opts == "inline" {
			if err := applyEnv(fv, prefix, env, known); err != nil {
				return err
			}
			continue
		}
		if tag == "" || tag == "-" {
			continue
		}
		name := prefix + "_" + strings.ToUpper(tag)
		if f.Type.Kind() == reflect.Struct {
			if err := applyEnv(fv, name, env, known); err != nil {
				return err
			}
			continue
		}
		known[name] = true
		raw, ok := env[name]
		if !ok {
			continue
		}
		bad := func(want string) error { return fmt.Errorf("%s: %q is not %s", name, raw, want) }
		switch {
		case f.Type == durationType:
			d, err := time.ParseDuration(raw)
			if err != nil {
				return bad("a duration (like 500ms or 2s)")
			}
			fv.SetInt(int64(d))
		case f.Type.Kind() == reflect.String:
			fv.SetString(raw)
		case f.Type.Kind() == reflect.Int || f.Type.Kind() == reflect.Int64:
			n, err := strconv.Atoi(raw)
			if err != nil {
				return bad("an integer")
			}
			fv.SetInt(int64(n))
		case f.Type.Kind() == reflect.Bool:
			b, err := strconv.ParseBool(raw)
			if err != nil {
				return bad("true or false")
			}
			fv.SetBool(b)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			var parts []string
			for _, p := range strings.Split(raw, ",") {
				if p = strings.TrimSpace(p); p != "" {
					parts = append(parts, p)
				}
			}
			fv.Set(reflect.ValueOf(parts))
		default:
			return fmt.Errorf("%s: this key cannot be set from the environment; use the config file", name)
		}
	}
	return nil
}

// loadTLS reads the certificates of every TLS section, so that a bad file
// fails the start with its name rather than the first connection.
func (c *Config) loadTLS(now time.Time) error {
	return errors.Join(c.Kafka.TLS.Load("kafka.tls", now), c.Redis.TLS.Load("redis.tls", now), c.ClickHouse.TLS.Load("clickhouse.tls", now))
}
