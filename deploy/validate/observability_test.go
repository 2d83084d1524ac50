package validate

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"

	"sigs.k8s.io/yaml"
)

// dashboard is the part of Grafana's dashboard JSON model this test reads.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func TestGrafanaDashboard(t *testing.T) {
	var d dashboard
	if err := json.Unmarshal(readFile(t, "deploy/grafana/gonomaly.json"), &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 30 || len(d.Panels) == 0 {
		t.Fatalf("dashboard uid %q title %q schemaVersion %d panels %d", d.UID, d.Title, d.SchemaVersion, len(d.Panels))
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type == "datasource" && v.Query == "prometheus"
	}
	registered := registeredMetrics(t)
	ids := map[int]bool{}
	used := map[string]bool{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
				t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
			}
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || !vars[strings.Trim(p.Datasource.UID, "${}")] {
				t.Errorf("panel %q: datasource must be the Prometheus variable", p.Title)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			refs := map[string]bool{}
			for _, q := range p.Targets {
				if refs[q.RefID] || q.RefID == "" {
					t.Errorf("panel %q: refId %q missing or repeated", p.Title, q.RefID)
				}
				refs[q.RefID] = true
				checkExpr(t, fmt.Sprintf("panel %q", p.Title), q.Expr, registered, used)
			}
		}
	}
	walk(d.Panels)
	// The seed's panels: request rate and response time, errors, CPU and memory, lag and
	// replicas per group, anomalies, job queue length and durations, DLQ.
	for _, m := range []string{"gonomaly_http_requests_total", "gonomaly_http_request_duration_seconds_bucket",
		"process_cpu_seconds_total", "process_resident_memory_bytes", "kafka_consumergroup_lag",
		"kube_deployment_status_replicas_available", "kafka_topic_partition_current_offset",
		"gonomaly_worker_jobs_running", "gonomaly_worker_job_duration_seconds_bucket", "gonomaly_stage_dlq_total",
		"gonomaly_stage_records_in_total"} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}

// checkExpr checks a PromQL expression's shape and that every metric in it exists.
func checkExpr(t *testing.T, where, expr string, registered, used map[string]bool) {
	t.Helper()
	if strings.TrimSpace(expr) == "" || !balanced(expr) {
		t.Errorf("%s: malformed expression %q", where, expr)
		return
	}
	names := promMetrics(expr)
	if len(names) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	for _, n := range names {
		used[n] = true
		if !knownMetric(n, registered) {
			t.Errorf("%s: %s is neither registered by gonomaly's Go code nor a known external metric", where, n)
		}
	}
}

// ruleFile is Prometheus' rule file format (rulefmt), decoded strictly.
type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Limit    int    `json:"limit,omitempty"`
		Rules    []struct {
			Record        string            `json:"record,omitempty"`
			Alert         string            `json:"alert,omitempty"`
			Expr          string            `json:"expr"`
			For           string            `json:"for,omitempty"`
			KeepFiringFor string            `json:"keep_firing_for,omitempty"`
			Labels        map[string]string `json:"labels,omitempty"`
			Annotations   map[string]string `json:"annotations,omitempty"`
		} `json:"rules"`
	} `json:"groups"`
}

var promDurationRe = regexp.MustCompile(`^(\d+(ms|s|m|h|d|w|y))+$`)

// Prometheus' template functions, stubbed: annotations must parse as they do there.
var promTemplateFuncs = template.FuncMap{}

func init() {
	for _, f := range []string{"humanize", "humanize1024", "humanizeDuration", "humanizePercentage", "humanizeTimestamp",
		"toTime", "query", "first", "label", "value", "strvalue", "args", "reReplaceAll", "safeHtml", "match", "title",
		"toUpper", "toLower", "graphLink", "tableLink", "sortByLabel", "pathPrefix", "externalURL", "parseDuration"} {
		promTemplateFuncs[f] = func(...any) any { return nil }
	}
}

func TestAlertRules(t *testing.T) {
	var rf ruleFile
	if err := yaml.UnmarshalStrict(readFile(t, "deploy/prometheus/alerts.yml"), &rf); err != nil {
		t.Fatal(err)
	}
	registered := registeredMetrics(t)
	alerts := map[string]time.Duration{}
	groups := map[string]bool{}
	for _, g := range rf.Groups {
		if g.Name == "" || groups[g.Name] {
			t.Errorf("group name %q empty or repeated", g.Name)
		}
		groups[g.Name] = true
		for _, r := range g.Rules {
			if (r.Alert == "") == (r.Record == "") {
				t.Errorf("group %s: a rule needs exactly one of alert and record (%q/%q)", g.Name, r.Alert, r.Record)
			}
			checkExpr(t, "rule "+r.Alert+r.Record, r.Expr, registered, map[string]bool{})
			var d time.Duration
			if r.For != "" {
				if !promDurationRe.MatchString(r.For) {
					t.Errorf("alert %s: for %q is not a Prometheus duration", r.Alert, r.For)
				}
				d, _ = time.ParseDuration(r.For)
			}
			if r.Alert != "" {
				if _, dup := alerts[r.Alert]; dup {
					t.Errorf("alert %s defined twice", r.Alert)
				}
				alerts[r.Alert] = d
				if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
					t.Errorf("alert %s: needs a severity label and a summary", r.Alert)
				}
			}
			for k, text := range r.Annotations {
				// Prometheus defines $labels, $value and $externalLabels before expanding.
				src := "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}" + text
				if _, err := template.New(k).Funcs(promTemplateFuncs).Parse(src); err != nil {
					t.Errorf("alert %s: annotation %s: %v", r.Alert, k, err)
				}
			}
		}
	}
	// Issue 6: lag growing for 10 minutes, DLQ rate, error rate, no records in 5 minutes.
	for name, minFor := range map[string]time.Duration{"GonomalyConsumerLagGrowing": 10 * time.Minute,
		"GonomalyDLQRate": 0, "GonomalyHTTPErrorRate": 0, "GonomalyNoRecordsProcessed": 0} {
		if d, ok := alerts[name]; !ok || d < minFor {
			t.Errorf("alert %s missing or its for (%v) shorter than %v", name, d, minFor)
		}
	}
}

// promConfig is the part of prometheus.yml docker-compose uses, decoded strictly.
type promConfig struct {
	Global struct {
		ScrapeInterval     string `json:"scrape_interval"`
		EvaluationInterval string `json:"evaluation_interval"`
	} `json:"global"`
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		MetricsPath   string `json:"metrics_path,omitempty"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

func TestPrometheusConfig(t *testing.T) {
	var pc promConfig
	if err := yaml.UnmarshalStrict(readFile(t, "deploy/prometheus/prometheus.yml"), &pc); err != nil {
		t.Fatal(err)
	}
	c := readCompose(t)
	mounts := c.mounts("prometheus")
	for _, f := range pc.RuleFiles {
		if _, ok := mounts[f]; !ok {
			t.Errorf("rule file %s is not mounted into the prometheus service", f)
		}
	}
	jobs := map[string]bool{}
	for _, sc := range pc.ScrapeConfigs {
		if jobs[sc.JobName] {
			t.Errorf("scrape job %s twice", sc.JobName)
		}
		jobs[sc.JobName] = true
		for _, s := range sc.StaticConfigs {
			for _, target := range s.Targets {
				host, port, _ := strings.Cut(target, ":")
				if host == "localhost" {
					continue
				}
				if !c.serves(host, port) {
					t.Errorf("scrape target %s: no compose service %s listening on %s", target, host, port)
				}
			}
		}
	}
	// The alert rules select gonomaly jobs by name.
	for j := range jobs {
		if j != "prometheus" && j != "kafka-exporter" && !strings.HasPrefix(j, "gonomaly-") {
			t.Errorf("scrape job %s: gonomaly jobs are named gonomaly-* (alerts.yml selects them so)", j)
		}
	}
}
