// Package testenv finds the real services that integration tests run
// against. Addresses come from the environment that `deploy/local/stack.sh
// env` prints. When SEER_REQUIRE_SERVICES=1 (make test, CI), a missing
// service fails the test; otherwise the test is skipped with the reason.
package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
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

// Addr returns the address in env (or def, also when env is "") after
// checking that it accepts TCP connections.
func Addr(t testing.TB, env, def string) string {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		addr = def
	}
	answers(t, env, addr)
	return addr
}

// answers checks that addr (read from env) accepts TCP connections.
func answers(t testing.TB, env, addr string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		Unavailable(t, "%s: %s does not answer: %v", env, addr, err)
		return
	}
	c.Close()
}

// Redis returns the Redis address.
func Redis(t testing.TB) string { return Addr(t, "SEER_REDIS_ADDR", "127.0.0.1:6379") }

// RedisCluster returns the seed addresses of the local Redis Cluster
// (`deploy/local/stack.sh up redis-cluster`), after checking that each
// answers.
func RedisCluster(t testing.TB) []string {
	t.Helper()
	env := os.Getenv("SEER_REDIS_CLUSTER_ADDRS")
	if env == "" {
		env = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
	}
	addrs := strings.Split(env, ",")
	for _, a := range addrs {
		answers(t, "SEER_REDIS_CLUSTER_ADDRS", a)
	}
	return addrs
}

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

// ClickHouseServer is a private clickhouse-server for a test that stops and
// starts it, so that other tests keep the shared one.
type ClickHouseServer struct {
	Addr string
	dir  string
	cmd  *exec.Cmd
	t    testing.TB
}

// StartClickHouse starts a private server on a free loopback port with the
// local stack's config template; t.Cleanup stops it.
func StartClickHouse(t testing.TB) *ClickHouseServer {
	t.Helper()
	bin, err := exec.LookPath("clickhouse-server")
	if err != nil {
		Unavailable(t, "clickhouse-server not installed: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"data", "tmp", "user_files", "log", "format_schemas"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	tpl, err := os.ReadFile(filepath.Join(RepoRoot(t), "deploy", "local", "clickhouse", "config.xml"))
	if err != nil {
		t.Fatal(err)
	}
	tcp, http := freePort(t), freePort(t)
	secure := SecureDir(t) // the stack's certificate for the secure port, its users' passwords
	conf := strings.NewReplacer("@DIR@", dir, "@TCP_PORT@", strconv.Itoa(tcp), "@HTTP_PORT@", strconv.Itoa(http),
		"@TCP_SECURE_PORT@", strconv.Itoa(freePort(t)), "@SECURE@", secure).Replace(string(tpl))
	os.WriteFile(filepath.Join(dir, "config.xml"), []byte(conf), 0o644)
	users, _ := os.ReadFile(filepath.Join(RepoRoot(t), "deploy", "local", "clickhouse", "users.xml"))
	for _, u := range []string{"seer_writer", "seer_monitor", "seer_analyst"} {
		pw, err := os.ReadFile(filepath.Join(secure, u+".password"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(bytes.TrimSpace(pw))
		users = bytes.ReplaceAll(users, []byte("@"+strings.ToUpper(u)+"_SHA256@"), []byte(hex.EncodeToString(sum[:])))
	}
	os.WriteFile(filepath.Join(dir, "users.xml"), users, 0o644)
	s := &ClickHouseServer{Addr: "127.0.0.1:" + strconv.Itoa(tcp), dir: dir, t: t}
	s.cmd = exec.Command(bin, "--config-file="+filepath.Join(dir, "config.xml"))
	s.Start()
	t.Cleanup(s.Stop)
	return s
}

// Start (re)starts the server and waits until it accepts connections.
func (s *ClickHouseServer) Start() {
	s.t.Helper()
	if s.cmd.Process != nil {
		s.cmd = exec.Command(s.cmd.Path, s.cmd.Args[1:]...)
	}
	log, _ := os.OpenFile(filepath.Join(s.dir, "log", "stdout.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	s.cmd.Stdout, s.cmd.Stderr = log, log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting clickhouse-server: %v", err)
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
			c.Close()
			return
		}
	}
	s.t.Fatalf("private clickhouse-server did not answer on %s", s.Addr)
}

// Stop kills the server (SIGKILL: an outage, not a clean shutdown) and
// waits for it to exit.
func (s *ClickHouseServer) Stop() {
	if s.cmd == nil || s.cmd.Process == nil || s.cmd.ProcessState != nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// PythonEvidently returns the interpreter of the venv with Evidently.
func PythonEvidently(t testing.TB) string {
	t.Helper()
	py := os.Getenv("SEER_PYTHON_EVIDENTLY")
	if py == "" {
		py = filepath.Join(RepoRoot(t), ".cache", "venv-evidently", "bin", "python")
	}
	if _, err := os.Stat(py); err != nil {
		Unavailable(t, "Evidently venv not found: %v", err)
	}
	return py
}

// StatsReference runs drift/stats/testdata/reference_stats.py (scipy) on
// cases and returns its answers, for cross-checking seer's statistics.
func StatsReference(t testing.TB, cases []map[string]any) []map[string]any {
	t.Helper()
	in, _ := json.Marshal(cases)
	cmd := exec.Command(Python(t), filepath.Join(RepoRoot(t), "drift", "stats", "testdata", "reference_stats.py"))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reference_stats.py: %v\n%s", err, stderr.String())
	}
	var res []map[string]any
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// Near fails the test when got is not within tol of want.
func Near(t testing.TB, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol || math.IsNaN(got) != math.IsNaN(want) {
		t.Errorf("%s = %.12g, reference %.12g (tolerance %g)", what, got, want, tol)
	}
}

// SecureKafka is the local broker's secure side (deploy/local/stack.sh):
// the SASL_SSL and mutual-TLS listeners and the folder holding the test
// CA, each principal's certificate and key (NAME.crt, NAME.key), its SCRAM
// password (NAME.password), and impostor/serve.{crt,key} from another CA.
type SecureKafka struct {
	SASL, MTLS string // host:port
	Dir        string
}

// CA is the test CA's certificate file.
func (s SecureKafka) CA() string { return filepath.Join(s.Dir, "ca.crt") }

// Password returns principal's SCRAM password.
func (s SecureKafka) Password(t testing.TB, principal string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir, principal+".password"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Secure returns the local broker's secure listeners, skipping (or failing,
// with SEER_REQUIRE_SERVICES=1) when they do not answer.
func Secure(t testing.TB) SecureKafka {
	t.Helper()
	return SecureKafka{Dir: SecureDir(t), SASL: Addr(t, "", "127.0.0.1:"+envOr("SEER_KAFKA_SASL_PORT", "9094")),
		MTLS: Addr(t, "", "127.0.0.1:"+envOr("SEER_KAFKA_MTLS_PORT", "9095"))}
}

// SecureDir is the local stack's folder of certificates and passwords
// (deploy/local/stack.sh make_secrets): ca.crt, server.*, NAME.crt,
// NAME.key and NAME.password per principal or user.
func SecureDir(t testing.TB) string {
	t.Helper()
	cache := cacheDir(t)
	dir := filepath.Join(cache, "secure")
	if _, err := os.Stat(filepath.Join(dir, ".done")); err != nil {
		Unavailable(t, "the local stack's certificates: %v", err)
	}
	return dir
}

// RedisTLS returns the local Redis's TLS port (client certificates required).
func RedisTLS(t testing.TB) string {
	return Addr(t, "", "127.0.0.1:"+envOr("SEER_REDIS_TLS_PORT", "6380"))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// ClickHouseTLS returns the local ClickHouse's secure native port.
func ClickHouseTLS(t testing.TB) string {
	return Addr(t, "", "127.0.0.1:"+envOr("SEER_CLICKHOUSE_TLS_PORT", "9440"))
}

// StartAlertmanager starts Debian's prometheus-alertmanager on a free
// loopback port with deploy/alertmanager/alertmanager.yml (its group wait
// cut to 1 s for tests, clustering off) and returns its base URL;
// t.Cleanup stops it.
func StartAlertmanager(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("prometheus-alertmanager")
	if err != nil {
		Unavailable(t, "prometheus-alertmanager not installed (deploy/local/stack.sh installs it): %v", err)
	}
	conf, err := os.ReadFile(filepath.Join(RepoRoot(t), "deploy", "alertmanager", "alertmanager.yml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf = regexp.MustCompile(`group_wait: \d+s`).ReplaceAll(conf, []byte("group_wait: 1s"))
	if err := os.WriteFile(filepath.Join(dir, "alertmanager.yml"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	cmd := exec.Command(bin, "--config.file="+filepath.Join(dir, "alertmanager.yml"), "--storage.path="+dir,
		"--web.listen-address="+addr, "--cluster.listen-address=")
	log, _ := os.Create(filepath.Join(dir, "alertmanager.log"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting alertmanager: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	url := "http://" + addr
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(url + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "alertmanager.log"))
	t.Fatalf("alertmanager did not become ready on %s:\n%s", addr, b)
	return ""
}

// ClickHouseCluster is the local two-replica ClickHouse cluster "seer"
// (`deploy/local/stack.sh up clickhouse-cluster`).
type ClickHouseCluster struct {
	Name  string   // the cluster's name in remote_servers
	Addrs []string // the replicas' native-protocol addresses
	t     testing.TB
	run   string // the stack's pid files
}

// StartClickHouseCluster starts the local ClickHouse cluster (ZooKeeper
// and two servers) through the stack script, for the tests that need it,
// and stops it again when the test ends. Tests of different packages that
// need it wait for each other.
func StartClickHouseCluster(t testing.TB) *ClickHouseCluster {
	t.Helper()
	// Test packages run in parallel, and one's cleanup would stop the
	// cluster under another: they take turns.
	lock, err := os.OpenFile(filepath.Join(cacheDir(t), "clickhouse-cluster.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		Unavailable(t, "the local ClickHouse cluster's lock: %v", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // releases the lock, after the stop below (cleanups run last first)
	stack := filepath.Join(RepoRoot(t), "deploy", "local", "stack.sh")
	if out, err := exec.Command("bash", stack, "up", "clickhouse-cluster").CombinedOutput(); err != nil {
		Unavailable(t, "the local ClickHouse cluster did not start: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("bash", stack, "down", "clickhouse-cluster").Run() })
	env := os.Getenv("SEER_CLICKHOUSE_CLUSTER_ADDRS")
	if env == "" {
		env = "127.0.0.1:9101,127.0.0.1:9102"
	}
	c := &ClickHouseCluster{Name: "seer", Addrs: strings.Split(env, ","), t: t, run: filepath.Join(cacheDir(t), "run")}
	for _, a := range c.Addrs {
		answers(t, "SEER_CLICKHOUSE_CLUSTER_ADDRS", a)
	}
	return c
}

// Kill stops replica i (0-based) with SIGKILL, as a crash would, and
// returns a function that starts it again with the same command line.
func (c *ClickHouseCluster) Kill(i int) (restart func()) {
	c.t.Helper()
	pidFile := filepath.Join(c.run, fmt.Sprintf("clickhouse-cluster-%d.pid", i+1))
	b, err := os.ReadFile(pidFile)
	if err != nil {
		c.t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	args, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		c.t.Fatalf("replica %d (pid %d) is not running: %v", i, pid, err)
	}
	argv := strings.Split(strings.TrimRight(string(args), "\x00"), "\x00")
	if p, err := os.FindProcess(pid); err == nil {
		p.Kill()
		for range 100 { // until its port is free
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return func() {
		c.t.Helper()
		cmd := exec.Command(argv[0], argv[1:]...)
		if err := cmd.Start(); err != nil {
			c.t.Fatalf("restarting replica %d: %v", i, err)
		}
		os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
		go cmd.Wait()
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if conn, err := net.DialTimeout("tcp", c.Addrs[i], time.Second); err == nil {
				conn.Close()
				return
			}
		}
		c.t.Fatalf("replica %d did not answer on %s after its restart", i, c.Addrs[i])
	}
}

// cacheDir is the local stack's cache folder ($SEER_CACHE_DIR, or .cache in
// the repository).
func cacheDir(t testing.TB) string {
	if cache := os.Getenv("SEER_CACHE_DIR"); cache != "" {
		return cache
	}
	return filepath.Join(RepoRoot(t), ".cache")
}

// ProcessCPU is this process's user and system CPU time so far: a
// benchmark's own CPU, apart from that of the services on the same cores.
func ProcessCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
