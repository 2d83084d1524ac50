package validate

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	yaml3 "go.yaml.in/yaml/v3"
	"sigs.k8s.io/yaml"
)

// composeFile is the subset of the Compose specification docker-compose.yml uses,
// decoded with unknown keys rejected (no Docker engine or compose plugin runs here).
type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Command         []string          `yaml:"command"`
	Entrypoint      []string          `yaml:"entrypoint"`
	Environment     map[string]string `yaml:"environment"`
	Ports           []string          `yaml:"ports"`
	Volumes         []string          `yaml:"volumes"`
	DependsOn       yaml3.Node        `yaml:"depends_on"`
	Restart         string            `yaml:"restart"`
	ReadOnly        bool              `yaml:"read_only"`
	StopGracePeriod string            `yaml:"stop_grace_period"`
	Healthcheck     *struct {
		Test        []string `yaml:"test"`
		Interval    string   `yaml:"interval"`
		Timeout     string   `yaml:"timeout"`
		Retries     int      `yaml:"retries"`
		StartPeriod string   `yaml:"start_period"`
	} `yaml:"healthcheck"`
}

// dependsOn returns a service's dependencies and their conditions (short list form:
// service_started).
func (s composeService) dependsOn(t *testing.T) map[string]string {
	deps := map[string]string{}
	switch s.DependsOn.Kind {
	case 0:
	case yaml3.SequenceNode:
		var names []string
		if err := s.DependsOn.Decode(&names); err != nil {
			t.Error(err)
		}
		for _, n := range names {
			deps[n] = "service_started"
		}
	case yaml3.MappingNode:
		var m map[string]struct {
			Condition string `yaml:"condition"`
			Restart   bool   `yaml:"restart"`
			Required  *bool  `yaml:"required"`
		}
		if err := s.DependsOn.Decode(&m); err != nil {
			t.Error(err)
		}
		for n, c := range m {
			deps[n] = c.Condition
		}
	default:
		t.Errorf("depends_on: neither a list nor a map")
	}
	return deps
}

type compose struct {
	composeFile
	t *testing.T
}

func readCompose(t *testing.T) compose {
	t.Helper()
	dec := yaml3.NewDecoder(bytes.NewReader(readFile(t, "docker-compose.yml")))
	var top map[string]yaml3.Node
	if err := dec.Decode(&top); err != nil {
		t.Fatal(err)
	}
	for k := range top {
		if !strings.HasPrefix(k, "x-") && !slices.Contains([]string{"name", "services", "volumes", "networks", "configs", "secrets"}, k) {
			t.Errorf("docker-compose.yml: unknown top-level key %q", k)
		}
	}
	var c composeFile
	dec = yaml3.NewDecoder(bytes.NewReader(readFile(t, "docker-compose.yml")))
	dec.KnownFields(true)
	// The x- extension fields are not part of composeFile: decode them into a catch-all.
	var full struct {
		composeFile `yaml:",inline"`
		Extensions  map[string]any `yaml:",inline"`
	}
	if err := dec.Decode(&full); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	c = full.composeFile
	return compose{c, t}
}

// mounts maps a service's container paths to host paths (bind mounts).
func (c compose) mounts(service string) map[string]string {
	m := map[string]string{}
	for _, v := range c.Services[service].Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 {
			m[parts[1]] = parts[0]
		}
	}
	return m
}

// serves reports whether a service listens on port: a gonomaly service on its
// --metrics-addr or --api-addr, another on a published container port.
func (c compose) serves(service, port string) bool {
	s, ok := c.Services[service]
	if !ok {
		return false
	}
	for i, a := range s.Command {
		if (a == "--metrics-addr" || a == "--api-addr") && i+1 < len(s.Command) && strings.HasSuffix(s.Command[i+1], ":"+port) {
			return true
		}
	}
	for _, p := range s.Ports {
		if strings.HasSuffix(p, ":"+port) {
			return true
		}
	}
	return false
}

func TestCompose(t *testing.T) {
	l := readLayout(t)
	c := readCompose(t)
	for _, want := range []string{"kafka", "topics", "stages", "api", "worker", "sink", "prometheus", "grafana", "kafka-exporter"} {
		if _, ok := c.Services[want]; !ok {
			t.Errorf("no service %s", want)
		}
	}
	stages := map[string]bool{}
	hostPorts := map[string]string{}
	for name, s := range c.Services {
		if s.Image == "" {
			t.Errorf("%s: no image", name)
		}
		gonomaly := s.Build != nil
		if gonomaly {
			if _, err := os.Stat(filepath.Join(root, s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
			for _, p := range l.checkArgs(s.Command) {
				t.Errorf("%s: %s", name, p)
			}
			for k := range s.Environment {
				if !l.checkEnv(k) {
					t.Errorf("%s: %s is no flag's environment fallback", name, k)
				}
			}
			if len(s.Command) > 2 && s.Command[0] == "process" && s.Command[1] == "--stage" {
				for _, st := range strings.Split(s.Command[2], ",") {
					stages[st] = true
				}
			}
			if d, err := time.ParseDuration(s.StopGracePeriod); err != nil || d <= l.shutdown {
				t.Errorf("%s: stop_grace_period %q must exceed the %v shutdown deadline", name, s.StopGracePeriod, l.shutdown)
			}
			if !s.ReadOnly {
				t.Errorf("%s: gonomaly containers run with a read-only root filesystem", name)
			}
		} else if tag := s.Image[strings.LastIndex(s.Image, ":")+1:]; !strings.Contains(s.Image, ":") || tag == "latest" {
			t.Errorf("%s: image %s: pin a version", name, s.Image)
		}
		for dep, cond := range s.dependsOn(t) {
			d, ok := c.Services[dep]
			switch {
			case !ok:
				t.Errorf("%s depends on unknown service %s", name, dep)
			case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, cond):
				t.Errorf("%s: depends_on %s: condition %q", name, dep, cond)
			case cond == "service_healthy" && d.Healthcheck == nil:
				t.Errorf("%s waits for %s to be healthy, which has no healthcheck", name, dep)
			case cond == "service_completed_successfully" && d.Restart != "no":
				t.Errorf("%s waits for %s to complete, which restarts", name, dep)
			}
		}
		for _, v := range s.Volumes {
			if host, _, _ := strings.Cut(v, ":"); strings.HasPrefix(host, ".") {
				if _, err := os.Stat(filepath.Join(root, host)); err != nil {
					t.Errorf("%s: volume %v", name, err)
				}
			}
		}
		for _, p := range s.Ports {
			host, _, _ := strings.Cut(p, ":")
			if other, dup := hostPorts[host]; dup {
				t.Errorf("host port %s published by %s and %s", host, name, other)
			}
			hostPorts[host] = name
		}
	}
	for st := range l.stageInput {
		if !stages[st] {
			t.Errorf("no service runs stage %s", st)
		}
	}
	if img := c.Services["kafka"].Image; !strings.HasPrefix(img, "apache/kafka:4.") || c.Services["kafka"].Environment["KAFKA_PROCESS_ROLES"] == "" {
		t.Errorf("kafka: want the official Apache Kafka 4.x image in KRaft mode, have %s", img)
	}
	// The topics one-shot creates the ingestion topic as gonomaly would.
	if tc := c.Services["topics"].Command; !slices.Contains(tc, "gonomaly.records") || !slices.Contains(tc, "8") {
		t.Errorf("topics: must create gonomaly.records with 8 partitions: %v", tc)
	}
	checkGrafanaWiring(t, c)
}

// checkGrafanaWiring checks that Grafana's provisioning finds the dashboard and the
// Prometheus service.
func checkGrafanaWiring(t *testing.T, c compose) {
	mounts := c.mounts("grafana")
	var prov struct {
		APIVersion int `json:"apiVersion"`
		Providers  []struct {
			Name                  string `json:"name"`
			Folder                string `json:"folder"`
			Type                  string `json:"type"`
			DisableDeletion       bool   `json:"disableDeletion"`
			AllowUIUpdates        bool   `json:"allowUiUpdates"`
			UpdateIntervalSeconds int    `json:"updateIntervalSeconds"`
			Options               struct {
				Path                      string `json:"path"`
				FoldersFromFilesStructure bool   `json:"foldersFromFilesStructure"`
			} `json:"options"`
		} `json:"providers"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, "deploy/grafana/provisioning/dashboards/gonomaly.yml"), &prov); err != nil {
		t.Fatal(err)
	}
	if len(prov.Providers) != 1 {
		t.Fatalf("want one dashboard provider, have %d", len(prov.Providers))
	}
	host, ok := mounts[prov.Providers[0].Options.Path]
	if !ok {
		t.Errorf("grafana: the provider's path %s is not mounted", prov.Providers[0].Options.Path)
	} else if _, err := os.Stat(filepath.Join(root, host, "gonomaly.json")); err != nil {
		t.Errorf("grafana: %v", err)
	}
	if mounts["/etc/grafana/provisioning"] == "" {
		t.Error("grafana: provisioning is not mounted at /etc/grafana/provisioning")
	}
	var ds struct {
		APIVersion  int `json:"apiVersion"`
		Datasources []struct {
			Name      string `json:"name"`
			UID       string `json:"uid"`
			Type      string `json:"type"`
			Access    string `json:"access"`
			URL       string `json:"url"`
			IsDefault bool   `json:"isDefault"`
			Editable  bool   `json:"editable"`
		} `json:"datasources"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, "deploy/grafana/provisioning/datasources/prometheus.yml"), &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || !ds.Datasources[0].IsDefault {
		t.Fatal("want one default Prometheus datasource")
	}
	u := strings.TrimPrefix(ds.Datasources[0].URL, "http://")
	host, port, _ := strings.Cut(u, ":")
	if !c.serves(host, port) {
		t.Errorf("datasource URL %s: no compose service %s on %s", ds.Datasources[0].URL, host, port)
	}
}
