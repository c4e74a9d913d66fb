package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

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

// dashboardTargets returns the queries of deploy/dashboards' panels on a
// datasource type: PromQL expressions, or ClickHouse SQL; the model
// dashboard's variable queries count as ClickHouse queries too.
func dashboardTargets(t *testing.T, dsType string) map[string]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(t), "deploy", "dashboards", "*.json"))
	out := map[string]string{} // panel title → query
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Templating struct {
				List []struct {
					Name       string `json:"name"`
					Datasource *struct {
						Type string `json:"type"`
					} `json:"datasource"`
					Query string `json:"query"`
				} `json:"list"`
			} `json:"templating"`
			Panels []struct {
				Title   string `json:"title"`
				Targets []struct {
					RefID      string `json:"refId"`
					Datasource struct {
						Type string `json:"type"`
					} `json:"datasource"`
					Expr   string `json:"expr"`
					RawSQL string `json:"rawSql"`
				} `json:"targets"`
			} `json:"panels"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				if tg.Datasource.Type != dsType {
					continue
				}
				out[p.Title+" "+tg.RefID] = tg.Expr + tg.RawSQL
			}
		}
		for _, v := range d.Templating.List {
			if v.Datasource != nil && v.Datasource.Type == dsType {
				out["variable "+v.Name] = v.Query
			}
		}
	}
	return out
}

// TestDashboardPromQL: every Prometheus panel query of deploy/dashboards
// parses (promtool checks them as recording rules).
func TestDashboardPromQL(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		testenv.Unavailable(t, "promtool not found (Debian package prometheus; deploy/local/stack.sh installs it)")
	}
	queries := dashboardTargets(t, "prometheus")
	if len(queries) < 10 {
		t.Fatalf("%d Prometheus panel queries, want the pipeline dashboard's", len(queries))
	}
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	i := 0
	for _, q := range queries {
		i++
		fmt.Fprintf(&b, "      - record: dashboard:query%d\n        expr: %q\n", i, q)
	}
	f := filepath.Join(t.TempDir(), "dashboards.yml")
	os.WriteFile(f, []byte(b.String()), 0o644)
	if out, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Errorf("a dashboard query does not parse: %v\n%s", err, out)
	}
}

// runDashboardQueries runs every ClickHouse query of deploy/dashboards on
// database, with Grafana's macros for the range [from, to] and the
// variables model and database, and fails a query that errs or returns no
// row.
func runDashboardQueries(t *testing.T, conn driver.Conn, database, model string, from, to time.Time) {
	t.Helper()
	queries := dashboardTargets(t, "grafana-clickhouse-datasource")
	if len(queries) < 10 {
		t.Fatalf("%d ClickHouse panel queries, want the model dashboard's", len(queries))
	}
	timeFilter := regexp.MustCompile(`\$__timeFilter\((\w+)\)`)
	for title, q := range queries {
		q = timeFilter.ReplaceAllString(q, fmt.Sprintf("$1 >= toDateTime(%d) AND $1 <= toDateTime(%d)", from.Unix(), to.Unix()))
		q = strings.NewReplacer("$__fromTime", fmt.Sprintf("toDateTime(%d)", from.Unix()), "$__toTime", fmt.Sprintf("toDateTime(%d)", to.Unix()),
			"${database}", database, "${model}", model).Replace(q)
		if strings.Contains(q, "$") {
			t.Errorf("%s: a macro or variable is left: %s", title, q)
			continue
		}
		rows, err := conn.Query(context.Background(), q)
		if err != nil {
			t.Errorf("%s: %v\n%s", title, err, q)
			continue
		}
		n := 0
		for rows.Next() {
			n++
		}
		rows.Close()
		if n == 0 {
			t.Errorf("%s: no rows over the run's database\n%s", title, q)
		}
	}
}
