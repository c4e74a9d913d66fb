// Package imports holds the test that keeps seer's import graph flowing one
// way, as DESIGN.md "Folders" lays it out.
package imports

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/seer-ml/seer/internal/testenv"
)

const module = "github.com/seer-ml/seer"

// rule is one forbidden kind of edge.
type rule struct {
	name   string
	forbid func(from, to string) bool
}

// under reports whether pkg is root or below it.
func under(pkg, root string) bool { return pkg == root || strings.HasPrefix(pkg, root+"/") }

// room returns the top-level folder of a seer package.
func room(pkg string) string {
	rest := strings.TrimPrefix(pkg, module+"/")
	r, _, _ := strings.Cut(rest, "/")
	return r
}

var rules = []rule{
	{"schemas imports no seer package", func(from, to string) bool {
		return under(from, module+"/schemas")
	}},
	{"featurestore, scoring and drift never import each other or stream", func(from, to string) bool {
		lib := map[string]bool{"featurestore": true, "scoring": true, "drift": true}
		return lib[room(from)] && (room(to) == "stream" || (lib[room(to)] && room(to) != room(from)))
	}},
	{"nothing imports cmd", func(from, to string) bool { return under(to, module+"/cmd") }},
	{"loadtest imports only schemas among the pipeline's packages", func(from, to string) bool {
		return under(from, module+"/loadtest") && !under(to, module+"/schemas")
	}},
	{"stream imports only schemas among the pipeline's packages", func(from, to string) bool {
		return under(from, module+"/stream") && !under(to, module+"/schemas")
	}},
	{"production code never imports test helpers", func(from, to string) bool {
		isHelper := strings.Contains(to, "/internal/")
		return isHelper && !strings.Contains(from, "/internal/")
	}},
}

// violations returns every seer→seer edge of graph (package → its
// non-test imports) that a rule forbids.
func violations(graph map[string][]string) []string {
	var out []string
	for from, imps := range graph {
		for _, to := range imps {
			if !under(to, module) {
				continue
			}
			for _, r := range rules {
				if r.forbid(from, to) {
					out = append(out, r.name+": "+from+" imports "+to)
				}
			}
		}
	}
	return out
}

// TestImportRules reads the real import graph with `go list` and fails on
// any forbidden edge. A test file may cross these lines; production code
// may not, so only non-test imports count.
func TestImportRules(t *testing.T) {
	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = testenv.RepoRoot(t)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	graph := map[string][]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		graph[p.ImportPath] = p.Imports
	}
	if len(graph) < 10 || graph[module+"/cmd/seer"] == nil {
		t.Fatalf("go list found %d packages; the graph is not seer's", len(graph))
	}
	for _, v := range violations(graph) {
		t.Error(v)
	}
}

// TestRulesCatchForbiddenEdges: each rule fires on an edge it forbids and
// leaves the allowed shape alone.
func TestRulesCatchForbiddenEdges(t *testing.T) {
	bad := map[string][]string{
		module + "/schemas":            {module + "/stream"},
		module + "/drift/monitor":      {module + "/scoring"},
		module + "/scoring/router":     {module + "/drift/window"},
		module + "/featurestore":       {module + "/stream"},
		module + "/loadtest":           {module + "/drift"},
		module + "/stream":             {module + "/cmd/seer", module + "/featurestore"},
		module + "/drift/inferencelog": {module + "/internal/testenv"},
	}
	if got := violations(bad); len(got) != 9 {
		t.Errorf("violations = %d, want 9:\n%s", len(got), strings.Join(got, "\n"))
	}
	good := map[string][]string{
		module + "/drift/monitor":         {module + "/drift/window", module + "/drift", module + "/schemas"},
		module + "/stream":                {module + "/schemas", "github.com/twmb/franz-go/pkg/kgo"},
		module + "/cmd/seer":              {module + "/stream", module + "/drift/monitor", module + "/scoring"},
		module + "/loadtest":              {module + "/schemas"},
		module + "/drift/internal/chtest": {module + "/drift", module + "/internal/testenv"},
	}
	if got := violations(good); len(got) != 0 {
		t.Errorf("allowed edges flagged:\n%s", strings.Join(got, "\n"))
	}
}
