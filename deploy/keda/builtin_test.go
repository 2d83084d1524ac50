package keda

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/client-go/applyconfigurations"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
)

// builtinSchema is the schema of every built-in kind as client-go ships it (generated
// from the Kubernetes OpenAPI spec of its release, the one server-side apply and the
// API server's field manager type objects with). It checks field names and value types,
// not the API server's semantic validation (k8s.io/kubernetes, which is not pulled in);
// deploy/validate's strict decoding and checks cover the rest.
func builtinSchema() managedfields.TypeConverter {
	return applyconfigurations.NewTypeConverter(clientgoscheme.Scheme)
}

// TestBuiltinKindSchemas types every non-KEDA object of each rendered kustomization with
// the built-in schema: an unknown field or a wrong type fails.
func TestBuiltinKindSchemas(t *testing.T) {
	tc := builtinSchema()
	kinds := map[string]int{}
	for _, dir := range kustomizations {
		for _, o := range render(t, dir) {
			if o.u.GroupVersionKind().Group == "keda.sh" {
				continue
			}
			if _, err := tc.ObjectToTyped(o.u); err != nil {
				t.Errorf("%s: %v", o, err)
			}
			kinds[o.u.GetKind()]++
		}
	}
	for _, k := range []string{"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("no %s validated", k)
		}
	}
	t.Logf("validated %v", kinds)
}

// TestBuiltinKindSchemasReject shows the built-in schema rejects what the API server's
// decoding would.
func TestBuiltinKindSchemasReject(t *testing.T) {
	tc := builtinSchema()
	objs := map[string]object{}
	for _, o := range render(t, "deploy/k8s/overlays/prod") {
		if _, ok := objs[o.u.GetKind()]; !ok {
			objs[o.u.GetKind()] = o
		}
	}
	for _, c := range []struct {
		name, kind string
		mutate     func(m map[string]any)
		want       string
	}{
		{"replicas a string", "Deployment", func(m map[string]any) {
			unstructured.SetNestedField(m, "two", "spec", "replicas")
		}, ".spec.replicas"},
		{"unknown container field", "Deployment", func(m map[string]any) {
			c := m["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
			c["environment"] = []any{}
		}, "environment"},
		{"HPA minReplicas a string", "HorizontalPodAutoscaler", func(m map[string]any) {
			unstructured.SetNestedField(m, "3", "spec", "minReplicas")
		}, ".spec.minReplicas"},
		{"PDB unknown field", "PodDisruptionBudget", func(m map[string]any) {
			unstructured.SetNestedField(m, int64(1), "spec", "maxUnavailablePods")
		}, "maxUnavailablePods"},
		{"Service port a list", "Service", func(m map[string]any) {
			p := m["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any)
			p["port"] = []any{int64(80)}
		}, ".spec.ports"},
		{"ConfigMap data not strings", "ConfigMap", func(m map[string]any) {
			m["data"] = map[string]any{"x": map[string]any{}}
		}, ".data"},
	} {
		t.Run(c.name, func(t *testing.T) {
			o, ok := objs[c.kind]
			if !ok {
				t.Fatalf("no %s in the prod overlay", c.kind)
			}
			if _, err := tc.ObjectToTyped(o.u); err != nil {
				t.Fatalf("unmutated %s: %v", o, err)
			}
			u := o.u.DeepCopy()
			c.mutate(u.Object)
			_, err := tc.ObjectToTyped(u)
			if err == nil {
				t.Fatalf("%s: accepted", c.name)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: error %v does not mention %q", c.name, err, c.want)
			}
			t.Logf("rejected: %v", err)
		})
	}
}
