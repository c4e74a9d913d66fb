package stream

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/seer-ml/seer/schemas"
)

// Delivery modes.
const (
	AtLeastOnce = "at-least-once"
	ExactlyOnce = "exactly-once"
)

// Config configures the Kafka side of the pipeline.
type Config struct {
	Brokers          []string      `yaml:"brokers"`
	ClientID         string        `yaml:"client_id"`
	TLS              schemas.TLS   `yaml:"tls"`  // TLS to the brokers: ca_file, cert_file and key_file (mutual TLS), server_name
	SASL             SASL          `yaml:"sasl"` // SASL authentication
	Group            string        `yaml:"group"`
	InputTopic       string        `yaml:"input_topic"`
	InputSchema      string        `yaml:"input_schema"` // embedded name or file path
	PredictionsTopic string        `yaml:"predictions_topic"`
	DLQTopic         string        `yaml:"dlq_topic"`
	ShadowTopic      string        `yaml:"shadow_topic"`     // shadow predictions ("" for none; by convention <predictions_topic>.shadow)
	Delivery         string        `yaml:"delivery"`         // at-least-once or exactly-once
	TransactionalID  string        `yaml:"transactional_id"` // exactly-once: unique per serve instance
	MaxPollRecords   int           `yaml:"max_poll_records"`
	FetchMinBytes    int           `yaml:"fetch_min_bytes"` // Kafka's fetch.min.bytes: a broker answers a fetch once it has this many bytes…
	FetchMaxWait     time.Duration `yaml:"fetch_max_wait"`  // …or after this long (fetch.max.wait.ms); 64 KiB and 10ms batch more at low rates
	MaxInFlight      int           `yaml:"max_in_flight"`   // records polled but not yet committed (bounds memory)
	Compression      string        `yaml:"compression"`     // codec of the produced batches: snappy, lz4, zstd, gzip or none
	Linger           time.Duration `yaml:"linger"`          // how long the producer holds a partition's batch for more records (linger.ms); 0 sends at once
	Workers          int           `yaml:"workers"`         // batches decoded, enriched and scored at once
	SessionTimeout   time.Duration `yaml:"session_timeout"` // group session: how long a dead member keeps its partitions
	RetryBackoffMax  time.Duration `yaml:"retry_backoff_max"`
	ShutdownTimeout  time.Duration `yaml:"shutdown_timeout"`
	StartupTimeout   time.Duration `yaml:"startup_timeout"`  // how long serve waits for a first broker answer before it fails
	LagInterval      time.Duration `yaml:"lag_interval"`     // how often committed lag is read from the brokers
	LivenessTimeout  time.Duration `yaml:"liveness_timeout"` // /healthz fails when the loops made no progress for this long
}

// codecs are kafka.compression's values.
var codecs = map[string]func() kgo.CompressionCodec{
	"snappy": kgo.SnappyCompression, "lz4": kgo.Lz4Compression, "zstd": kgo.ZstdCompression,
	"gzip": kgo.GzipCompression, "none": kgo.NoCompression,
}

// SASL is kafka.sasl. The password is never read from YAML: it comes from
// SEER_KAFKA_SASL_PASSWORD or password_file.
type SASL struct {
	Mechanism    string         `yaml:"mechanism"` // SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN; "" for none
	Username     string         `yaml:"username"`
	PasswordFile string         `yaml:"password_file"`
	Password     schemas.Secret `yaml:"-"`
}

// SASL mechanisms.
const (
	ScramSHA512 = "SCRAM-SHA-512"
	ScramSHA256 = "SCRAM-SHA-256"
	Plain       = "PLAIN"
)

// Auth returns the franz-go mechanism; nil when SASL is off.
func (s SASL) Auth() sasl.Mechanism {
	switch s.Mechanism {
	case ScramSHA512:
		return scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha512Mechanism()
	case ScramSHA256:
		return scram.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsSha256Mechanism()
	case Plain:
		return plain.Auth{User: s.Username, Pass: s.Password.Reveal()}.AsMechanism()
	}
	return nil
}

func (s SASL) validate() error {
	switch {
	case s.Mechanism == "":
		return nil
	case s.Mechanism != ScramSHA512 && s.Mechanism != ScramSHA256 && s.Mechanism != Plain:
		return fmt.Errorf("kafka.sasl.mechanism: %q is not %s, %s or %s", s.Mechanism, ScramSHA512, ScramSHA256, Plain)
	case s.Username == "":
		return errors.New("kafka.sasl.username: required with kafka.sasl.mechanism")
	case s.Password == "":
		return errors.New("kafka.sasl: no password; set SEER_KAFKA_SASL_PASSWORD or kafka.sasl.password_file")
	}
	return nil
}

// DefaultConfig returns defaults for the example topics on a local broker.
func DefaultConfig() Config {
	return Config{
		Brokers:          []string{"127.0.0.1:9092"},
		ClientID:         "seer",
		Group:            "seer",
		InputTopic:       "card-transactions",
		InputSchema:      "card_transactions.v1",
		PredictionsTopic: "card-transactions.predictions",
		DLQTopic:         "card-transactions.dlq",
		Delivery:         AtLeastOnce,
		MaxPollRecords:   1000,
		FetchMinBytes:    1,
		FetchMaxWait:     5 * time.Second,
		MaxInFlight:      20000,
		Compression:      "snappy",
		Workers:          1,
		SessionTimeout:   45 * time.Second,
		RetryBackoffMax:  5 * time.Second,
		ShutdownTimeout:  15 * time.Second,
		StartupTimeout:   30 * time.Second,
		LagInterval:      5 * time.Second,
		LivenessTimeout:  2 * time.Minute,
	}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	switch {
	case len(c.Brokers) == 0:
		return errors.New("kafka.brokers: at least one broker is required")
	case c.Group == "":
		return errors.New("kafka.group: required")
	case c.InputTopic == "":
		return errors.New("kafka.input_topic: required")
	case c.InputSchema == "":
		return errors.New("kafka.input_schema: required")
	case c.PredictionsTopic == "":
		return errors.New("kafka.predictions_topic: required")
	case c.DLQTopic == "":
		return errors.New("kafka.dlq_topic: required")
	case c.ShadowTopic != "" && (c.ShadowTopic == c.PredictionsTopic || c.ShadowTopic == c.InputTopic):
		return fmt.Errorf("kafka.shadow_topic: %q must differ from the input and predictions topics", c.ShadowTopic)
	case c.PredictionsTopic == c.InputTopic || c.DLQTopic == c.InputTopic:
		return fmt.Errorf("kafka.predictions_topic/dlq_topic: must differ from input_topic %q", c.InputTopic)
	case c.Delivery != AtLeastOnce && c.Delivery != ExactlyOnce:
		return fmt.Errorf("kafka.delivery: %q is not %s or %s", c.Delivery, AtLeastOnce, ExactlyOnce)
	case c.Delivery == ExactlyOnce && c.TransactionalID == "":
		return errors.New("kafka.transactional_id: required with delivery exactly-once (unique per instance)")
	case c.MaxPollRecords < 1:
		return fmt.Errorf("kafka.max_poll_records: %d must be at least 1", c.MaxPollRecords)
	case c.FetchMinBytes < 1 || c.FetchMinBytes > 64<<20:
		return fmt.Errorf("kafka.fetch_min_bytes: %d must be between 1 and 64 MiB", c.FetchMinBytes)
	case c.FetchMaxWait < 10*time.Millisecond:
		return fmt.Errorf("kafka.fetch_max_wait: %v must be at least 10ms", c.FetchMaxWait)
	case codecs[c.Compression] == nil:
		return fmt.Errorf("kafka.compression: %q is not snappy, lz4, zstd, gzip or none", c.Compression)
	case c.Linger < 0 || c.Linger > time.Second:
		return fmt.Errorf("kafka.linger: %v must be between 0 and 1s", c.Linger)
	case c.MaxInFlight < c.MaxPollRecords:
		return fmt.Errorf("kafka.max_in_flight: %d must be at least max_poll_records (%d)", c.MaxInFlight, c.MaxPollRecords)
	case c.Workers < 1:
		return fmt.Errorf("kafka.workers: %d must be at least 1", c.Workers)
	case c.SessionTimeout < 6*time.Second:
		return fmt.Errorf("kafka.session_timeout: %v is below the brokers' usual minimum of 6s", c.SessionTimeout)
	case c.RetryBackoffMax <= 0:
		return fmt.Errorf("kafka.retry_backoff_max: %v must be positive", c.RetryBackoffMax)
	case c.ShutdownTimeout <= 0:
		return fmt.Errorf("kafka.shutdown_timeout: %v must be positive", c.ShutdownTimeout)
	case c.StartupTimeout <= 0:
		return fmt.Errorf("kafka.startup_timeout: %v must be positive", c.StartupTimeout)
	case c.LagInterval <= 0:
		return fmt.Errorf("kafka.lag_interval: %v must be positive", c.LagInterval)
	case c.LivenessTimeout < c.RetryBackoffMax:
		return fmt.Errorf("kafka.liveness_timeout: %v must be at least retry_backoff_max (%v)", c.LivenessTimeout, c.RetryBackoffMax)
	}
	return c.SASL.validate()
}
