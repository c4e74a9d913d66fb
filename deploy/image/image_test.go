// Package image holds the smoke test of seer's container image: built with
// deploy/image/build.sh (buildah, from scratch), run with podman (vfs
// storage, runc, deploy/image/containers.conf) on the host network against
// the local stack, and its SBOM read back.
package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/ksuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"sigs.k8s.io/yaml"

	"github.com/seer-ml/seer/internal/testenv"
)

// podman runs podman with the storage and runtime the build used.
func podman(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("podman", append([]string{"--storage-driver", "vfs", "--runtime", "runc"}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitReady polls /readyz until it answers 200.
func waitReady(t *testing.T, addr string, logs func() string) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			last = err.Error()
			continue
		}
		b := make([]byte, 512)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		last = string(b[:n])
	}
	t.Fatalf("seer serve in the container never became ready on %s: %s\n%s", addr, last, logs())
}

// stackTopics creates a run's topics on the local broker (deleted afterwards).
func stackTopics(t *testing.T, run string) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(testenv.Kafka(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	adm := kadm.NewClient(cl)
	topics := []string{run + ".events", run + ".predictions", run + ".dlq"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := adm.CreateTopics(ctx, 2, 1, nil, topics...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.DeleteTopics(context.Background(), topics...) })
}

// TestImage builds the image and runs it: seer models validate passes on
// the example package inside it; seer serve reaches ready against the
// local stack, run by podman and then by podman kube play from the dev
// overlay's serve Deployment; the SBOM lists every file with its hash and
// the components with their licences.
func TestImage(t *testing.T) {
	for _, tool := range []string{"buildah", "podman", "runc", "catatonit", "kubectl"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Unavailable(t, "%s not found (deploy/local/stack.sh installs it): %v", tool, err)
		}
	}
	root := testenv.RepoRoot(t)
	testenv.OnnxRuntime(t)
	t.Setenv("CONTAINERS_CONF", filepath.Join(root, "deploy", "image", "containers.conf"))
	t0 := time.Now()
	build := exec.Command(filepath.Join(root, "deploy", "image", "build.sh"))
	build.Dir = root
	var stderr strings.Builder
	build.Stderr = &stderr
	out, err := build.Output()
	if err != nil {
		t.Fatalf("build.sh: %v\n%s", err, stderr.String())
	}
	image := strings.TrimSpace(string(out))
	tag := strings.TrimPrefix(image, "localhost/seer:")
	t.Logf("built %s in %s", image, time.Since(t0).Round(time.Second))

	t.Run("models validate", func(t *testing.T) {
		out, err := podman(t, t.TempDir(), "run", "--rm", image, "models", "validate", "/usr/share/seer/models/card-fraud")
		if err != nil || !strings.Contains(out, "ok   /usr/share/seer/models/card-fraud: card-fraud 1.0.0") || !strings.Contains(out, "examples reproduce") {
			t.Fatalf("models validate in the image: %v\n%s", err, out)
		}
	})

	t.Run("serve", func(t *testing.T) {
		run := "img-" + strings.ToLower(ksuid.New().String()[:10])
		stackTopics(t, run)
		addr, name := freeAddr(t), "seer-smoke-"+run
		env := []string{"SEER_HTTP=" + addr, "SEER_KAFKA_BROKERS=" + testenv.Kafka(t), "SEER_REDIS_ADDR=" + testenv.Redis(t),
			"SEER_CLICKHOUSE_ADDR=" + testenv.ClickHouse(t), "SEER_KAFKA_INPUT_TOPIC=" + run + ".events", "SEER_KAFKA_PREDICTIONS_TOPIC=" + run + ".predictions",
			"SEER_KAFKA_DLQ_TOPIC=" + run + ".dlq", "SEER_KAFKA_GROUP=" + run, "SEER_REDIS_KEY_PREFIX=" + run, "SEER_CLICKHOUSE_DATABASE=seer_" + strings.ReplaceAll(run, "-", "_"),
			"SEER_SCORING_PACKAGE=/usr/share/seer/models/card-fraud", "SEER_LOG_FORMAT=json"}
		args := []string{"run", "-d", "--name", name, "--network", "host"}
		for _, e := range env {
			args = append(args, "-e", e)
		}
		if out, err := podman(t, t.TempDir(), append(args, image, "serve")...); err != nil {
			t.Fatalf("podman run: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			podman(t, "", "rm", "-f", name)
			exec.Command("clickhouse-client", "--port", portOf(testenv.ClickHouse(t)), "-q", "DROP DATABASE IF EXISTS seer_"+strings.ReplaceAll(run, "-", "_")).Run()
		})
		logs := func() string { out, _ := podman(t, "", "logs", name); return out }
		waitReady(t, addr, logs)
		if out, err := podman(t, "", "stop", "-t", "20", name); err != nil {
			t.Fatalf("podman stop: %v\n%s", err, out)
		}
		if l := logs(); !strings.Contains(l, `"msg":"consuming"`) || strings.Contains(l, `"level":"ERROR"`) {
			t.Errorf("serve's log in the container:\n%s", l)
		}
	})

	t.Run("sbom", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join(root, ".cache", "image", "sbom-"+tag+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var bom struct {
			BOMFormat  string `json:"bomFormat"`
			Components []struct {
				Type     string                     `json:"type"`
				Name     string                     `json:"name"`
				Version  string                     `json:"version"`
				Hashes   []struct{ Content string } `json:"hashes"`
				Licenses []struct {
					License struct{ ID string } `json:"license"`
				} `json:"licenses"`
			} `json:"components"`
		}
		if err := json.Unmarshal(data, &bom); err != nil {
			t.Fatal(err)
		}
		files, libs := map[string]string{}, map[string][]string{}
		for _, c := range bom.Components {
			if c.Type == "file" && len(c.Hashes) == 1 {
				files[c.Name] = c.Hashes[0].Content
				continue
			}
			for _, l := range c.Licenses {
				libs[c.Name] = append(libs[c.Name], l.License.ID)
			}
		}
		staged := filepath.Join(root, ".cache", "image", "root")
		n := 0
		filepath.WalkDir(staged, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			n++
			b, _ := os.ReadFile(p)
			sum := sha256.Sum256(b)
			rel, _ := filepath.Rel(staged, p)
			if files["/"+rel] != hex.EncodeToString(sum[:]) {
				t.Errorf("SBOM: /%s has hash %q, the file %x", rel, files["/"+rel], sum)
			}
			return nil
		})
		if bom.BOMFormat != "CycloneDX" || n < 15 || len(files) != n {
			t.Errorf("SBOM %s lists %d files, the image %d", bom.BOMFormat, len(files), n)
		}
		for name, want := range map[string]string{"github.com/twmb/franz-go": "BSD-3-Clause", "github.com/redis/go-redis/v9": "BSD-2-Clause",
			"github.com/ClickHouse/clickhouse-go/v2": "Apache-2.0", "onnxruntime": "MIT", "libc6": "LGPL-2.1-or-later", "ca-certificates": "MPL-2.0"} {
			if !strings.Contains(strings.Join(libs[name], ","), want) {
				t.Errorf("SBOM: %s has licences %v, want %s among them", name, libs[name], want)
			}
		}
	})

	t.Run("kube play", func(t *testing.T) {
		run := "kp-" + strings.ToLower(ksuid.New().String()[:10])
		stackTopics(t, run)
		rendered, err := exec.Command("kubectl", "kustomize", filepath.Join(root, "deploy", "k8s", "overlays", "dev")).Output()
		if err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		db := "seer_" + strings.ReplaceAll(run, "-", "_")
		var docs []string
		for _, doc := range strings.Split(string(rendered), "\n---\n") {
			var head struct {
				Kind     string
				Metadata struct{ Name string }
			}
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatal(err)
			}
			switch {
			case head.Kind == "ConfigMap":
				// The run's own port, topics, group, prefix and database.
				doc = strings.NewReplacer("127.0.0.1:8080", addr, "card-transactions", run+".events", "seer-dev", run,
					"database: seer", "database: "+db, "127.0.0.1:9092", testenv.Kafka(t)).Replace(doc)
				doc = strings.Replace(doc, run+".events.predictions", run+".predictions", 1)
				doc = strings.Replace(doc, run+".events.dlq", run+".dlq", 1)
			case head.Kind == "Deployment" && head.Metadata.Name == "seer-serve":
				doc = strings.ReplaceAll(doc, "localhost/seer:dev", image)
			default:
				continue
			}
			docs = append(docs, doc)
		}
		if len(docs) != 2 {
			t.Fatalf("the dev overlay has %d of the ConfigMap and serve Deployment", len(docs))
		}
		dir := t.TempDir() // podman kube play looks for build contexts in its working directory
		file := filepath.Join(dir, "serve.yaml")
		if err := os.WriteFile(file, []byte(strings.Join(docs, "\n---\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		// The Secret the pods mount: the dev config reads none of it.
		secret := filepath.Join(dir, "secret.yaml")
		os.WriteFile(secret, []byte("apiVersion: v1\nkind: Secret\nmetadata: {name: seer-secrets}\nstringData: {note: dev has no secrets}\n"), 0o644)
		podman(t, dir, "secret", "rm", "seer-secrets")
		if out, err := podman(t, dir, "secret", "create", "seer-secrets", secret); err != nil {
			t.Fatalf("podman secret create: %v\n%s", err, out)
		}
		if out, err := podman(t, dir, "kube", "play", file); err != nil {
			t.Fatalf("podman kube play: %v\n%s", err, out)
		}
		t.Cleanup(func() {
			podman(t, dir, "kube", "down", file)
			podman(t, dir, "secret", "rm", "seer-secrets")
			exec.Command("clickhouse-client", "--port", portOf(testenv.ClickHouse(t)), "-q", "DROP DATABASE IF EXISTS "+db).Run()
		})
		logs := func() string {
			out, _ := podman(t, dir, "pod", "logs", "seer-serve-pod-0")
			return out
		}
		waitReady(t, addr, logs)
		if out, _ := podman(t, dir, "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}", "seer-serve-pod-0-serve"); !strings.HasPrefix(out, "65532") {
			t.Errorf("the serve container runs as %q: want user 65532 (non-root)", out)
		}
	})
}

// portOf is the port of host:port, for clickhouse-client --port.
func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
