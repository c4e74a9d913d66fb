package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/seer-ml/seer/drift/monitor"
	"github.com/seer-ml/seer/drift/notify"
	"github.com/seer-ml/seer/internal/testenv"
	"github.com/seer-ml/seer/schemas"
	"github.com/seer-ml/seer/scoring/registry"
)

// promRules reads the alerting rules of deploy/prometheus/*.yml.
func promRules(t *testing.T, root string) map[string]map[string]string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "deploy", "prometheus", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no rule files in deploy/prometheus: %v", err)
	}
	out := map[string]map[string]string{} // alert → annotations (and severity)
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rules struct {
			Groups []struct {
				Name  string `yaml:"name"`
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Record      string            `yaml:"record"`
					Expr        string            `yaml:"expr"`
					For         string            `yaml:"for"`
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		if err := schemas.DecodeStrictYAML(data, &rules); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				if r.Expr == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
					t.Errorf("alert %s: needs an expr, a severity and a summary", r.Alert)
				}
				a := map[string]string{"severity": r.Labels["severity"]}
				for k, v := range r.Annotations {
					a[k] = v
				}
				out[r.Alert] = a
			}
		}
	}
	return out
}

// runbookSection returns the text of the section a runbook URL
// (FILE#anchor) points at, or "" when the file or its heading is missing.
// Anchors are GitHub's: the heading in lower case.
func runbookSection(root, url string) string {
	file, anchor, _ := strings.Cut(url, "#")
	data, err := os.ReadFile(filepath.Join(root, file))
	if err != nil || anchor == "" {
		return ""
	}
	sections := regexp.MustCompile(`(?m)^## `).Split(string(data), -1)
	for _, s := range sections[1:] {
		heading, _, _ := strings.Cut(s, "\n")
		if strings.ToLower(strings.TrimSpace(heading)) == anchor {
			return s
		}
	}
	return ""
}

// TestEveryAlertHasARunbook: every alert seer can raise — the monitor's
// default rules and its rollout alerts (their runbook annotation), and the
// Prometheus rules (runbook_url) — links to a runbook section that exists
// and says what it means, the first three checks, how to mitigate and
// when to escalate.
func TestEveryAlertHasARunbook(t *testing.T) {
	root := testenv.RepoRoot(t)
	urls := map[string]string{} // alert → runbook URL
	for name, a := range promRules(t, root) {
		urls[name] = a["runbook_url"]
	}
	for _, r := range monitor.DefaultConfig().Rules {
		urls[r.Name] = notify.Runbook(r.Family, r.Name)
	}
	for _, typ := range []registry.EventType{registry.RolloutRolledBack, registry.RolloutPaused} {
		a := rolloutAlert(registry.Event{Type: typ})
		urls[a.Rule] = notify.Runbook(a.Family, a.Rule)
	}
	if len(urls) < 25 {
		t.Errorf("found %d alerts, want every monitor rule, rollout alert and Prometheus alert", len(urls))
	}
	for name, url := range urls {
		s := runbookSection(root, url)
		if s == "" {
			t.Errorf("alert %s: runbook %q: no such file or section", name, url)
			continue
		}
		for _, part := range []string{"**Means", "**First three checks", "**Mitigate.**", "**Escalate"} {
			if !strings.Contains(s, part) {
				t.Errorf("alert %s: runbook section %s lacks %s", name, url, part)
			}
		}
	}
}

// TestPrometheusRules runs promtool on deploy/prometheus: the rules check,
// and the unit tests in which every alert fires on its failure and stays
// silent on a healthy input.
func TestPrometheusRules(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Unavailable(t, "promtool not found (Debian package prometheus; deploy/local/stack.sh installs it)")
	}
	dir := filepath.Join(testenv.RepoRoot(t), "deploy", "prometheus")
	rules, _ := filepath.Glob(filepath.Join(dir, "*.yml"))
	tests, _ := filepath.Glob(filepath.Join(dir, "tests", "*.yml"))
	if len(rules) == 0 || len(tests) < len(rules) {
		t.Fatalf("rule files %v, test files %v: want a test file per rule file", rules, tests)
	}
	for _, args := range [][]string{append([]string{"check", "rules"}, rules...), append([]string{"test", "rules"}, tests...)} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args[:2], " "), err, out)
		}
	}
	// Every alert is exercised by a test.
	var all strings.Builder
	for _, f := range tests {
		b, _ := os.ReadFile(f)
		all.Write(b)
	}
	for name := range promRules(t, testenv.RepoRoot(t)) {
		if !strings.Contains(all.String(), "alertname: "+name+"\n") {
			t.Errorf("alert %s has no promtool test", name)
		}
	}
}
