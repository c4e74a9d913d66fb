package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	ort "github.com/yalue/onnxruntime_go"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

func newModelsBenchCmd(g *globals) *cobra.Command {
	var (
		device        string
		batches       string
		minTime       time.Duration
		tolerance     float64
		requireDevice bool
		jsonOut       string
	)
	cmd := &cobra.Command{
		Use:   "bench MODEL.onnx|PACKAGE_DIR",
		Short: "Time a model on the CPU and on a device, and check that both give the same outputs",
		Long: `bench opens the ONNX model (a file, or a package folder's model.onnx) twice
with the ONNX Runtime library of onnxruntime_lib: on the CPU, and on --device
(cuda:N uses the CUDA execution provider with the scoring.cuda options). It
checks that both give the same first float32 output on the same random input
within --tolerance, then times one Run at each --batches size on each, for at
least --min-time, and prints µs per batch and predictions/s. The model must
take one float32 input of shape [batch, width].

A device that is not available falls back to the CPU with a warning; with
--require-device that is an error instead. Use it to decide whether a GPU
pays for a model, and from which micro-batch size (kafka.max_poll_records,
scoring.max_batch).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, logger, err := g.load()
			if err != nil {
				return err
			}
			path := args[0]
			if st, err := os.Stat(path); err == nil && st.IsDir() {
				m, err := schemas.LoadManifest(path)
				if err != nil {
					return err
				}
				path = m.ArtifactPath()
			}
			var sizes []int
			for _, b := range strings.Split(batches, ",") {
				n, err := strconv.Atoi(strings.TrimSpace(b))
				if err != nil || n < 1 {
					return fmt.Errorf("--batches: %q is not a positive integer", b)
				}
				sizes = append(sizes, n)
			}
			if err := scoring.InitRuntime(cfg.OnnxRuntimeLib); err != nil {
				return err
			}
			cpuCfg, devCfg := cfg.Scoring, cfg.Scoring
			cpuCfg.Device, devCfg.Device = "cpu", device
			if err := devCfg.Validate(); err != nil {
				return err
			}
			cpu, err := scoring.OpenRaw(path, cpuCfg, logger)
			if err != nil {
				return err
			}
			defer cpu.Close()
			dev, err := scoring.OpenRaw(path, devCfg, logger)
			if err != nil {
				return err
			}
			defer dev.Close()
			if dev.Device() != device && requireDevice {
				return fmt.Errorf("--device %s is not available (fell back to %s); see the warning above", device, dev.Device())
			}
			fmt.Fprintf(g.stdout, "model %s: input width %d; ONNX Runtime %s from %s\n", path, cpu.Width(), ort.GetVersion(), cfg.OnnxRuntimeLib)

			rows := sizes[len(sizes)-1]
			in := scoring.RandomInput(rows, cpu.Width(), 1)
			a, err := cpu.Run(rows, in)
			if err != nil {
				return fmt.Errorf("cpu: %w", err)
			}
			b, err := dev.Run(rows, in)
			if err != nil {
				return fmt.Errorf("%s: %w", dev.Device(), err)
			}
			diff := scoring.MaxAbsDiff(a, b)
			fmt.Fprintf(g.stdout, "outputs on cpu and %s agree on %d rows: max |difference| %.3g (tolerance %g)\n", dev.Device(), rows, diff, tolerance)

			report := struct {
				Model      string                `json:"model"`
				ORTVersion string                `json:"ort_version"`
				Device     string                `json:"device"`
				MaxAbsDiff float64               `json:"max_abs_diff"`
				Results    []scoring.BenchResult `json:"results"`
			}{Model: filepath.Base(path), ORTVersion: ort.GetVersion(), Device: dev.Device(), MaxAbsDiff: diff}
			fmt.Fprintf(g.stdout, "%-8s %7s %8s %14s %16s\n", "device", "batch", "runs", "µs/batch", "predictions/s")
			for _, n := range sizes {
				for _, s := range []*scoring.RawSession{cpu, dev} {
					r, err := scoring.Bench(s, n, minTime)
					if err != nil {
						return fmt.Errorf("%s, batch %d: %w", s.Device(), n, err)
					}
					report.Results = append(report.Results, r)
					fmt.Fprintf(g.stdout, "%-8s %7d %8d %14.1f %16.0f\n", r.Device, r.Batch, r.Runs, r.MicrosPerBatch, r.PredictionsPerSec)
				}
			}
			if jsonOut != "" {
				b, _ := json.MarshalIndent(report, "", "  ")
				if err := os.WriteFile(jsonOut, append(b, '\n'), 0o644); err != nil {
					return fmt.Errorf("--json: %w", err)
				}
			}
			if diff > tolerance {
				return fmt.Errorf("outputs on cpu and %s differ by %.3g, more than --tolerance %g", dev.Device(), diff, tolerance)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&device, "device", "cuda:0", "device to compare with the CPU: cpu or cuda:N")
	f.StringVar(&batches, "batches", "1,64,1024,8192", "comma-separated batch sizes (rows per Run)")
	f.DurationVar(&minTime, "min-time", time.Second, "how long to time each device and batch size")
	f.Float64Var(&tolerance, "tolerance", 1e-5, "largest allowed |difference| between the CPU's and the device's outputs")
	f.BoolVar(&requireDevice, "require-device", false, "fail instead of falling back to the CPU when --device is not available")
	f.StringVar(&jsonOut, "json", "", "also write the results as JSON here")
	return cmd
}
