// Package testenv finds the real services that integration tests run
// against. Addresses come from the environment that `deploy/local/stack.sh
// env` prints. When SEER_REQUIRE_SERVICES=1 (make test, CI), a missing
// service fails the test; otherwise the test is skipped with the reason.
package testenv

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// Required reports whether missing services must fail tests.
func Required() bool { return os.Getenv("SEER_REQUIRE_SERVICES") == "1" }

// Unavailable fails (services required) or skips the test.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("SEER_REQUIRE_SERVICES=1 but "+format, args...)
	}
	t.Skipf(format+" (run `make stack-up` and `eval \"$(deploy/local/stack.sh env)\"`)", args...)
}

// Addr returns the address in env (or def) after checking that it accepts
// TCP connections.
func Addr(t testing.TB, env, def string) string {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		addr = def
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		Unavailable(t, "%s=%s does not answer: %v", env, addr, err)
		return ""
	}
	c.Close()
	return addr
}

// Redis returns the Redis address.
func Redis(t testing.TB) string { return Addr(t, "SEER_REDIS_ADDR", "127.0.0.1:6379") }

// ClickHouse returns the ClickHouse native-protocol address.
func ClickHouse(t testing.TB) string { return Addr(t, "SEER_CLICKHOUSE_ADDR", "127.0.0.1:9000") }

// Kafka returns the real Kafka broker address.
func Kafka(t testing.TB) string { return Addr(t, "SEER_KAFKA_BROKERS", "127.0.0.1:9092") }

// RepoRoot returns the repository root (the folder holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// OnnxRuntime returns the path of libonnxruntime.so.1.
func OnnxRuntime(t testing.TB) string {
	t.Helper()
	lib := os.Getenv("SEER_ONNXRUNTIME_LIB")
	if lib == "" {
		lib = filepath.Join(RepoRoot(t), ".cache", "onnxruntime", "libonnxruntime.so.1")
	}
	if _, err := os.Stat(lib); err != nil {
		Unavailable(t, "ONNX Runtime library not found: %v", err)
	}
	return lib
}

// Python returns the venv interpreter with the reference packages.
func Python(t testing.TB) string {
	t.Helper()
	py := os.Getenv("SEER_PYTHON")
	if py == "" {
		py = filepath.Join(RepoRoot(t), ".cache", "venv", "bin", "python")
	}
	if _, err := os.Stat(py); err != nil {
		Unavailable(t, "python venv not found: %v", err)
	}
	return py
}

// ExamplePackage returns the path of the example model package.
func ExamplePackage(t testing.TB) string {
	return filepath.Join(RepoRoot(t), "deploy", "examples", "card-fraud")
}

// RefCase is one input for the independent Python reference scorer: the
// raw event object and the feature views' values (nil when missing).
type RefCase struct {
	Event    map[string]any               `json:"event"`
	Features map[string]map[string]string `json:"features"`
}

// ReferenceScores scores cases with scoring/testdata/reference_score.py,
// which encodes inputs from model.yaml on its own and runs Python
// onnxruntime, so that seer's scores can be checked independently.
func ReferenceScores(t testing.TB, pkg string, cases []RefCase) []float64 {
	t.Helper()
	req, err := json.Marshal(map[string]any{"package": pkg, "cases": cases})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Python(t), filepath.Join(RepoRoot(t), "scoring", "testdata", "reference_score.py"))
	cmd.Stdin = bytes.NewReader(req)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reference scorer: %v\n%s", err, stderr.String())
	}
	var scores []float64
	if err := json.Unmarshal(out, &scores); err != nil {
		t.Fatalf("reference scorer output %q: %v", out, err)
	}
	if len(scores) != len(cases) {
		t.Fatalf("reference scorer returned %d scores for %d cases", len(scores), len(cases))
	}
	return scores
}
