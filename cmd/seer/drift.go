package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/drift/report"
	"github.com/seer-ml/seer/schemas"
)

func newDriftCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drift",
		Short: "Measure drift between data sets",
		Long: `drift computes the drift statistics seer's monitor uses: PSI, Jensen–Shannon
distance (natural-log "js", as Evidently reports it, and base-2 "js_base2", as
NannyML does), Wasserstein distance normalized by the reference standard
deviation, Kolmogorov–Smirnov and chi-squared tests, and the share of new
categories.`,
	}
	var (
		refPath, curPath, format, out, inFormat, kinds string
		o                                              = report.DefaultOptions()
	)
	reportCmd := &cobra.Command{
		Use:   "report --reference FILE --current FILE",
		Short: "Compare two data files offline and write a JSON or HTML drift report",
		Long: `report compares every column that --reference and --current share (CSV with a
header row, JSON Lines or flat Parquet; the kind of each column — numeric or
categorical — is detected, or given with --kinds name=numeric,other=categorical).

Numeric columns are binned on the reference's quantiles (--bins) plus
underflow, overflow and missing bins for PSI and JS; Wasserstein and KS use the
raw values. Categorical columns keep the --top-k reference categories, an
"other" bucket and a "new" bucket for categories the reference never saw.

A feature is marked drifted when its Benjamini–Hochberg adjusted p-value (KS
for numeric, chi-squared for categorical) is below --alpha and its PSI is at
least --min-psi, so that large files do not flag negligible shifts.

The JSON (default) has a top-level "features" list; each item has name, kind,
metrics and drifted. --format html renders per-feature histograms of reference
against current. Output goes to --out, or stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if refPath == "" || curPath == "" {
				return fmt.Errorf("--reference and --current are required")
			}
			o.Kinds = map[string]schemas.ProfileKind{}
			for _, kv := range strings.Split(kinds, ",") {
				if kv == "" {
					continue
				}
				name, kind, ok := strings.Cut(kv, "=")
				if k := schemas.ProfileKind(kind); !ok || (k != schemas.ProfileNumeric && k != schemas.ProfileCategorical) {
					return fmt.Errorf("--kinds: %q is not name=numeric or name=categorical", kv)
				}
				o.Kinds[name] = schemas.ProfileKind(kind)
			}
			ref, err := report.ReadTable(refPath, inFormat)
			if err != nil {
				return fmt.Errorf("--reference: %w", err)
			}
			cur, err := report.ReadTable(curPath, inFormat)
			if err != nil {
				return fmt.Errorf("--current: %w", err)
			}
			rep, err := report.Build(ref, cur, o)
			if err != nil {
				return fmt.Errorf("comparing %s with %s: %w", refPath, curPath, err)
			}
			rep.Reference = report.Dataset{Path: refPath, Rows: ref.Rows}
			rep.Current = report.Dataset{Path: curPath, Rows: cur.Rows}
			w := g.stdout
			if out != "" {
				f, err := os.Create(out)
				if err != nil {
					return fmt.Errorf("--out: %w", err)
				}
				defer f.Close()
				w = f
			}
			switch format {
			case "json":
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				err = enc.Encode(rep)
			case "html":
				err = rep.WriteHTML(w)
			default:
				return fmt.Errorf("--format: %q is not json or html", format)
			}
			if err != nil {
				return err
			}
			if out != "" {
				fmt.Fprintf(g.stderr, "%d of %d features drifted; report written to %s\n", rep.DriftedCount, len(rep.Features), out)
			}
			return nil
		},
	}
	f := reportCmd.Flags()
	f.StringVar(&refPath, "reference", "", "reference data file (CSV, JSON Lines or Parquet)")
	f.StringVar(&curPath, "current", "", "current data file (CSV, JSON Lines or Parquet)")
	f.StringVar(&inFormat, "input-format", "", "csv, jsonl or parquet (default: from the file extensions)")
	f.StringVar(&format, "format", "json", "json or html")
	f.StringVar(&out, "out", "", "write the report here instead of stdout")
	f.StringVar(&kinds, "kinds", "", "column kinds, e.g. amount=numeric,country=categorical")
	f.Float64Var(&o.Alpha, "alpha", o.Alpha, "false discovery rate across features")
	f.Float64Var(&o.MinPSI, "min-psi", o.MinPSI, "smallest PSI called drift")
	f.IntVar(&o.Bins, "bins", o.Bins, "reference quantile bins for numeric columns")
	f.IntVar(&o.TopK, "top-k", o.TopK, "reference categories kept before 'other'")
	f.IntVar(&o.MinSamples, "min-samples", o.MinSamples, "fewer values on either side: a small_sample warning, never drifted")
	f.Float64Var(&o.MissingMaxDiff, "missing-max-diff", o.MissingMaxDiff, "flag a change of a column's missing share by more than this")
	cmd.AddCommand(reportCmd)
	return cmd
}
