package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"

	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring"
)

// Gates are the checks a package passes before it is registered.
type Gates struct {
	Schema           *schemas.InputSchema // the live input topic's schema
	Scoring          scoring.Config       // how to run the examples (always on the CPU)
	RequireSignature bool                 // registry.require_signature
	TrustedKeys      []dsse.Verifier      // registry.trusted_keys
}

// Check runs every gate on the package in dir — the manifest is complete,
// the ONNX signature and the input schema fit it, the examples reproduce
// their outputs, the signature verifies (required, or present) — and
// returns an error that names every failed gate, not just the first. It
// needs scoring.InitRuntime.
func (g Gates) Check(ctx context.Context, dir string) (*schemas.Manifest, *PackageFacts, error) {
	m, err := schemas.LoadManifest(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("gate manifest: %w", err)
	}
	var errs []error
	gate := func(name string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("gate %s: %w", name, err))
		}
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"owner", m.Owner}, {"description", m.Description}, {"lineage.dataset", m.Lineage.Dataset}, {"lineage.code", m.Lineage.Code}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if m.Evaluation == nil || m.Evaluation.Rows == 0 || m.Evaluation.AUC == 0 {
		missing = append(missing, "evaluation (rows, auc, brier on held-out data)")
	}
	if len(missing) > 0 {
		gate("manifest", fmt.Errorf("incomplete: %v", missing))
	}
	before := len(errs)
	gate("hash", m.Verify())
	if _, err := scoring.CheckSignature(m); err != nil {
		gate("onnx", err)
	}
	gate("schema", m.CheckAgainstSchema(g.Schema))
	runnable := len(errs) == before // the model can be opened and fed events
	exs, err := schemas.LoadExamples(dir)
	switch {
	case err != nil:
		gate("examples", err)
	case len(exs) == 0:
		gate("examples", fmt.Errorf("%s has no held-out examples", schemas.ExamplesFile))
	case runnable:
		cfg := g.Scoring
		cfg.Device = "cpu"
		mod, err := scoring.Open(cfg, m, g.Schema, schemas.RouteProduction, slog.New(slog.DiscardHandler))
		if err != nil {
			gate("examples", err)
			break
		}
		gate("examples", mod.CheckExamples(ctx, g.Schema, exs))
		mod.Close()
	}
	files, err := hashFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	facts := &PackageFacts{Owner: m.Owner, Description: m.Description, ONNXSHA256: m.Artifact.SHA256,
		Dataset: m.Lineage.Dataset, Code: m.Lineage.Code, CodeSHA256: m.Lineage.CodeSHA256, Files: files, Metrics: map[string]float64{}}
	if m.Evaluation != nil {
		facts.Metrics["auc"], facts.Metrics["brier"] = m.Evaluation.AUC, m.Evaluation.Brier
	}
	_, statErr := os.Stat(filepath.Join(dir, SignatureFile))
	signed := statErr == nil
	switch {
	case signed && len(g.TrustedKeys) > 0:
		if _, id, err := Verify(ctx, dir, g.TrustedKeys...); err != nil {
			gate("signature", err)
		} else {
			facts.SignedBy = id
		}
	case g.RequireSignature && !signed:
		gate("signature", fmt.Errorf("%w: registry.require_signature is on", ErrUnsigned))
	case g.RequireSignature:
		gate("signature", fmt.Errorf("%w: registry.trusted_keys is empty", ErrUntrustedKey))
	}
	if signed {
		sum, err := fileSHA256(filepath.Join(dir, SignatureFile))
		if err != nil {
			return nil, nil, err
		}
		files[SignatureFile] = sum
	}
	if err := errors.Join(errs...); err != nil {
		return m, nil, fmt.Errorf("%s %s refused: %w", m.Name, m.Version, err)
	}
	return m, facts, nil
}

// Register checks the gates, copies the package into the store and
// appends a version_registered event. Registering the same package again
// writes nothing and returns already; another package under an existing
// version is an error.
func Register(ctx context.Context, log *Log, store *Store, g Gates, dir, actor, reason string) (e Event, already bool, err error) {
	m, facts, err := g.Check(ctx, dir)
	if err != nil {
		return Event{}, false, err
	}
	digest := Digest(facts.Files)
	st, _, err := log.Read(ctx)
	if err != nil {
		return Event{}, false, err
	}
	e = Event{ID: NewID(), Type: VersionRegistered, Model: m.Name, Version: m.Version, Actor: actor, Reason: reason,
		Time: time.Now().UTC(), Digest: digest, Package: facts}
	if mm := st.Models[m.Name]; mm != nil && mm.Versions[m.Version] != nil {
		if mm.Versions[m.Version].Digest == digest {
			return *mm.Versions[m.Version], true, nil
		}
		return Event{}, false, st.Apply(e)
	}
	if e.Artifact, err = store.Put(ctx, m.Name, digest, dir, facts.Files); err != nil {
		return Event{}, false, err
	}
	if err := log.Append(ctx, e); err != nil {
		return Event{}, false, err
	}
	after, _, err := log.Read(ctx)
	if err != nil {
		return Event{}, false, err
	}
	if !after.Applied(e.ID) {
		return Event{}, false, fmt.Errorf("%s %s was registered with another package by a concurrent request", m.Name, m.Version)
	}
	return e, false, nil
}
