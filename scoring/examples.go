package scoring

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/seer-ml/seer/schemas"
)

// ExampleTolerance is how far a score may be from an example's expected
// output: float32 arithmetic in different ONNX Runtime builds.
const ExampleTolerance = 1e-5

// CheckExamples scores the package's examples as serve would — the event
// decoded against the input schema, the features bound by the manifest's
// feature-view plan — and returns an error naming every example whose
// score is not its expected output within ExampleTolerance.
func (m *Model) CheckExamples(ctx context.Context, schema *schemas.InputSchema, exs []schemas.Example) error {
	if len(exs) == 0 {
		return nil
	}
	views, features := m.Manifest.FeatureViews()
	out := m.Manifest.Outputs[0].Name
	items := make([]schemas.Item, len(exs))
	undecoded := make([]bool, len(exs))
	var errs []error
	for i := range exs {
		ex := &exs[i]
		ev, derr := schema.Decode(nil, ex.Event, schemas.Source{Topic: "examples", Offset: int64(ex.Line)})
		if derr != nil {
			errs = append(errs, fmt.Errorf("example on line %d: event: %v", ex.Line, derr))
			items[i].Reject, undecoded[i] = derr, true
			continue
		}
		items[i].Event = ev
		for _, view := range views {
			st := schemas.FeatureState{View: view, Values: make([]schemas.Value, len(features[view]))}
			for j, f := range features[view] {
				v, err := ex.FeatureValue(view, f)
				if err != nil {
					errs = append(errs, err)
				}
				st.Values[j] = v
			}
			items[i].Features = append(items[i].Features, st)
		}
	}
	if err := m.Score(ctx, items); err != nil {
		return err
	}
	bad := 0
	for i := range exs {
		want, ok := exs[i].Outputs[out]
		switch {
		case undecoded[i]: // reported above
		case items[i].Reject != nil:
			errs = append(errs, fmt.Errorf("example on line %d: not scored: %v", exs[i].Line, items[i].Reject))
		case !ok:
			errs = append(errs, fmt.Errorf("example on line %d: outputs: no %q", exs[i].Line, out))
		case math.Abs(float64(items[i].Score)-want) > ExampleTolerance:
			if bad++; bad <= 5 {
				errs = append(errs, fmt.Errorf("example on line %d: %s = %.7g, expected %.7g", exs[i].Line, out, items[i].Score, want))
			}
		}
	}
	if bad > 5 {
		errs = append(errs, fmt.Errorf("… and %d more examples off by more than %g", bad-5, ExampleTolerance))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("examples of %s %s do not reproduce: %w", m.Manifest.Name, m.Manifest.Version, err)
	}
	return nil
}
