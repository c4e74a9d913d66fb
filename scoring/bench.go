package scoring

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"time"

	ort "github.com/yalue/onnxruntime_go"
)

// RawSession runs an ONNX model that has one float32 input of shape
// [rows, width] and reads its first float32 output, without a package
// manifest: for benchmarks and device checks of any such model. It is safe
// for concurrent use, as a Model is.
type RawSession struct {
	session   *ort.DynamicAdvancedSession
	inputName string
	width     int
	output    string
	device    string
}

// OpenRaw opens path on the device of cfg (falling back to cpu as Open
// does; Device says which).
func OpenRaw(path string, cfg Config, logger *slog.Logger) (*RawSession, error) {
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, fmt.Errorf("reading ONNX signature of %s: %w", path, err)
	}
	if len(ins) != 1 || ins[0].DataType != ort.TensorElementDataTypeFloat || len(ins[0].Dimensions) != 2 || ins[0].Dimensions[1] <= 0 {
		return nil, fmt.Errorf("%s: want one float32 input of shape [rows, width], got %v", path, ins)
	}
	r := &RawSession{width: int(ins[0].Dimensions[1]), inputName: ins[0].Name}
	for _, o := range outs {
		if o.DataType == ort.TensorElementDataTypeFloat && o.OrtValueType == ort.ONNXTypeTensor {
			r.output = o.Name
			break
		}
	}
	if r.output == "" {
		return nil, fmt.Errorf("%s: no float32 tensor output among %v", path, outs)
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("creating session options: %w", err)
	}
	defer opts.Destroy()
	if r.device, err = configure(opts, cfg, logger.With("component", "scoring", "model", path)); err != nil {
		return nil, err
	}
	if r.session, err = ort.NewDynamicAdvancedSession(path, []string{ins[0].Name}, []string{r.output}, opts); err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	return r, nil
}

// Width is the number of input columns.
func (r *RawSession) Width() int { return r.width }

// Device is the device the session runs on.
func (r *RawSession) Device() string { return r.device }

// Run scores rows rows of input (rows × Width values) and returns the
// first float32 output's values.
func (r *RawSession) Run(rows int, input []float32) ([]float32, error) {
	if len(input) != rows*r.width {
		return nil, fmt.Errorf("input has %d values, want %d rows × %d", len(input), rows, r.width)
	}
	in, err := ort.NewTensor(ort.NewShape(int64(rows), int64(r.width)), input)
	if err != nil {
		return nil, err
	}
	defer in.Destroy()
	outs := []ort.Value{nil}
	if err := r.session.Run([]ort.Value{in}, outs); err != nil {
		return nil, err
	}
	defer outs[0].Destroy()
	t, ok := outs[0].(*ort.Tensor[float32])
	if !ok {
		return nil, errors.New("output is not a float32 tensor")
	}
	return append([]float32(nil), t.GetData()...), nil
}

// Close releases the session.
func (r *RawSession) Close() error { return r.session.Destroy() }

// RandomInput returns rows × width standard normal values from seed.
func RandomInput(rows, width int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, seed+1))
	out := make([]float32, rows*width)
	for i := range out {
		out[i] = float32(rng.NormFloat64())
	}
	return out
}

// BenchResult is the speed of one device at one batch size.
type BenchResult struct {
	Device            string  `json:"device"`
	Batch             int     `json:"batch"`
	Runs              int     `json:"runs"`
	MicrosPerBatch    float64 `json:"us_per_batch"`
	PredictionsPerSec float64 `json:"predictions_per_s"`
}

// Bench times Run at one batch size: three warm-up runs (they pay for
// allocations and, on a GPU, kernel selection), then runs until minTime
// has passed and at least five were made.
func Bench(r *RawSession, batch int, minTime time.Duration) (BenchResult, error) {
	input := RandomInput(batch, r.width, uint64(batch))
	for range 3 {
		if _, err := r.Run(batch, input); err != nil {
			return BenchResult{}, err
		}
	}
	res := BenchResult{Device: r.device, Batch: batch}
	start := time.Now()
	for res.Runs < 5 || time.Since(start) < minTime {
		if _, err := r.Run(batch, input); err != nil {
			return BenchResult{}, err
		}
		res.Runs++
	}
	el := time.Since(start)
	res.MicrosPerBatch = float64(el.Microseconds()) / float64(res.Runs)
	res.PredictionsPerSec = float64(batch*res.Runs) / el.Seconds()
	return res, nil
}

// MaxAbsDiff is the largest absolute difference between a and b, which
// must have the same length; +Inf when they differ in length.
func MaxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = max(m, math.Abs(float64(a[i])-float64(b[i])))
	}
	return m
}
