package keda

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizations are the directories (relative to root) rendered for the checks: the
// base on its own and each overlay, as `kubectl kustomize --load-restrictor
// LoadRestrictionsNone` renders them (the base reads deploy/pipeline.example.yaml).
var kustomizations = []string{"deploy/k8s/base", "deploy/k8s/overlays/dev", "deploy/k8s/overlays/prod"}

// object is one manifest: where it came from, its YAML, and the same as the
// unstructured content the API server would decode (integers as int64).
type object struct {
	source string
	yaml   []byte
	u      *unstructured.Unstructured
}

func (o object) String() string {
	return o.source + " " + o.u.GetKind() + "/" + o.u.GetName()
}

// newObject decodes one YAML document as the API server's JSON decoder would.
func newObject(source string, doc []byte) (object, error) {
	j, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return object{}, err
	}
	m := map[string]any{}
	// apimachinery's json keeps integers as int64, which the schema validator needs.
	if err := utiljson.Unmarshal(j, &m); err != nil {
		return object{}, err
	}
	return object{source: source, yaml: doc, u: &unstructured.Unstructured{Object: m}}, nil
}

// readFile returns every non-empty YAML document of a file under root.
func readFile(t *testing.T, rel string) []object {
	t.Helper()
	f, err := os.Open(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var out []object
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		o, err := newObject(rel, doc)
		if err != nil {
			t.Fatalf("%s: %v", rel, err)
		}
		out = append(out, o)
	}
}

// stripComments drops comment-only lines, so a leading comment block is no document.
func stripComments(doc []byte) []byte {
	var out []byte
	for line := range bytes.Lines(doc) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// render builds a kustomization with krusty, kustomize's library (what kubectl runs).
func render(t *testing.T, dir string) []object {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.LoadRestrictions = types.LoadRestrictionsNone
	abs, err := filepath.Abs(filepath.Join(root, dir))
	if err != nil {
		t.Fatal(err)
	}
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), abs)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []object
	for _, r := range resMap.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		o, err := newObject(dir, y)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		out = append(out, o)
	}
	return out
}

// rendered is one kustomization's KEDA objects and Secrets in KEDA's and Kubernetes'
// own Go types, strictly decoded (an unknown field fails the test).
type rendered struct {
	scaledObjects map[string]*kedav1alpha1.ScaledObject
	triggerAuths  map[string]*kedav1alpha1.TriggerAuthentication
	secrets       map[string]*corev1.Secret
}

func decodeRendered(t *testing.T, dir string) rendered {
	t.Helper()
	r := rendered{scaledObjects: map[string]*kedav1alpha1.ScaledObject{},
		triggerAuths: map[string]*kedav1alpha1.TriggerAuthentication{}, secrets: map[string]*corev1.Secret{}}
	for _, o := range render(t, dir) {
		var v interface{ GetName() string }
		switch o.u.GetAPIVersion() + " " + o.u.GetKind() {
		case "keda.sh/v1alpha1 ScaledObject":
			so := &kedav1alpha1.ScaledObject{}
			r.scaledObjects[o.u.GetName()], v = so, so
		case "keda.sh/v1alpha1 TriggerAuthentication":
			ta := &kedav1alpha1.TriggerAuthentication{}
			r.triggerAuths[o.u.GetName()], v = ta, ta
		case "v1 Secret":
			s := &corev1.Secret{}
			r.secrets[o.u.GetName()], v = s, s
		default:
			continue
		}
		if err := yaml.UnmarshalStrict(o.yaml, v); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
	}
	return r
}

// authParams resolves a trigger's TriggerAuthentication through its Secret's stringData,
// as KEDA's resolver does with secretTargetRef, so the example Secret's values are the
// ones the scaler parses.
func (r rendered) authParams(t *testing.T, so *kedav1alpha1.ScaledObject) map[string]string {
	t.Helper()
	params := map[string]string{}
	ref := so.Spec.Triggers[0].AuthenticationRef
	if ref == nil {
		return params
	}
	ta := r.triggerAuths[ref.Name]
	if ta == nil {
		t.Fatalf("%s: TriggerAuthentication %q not in the manifests", so.Name, ref.Name)
	}
	for _, s := range ta.Spec.SecretTargetRef {
		secret := r.secrets[s.Name]
		if secret == nil {
			t.Fatalf("TriggerAuthentication %s: Secret %q not in the manifests", ta.Name, s.Name)
		}
		v, ok := secret.StringData[s.Key]
		if !ok {
			b, ok := secret.Data[s.Key]
			if !ok {
				t.Fatalf("TriggerAuthentication %s: Secret %s has no key %q", ta.Name, s.Name, s.Key)
			}
			v = string(b)
		}
		params[s.Parameter] = v
	}
	return params
}
