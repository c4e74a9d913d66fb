package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
)

// TestServeAlertRulesHaveRunbooks: every rule in deploy/prometheus names a
// runbook that exists.
func TestServeAlertRulesHaveRunbooks(t *testing.T) {
	root := testenv.RepoRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := schemas.DecodeStrictYAML(data, &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			rb := r.Annotations["runbook_url"]
			if _, err := os.Stat(filepath.Join(root, rb)); rb == "" || err != nil {
				t.Errorf("alert %s: runbook %q does not exist", r.Alert, rb)
			}
			if r.Expr == "" || r.Labels["severity"] == "" {
				t.Errorf("alert %s: needs an expr and a severity", r.Alert)
			}
		}
	}
	if n < 3 {
		t.Errorf("found %d rules, want the spool, stall and broker alerts", n)
	}
}
