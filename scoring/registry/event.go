package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// EventType says what one registry event records.
type EventType string

// Registry events.
const (
	VersionRegistered EventType = "version_registered" // a package was registered as a new, immutable version
	AliasSet          EventType = "alias_set"          // an alias was pointed at a version
	VersionLoaded     EventType = "version_loaded"     // a serve instance loaded a version
	LoadFailed        EventType = "load_failed"        // a serve instance refused or failed to load a version

	RolloutStarted    EventType = "rollout_started"     // a candidate version's rollout began at its first step
	RolloutStepped    EventType = "rollout_stepped"     // the rollout moved to its next step
	RolloutPaused     EventType = "rollout_paused"      // the rollout stopped at its step (too few samples, or by hand)
	RolloutPromoted   EventType = "rollout_promoted"    // the candidate became the alias's version
	RolloutRolledBack EventType = "rollout_rolled_back" // the candidate was taken off every route
)

// Event is one record of the registry log (the topic registry.topic),
// keyed by model name. The registry's state is the fold of its events, in
// log order. Every event carries a ksuid id, the actor, the reason and the
// time.
type Event struct {
	ID      string    `json:"id"`
	Type    EventType `json:"type"`
	Model   string    `json:"model"`
	Version string    `json:"version,omitempty"`
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`

	// alias_set: the alias, and the version it pointed at when the move
	// was asked ("" for none). A move whose Previous is no longer current
	// lost a race and is not applied.
	Alias    string `json:"alias,omitempty"`
	Previous string `json:"previous,omitempty"`

	// version_registered: the package's digest (sha256 over its files'
	// digests), where the artifact store keeps it, and what it is.
	Digest   string        `json:"digest,omitempty"`
	Artifact string        `json:"artifact,omitempty"`
	Package  *PackageFacts `json:"package,omitempty"`

	// version_loaded, load_failed: the serve instance.
	Instance string `json:"instance,omitempty"`

	// rollout_*: the rollout, its steps ("shadow" or a canary weight in
	// percent), the step it is at, how long each step is held, and the
	// gate and figures that decided a step, a pause or a rollback.
	Rollout      string             `json:"rollout,omitempty"`
	Steps        []string           `json:"steps,omitempty"`
	Step         int                `json:"step,omitempty"`
	StepDuration string             `json:"step_duration,omitempty"`
	Gate         string             `json:"gate,omitempty"`
	Figures      map[string]float64 `json:"figures,omitempty"`
}

// PackageFacts is what a registered version is: its owner, lineage,
// held-out metrics, ONNX hash and who signed it.
type PackageFacts struct {
	Owner       string             `json:"owner"`
	Description string             `json:"description,omitempty"`
	ONNXSHA256  string             `json:"onnx_sha256"`
	Dataset     string             `json:"dataset"`
	Code        string             `json:"code"`
	CodeSHA256  string             `json:"code_sha256,omitempty"`
	Metrics     map[string]float64 `json:"metrics"`
	Files       map[string]string  `json:"files"` // path → sha256
	SignedBy    string             `json:"signed_by,omitempty"`
}

// DecodeEvent decodes one registry record strictly and checks the fields
// its type needs, naming the first one missing.
func DecodeEvent(data []byte) (Event, error) {
	var e Event
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Errorf("registry event: %w", err)
	}
	if dec.More() {
		return e, fmt.Errorf("registry event: more than one JSON value")
	}
	need := func(field, v string) error {
		if strings.TrimSpace(v) == "" {
			return fmt.Errorf("registry event %s (%s): %s: required", e.ID, e.Type, field)
		}
		return nil
	}
	for _, f := range []struct{ name, v string }{{"id", e.ID}, {"model", e.Model}, {"version", e.Version}, {"actor", e.Actor}} {
		if err := need(f.name, f.v); err != nil {
			return e, err
		}
	}
	if e.Time.IsZero() {
		return e, fmt.Errorf("registry event %s: time: required", e.ID)
	}
	switch e.Type {
	case VersionRegistered:
		if err := need("digest", e.Digest); err != nil {
			return e, err
		}
		if e.Package == nil {
			return e, fmt.Errorf("registry event %s (%s): package: required", e.ID, e.Type)
		}
	case AliasSet:
		if err := need("alias", e.Alias); err != nil {
			return e, err
		}
	case VersionLoaded, LoadFailed:
		if err := need("instance", e.Instance); err != nil {
			return e, err
		}
	case RolloutStarted, RolloutStepped, RolloutPaused, RolloutPromoted, RolloutRolledBack:
		if err := need("rollout", e.Rollout); err != nil {
			return e, err
		}
		if e.Type == RolloutStarted {
			if err := ParseSteps(e.Steps); err != nil {
				return e, fmt.Errorf("registry event %s (%s): steps: %w", e.ID, e.Type, err)
			}
		}
	default:
		return e, fmt.Errorf("registry event %s: type: %q is not a registry event type", e.ID, e.Type)
	}
	return e, nil
}
