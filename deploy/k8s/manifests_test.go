// Package k8s holds the checks of seer's Kubernetes manifests: every
// overlay renders with kubectl kustomize, every object decodes strictly
// into its Kubernetes API type (an unknown field fails), KEDA and
// Prometheus Operator objects validate against their published schemas
// (vendored in schemas/), and the PrometheusRule carries exactly the rules
// of deploy/prometheus.
package k8s

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/seer-ml/seer/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite base/prometheusrule.yaml from deploy/prometheus")

// overlays are the kustomizations users apply.
var overlays = []string{"dev", "prod", "prod-hpa"}

// render runs kubectl kustomize on an overlay and returns its objects as JSON.
func render(t *testing.T, overlay string) [][]byte {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		testenv.Unavailable(t, "kubectl not found: %v", err)
	}
	out, err := exec.Command(kubectl, "kustomize", filepath.Join("overlays", overlay)).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("kubectl kustomize overlays/%s: %v\n%s", overlay, err, stderr)
	}
	var objs [][]byte
	for _, doc := range strings.Split(string(out), "\n---\n") {
		if strings.TrimSpace(doc) == "" {
			continue
		}
		j, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("overlays/%s: %v", overlay, err)
		}
		objs = append(objs, j)
	}
	return objs
}

// typed maps apiVersion/kind to the Kubernetes type it must decode into.
var typed = map[string]func() any{
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/PersistentVolumeClaim":               func() any { return &corev1.PersistentVolumeClaim{} },
	"batch/v1/Job":                           func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return &networkingv1.NetworkPolicy{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
}

// schemaFiles maps the custom resources to their vendored CRDs.
var schemaFiles = map[string]string{
	"keda.sh/v1alpha1/ScaledObject":           "keda.sh_scaledobjects.yaml",
	"keda.sh/v1alpha1/TriggerAuthentication":  "keda.sh_triggerauthentications.yaml",
	"monitoring.coreos.com/v1/ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
	"monitoring.coreos.com/v1/PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}

// strict makes a CRD's structural schema reject unknown fields, as the
// API server's pruning would silently drop them: every object with
// properties and no other rule for extra ones gets additionalProperties
// false.
func strict(v any) {
	switch x := v.(type) {
	case map[string]any:
		_, props := x["properties"]
		_, extra := x["additionalProperties"]
		_, keep := x["x-kubernetes-preserve-unknown-fields"]
		if props && !extra && !keep {
			x["additionalProperties"] = false
		}
		for _, c := range x {
			strict(c)
		}
	case []any:
		for _, c := range x {
			strict(c)
		}
	}
}

// crdSchema compiles the openAPIV3Schema of a vendored CRD's version.
func crdSchema(t *testing.T, file, version string) *jsonschema.Schema {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("schemas", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(data, &crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	for _, v := range crd.Spec.Versions {
		if v.Name != version {
			continue
		}
		s := v.Schema.OpenAPIV3Schema
		strict(s)
		// metadata is the API server's business; the CRDs leave it open.
		if props, ok := s["properties"].(map[string]any); ok {
			props["metadata"] = map[string]any{"type": "object"}
		}
		c := jsonschema.NewCompiler()
		if err := c.AddResource(file, s); err != nil {
			t.Fatal(err)
		}
		sch, err := c.Compile(file)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		return sch
	}
	t.Fatalf("%s has no version %s", file, version)
	return nil
}

// TestManifests: every overlay renders; every object is a known kind and
// decodes strictly; custom resources validate against their schemas; the
// serve Deployment keeps its restricted security context, probes and
// resources in every overlay, and KEDA never scales past the partitions.
func TestManifests(t *testing.T) {
	for _, o := range overlays {
		t.Run(o, func(t *testing.T) {
			kinds := map[string]int{}
			for _, j := range render(t, o) {
				var head struct {
					APIVersion string `json:"apiVersion"`
					Kind       string `json:"kind"`
					Metadata   struct {
						Name string `json:"name"`
					} `json:"metadata"`
				}
				if err := json.Unmarshal(j, &head); err != nil {
					t.Fatal(err)
				}
				key := head.APIVersion + "/" + head.Kind
				kinds[head.Kind]++
				if newObj, ok := typed[key]; ok {
					obj := newObj()
					dec := json.NewDecoder(bytes.NewReader(j))
					dec.DisallowUnknownFields()
					if err := dec.Decode(obj); err != nil {
						t.Errorf("%s %s: %v", key, head.Metadata.Name, err)
						continue
					}
					if d, ok := obj.(*appsv1.Deployment); ok {
						checkPod(t, d.Name, d.Spec.Template.Spec)
					}
					if job, ok := obj.(*batchv1.Job); ok {
						checkPod(t, job.Name, job.Spec.Template.Spec)
					}
					continue
				}
				file, ok := schemaFiles[key]
				if !ok {
					t.Errorf("%s %s: no type or schema to check it against", key, head.Metadata.Name)
					continue
				}
				var v any
				if err := json.Unmarshal(j, &v); err != nil {
					t.Fatal(err)
				}
				if err := crdSchema(t, file, strings.Split(head.APIVersion, "/")[1]).Validate(v); err != nil {
					t.Errorf("%s %s: %v", key, head.Metadata.Name, err)
				}
				if head.Kind == "ScaledObject" {
					var so struct {
						Spec struct {
							MaxReplicaCount int `json:"maxReplicaCount"`
						} `json:"spec"`
					}
					json.Unmarshal(j, &so)
					if so.Spec.MaxReplicaCount < 1 || so.Spec.MaxReplicaCount > 12 {
						t.Errorf("ScaledObject maxReplicaCount %d: want at most the input topic's 12 partitions", so.Spec.MaxReplicaCount)
					}
				}
			}
			if kinds["Deployment"] != 2 || kinds["Job"] != 1 || kinds["ConfigMap"] != 1 || kinds["PodDisruptionBudget"] != 2 || kinds["NetworkPolicy"] != 1 {
				t.Errorf("objects %v: want serve and monitor Deployments, the migrations Job, the config, two PDBs and the network policy", kinds)
			}
			switch o {
			case "prod":
				if kinds["ScaledObject"] != 1 || kinds["ServiceMonitor"] != 1 || kinds["PrometheusRule"] != 1 || kinds["HorizontalPodAutoscaler"] != 0 {
					t.Errorf("prod objects %v: want the ScaledObject, the ServiceMonitor and the PrometheusRule", kinds)
				}
			case "prod-hpa":
				if kinds["ScaledObject"] != 0 || kinds["HorizontalPodAutoscaler"] != 1 {
					t.Errorf("prod-hpa objects %v: want the CPU HPA instead of the ScaledObject", kinds)
				}
			}
		})
	}
}

// checkPod holds every seer pod to the restricted profile: non-root, a
// read-only root filesystem, no capabilities, no privilege escalation,
// seccomp RuntimeDefault, resources, and (serve) both probes.
func checkPod(t *testing.T, name string, p corev1.PodSpec) {
	t.Helper()
	sc := p.SecurityContext
	if sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod security context %+v: want runAsNonRoot and seccomp RuntimeDefault", name, sc)
	}
	for _, c := range p.Containers {
		cs := c.SecurityContext
		if cs == nil || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem || cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation ||
			cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) {
			t.Errorf("%s/%s: container security context %+v: want a read-only root, no escalation, capabilities dropped", name, c.Name, cs)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s/%s: want CPU requests and a memory limit", name, c.Name)
		}
		for _, e := range c.Env {
			if strings.Contains(strings.ToUpper(e.Name), "PASSWORD") && e.Value != "" {
				t.Errorf("%s/%s: env %s holds a literal secret; mount it from a Secret", name, c.Name, e.Name)
			}
		}
		if c.Name == "serve" && (c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
			c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz") {
			t.Errorf("%s/serve: want readiness on /readyz and liveness on /healthz", name)
		}
	}
}

// promRule builds the PrometheusRule from deploy/prometheus's rule files.
func promRule(t *testing.T) []byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join("..", "prometheus", "*.yml"))
	slices.Sort(files)
	var groups []any
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var rf struct {
			Groups []any `json:"groups"`
		}
		if err := yaml.UnmarshalStrict(data, &rf); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		groups = append(groups, rf.Groups...)
	}
	obj := map[string]any{"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": map[string]any{"name": "seer"},
		"spec": map[string]any{"groups": groups}}
	out, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(fmt.Sprintf("# Generated from deploy/prometheus/*.yml by: go test ./deploy/k8s -run PrometheusRule -update\n# Do not edit; edit those files.\n")), out...)
}

// TestPrometheusRuleInSync: base/prometheusrule.yaml holds exactly the
// rules of deploy/prometheus (regenerate it with -update).
func TestPrometheusRuleInSync(t *testing.T) {
	want := promRule(t)
	path := filepath.Join("base", "prometheusrule.yaml")
	if *update {
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s is not deploy/prometheus's rules; run: go test ./deploy/k8s -run PrometheusRule -update", path)
	}
}
