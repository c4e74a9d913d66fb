package main

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

var noEnv []string

func envOf(m map[string]string) []string {
	var env []string
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env
}

func TestConfigGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.yml")
	if len(files) < 4 {
		t.Fatalf("found %d config fixtures", len(files))
	}
	secret := filepath.Join(t.TempDir(), "redis")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if strings.HasSuffix(f, ".good.yml") {
			tmp := filepath.Join(t.TempDir(), "c.yml")
			os.WriteFile(tmp, []byte(strings.ReplaceAll(string(data), "/run/secrets/redis", secret)), 0o600)
			cfg, err := LoadConfig(tmp, noEnv)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if cfg.Redis.Password != "s3cret" || cfg.Redis.Views[0].MaxAge != 24*time.Hour || len(cfg.Kafka.Brokers) != 2 ||
				cfg.Kafka.FetchMinBytes != 65536 || cfg.Kafka.FetchMaxWait != 10*time.Millisecond || cfg.Kafka.Compression != "lz4" || cfg.Kafka.Linger != 5*time.Millisecond ||
				cfg.GCPercent != 150 {
				t.Errorf("%s: decoded %+v", f, cfg)
			}
			continue
		}
		first, _, _ := strings.Cut(string(data), "\n")
		want := strings.TrimSpace(strings.TrimPrefix(first, "# want:"))
		if _, err := LoadConfig(f, noEnv); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error = %v, want it to contain %q", f, err, want)
		}
	}
}

func TestConfigEnvOverrides(t *testing.T) {
	cfg, err := LoadConfig("", envOf(map[string]string{
		"SEER_KAFKA_BROKERS":          "a:1, b:2",
		"SEER_REDIS_ADDR":             "r:1",
		"SEER_CLICKHOUSE_ADDR":        "c:1",
		"SEER_ONNXRUNTIME_LIB":        "/x.so",
		"SEER_KAFKA_MAX_POLL_RECORDS": "10",
		"SEER_KAFKA_SHUTDOWN_TIMEOUT": "3s",
		"SEER_CLICKHOUSE_PASSWORD":    "pw",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Kafka.Brokers, "|"); got != "a:1|b:2" {
		t.Errorf("brokers = %q", got)
	}
	if cfg.Redis.Addr != "r:1" || cfg.ClickHouse.Addr != "c:1" || cfg.OnnxRuntimeLib != "/x.so" {
		t.Errorf("addresses not overridden: %+v", cfg)
	}
	if cfg.Kafka.MaxPollRecords != 10 || cfg.Kafka.ShutdownTimeout != 3*time.Second || cfg.ClickHouse.Password != "pw" {
		t.Errorf("typed overrides not applied: %+v", cfg.Kafka)
	}
	_, err = LoadConfig("", envOf(map[string]string{"SEER_KAFKA_MAX_POLL_RECORDS": "many"}))
	if err == nil || !strings.Contains(err.Error(), "SEER_KAFKA_MAX_POLL_RECORDS") {
		t.Errorf("bad integer override: error = %v, want it to name the variable", err)
	}
}

// TestConfigUnknownEnv: a misspelt SEER_* variable is an error that names
// it and the closest key (issue 8: SEER_KAFKA_INPUTTOPIC was ignored);
// variables of the tools and the secrets are not settings but are allowed.
func TestConfigUnknownEnv(t *testing.T) {
	_, err := LoadConfig("", envOf(map[string]string{"SEER_KAFKA_INPUTTOPIC": "x", "PATH": "/bin"}))
	if err == nil || !strings.Contains(err.Error(), "SEER_KAFKA_INPUTTOPIC: no such setting (did you mean SEER_KAFKA_INPUT_TOPIC?)") {
		t.Errorf("misspelt variable: error = %v", err)
	}
	_, err = LoadConfig("", envOf(map[string]string{"SEER_CACHE_DIR": "/x", "SEER_REQUIRE_SERVICES": "1", "SEER_REDIS_PASSWORD": "pw", "SEER_KAFKA_PORT": "9092"}))
	if err != nil {
		t.Errorf("tool variables rejected: %v", err)
	}
}

// FuzzLoadConfig: the config decoder, TLS and SASL sections included, never
// panics; what it accepts validates, and a SASL password never comes from
// the file.
func FuzzLoadConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yml")
	for _, file := range files {
		data, _ := os.ReadFile(file)
		f.Add(data)
	}
	f.Add([]byte("kafka:\n  tls:\n    enabled: true\n    server_name: broker\n  sasl:\n    mechanism: SCRAM-SHA-512\n    username: serve\n    password_file: /nonexistent\n"))
	f.Add([]byte("redis:\n  tls: {ca_file: x, cert_file: y, key_file: z}\nclickhouse:\n  tls: {enabled: true}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "c.yml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := LoadConfig(path, noEnv)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("LoadConfig accepted a config that does not validate: %v", err)
		}
		if cfg.Kafka.SASL.Password != "" && cfg.Kafka.SASL.PasswordFile == "" || cfg.Redis.Password != "" && cfg.Redis.PasswordFile == "" ||
			cfg.ClickHouse.Password != "" && cfg.ClickHouse.PasswordFile == "" {
			t.Errorf("a password came from the YAML file itself")
		}
	})
}

// TestTuneGC: serve applies gc_percent and memory_limit to the Go
// runtime, unless GOGC and GOMEMLIMIT are set, which win.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	cfg := DefaultConfig()
	cfg.GCPercent, cfg.MemoryLimit = 150, 123<<20
	tuneGC(cfg, func(string) (string, bool) { return "", false })
	if got := debug.SetGCPercent(100); got != 150 {
		t.Errorf("GC percent = %d, want gc_percent 150", got)
	}
	if got := debug.SetMemoryLimit(math.MaxInt64); got != 123<<20 {
		t.Errorf("memory limit = %d, want memory_limit %d", got, 123<<20)
	}
	tuneGC(cfg, func(string) (string, bool) { return "50", true })
	if got := debug.SetGCPercent(100); got != 100 {
		t.Errorf("GC percent = %d with GOGC set, want it left at 100", got)
	}
	if got := debug.SetMemoryLimit(-1); got != math.MaxInt64 {
		t.Errorf("memory limit = %d with GOMEMLIMIT set, want it left unlimited", got)
	}
}
