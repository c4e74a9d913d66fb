package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ManifestFile is the name of the manifest inside a model package folder.
const ManifestFile = "model.yaml"

// Input dtypes a manifest can declare. Every input becomes one float32 column
// of the model's input tensor: categories by their index in Categories (an
// unknown category maps to the index of "other" when listed, else -1),
// booleans as 0 or 1.
const (
	DtypeFloat    = "float"
	DtypeInt      = "int"
	DtypeBool     = "bool"
	DtypeCategory = "category"
)

// Manifest is a model package's model.yaml.
type Manifest struct {
	Name        string      `yaml:"name"`
	Version     string      `yaml:"version"`
	Owner       string      `yaml:"owner"`
	Description string      `yaml:"description"`
	Artifact    Artifact    `yaml:"artifact"`
	Lineage     Lineage     `yaml:"lineage"`
	Inputs      []Input     `yaml:"inputs"`
	Outputs     []Output    `yaml:"outputs"`
	Threshold   *float64    `yaml:"threshold"`
	Evaluation  *Evaluation `yaml:"evaluation"` // metrics on held-out data; registration requires them
	Profile     Profile     `yaml:"profile"`
	Dir         string      `yaml:"-"` // the package folder, set by LoadManifest
}

// Artifact names the ONNX file, its hash and its input tensor.
type Artifact struct {
	File   string `yaml:"file"`
	SHA256 string `yaml:"sha256"`
	Input  string `yaml:"input"` // name of the ONNX input tensor, shape [batch, len(inputs)]
	Dtype  string `yaml:"dtype"` // element type of that tensor: float32
}

// Lineage records where the model came from.
type Lineage struct {
	Dataset    string            `yaml:"dataset"`
	Code       string            `yaml:"code"`
	CodeSHA256 string            `yaml:"code_sha256"`
	Frameworks map[string]string `yaml:"frameworks"`
	Params     map[string]any    `yaml:"params"` // training hyperparameters
}

// Evaluation holds a model's metrics on held-out data, which registration
// gates and rollouts compare against.
type Evaluation struct {
	Dataset      string  `yaml:"dataset"`
	Rows         int64   `yaml:"rows"`
	AUC          float64 `yaml:"auc"`
	Brier        float64 `yaml:"brier"`
	PositiveRate float64 `yaml:"positive_rate"`
}

// Input is one model input and where its value comes from.
type Input struct {
	Name       string   `yaml:"name"`
	Source     string   `yaml:"source"` // event.<field> or feature.<view>.<feature>
	Dtype      string   `yaml:"dtype"`
	Default    any      `yaml:"default"`
	Min        *float64 `yaml:"min"`
	Max        *float64 `yaml:"max"`
	Categories []string `yaml:"categories"`
}

// Output is one model output: element Index along axis 1 of ONNX output Tensor.
type Output struct {
	Name   string `yaml:"name"`
	Tensor string `yaml:"tensor"`
	Index  int    `yaml:"index"`
	Dtype  string `yaml:"dtype"`
}

// Profile is the reference profile that drift is measured against.
type Profile struct {
	Rows     int64                    `yaml:"rows"`
	Features map[string]ColumnProfile `yaml:"features"`
	Outputs  map[string]ColumnProfile `yaml:"outputs"`
}

// ColumnProfile is the frozen reference distribution of one column. Numeric
// columns count edges[i] <= x < edges[i+1] in Counts[i], x < edges[0] in
// Underflow and x >= edges[last] in Overflow; categorical columns count each
// category in Frequencies, unlisted ones in Other.
type ColumnProfile struct {
	Kind        ProfileKind      `yaml:"kind"`
	Edges       []float64        `yaml:"edges,flow,omitempty"`
	Counts      []int64          `yaml:"counts,flow,omitempty"`
	Underflow   int64            `yaml:"underflow"`
	Overflow    int64            `yaml:"overflow"`
	Missing     int64            `yaml:"missing"`
	Mean        float64          `yaml:"mean"`
	Std         float64          `yaml:"std"`
	Frequencies map[string]int64 `yaml:"frequencies,omitempty"`
	Other       int64            `yaml:"other"`
}

// ProfileKind says how a column is profiled and compared for drift.
type ProfileKind string

// Profile kinds.
const (
	ProfileNumeric     ProfileKind = "numeric"     // frozen bin edges with underflow, overflow and missing bins
	ProfileCategorical ProfileKind = "categorical" // category frequencies with "other"
)

// SourceKind tells where an input's value comes from.
type SourceKind int

// Input sources.
const (
	SourceEvent SourceKind = iota
	SourceFeature
)

// ParsedSource is an Input.Source split into its parts.
type ParsedSource struct {
	Kind    SourceKind
	Field   string // event field, for SourceEvent
	View    string // feature view, for SourceFeature
	Feature string // feature name, for SourceFeature
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_\-]*$`)

// ParseSource splits "event.<field>" or "feature.<view>.<name>".
func ParseSource(s string) (ParsedSource, error) {
	parts := strings.Split(s, ".")
	switch {
	case len(parts) == 2 && parts[0] == "event" && identRE.MatchString(parts[1]):
		return ParsedSource{Kind: SourceEvent, Field: parts[1]}, nil
	case len(parts) == 3 && parts[0] == "feature" && identRE.MatchString(parts[1]) && identRE.MatchString(parts[2]):
		return ParsedSource{Kind: SourceFeature, View: parts[1], Feature: parts[2]}, nil
	}
	return ParsedSource{}, fmt.Errorf("%q is not event.<field> or feature.<view>.<name>", s)
}

// LoadManifest reads dir/model.yaml and validates it. It does not open the
// ONNX file; Verify checks its hash, and scoring checks its signature.
func LoadManifest(dir string) (*Manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("reading model package: %w", err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	m.Dir = dir
	return m, nil
}

// ParseManifest decodes (strictly) and validates a model.yaml.
func ParseManifest(data []byte) (*Manifest, error) {
	var m Manifest
	if err := DecodeStrictYAML(data, &m); err != nil {
		return nil, err
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Validate checks required metadata and the consistency of inputs, outputs
// and profile. Errors name the field.
func (m *Manifest) Validate() error {
	var errs []error
	req := func(field, v string) {
		if strings.TrimSpace(v) == "" {
			errs = append(errs, fmt.Errorf("%s: required", field))
		}
	}
	req("name", m.Name)
	req("version", m.Version)
	req("owner", m.Owner)
	req("description", m.Description)
	req("artifact.file", m.Artifact.File)
	req("artifact.input", m.Artifact.Input)
	req("lineage.dataset", m.Lineage.Dataset)
	req("lineage.code", m.Lineage.Code)
	if m.Name != "" && !identRE.MatchString(m.Name) {
		errs = append(errs, fmt.Errorf("name: %q must be letters, digits, '_' or '-'", m.Name))
	}
	if !sha256RE.MatchString(m.Artifact.SHA256) {
		errs = append(errs, fmt.Errorf("artifact.sha256: %q is not 64 lowercase hex digits", m.Artifact.SHA256))
	}
	if m.Artifact.Dtype != "float32" {
		errs = append(errs, fmt.Errorf("artifact.dtype: %q is not supported (want float32)", m.Artifact.Dtype))
	}
	if strings.Contains(m.Artifact.File, "..") || filepath.IsAbs(m.Artifact.File) {
		errs = append(errs, fmt.Errorf("artifact.file: %q must be a path inside the package", m.Artifact.File))
	}
	if len(m.Inputs) == 0 {
		errs = append(errs, errors.New("inputs: at least one input is required"))
	}
	seen := map[string]bool{}
	for i := range m.Inputs {
		if err := m.Inputs[i].validate(); err != nil {
			errs = append(errs, fmt.Errorf("inputs[%d] (%s): %w", i, m.Inputs[i].Name, err))
		}
		if seen[m.Inputs[i].Name] {
			errs = append(errs, fmt.Errorf("inputs[%d].name: duplicate input %q", i, m.Inputs[i].Name))
		}
		seen[m.Inputs[i].Name] = true
	}
	if len(m.Outputs) == 0 {
		errs = append(errs, errors.New("outputs: at least one output (score) is required"))
	} else if m.Outputs[0].Name != "score" {
		errs = append(errs, fmt.Errorf("outputs[0].name: %q, want score (the first output is the score)", m.Outputs[0].Name))
	}
	for i, o := range m.Outputs {
		if o.Tensor == "" {
			errs = append(errs, fmt.Errorf("outputs[%d].tensor: required", i))
		}
		if o.Index < 0 {
			errs = append(errs, fmt.Errorf("outputs[%d].index: %d is negative", i, o.Index))
		}
	}
	if m.Threshold != nil && (*m.Threshold < 0 || *m.Threshold > 1) {
		errs = append(errs, fmt.Errorf("threshold: %v is outside [0, 1]", *m.Threshold))
	}
	if m.Profile.Rows <= 0 {
		errs = append(errs, errors.New("profile.rows: required (the number of training rows)"))
	}
	for _, in := range m.Inputs {
		p, ok := m.Profile.Features[in.Name]
		if !ok {
			errs = append(errs, fmt.Errorf("profile.features.%s: missing reference profile for input", in.Name))
			continue
		}
		if err := p.validate(); err != nil {
			errs = append(errs, fmt.Errorf("profile.features.%s: %w", in.Name, err))
		}
	}
	for name, p := range m.Profile.Outputs {
		if err := p.validate(); err != nil {
			errs = append(errs, fmt.Errorf("profile.outputs.%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (in *Input) validate() error {
	if !identRE.MatchString(in.Name) {
		return fmt.Errorf("name: %q must be letters, digits, '_' or '-'", in.Name)
	}
	if _, err := ParseSource(in.Source); err != nil {
		return fmt.Errorf("source: %w", err)
	}
	switch in.Dtype {
	case DtypeFloat, DtypeInt:
		if _, ok := in.DefaultNumber(); !ok {
			return fmt.Errorf("default: %v is not a number", in.Default)
		}
	case DtypeBool:
		if _, ok := in.Default.(bool); !ok {
			return fmt.Errorf("default: %v is not true or false", in.Default)
		}
	case DtypeCategory:
		if len(in.Categories) == 0 {
			return errors.New("categories: required for dtype category")
		}
		if _, ok := in.Default.(string); !ok {
			return fmt.Errorf("default: %v is not a string", in.Default)
		}
	default:
		return fmt.Errorf("dtype: %q is not one of float, int, bool, category", in.Dtype)
	}
	if in.Min != nil && in.Max != nil && *in.Min > *in.Max {
		return fmt.Errorf("min %v is greater than max %v", *in.Min, *in.Max)
	}
	return nil
}

// DefaultNumber returns a numeric default as float64.
func (in *Input) DefaultNumber() (float64, bool) {
	switch v := in.Default.(type) {
	case int:
		return float64(v), true
	case float64:
		return v, true
	}
	return 0, false
}

// Encode maps a value of this input to its float32 tensor element.
func (in *Input) Encode(v Value) float32 {
	switch in.Dtype {
	case DtypeCategory:
		s := v.Str
		if v.Kind == KindAbsent {
			s, _ = in.Default.(string)
		}
		return float32(in.categoryIndex(s))
	case DtypeBool:
		if v.Kind == KindAbsent {
			if b, _ := in.Default.(bool); b {
				return 1
			}
			return 0
		}
		if v.Num != 0 || v.Str == "true" || v.Str == "1" {
			return 1
		}
		return 0
	}
	if v.Kind != KindNumber {
		d, _ := in.DefaultNumber()
		return float32(d)
	}
	return float32(v.Num)
}

func (in *Input) categoryIndex(s string) int {
	other := -1
	for i, c := range in.Categories {
		if c == s {
			return i
		}
		if c == "other" {
			other = i
		}
	}
	return other
}

func (p *ColumnProfile) validate() error {
	switch p.Kind {
	case ProfileNumeric:
		if len(p.Edges) < 2 {
			return errors.New("edges: at least two edges are required")
		}
		for i := 1; i < len(p.Edges); i++ {
			if !(p.Edges[i] > p.Edges[i-1]) {
				return fmt.Errorf("edges: not strictly increasing at index %d", i)
			}
		}
		if len(p.Counts) != len(p.Edges)-1 {
			return fmt.Errorf("counts: %d bins for %d edges, want %d", len(p.Counts), len(p.Edges), len(p.Edges)-1)
		}
	case ProfileCategorical:
		if len(p.Frequencies) == 0 {
			return errors.New("frequencies: required for a categorical column")
		}
	default:
		return fmt.Errorf("kind: %q is not numeric or categorical", p.Kind)
	}
	return nil
}

// FeatureViews returns the feature views the model reads, in first-use order,
// with the features read from each, in first-use order.
func (m *Manifest) FeatureViews() (views []string, features map[string][]string) {
	features = map[string][]string{}
	for _, in := range m.Inputs {
		src, err := ParseSource(in.Source)
		if err != nil || src.Kind != SourceFeature {
			continue
		}
		if _, ok := features[src.View]; !ok {
			views = append(views, src.View)
		}
		if !slices.Contains(features[src.View], src.Feature) {
			features[src.View] = append(features[src.View], src.Feature)
		}
	}
	return views, features
}

// Verify checks that the artifact's SHA-256 matches the manifest.
func (m *Manifest) Verify() error {
	path := m.ArtifactPath()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("opening model artifact: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("hashing %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != m.Artifact.SHA256 {
		return fmt.Errorf("artifact.sha256: %s has sha256 %s, manifest says %s", path, got, m.Artifact.SHA256)
	}
	return nil
}

// ArtifactPath is the path of the ONNX file.
func (m *Manifest) ArtifactPath() string { return filepath.Join(m.Dir, m.Artifact.File) }

// CheckAgainstSchema checks that every event.<field> input is declared by the
// input schema with a type that fits the input's dtype.
func (m *Manifest) CheckAgainstSchema(s *InputSchema) error {
	var errs []error
	for i, in := range m.Inputs {
		src, _ := ParseSource(in.Source)
		if src.Kind != SourceEvent {
			continue
		}
		idx, ok := s.FieldIndex(src.Field)
		if !ok {
			errs = append(errs, fmt.Errorf("inputs[%d] (%s).source: field %q is not in input schema %s", i, in.Name, src.Field, s.Name))
			continue
		}
		ft := s.Fields[idx].Type
		okType := map[string][]FieldType{
			DtypeFloat:    {TypeNumber, TypeInteger, TypeTimestamp},
			DtypeInt:      {TypeNumber, TypeInteger, TypeTimestamp},
			DtypeBool:     {TypeBoolean},
			DtypeCategory: {TypeString},
		}[in.Dtype]
		if !slices.Contains(okType, ft) {
			errs = append(errs, fmt.Errorf("inputs[%d] (%s): dtype %s cannot read schema field %q of type %s", i, in.Name, in.Dtype, src.Field, ft))
		}
	}
	return errors.Join(errs...)
}
