package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/seer-ml/seer/internal/testenv"
)

func allCommands(c *cobra.Command) []*cobra.Command {
	out := []*cobra.Command{c}
	for _, s := range c.Commands() {
		out = append(out, allCommands(s)...)
	}
	return out
}

func TestEveryCommandHasHelp(t *testing.T) {
	root := newRootCmd(&bytes.Buffer{}, &bytes.Buffer{})
	cmds := allCommands(root)
	if len(cmds) < 7 {
		t.Fatalf("found %d commands, want seer and its subcommands", len(cmds))
	}
	for _, c := range cmds {
		if strings.TrimSpace(c.Short) == "" || len(strings.TrimSpace(c.Long)) < 80 {
			t.Errorf("%q: --help needs a Short line and a Long explanation", c.CommandPath())
		}
		var out bytes.Buffer
		r := newRootCmd(&out, &out)
		r.SetArgs(append(strings.Fields(strings.TrimPrefix(c.CommandPath(), "seer")), "--help"))
		if err := r.Execute(); err != nil {
			t.Errorf("%s --help: %v", c.CommandPath(), err)
		}
		firstLine, _, _ := strings.Cut(c.Long, "\n")
		if !strings.Contains(out.String(), firstLine) {
			t.Errorf("%s --help does not print its description:\n%s", c.CommandPath(), out.String())
		}
	}
}

func TestDriftReportCommand(t *testing.T) {
	dir := t.TempDir()
	ref, cur := dir+"/ref.csv", dir+"/cur.jsonl"
	var rb, cb strings.Builder
	rb.WriteString("x,c\n")
	for i := 0; i < 3000; i++ {
		rb.WriteString(strconv.Itoa(i%100) + "," + []string{"a", "b"}[i%2] + "\n")
		cb.WriteString(`{"x":` + strconv.Itoa(50+i%100) + `,"c":"` + []string{"a", "b"}[i%2] + "\"}\n")
	}
	os.WriteFile(ref, []byte(rb.String()), 0o644)
	os.WriteFile(cur, []byte(cb.String()), 0o644)
	var out bytes.Buffer
	r := newRootCmd(&out, &out)
	r.SetArgs([]string{"drift", "report", "--reference", ref, "--current", cur})
	if err := r.Execute(); err != nil {
		t.Fatalf("drift report: %v\n%s", err, out.String())
	}
	var rep struct {
		Features []struct {
			Name    string             `json:"name"`
			Kind    string             `json:"kind"`
			Metrics map[string]float64 `json:"metrics"`
			Drifted bool               `json:"drifted"`
		} `json:"features"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	byName := map[string]bool{}
	for _, f := range rep.Features {
		byName[f.Name] = f.Drifted
		if f.Kind == "numeric" && f.Metrics["js_base2"] <= 0 {
			t.Errorf("numeric feature %s lacks js_base2: %v", f.Name, f.Metrics)
		}
	}
	if len(rep.Features) != 2 || !byName["x"] || byName["c"] {
		t.Errorf("drifted = %v, want x drifted and c not", byName)
	}
}

// TestModelsValidateOnADevice: --device cpu scores the example package's
// examples and says where; --device cuda:0 with the tests' library (the
// CPU build, which has no CUDA provider) fails the package instead of
// passing it on the CPU; a device that is neither names the flag.
func TestModelsValidateOnADevice(t *testing.T) {
	t.Setenv("SEER_ONNXRUNTIME_LIB", testenv.OnnxRuntime(t))
	pkg := testenv.ExamplePackage(t)
	ctx := context.Background()
	out, err := runSeer(ctx, "models", "validate", pkg)
	if err != nil || !strings.Contains(out, "examples reproduce on cpu") {
		t.Fatalf("--device cpu (the default): %v\n%s", err, out)
	}
	out, err = runSeer(ctx, "models", "validate", pkg, "--device", "cuda:0")
	if err == nil || !strings.Contains(out, "--device cuda:0 is not available here: ONNX Runtime ran the model on cpu") {
		t.Errorf("--device cuda:0 on the CPU build of ONNX Runtime: %v\n%s", err, out)
	}
	if out, err = runSeer(ctx, "models", "validate", pkg, "--device", "gpu"); err == nil || !strings.Contains(out, `--device: scoring.device: "gpu" is not cpu or cuda:N`) {
		t.Errorf("--device gpu: %v\n%s", err, out)
	}
}
