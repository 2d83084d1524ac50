package validate

import (
	"regexp"
	"testing"

	"sigs.k8s.io/yaml"
)

// The Prometheus adapter's rule turns a metric gonomaly exports into the HPA's
// http_requests_per_second.
func TestPrometheusAdapterRules(t *testing.T) {
	var values struct {
		Rules struct {
			Default bool `json:"default"`
			Custom  []struct {
				SeriesQuery string `json:"seriesQuery"`
				Resources   struct {
					Overrides map[string]struct {
						Resource string `json:"resource"`
					} `json:"overrides"`
				} `json:"resources"`
				Name struct {
					Matches string `json:"matches"`
					As      string `json:"as"`
				} `json:"name"`
				MetricsQuery string `json:"metricsQuery"`
			} `json:"custom"`
		} `json:"rules"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, "deploy/k8s/prometheus-adapter/rules.yaml"), &values); err != nil {
		t.Fatal(err)
	}
	registered := registeredMetrics(t)
	found := false
	for _, r := range values.Rules.Custom {
		for _, name := range promMetrics(r.SeriesQuery) {
			if !knownMetric(name, registered) {
				t.Errorf("seriesQuery %q: unknown metric %s", r.SeriesQuery, name)
			}
			if r.Name.As == "http_requests_per_second" && regexp.MustCompile(r.Name.Matches).MatchString(name) {
				found = true
			}
		}
		if r.Resources.Overrides["pod"].Resource != "pod" || r.Resources.Overrides["namespace"].Resource != "namespace" {
			t.Errorf("rule %s: pods metrics need the pod and namespace overrides", r.Name.As)
		}
	}
	if !found {
		t.Error("no rule serves http_requests_per_second from a gonomaly metric")
	}
}
