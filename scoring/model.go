// Package scoring runs model packages with ONNX Runtime.
//
// InitRuntime loads libonnxruntime once per process. Open verifies a model
// package (manifest, artifact hash, ONNX signature against the manifest and
// the input schema) and creates one DynamicAdvancedSession for it. A Model's
// Score is safe for concurrent use: ONNX Runtime's Run is thread-safe, and
// each call owns its tensors.
package scoring

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/seer-ml/seer/schemas"
)

// Config configures the scoring runtime.
type Config struct {
	Package        string     `yaml:"package"`          // model package folder (model.yaml + model.onnx), when not following the registry
	Model          string     `yaml:"model"`            // follow this model in the registry (scoring.package is then ignored)
	Alias          string     `yaml:"alias"`            // … and the version behind this alias
	Device         string     `yaml:"device"`           // cpu or cuda:N
	IntraOpThreads int        `yaml:"intra_op_threads"` // threads inside one Run
	InterOpThreads int        `yaml:"inter_op_threads"`
	Spinning       bool       `yaml:"spinning"`  // let ORT threads spin; off suits small machines
	MaxBatch       int        `yaml:"max_batch"` // rows per ONNX Run; a polled batch larger than this runs in parts (0: one Run per batch)
	CUDA           CUDAConfig `yaml:"cuda"`      // with device cuda:N
}

// CUDAConfig holds the options of ONNX Runtime's CUDA execution provider.
type CUDAConfig struct {
	ArenaExtendStrategy string `yaml:"arena_extend_strategy"`  // kNextPowerOfTwo or kSameAsRequested
	CudnnConvAlgoSearch string `yaml:"cudnn_conv_algo_search"` // EXHAUSTIVE, HEURISTIC or DEFAULT
	MemLimit            int64  `yaml:"mem_limit"`              // bytes of GPU memory for the arena; 0 for no limit
	// UseTF32 lets cuBLAS multiply float32 matrices in TF32 (10-bit
	// mantissa) on Ampere and later GPUs: faster, but scores then differ
	// from the CPU's in the fourth decimal. Off by default.
	UseTF32 bool `yaml:"use_tf32"`
}

// DefaultConfig suits a 2-core machine: one intra-op thread, no spinning.
// On a GPU, larger batches pay: raise kafka.max_poll_records and leave
// max_batch at 0, or cap it at what the GPU's memory holds.
func DefaultConfig() Config {
	return Config{Package: "deploy/examples/card-fraud", Alias: "champion", Device: "cpu", IntraOpThreads: 1, InterOpThreads: 1,
		CUDA: CUDAConfig{ArenaExtendStrategy: "kNextPowerOfTwo", CudnnConvAlgoSearch: "HEURISTIC"}}
}

// Validate names the first bad field.
func (c *Config) Validate() error {
	if c.Package == "" && c.Model == "" {
		return errors.New("scoring.package or scoring.model: one is required")
	}
	if c.Model != "" && c.Alias == "" {
		return errors.New("scoring.alias: required with scoring.model")
	}
	if _, err := cudaDeviceID(c.Device); c.Device != "cpu" && err != nil {
		return fmt.Errorf("scoring.device: %q is not cpu or cuda:N", c.Device)
	}
	switch c.CUDA.ArenaExtendStrategy {
	case "kNextPowerOfTwo", "kSameAsRequested":
	default:
		return fmt.Errorf("scoring.cuda.arena_extend_strategy: %q is not kNextPowerOfTwo or kSameAsRequested", c.CUDA.ArenaExtendStrategy)
	}
	switch c.CUDA.CudnnConvAlgoSearch {
	case "EXHAUSTIVE", "HEURISTIC", "DEFAULT":
	default:
		return fmt.Errorf("scoring.cuda.cudnn_conv_algo_search: %q is not EXHAUSTIVE, HEURISTIC or DEFAULT", c.CUDA.CudnnConvAlgoSearch)
	}
	if c.CUDA.MemLimit < 0 || c.MaxBatch < 0 {
		return errors.New("scoring.cuda.mem_limit and scoring.max_batch: must not be negative")
	}
	if c.IntraOpThreads < 1 {
		return fmt.Errorf("scoring.intra_op_threads: %d must be at least 1", c.IntraOpThreads)
	}
	if c.InterOpThreads < 1 {
		return fmt.Errorf("scoring.inter_op_threads: %d must be at least 1", c.InterOpThreads)
	}
	return nil
}

var (
	initMu  sync.Mutex
	initLib string
)

// InitRuntime loads the ONNX Runtime shared library at lib. Calling it again
// with the same path is a no-op; a different path is an error, since ONNX
// Runtime has one environment per process.
func InitRuntime(lib string) error {
	initMu.Lock()
	defer initMu.Unlock()
	if ort.IsInitialized() {
		if lib != initLib {
			return fmt.Errorf("onnxruntime already initialized from %s, not %s", initLib, lib)
		}
		return nil
	}
	if lib == "" {
		return errors.New("onnxruntime_lib: required (set it in the config or SEER_ONNXRUNTIME_LIB; `make stack-up` installs it under .cache/onnxruntime)")
	}
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("loading onnxruntime from %s: %w", lib, err)
	}
	initLib = lib
	return nil
}

// Model is one loaded, verified model version.
type Model struct {
	Manifest *schemas.Manifest
	Route    schemas.Route
	session  *ort.DynamicAdvancedSession
	inputs   []binding
	names    []string // input names, shared by every scored item
	outNames []string // distinct ONNX output tensors to fetch
	outIdx   []int    // element index along axis 1 of each output tensor
	thresh   float32
	device   string // the device sessions run on: cpu, or cuda:N
	maxBatch int
	log      *slog.Logger
}

// Device returns the device the model runs on: the configured cuda:N, or
// cpu when the CUDA provider was not available (see configure).
func (m *Model) Device() string { return m.device }

// binding says where one column of the input tensor comes from.
type binding struct {
	in      *schemas.Input
	event   int // index into Event.Values, or -1
	view    int // index into Item.Features, or -1
	feature int // index into FeatureState.Values
}

// CheckSignature verifies that the ONNX file matches the manifest: the input
// tensor exists with element type float32 and width len(inputs), and every
// output tensor exists. It needs InitRuntime.
func CheckSignature(m *schemas.Manifest) (outWidths []int, err error) {
	ins, outs, err := ort.GetInputOutputInfo(m.ArtifactPath())
	if err != nil {
		return nil, fmt.Errorf("reading ONNX signature of %s: %w", m.ArtifactPath(), err)
	}
	var found bool
	var names []string
	for _, in := range ins {
		names = append(names, in.Name)
		if in.Name != m.Artifact.Input {
			continue
		}
		found = true
		if in.DataType != ort.TensorElementDataTypeFloat {
			return nil, fmt.Errorf("artifact.input: ONNX input %q has element type %v, manifest says float32", in.Name, in.DataType)
		}
		if len(in.Dimensions) != 2 || (in.Dimensions[1] != int64(len(m.Inputs)) && in.Dimensions[1] > 0) {
			return nil, fmt.Errorf("inputs: ONNX input %q has shape %v, manifest declares %d inputs (want [batch, %d])", in.Name, in.Dimensions, len(m.Inputs), len(m.Inputs))
		}
	}
	if !found {
		return nil, fmt.Errorf("artifact.input: ONNX model has no input %q (it has %v)", m.Artifact.Input, names)
	}
	if len(ins) != 1 {
		return nil, fmt.Errorf("artifact.input: ONNX model has %d inputs %v; seer feeds exactly one", len(ins), names)
	}
	for i, o := range m.Outputs {
		w := -1
		var outNames []string
		for _, oi := range outs {
			outNames = append(outNames, oi.Name)
			if oi.Name != o.Tensor {
				continue
			}
			if oi.DataType != ort.TensorElementDataTypeFloat {
				return nil, fmt.Errorf("outputs[%d].tensor: ONNX output %q has element type %v, want float32", i, o.Tensor, oi.DataType)
			}
			w = 1
			if len(oi.Dimensions) == 2 {
				w = int(oi.Dimensions[1])
			}
		}
		if w == -1 {
			return nil, fmt.Errorf("outputs[%d].tensor: ONNX model has no output %q (it has %v)", i, o.Tensor, outNames)
		}
		if w > 0 && o.Index >= w {
			return nil, fmt.Errorf("outputs[%d].index: %d is out of range for ONNX output %q of width %d", i, o.Index, o.Tensor, w)
		}
		outWidths = append(outWidths, w)
	}
	return outWidths, nil
}

// Open verifies a model package and opens an ONNX Runtime session for it;
// its inputs are bound to the schema's fields and to the feature-view plan
// of schemas.Manifest.FeatureViews, which fills Item.Features.
func Open(cfg Config, m *schemas.Manifest, schema *schemas.InputSchema, route schemas.Route, logger *slog.Logger) (*Model, error) {
	if err := m.Verify(); err != nil {
		return nil, err
	}
	if err := m.CheckAgainstSchema(schema); err != nil {
		return nil, err
	}
	if _, err := CheckSignature(m); err != nil {
		return nil, err
	}
	mod := &Model{Manifest: m, Route: route, thresh: 0.5, maxBatch: cfg.MaxBatch,
		log: logger.With("component", "scoring", "model", m.Name, "version", m.Version)}
	if m.Threshold != nil {
		mod.thresh = float32(*m.Threshold)
	}
	views, features := m.FeatureViews()
	for i := range m.Inputs {
		in := &m.Inputs[i]
		src, _ := schemas.ParseSource(in.Source)
		b := binding{in: in, event: -1, view: -1}
		if src.Kind == schemas.SourceEvent {
			b.event, _ = schema.FieldIndex(src.Field)
		} else {
			b.view = slices.Index(views, src.View)
			b.feature = slices.Index(features[src.View], src.Feature)
		}
		mod.inputs = append(mod.inputs, b)
		mod.names = append(mod.names, in.Name)
	}
	var outNames []string
	for _, o := range m.Outputs {
		outNames = append(outNames, o.Tensor)
		mod.outIdx = append(mod.outIdx, o.Index)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("creating session options: %w", err)
	}
	defer opts.Destroy()
	if mod.device, err = configure(opts, cfg, mod.log); err != nil {
		return nil, err
	}
	mod.outNames = dedupe(outNames)
	mod.session, err = ort.NewDynamicAdvancedSession(m.ArtifactPath(), []string{m.Artifact.Input}, mod.outNames, opts)
	if err != nil {
		return nil, fmt.Errorf("opening model %s %s: %w", m.Name, m.Version, err)
	}
	return mod, nil
}

func dedupe(names []string) []string {
	var out []string
	for _, n := range names {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// Close releases the session.
func (m *Model) Close() error { return m.session.Destroy() }

// Score runs the model over every item whose Reject is nil — once, or in
// runs of at most max_batch rows — and fills its Inputs, outputs, ids and
// ScoredTime. It returns an error only when a run failed as a whole.
func (m *Model) Score(ctx context.Context, items []schemas.Item) error {
	if m.maxBatch <= 0 {
		return m.run(items)
	}
	start, rows := 0, 0
	for i := range items {
		if items[i].Reject == nil {
			rows++
		}
		if rows == m.maxBatch || i == len(items)-1 {
			if err := m.run(items[start : i+1]); err != nil {
				return err
			}
			start, rows = i+1, 0
		}
	}
	return nil
}

// run scores the items of one ONNX Run.
func (m *Model) run(items []schemas.Item) error {
	n := 0
	for i := range items {
		if items[i].Reject == nil {
			n++
		}
	}
	if n == 0 {
		return nil
	}
	width := len(m.inputs)
	data := make([]float32, 0, n*width)
	strs, missing := make([]string, n*width), make([]uint8, n*width)
	for i := range items {
		it := &items[i]
		if it.Reject != nil {
			continue
		}
		start := len(data)
		for _, b := range m.inputs {
			var v schemas.Value
			switch {
			case b.event >= 0:
				v = it.Event.Values[b.event]
			case b.view < len(it.Features) && b.feature < len(it.Features[b.view].Values):
				v = it.Features[b.view].Values[b.feature]
			}
			switch v.Kind {
			case schemas.KindString:
				strs[len(data)] = v.Str
			case schemas.KindAbsent:
				missing[len(data)] = 1
			}
			data = append(data, b.in.Encode(v))
		}
		end := len(data)
		it.Inputs = data[start:end:end]
		it.InputStrings, it.InputMissing = strs[start:end:end], missing[start:end:end]
		it.InputNames = m.names
	}
	t0 := time.Now()
	in, err := ort.NewTensor(ort.NewShape(int64(n), int64(width)), data)
	if err != nil {
		return fmt.Errorf("building input tensor: %w", err)
	}
	defer in.Destroy()
	names := m.outNames
	outs := make([]ort.Value, len(names))
	if err := m.session.Run([]ort.Value{in}, outs); err != nil {
		return fmt.Errorf("running model %s %s on %d rows: %w", m.Manifest.Name, m.Manifest.Version, n, err)
	}
	defer func() {
		for _, o := range outs {
			if o != nil {
				o.Destroy()
			}
		}
	}()
	score, ok := outs[slices.Index(names, m.Manifest.Outputs[0].Tensor)].(*ort.Tensor[float32])
	if !ok {
		return fmt.Errorf("model %s: output %q is not a float32 tensor", m.Manifest.Name, m.Manifest.Outputs[0].Tensor)
	}
	vals := score.GetData()
	w := len(vals) / n
	idx := m.outIdx[0]
	now := time.Now().UTC()
	took := now.Sub(t0)
	r := 0
	for i := range items {
		it := &items[i]
		if it.Reject != nil {
			continue
		}
		s := vals[r*w+idx]
		r++
		it.Model = m.Manifest.Name
		it.ModelVersion = m.Manifest.Version
		it.Route = m.Route
		if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
			it.Reject = &schemas.DecodeError{Reason: schemas.ReasonScoreFailed, Stage: schemas.StageScore, Detail: "model returned a non-finite score"}
			continue
		}
		it.Score = s
		it.Label = 0
		if s >= m.thresh {
			it.Label = 1
		}
		it.ScoringTime = took
		it.ScoredTime = now
		it.PredictionID = schemas.StableKSUID(it.Event.Time, it.Event.ID, m.Manifest.Name, m.Manifest.Version, string(m.Route))
	}
	return nil
}
