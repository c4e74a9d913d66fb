package scoring

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// cudaDeviceID parses cuda:N.
func cudaDeviceID(device string) (int, error) {
	id, ok := strings.CutPrefix(device, "cuda:")
	n, err := strconv.Atoi(id)
	if !ok || err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not cuda:N", device)
	}
	return n, nil
}

// configure sets threads and spinning and, for device cuda:N, appends the
// CUDA execution provider with its options. It returns the device the
// session will run on. When the provider cannot be appended — a CPU-only
// ONNX Runtime library, no driver, no GPU — it falls back to cpu with a
// loud warning, never silently: the returned device says so, and serve
// exports it as seer_scoring_device{requested,actual}.
func configure(opts *ort.SessionOptions, cfg Config, log *slog.Logger) (device string, err error) {
	if err := opts.SetIntraOpNumThreads(cfg.IntraOpThreads); err != nil {
		return "", fmt.Errorf("scoring.intra_op_threads: %w", err)
	}
	if err := opts.SetInterOpNumThreads(cfg.InterOpThreads); err != nil {
		return "", fmt.Errorf("scoring.inter_op_threads: %w", err)
	}
	spin := "0"
	if cfg.Spinning {
		spin = "1"
	}
	if err := opts.AddSessionConfigEntry("session.intra_op.allow_spinning", spin); err != nil {
		return "", fmt.Errorf("scoring.spinning: %w", err)
	}
	if err := opts.AddSessionConfigEntry("session.inter_op.allow_spinning", spin); err != nil {
		return "", fmt.Errorf("scoring.spinning: %w", err)
	}
	if cfg.Device == "cpu" {
		return "cpu", nil
	}
	id, err := cudaDeviceID(cfg.Device)
	if err != nil {
		return "", fmt.Errorf("scoring.device: %w", err)
	}
	if err := appendCUDA(opts, id, cfg.CUDA); err != nil {
		log.Warn("CUDA execution provider unavailable; FALLING BACK TO CPU", "requested", cfg.Device, "actual", "cpu", "err", err)
		return "cpu", nil
	}
	log.Info("using the CUDA execution provider", "device", cfg.Device, "ort_version", ort.GetVersion(),
		"arena_extend_strategy", cfg.CUDA.ArenaExtendStrategy, "cudnn_conv_algo_search", cfg.CUDA.CudnnConvAlgoSearch, "use_tf32", cfg.CUDA.UseTF32)
	return cfg.Device, nil
}

func appendCUDA(opts *ort.SessionOptions, id int, c CUDAConfig) error {
	cuda, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return err
	}
	defer cuda.Destroy()
	o := map[string]string{
		"device_id":              strconv.Itoa(id),
		"arena_extend_strategy":  c.ArenaExtendStrategy,
		"cudnn_conv_algo_search": c.CudnnConvAlgoSearch,
		"use_tf32":               "0",
	}
	if c.UseTF32 {
		o["use_tf32"] = "1"
	}
	if c.MemLimit > 0 {
		o["gpu_mem_limit"] = strconv.FormatInt(c.MemLimit, 10)
	}
	if err := cuda.Update(o); err != nil {
		return fmt.Errorf("CUDA provider options: %w", err)
	}
	return opts.AppendExecutionProviderCUDA(cuda)
}
