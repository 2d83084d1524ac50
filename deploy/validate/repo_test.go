package validate

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// root is the main module's directory, two levels up from deploy/validate.
const root = "../.."

func readFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goSources returns the main module's non-test Go files (deploy/ excluded), by path.
var goSources = sync.OnceValues(func() (map[string]string, error) {
	files := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "deploy", "testdata", "bin", "out", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[path] = string(b)
		return nil
	})
	return files, err
})

func sources(t *testing.T) map[string]string {
	t.Helper()
	s, err := goSources()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var metricNameRe = regexp.MustCompile(`Name:\s*"(gonomaly_[a-z0-9_]+)"`)

// registeredMetrics are the gonomaly_* metric names the Go code registers
// (prometheus.*Opts{Name: "..."}).
func registeredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, src := range sources(t) {
		for _, m := range metricNameRe.FindAllStringSubmatch(src, -1) {
			names[m[1]] = true
		}
	}
	if len(names) == 0 {
		t.Fatal("no gonomaly_* metric registered in the Go sources: has the Name: pattern changed?")
	}
	return names
}

// externalMetrics are the series the artifacts may use that gonomaly does not export:
// the Go and process collectors every process registers (internal/telemetry), the
// Kafka exporter of docker-compose.yml, kube-state-metrics, KEDA's operator, Prometheus.
var externalMetrics = map[string]bool{
	"up":                                        true,
	"process_cpu_seconds_total":                 true,
	"process_resident_memory_bytes":             true,
	"process_open_fds":                          true,
	"go_goroutines":                             true,
	"go_memstats_heap_inuse_bytes":              true,
	"go_gc_duration_seconds":                    true,
	"kafka_consumergroup_lag":                   true,
	"kafka_consumergroup_members":               true,
	"kafka_topic_partition_current_offset":      true,
	"kube_deployment_status_replicas":           true,
	"kube_deployment_status_replicas_available": true,
	"keda_scaler_metrics_value":                 true,
	"keda_scaler_active":                        true,
}

// knownMetric reports whether name is registered by gonomaly (histogram series
// included) or is one of externalMetrics.
func knownMetric(name string, registered map[string]bool) bool {
	if externalMetrics[name] || registered[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && registered[base] {
			return true
		}
	}
	return false
}

var (
	promStringRe  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promBracesRe  = regexp.MustCompile(`\{[^{}]*\}|\[[^\[\]]*\]`)
	promGroupRe   = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdentRe   = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promNumberRe  = regexp.MustCompile(`^\d`)
	promNotMetric = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true, "inf": true, "nan": true}
)

// promMetrics returns the metric names a PromQL expression selects: identifiers that
// are not functions, keywords, label names or inside strings, matchers and ranges.
func promMetrics(expr string) []string {
	e := promStringRe.ReplaceAllString(expr, `""`)
	e = promBracesRe.ReplaceAllString(e, " ")
	e = promGroupRe.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promIdentRe.FindAllStringIndex(e, -1) {
		id := e[loc[0]:loc[1]]
		if promNotMetric[strings.ToLower(id)] || (loc[0] > 0 && (promNumberRe.MatchString(e[loc[0]-1:]) || e[loc[0]-1] == '.')) {
			continue
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or aggregation
		}
		names = append(names, id)
	}
	return names
}

// balanced reports whether (), [] and {} nest properly outside string literals.
func balanced(expr string) bool {
	e := promStringRe.ReplaceAllString(expr, `""`)
	var stack []rune
	pairs := map[rune]rune{')': '(', ']': '[', '}': '{'}
	for _, r := range e {
		switch r {
		case '(', '[', '{':
			stack = append(stack, r)
		case ')', ']', '}':
			if len(stack) == 0 || stack[len(stack)-1] != pairs[r] {
				return false
			}
			stack = stack[:len(stack)-1]
		}
	}
	return len(stack) == 0
}

// layout is what the main module's sources say about topics, groups and commands.
type layout struct {
	prefix     string
	pipeline   string          // the example spec's name
	topics     map[string]bool // full topic names
	groups     map[string]bool // full consumer group names
	stageInput map[string]string
	commands   map[string]bool // gonomaly subcommands
	flags      map[string]bool // every flag name any subcommand registers
	shutdown   time.Duration   // the graceful shutdown deadline
}

var (
	topicRe     = regexp.MustCompile(`cfg\.Topic\("([a-z.]+)"\)`)
	commandRe   = regexp.MustCompile(`(?m)^\s*\{"([a-z]+)", "[^"]*", cmd[A-Za-z]+\},`)
	flagRe      = regexp.MustCompile(`\.(?:String|Int|Int64|Bool|Duration|Float64|Uint|Var)(?:Var)?\((?:[^,()"]+, )?"([a-z][a-z0-9-]*)"`)
	shutdownRe  = regexp.MustCompile(`shutdownDeadline\s*=\s*(\d+)\s*\*\s*time\.Second`)
	specNameRe  = regexp.MustCompile(`(?m)^name:\s*([A-Za-z0-9_.-]+)`)
	specTopicRe = regexp.MustCompile(`(?m)^input:\s*\n(?:[ \t]+.*\n|\s*\n)*?[ \t]+topic:\s*([A-Za-z0-9_.-]+)`)
)

func readLayout(t *testing.T) layout {
	t.Helper()
	src := sources(t)
	l := layout{prefix: "gonomaly.", topics: map[string]bool{}, groups: map[string]bool{},
		commands: map[string]bool{}, flags: map[string]bool{}}
	for _, m := range topicRe.FindAllStringSubmatch(src[filepath.Join(root, "internal/cluster/cluster.go")], -1) {
		l.topics[l.prefix+m[1]] = true
	}
	if !l.topics["gonomaly.records"] || !l.topics["gonomaly.jobs.detect"] {
		t.Fatalf("topic layout not found in internal/cluster/cluster.go: %v", l.topics)
	}
	spec := string(readFile(t, "deploy/pipeline.example.yaml"))
	m := specNameRe.FindStringSubmatch(spec)
	if m == nil {
		t.Fatal("deploy/pipeline.example.yaml has no name:")
	}
	l.pipeline = m[1]
	input := "records"
	if m := specTopicRe.FindStringSubmatch(spec); m != nil {
		input = m[1]
	}
	// processors.PipelineTopics: the stages read input.topic, features and scores.
	l.stageInput = map[string]string{"preprocess": l.prefix + input, "detect": l.prefix + "features", "ensemble": l.prefix + "scores"}
	for stage := range l.stageInput {
		l.groups[l.prefix+l.pipeline+"."+stage] = true
	}
	l.groups[l.prefix+"workers"] = true // processors.WorkerGroup
	for path, s := range src {
		if !strings.HasPrefix(path, filepath.Join(root, "cmd", "gonomaly")) {
			continue
		}
		for _, m := range commandRe.FindAllStringSubmatch(s, -1) {
			l.commands[m[1]] = true
		}
		for _, m := range flagRe.FindAllStringSubmatch(s, -1) {
			l.flags[m[1]] = true
		}
		if m := shutdownRe.FindStringSubmatch(s); m != nil {
			n, _ := strconv.Atoi(m[1])
			l.shutdown = time.Duration(n) * time.Second
		}
	}
	for _, c := range []string{"process", "worker", "api", "sink", "produce"} {
		if !l.commands[c] {
			t.Fatalf("command %q not found in cmd/gonomaly (commands table changed?): %v", c, sortedKeys(l.commands))
		}
	}
	for _, f := range []string{"brokers", "metrics-addr", "stage", "queues", "api-addr", "spec"} {
		if !l.flags[f] {
			t.Fatalf("flag --%s not found in cmd/gonomaly: %v", f, sortedKeys(l.flags))
		}
	}
	if l.shutdown == 0 {
		t.Fatal("shutdownDeadline not found in cmd/gonomaly")
	}
	return l
}

// checkArgs checks a gonomaly command line: a real command and real flags.
func (l layout) checkArgs(args []string) []string {
	var problems []string
	if len(args) == 0 || !l.commands[args[0]] {
		return []string{"not a gonomaly command: " + strings.Join(args, " ")}
	}
	for _, a := range args[1:] {
		if name, ok := strings.CutPrefix(a, "--"); ok {
			name, _, _ = strings.Cut(name, "=")
			if !l.flags[name] {
				problems = append(problems, "unknown flag --"+name)
			}
		}
	}
	return problems
}

// checkEnv checks that a GONOMALY_* variable is some flag's fallback (or the log level).
func (l layout) checkEnv(name string) bool {
	flag, ok := strings.CutPrefix(name, "GONOMALY_")
	if !ok {
		return true
	}
	return flag == "LOG_LEVEL" || l.flags[strings.ToLower(strings.ReplaceAll(flag, "_", "-"))]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestPromMetrics(t *testing.T) {
	for expr, want := range map[string]string{
		`sum by (route) (rate(gonomaly_http_requests_total{status=~"5.."}[5m])) / sum(rate(x_total[$__rate_interval]))`: "gonomaly_http_requests_total x_total",
		`histogram_quantile(0.95, sum by (le) (rate(a_bucket[5m]))) > 0.5 and on(job) up == 0`:                          "a_bucket up",
		`increase(b[10m]) * 60 > 1e3`: "b",
	} {
		if got := strings.Join(promMetrics(expr), " "); got != want {
			t.Errorf("promMetrics(%s) = %q, want %q", expr, got, want)
		}
	}
	if balanced(`sum(rate(a{b="("}[5m])`) || !balanced(`sum(rate(a{b="("}[5m]))`) {
		t.Error("balanced is wrong")
	}
}
