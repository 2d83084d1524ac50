package keda

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/cel"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/listtype"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/objectmeta"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	celconfig "k8s.io/apiserver/pkg/apis/cel"
	"sigs.k8s.io/yaml"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
)

// crdSchema is one served version of a KEDA CRD, prepared as the API server prepares
// it: the structural schema (pruning, metadata, list types), the OpenAPI validator and
// the x-kubernetes-validations (CEL) rules.
type crdSchema struct {
	file       string
	namespaced bool
	structural *structuralschema.Structural
	validator  validation.SchemaValidator
	cel        *cel.Validator // nil without rules
}

var (
	crdsOnce sync.Once
	crds     map[schema.GroupVersionKind]*crdSchema
	crdsErr  error
)

// kedaCRDs loads every CRD KEDA ships (config/crd/bases of the keda module this module
// requires, so they match the scaler code under test).
func kedaCRDs(t *testing.T) map[schema.GroupVersionKind]*crdSchema {
	t.Helper()
	crdsOnce.Do(func() { crds, crdsErr = loadCRDs() })
	if crdsErr != nil {
		t.Fatal(crdsErr)
	}
	return crds
}

func loadCRDs() (map[schema.GroupVersionKind]*crdSchema, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/kedacore/keda/v2").Output()
	if err != nil {
		return nil, fmt.Errorf("go list -m github.com/kedacore/keda/v2: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "config/crd/bases/*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no CRDs in the keda module (%v)", err)
	}
	m := map[schema.GroupVersionKind]*crdSchema{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			return nil, fmt.Errorf("%s: %v", f, err)
		}
		for _, v := range crd.Spec.Versions {
			if !v.Served || v.Schema == nil {
				continue
			}
			internal := &apiextensions.CustomResourceValidation{}
			if err := apiextensionsv1.Convert_v1_CustomResourceValidation_To_apiextensions_CustomResourceValidation(v.Schema, internal, nil); err != nil {
				return nil, fmt.Errorf("%s %s: %v", f, v.Name, err)
			}
			ss, err := structuralschema.NewStructural(internal.OpenAPIV3Schema)
			if err != nil {
				return nil, fmt.Errorf("%s %s: structural schema: %v", f, v.Name, err)
			}
			val, _, err := validation.NewSchemaValidator(internal.OpenAPIV3Schema)
			if err != nil {
				return nil, fmt.Errorf("%s %s: %v", f, v.Name, err)
			}
			gvk := schema.GroupVersionKind{Group: crd.Spec.Group, Version: v.Name, Kind: crd.Spec.Names.Kind}
			m[gvk] = &crdSchema{file: filepath.Base(f), namespaced: crd.Spec.Scope == apiextensionsv1.NamespaceScoped,
				structural: ss, validator: val, cel: cel.NewValidator(ss, true, celconfig.PerCallLimit)}
		}
	}
	return m, nil
}

// validateCR checks a custom resource as the API server does on create with
// fieldValidation=Strict (kubectl's default): unknown fields (pruning, metadata
// included), then metadata, the OpenAPI schema, list types and CEL rules.
func validateCR(s *crdSchema, u *unstructured.Unstructured) field.ErrorList {
	obj := runtime.DeepCopyJSON(u.Object)
	var errs field.ErrorList
	_, _, unknownMeta, err := objectmeta.GetObjectMetaWithOptions(obj, objectmeta.ObjectMetaOptions{ReturnUnknownFieldPaths: true})
	if err != nil {
		errs = append(errs, field.Invalid(field.NewPath("metadata"), nil, err.Error()))
	}
	unknown := pruning.PruneWithOptions(obj, s.structural, true, structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	for _, p := range append(unknownMeta, unknown...) {
		errs = append(errs, field.Forbidden(field.NewPath(p), "unknown field"))
	}
	cr := &unstructured.Unstructured{Object: obj}
	if cr.GetNamespace() == "" && s.namespaced {
		// kubectl apply fills in the current namespace; the base has none.
		cr.SetNamespace("default")
	}
	errs = append(errs, apivalidation.ValidateObjectMetaAccessor(cr, s.namespaced, apivalidation.NameIsDNSSubdomain, field.NewPath("metadata"))...)
	errs = append(errs, validation.ValidateCustomResource(nil, obj, s.validator)...)
	errs = append(errs, objectmeta.Validate(nil, obj, s.structural, false)...)
	errs = append(errs, listtype.ValidateListSetsAndMaps(nil, s.structural, obj)...)
	if s.cel != nil && len(errs) == 0 {
		celErrs, _ := s.cel.Validate(context.Background(), nil, s.structural, obj, nil, celconfig.RuntimeCELCostBudget)
		errs = append(errs, celErrs...)
	}
	return errs
}

// kedaObjects is every keda.sh object of the deploy: the base's file as written and each
// kustomization rendered.
func kedaObjects(t *testing.T) []object {
	t.Helper()
	out := readFile(t, "deploy/k8s/base/scaledobjects.yaml")
	for _, dir := range kustomizations {
		for _, o := range render(t, dir) {
			if o.u.GroupVersionKind().Group == kedav1alpha1.SchemeGroupVersion.Group {
				out = append(out, o)
			}
		}
	}
	return out
}

// TestKEDACRDSchemas validates every ScaledObject and TriggerAuthentication against the
// CRD schemas of the KEDA release whose scaler the other tests run, and each object's
// triggers with KEDA's own ValidateTriggers (part of its admission webhook).
func TestKEDACRDSchemas(t *testing.T) {
	schemas := kedaCRDs(t)
	counts := map[string]int{}
	for _, o := range kedaObjects(t) {
		s := schemas[o.u.GroupVersionKind()]
		if s == nil {
			t.Errorf("%s: KEDA has no CRD for %s", o, o.u.GroupVersionKind())
			continue
		}
		for _, e := range validateCR(s, o.u) {
			t.Errorf("%s: %s: %v", o, s.file, e)
		}
		if o.u.GetKind() == "ScaledObject" {
			so := &kedav1alpha1.ScaledObject{}
			if err := yaml.UnmarshalStrict(o.yaml, so); err != nil {
				t.Errorf("%s: %v", o, err)
			} else if err := kedav1alpha1.ValidateTriggers(so.Spec.Triggers); err != nil {
				t.Errorf("%s: %v", o, err)
			}
		}
		counts[o.source+" "+o.u.GetKind()]++
	}
	for _, src := range append([]string{"deploy/k8s/base/scaledobjects.yaml"}, kustomizations...) {
		if counts[src+" ScaledObject"] != 7 || counts[src+" TriggerAuthentication"] != 1 {
			t.Errorf("%s: %d ScaledObjects and %d TriggerAuthentications validated, want 7 and 1",
				src, counts[src+" ScaledObject"], counts[src+" TriggerAuthentication"])
		}
	}
}

// TestKEDACRDSchemasReject shows the validation can fail: each mutation of a real
// object is a mistake the API server would refuse, and so must validateCR.
func TestKEDACRDSchemasReject(t *testing.T) {
	schemas := kedaCRDs(t)
	var so, ta object
	for _, o := range readFile(t, "deploy/k8s/base/scaledobjects.yaml") {
		switch o.u.GetKind() {
		case "ScaledObject":
			if so.u == nil {
				so = o
			}
		case "TriggerAuthentication":
			ta = o
		}
	}
	if so.u == nil || ta.u == nil {
		t.Fatal("no ScaledObject or TriggerAuthentication in the base")
	}
	for _, c := range []struct {
		name   string
		obj    object
		mutate func(m map[string]any)
		want   string // in one of the errors
	}{
		{"minReplicaCount a string", so, func(m map[string]any) {
			unstructured.SetNestedField(m, "two", "spec", "minReplicaCount")
		}, "spec.minReplicaCount"},
		{"unknown spec field (the HPA's name for maxReplicaCount)", so, func(m map[string]any) {
			unstructured.SetNestedField(m, int64(8), "spec", "maxReplicas")
		}, "spec.maxReplicas"},
		{"unknown metadata field", so, func(m map[string]any) {
			unstructured.SetNestedField(m, "x", "metadata", "labelz")
		}, "metadata.labelz"},
		{"trigger metadata not a string", so, func(m map[string]any) {
			trig := m["spec"].(map[string]any)["triggers"].([]any)[0].(map[string]any)
			trig["metadata"].(map[string]any)["lagThreshold"] = int64(5000)
		}, "spec.triggers[0].metadata.lagThreshold"},
		{"no triggers", so, func(m map[string]any) {
			unstructured.RemoveNestedField(m, "spec", "triggers")
		}, "spec.triggers"},
		{"minReplicaCount above maxReplicaCount (CEL rule)", so, func(m map[string]any) {
			unstructured.SetNestedField(m, int64(9), "spec", "minReplicaCount")
		}, "minReplicaCount must be less than or equal to maxReplicaCount"},
		{"bad name", so, func(m map[string]any) {
			unstructured.SetNestedField(m, "Gonomaly_Detect", "metadata", "name")
		}, "metadata.name"},
		{"secretTargetRef without key", ta, func(m map[string]any) {
			ref := m["spec"].(map[string]any)["secretTargetRef"].([]any)[0].(map[string]any)
			delete(ref, "key")
		}, "spec.secretTargetRef[0].key"},
		{"TriggerAuthentication unknown field", ta, func(m map[string]any) {
			unstructured.SetNestedField(m, []any{}, "spec", "secretTargetRefs")
		}, "spec.secretTargetRefs"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := schemas[c.obj.u.GroupVersionKind()]
			if errs := validateCR(s, c.obj.u); len(errs) != 0 {
				t.Fatalf("unmutated %s: %v", c.obj, errs)
			}
			u := c.obj.u.DeepCopy()
			c.mutate(u.Object)
			errs := validateCR(s, u)
			if len(errs) == 0 {
				t.Fatalf("%s: accepted", c.name)
			}
			if !strings.Contains(errs.ToAggregate().Error(), c.want) {
				t.Errorf("%s: errors %v do not mention %q", c.name, errs, c.want)
			}
			t.Logf("rejected: %v", errs.ToAggregate())
		})
	}
}
