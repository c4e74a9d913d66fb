// Command seer is the one binary of seer: streaming scoring with drift
// monitoring on Kafka, Redis, ONNX Runtime and ClickHouse. See `seer --help`.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/schemas"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "seer:", err)
		os.Exit(1)
	}
}

// globals are the flags every subcommand shares.
type globals struct {
	configPath string
	stdout     io.Writer
	stderr     io.Writer
}

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "seer",
		Short: "Streaming inference with drift monitoring",
		Long: `seer consumes JSON events from Kafka, enriches them with features from a
Redis online store, scores them with an ONNX model, publishes predictions to
Kafka and logs every input and output to ClickHouse, where drift, data-quality
and freshness are measured.

Configuration comes from one YAML file (--config) with SEER_* environment
overrides: each key path in upper case joined with '_', for example
kafka.brokers → SEER_KAFKA_BROKERS=127.0.0.1:9092 and
onnxruntime_lib → SEER_ONNXRUNTIME_LIB. Secrets come only from the
environment (SEER_REDIS_PASSWORD, SEER_CLICKHOUSE_PASSWORD) or from files
(redis.password_file, clickhouse.password_file). An unknown SEER_* variable
is an error, as an unknown YAML key is. Without --config, seer uses
local defaults: every service on 127.0.0.1 and the example model package.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.configPath, "config", "", "path to the YAML config file (default: built-in local defaults)")
	root.AddCommand(
		newServeCmd(g),
		newMonitorCmd(g),
		newDemoCmd(g),
		newMigrateCmd(g),
		newFeaturesCmd(g),
		newLabelsCmd(g),
		newModelsCmd(g),
		newRolloutCmd(g),
		newACLsCmd(g),
		newDoctorCmd(g),
		newLoadtestCmd(g),
		newDriftCmd(g),
	)
	return root
}

// load reads the config and builds the logger.
func (g *globals) load() (Config, *slog.Logger, error) {
	cfg, err := LoadConfig(g.configPath, os.Environ())
	if err != nil {
		return cfg, nil, err
	}
	return cfg, newLogger(g.stderr, cfg.LogLevel, cfg.LogFormat), nil
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv, ReplaceAttr: schemas.RedactAttr}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
