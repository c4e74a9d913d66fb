package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/drift/report"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

func newModelsInitCmd(g *globals) *cobra.Command {
	var (
		o                              scoring.InitOptions
		data, holdout, inputs, dataset string
		code                           string
		outputTensor                   string
	)
	cmd := &cobra.Command{
		Use:   "init --onnx FILE --inputs MAPPING.yaml --data FILE [--holdout FILE --label COLUMN] --name N --version V --owner O",
		Short: "Build a model package from an ONNX file, an input mapping and data",
		Long: `init writes a complete model package into --out, so that a team with its own
model does not write model.yaml by hand:

  - model.onnx, copied from --onnx;
  - model.yaml: metadata, lineage, the inputs of --inputs (a YAML file with
    an "inputs" list: each ONNX input column in tensor order with its source,
    event.<field> or feature.<view>.<feature>, dtype, default, bounds and
    categories), the score output, the sha256, and the reference profile —
    frozen quantile bins, categories and counts — computed on --data;
  - with --holdout, examples.jsonl: its first --examples rows with the
    outputs ONNX Runtime gives, and, with --label, the evaluation metrics
    (AUC, Brier score) on all its rows.

Data files are CSV (with a header), JSON Lines or flat Parquet, with one
column per input name. The package then passes seer models validate; sign it
with seer models sign and register it with seer models register.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := g.load()
			if err != nil {
				return err
			}
			if o.Schema, err = schemas.LoadInputSchema(cfg.Kafka.InputSchema); err != nil {
				return err
			}
			raw, err := os.ReadFile(inputs)
			if err != nil {
				return fmt.Errorf("--inputs: %w", err)
			}
			var mapping struct {
				Inputs []schemas.Input `yaml:"inputs"`
			}
			if err := schemas.DecodeStrictYAML(raw, &mapping); err != nil {
				return fmt.Errorf("--inputs %s: %w", inputs, err)
			}
			o.Inputs = mapping.Inputs
			read := func(flag, path string) (scoring.Columns, error) {
				t, err := report.ReadTable(path, "")
				if err != nil {
					return scoring.Columns{}, fmt.Errorf("--%s: %w", flag, err)
				}
				return scoring.Columns{Names: t.Columns, Values: t.Values, Rows: t.Rows}, nil
			}
			if o.Reference, err = read("data", data); err != nil {
				return err
			}
			if holdout != "" {
				h, err := read("holdout", holdout)
				if err != nil {
					return err
				}
				o.Holdout = &h
			} else if o.Label != "" {
				return fmt.Errorf("--label needs --holdout: metrics are computed on held-out rows")
			}
			o.Output.Tensor = outputTensor
			o.Lineage = schemas.Lineage{Dataset: dataset, Code: code}
			if o.Lineage.Dataset == "" {
				o.Lineage.Dataset = data
			}
			if err := scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
				return err
			}
			m, err := scoring.InitPackage(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stdout, "wrote %s: %s %s, %d inputs, profile of %d rows", o.Out, m.Name, m.Version, len(m.Inputs), m.Profile.Rows)
			if m.Evaluation != nil {
				fmt.Fprintf(g.stdout, ", held-out AUC %.4f, Brier %.4f", m.Evaluation.AUC, m.Evaluation.Brier)
			}
			fmt.Fprintln(g.stdout)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.ONNX, "onnx", "", "the ONNX model (required)")
	f.StringVar(&inputs, "inputs", "", "YAML file mapping the ONNX input columns to sources (required)")
	f.StringVar(&data, "data", "", "training or reference data for the drift profile (required)")
	f.StringVar(&holdout, "holdout", "", "held-out data: examples and, with --label, evaluation metrics")
	f.StringVar(&o.Label, "label", "", "the held-out data's label column (0 or 1)")
	f.StringVar(&o.Name, "name", "", "model name (required)")
	f.StringVar(&o.Version, "version", "", "model version (required)")
	f.StringVar(&o.Owner, "owner", "", "owning team or person (required)")
	f.StringVar(&o.Desc, "description", "", "what the model predicts")
	f.StringVar(&o.Out, "out", ".", "package folder to write")
	f.StringVar(&dataset, "dataset", "", "lineage: the training data set (default: --data)")
	f.StringVar(&code, "code", "", "lineage: the training code (path or URL)")
	f.Float64Var(&o.Threshold, "threshold", 0.5, "score at or above which the label is 1")
	f.StringVar(&o.Output.Name, "output", "score", "name of the score output")
	f.StringVar(&outputTensor, "output-tensor", "", "ONNX output holding the score (default: the first float32 output)")
	f.IntVar(&o.Output.Index, "output-index", -1, "column of that output holding the score (default: its last)")
	f.IntVar(&o.Examples, "examples", 200, "held-out rows kept as examples")
	f.IntVar(&o.Bins, "bins", 10, "quantile bins of numeric profiles")
	for _, req := range []string{"onnx", "inputs", "data", "name", "version", "owner"} {
		cmd.MarkFlagRequired(req)
	}
	return cmd
}
