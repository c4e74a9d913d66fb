package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/drift"
	"github.com/seer-ml/seer/featurestore"
	"github.com/seer-ml/seer/featurestore/ingest"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

func newMigrateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Create or upgrade the ClickHouse schema",
		Long: `migrate connects to clickhouse.addr (native protocol) and applies seer's
embedded migrations to clickhouse.database: the inference log, dead letters
and the migration record. Every statement is idempotent, so running it again
is safe. The base schema runs on ClickHouse 18.16 and later.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			conn, err := openMigrated(ctx, cfg, logger)
			if err != nil {
				return err
			}
			defer conn.Close()
			v, err := drift.ServerVersion(ctx, conn)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "clickhouse %s at %s: database %s is up to date\n", v, cfg.ClickHouse.Addr, cfg.ClickHouse.Database)
			return nil
		},
	}
}

// openMigrated connects to ClickHouse and applies the schema's migrations
// (in the server's dialect) and clickhouse.retention: what every command
// that uses ClickHouse does first. The caller closes the connection.
func openMigrated(ctx context.Context, cfg Config, logger *slog.Logger) (driver.Conn, error) {
	conn, err := drift.Open(ctx, cfg.ClickHouse)
	if err != nil {
		return nil, err
	}
	err = drift.Migrate(ctx, conn, cfg.ClickHouse, logger)
	if err == nil {
		err = drift.ApplyRetention(ctx, conn, cfg.ClickHouse, logger)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func newFeaturesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "features",
		Short: "Manage the Redis online feature store",
		Long: `features writes feature views into the Redis online store, using the layout
seer reads: one hash per view and entity, {prefix}:{view}:{entity} →
{feature: value, ..., _ts: epoch ms of the update}.`,
	}
	var o ingest.LoadOptions
	var file string
	load := &cobra.Command{
		Use:   "load --view NAME --entity COLUMN FILE",
		Short: "Load a feature view from a CSV or JSONL file into Redis",
		Long: `load reads FILE (CSV with a header row, or JSON Lines; "-" is stdin) and
writes one Redis hash per row for --view, keyed by the --entity column. Every
other column is a feature; empty CSV cells and JSON nulls are left out. The
update time (_ts) comes from --time-column (RFC 3339 or epoch ms) or is the
load time. Rows are written 1000 per pipelined round trip; a bad row stops the
load with an error naming its line. Progress goes to stderr.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := g.load()
			if err != nil {
				return err
			}
			file = args[0]
			if o.Format == "" {
				o.Format = formatOf(file)
			}
			var in *os.File
			if file == "-" {
				in = os.Stdin
			} else if in, err = os.Open(file); err != nil {
				return err
			}
			defer in.Close()
			rdb := featurestore.NewClient(cfg.Redis)
			defer rdb.Close()
			store := ingest.New(rdb, cfg.Redis.KeyPrefix)
			start := time.Now()
			o.Progress = func(n int) {
				fmt.Fprintf(g.stderr, "\rloaded %d rows (%.0f rows/s)", n, float64(n)/time.Since(start).Seconds())
			}
			n, err := store.Load(cmd.Context(), in, o)
			fmt.Fprintln(g.stderr)
			if err != nil {
				return fmt.Errorf("%s: %w (%d rows written before it)", file, err, n)
			}
			fmt.Fprintf(g.stdout, "loaded %d rows of view %s from %s into redis %s in %s\n", n, o.View, file, cfg.Redis.Where(), time.Since(start).Round(time.Millisecond))
			return nil
		},
	}
	load.Flags().StringVar(&o.View, "view", "", "feature view name (required)")
	load.Flags().StringVar(&o.EntityColumn, "entity", "entity_id", "column holding the entity id")
	load.Flags().StringVar(&o.TimeColumn, "time-column", "", "column holding the update time (default: now)")
	load.Flags().StringVar(&o.Format, "format", "", "csv or jsonl (default: from the file extension)")
	load.Flags().DurationVar(&o.TTL, "ttl", 0, "key TTL, for example 72h (default: none)")
	load.MarkFlagRequired("view")
	cmd.AddCommand(load, newFeaturesIngestCmd(g))
	return cmd
}

func formatOf(path string) string {
	switch {
	case strings.HasSuffix(path, ".csv"):
		return "csv"
	case strings.HasSuffix(path, ".jsonl"), strings.HasSuffix(path, ".ndjson"):
		return "jsonl"
	}
	return ""
}

func newModelsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "models",
		Short: "Build, validate, sign and register model packages; move aliases; see the history",
		Long: `models works on model packages: a folder with model.onnx, model.yaml
(name, version, owner, lineage, inputs with sources/dtypes/defaults/bounds,
outputs, threshold, sha256, evaluation metrics and a reference profile),
examples.jsonl (held-out examples with their expected outputs) and, once
signed, signature.json.`,
	}
	var schemaRef, device string
	validate := &cobra.Command{
		Use:   "validate DIR...",
		Short: "Check model packages against their ONNX files",
		Long: `validate checks each package DIR: model.yaml decodes strictly and has the
required metadata; the sha256 of the ONNX file matches; the ONNX input and
output tensors match the declared inputs and outputs; every event.<field>
input exists in the input schema (--schema) with a fitting type; every input
has a reference profile; and the held-out examples (examples.jsonl) give
their expected outputs within 1e-5 when scored as serve scores events. It
needs the ONNX Runtime library (onnxruntime_lib or SEER_ONNXRUNTIME_LIB).
Each problem is reported with the field or example line it concerns.

The examples are scored on the CPU, or with --device cuda:N on that GPU,
as serve scores them there (scoring.cuda options; the CUDA build of ONNX
Runtime). A device that is not available fails the package instead of
falling back to the CPU.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, _, err := g.load()
			if err != nil {
				return err
			}
			if schemaRef == "" {
				schemaRef = cfg.Kafka.InputSchema
			}
			schema, err := schemas.LoadInputSchema(schemaRef)
			if err != nil {
				return err
			}
			if err := scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
				return err
			}
			failed := 0
			for _, dir := range args {
				n, err := validatePackage(cmd.Context(), cfg.Scoring, device, dir, schema)
				if err != nil {
					failed++
					fmt.Fprintf(g.stdout, "FAIL %s\n  %s\n", dir, strings.ReplaceAll(err.Error(), "\n", "\n  "))
					continue
				}
				m, _ := schemas.LoadManifest(dir)
				views, _ := m.FeatureViews()
				fmt.Fprintf(g.stdout, "ok   %s: %s %s by %s, %d inputs (feature views %v), sha256 %s, %d examples reproduce on %s\n",
					dir, m.Name, m.Version, m.Owner, len(m.Inputs), views, m.Artifact.SHA256[:12], n, device)
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d model packages failed validation", failed, len(args))
			}
			return nil
		},
	}
	validate.Flags().StringVar(&schemaRef, "schema", "", "input schema (embedded name or file; default: kafka.input_schema)")
	validate.Flags().StringVar(&device, "device", "cpu", "score the examples on cpu or cuda:N (no fallback to the CPU)")
	cmd.AddCommand(validate, newModelsInitCmd(g), newModelsBenchCmd(g), newModelsKeygenCmd(g), newModelsSignCmd(g), newModelsVerifyCmd(g))
	cmd.AddCommand(newRegistryCmds(g)...)
	return cmd
}

// validatePackage runs every check of `seer models validate` on dir, with
// the examples scored on device, and returns how many reproduced.
func validatePackage(ctx context.Context, cfg scoring.Config, device, dir string, schema *schemas.InputSchema) (int, error) {
	m, err := schemas.LoadManifest(dir)
	if err != nil {
		return 0, err
	}
	if err := m.Verify(); err != nil {
		return 0, err
	}
	if err := m.CheckAgainstSchema(schema); err != nil {
		return 0, err
	}
	exs, err := schemas.LoadExamples(dir)
	if err != nil {
		return 0, err
	}
	cfg.Device = device
	if err := cfg.Validate(); err != nil {
		return 0, fmt.Errorf("--device: %w", err)
	}
	mod, err := scoring.Open(cfg, m, schema, schemas.RouteProduction, slog.New(slog.DiscardHandler))
	if err != nil {
		return 0, err
	}
	defer mod.Close()
	if mod.Device() != device {
		return 0, fmt.Errorf("--device %s is not available here: ONNX Runtime ran the model on %s (scoring on a GPU needs the CUDA build of ONNX Runtime, onnxruntime_lib, and its CUDA libraries)", device, mod.Device())
	}
	return len(exs), mod.CheckExamples(ctx, schema, exs)
}
