package main

import (
	"bufio"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// scrape is one /metrics exposition: every sample's value by its full series text
// (name{labels}) and the sum of each name's samples.
type scrape struct {
	series map[string]float64
	byName map[string]float64
	count  map[string]int
}

func scrapeMetrics(t *testing.T, base string) scrape {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	s := scrape{series: map[string]float64{}, byName: map[string]float64{}, count: map[string]int{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 1<<16), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		series := line[:i]
		name, _, _ := strings.Cut(series, "{")
		s.series[series] = v
		s.byName[name] += v
		s.count[name]++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return s
}

// get is the value of the series whose text contains every part (name first).
func (s scrape) get(parts ...string) (float64, bool) {
	var sum float64
	found := false
	for series, v := range s.series {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(series, p)
		}
		if ok && strings.HasPrefix(series, parts[0]) {
			sum, found = sum+v, true
		}
	}
	return sum, found
}

var metricsAddrRE = regexp.MustCompile(`serving metrics" addr=http://(\S+)/metrics`)

// TestScrapeRunMetrics runs the all-in-one process with the demo stream and checks that
// /metrics has the documented metrics with sane values, and that every gonomaly metric
// it exports is documented in docs/metrics.md. It runs with --autoscale, whose
// metrics are a superset (the demo stream keeps each stage at its one member).
func TestScrapeRunMetrics(t *testing.T) {
	// Two sinks of one kind: their metrics must not clash (the group label tells them apart).
	dir := t.TempDir()
	p := start(t, "run", "--demo", "--demo-rate", "1000", "--quiet", "--partitions", "2",
		"--metrics-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--autoscale", "--autoscale-interval", "500ms",
		"--sink", "jsonl:"+filepath.Join(dir, "a.jsonl"), "--sink", "jsonl:"+filepath.Join(dir, "b.jsonl"))
	go io.Copy(io.Discard, p.stdout)
	var metricsBase, apiBase string
	waitFor(t, "the metrics and API addresses", 60*time.Second, func() bool {
		log := p.stderr.String()
		m, a := metricsAddrRE.FindStringSubmatch(log), apiAddrRE.FindStringSubmatch(log)
		if m != nil && a != nil {
			metricsBase, apiBase = "http://"+m[1], "http://"+a[1]
		}
		return m != nil && a != nil
	})
	waitFor(t, "records through every stage", 90*time.Second, func() bool {
		s := scrapeMetrics(t, metricsBase)
		v, _ := s.get("gonomaly_stage_records_out_total", `stage="ensemble"`)
		return v > 0
	})
	// Detectors score NaN while they warm up (ewma: 8 records a series), and NaN is
	// not observed: wait for the first verdicts.
	waitFor(t, "detector scores", 60*time.Second, func() bool {
		v, _ := scrapeMetrics(t, metricsBase).get("gonomaly_detector_score_count", `detector="ewma"`)
		return v > 0
	})
	resp, err := http.Get(apiBase + "/api/v1/detectors")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v1/detectors: %s", resp.Status)
	}
	// The API counts a request after its response has gone out, so the client can
	// scrape before it is counted.
	waitFor(t, "the request counted", 10*time.Second, func() bool {
		_, ok := scrapeMetrics(t, metricsBase).get("gonomaly_http_request_duration_seconds_count", `/api/v1/detectors`)
		return ok
	})
	s := scrapeMetrics(t, metricsBase)

	positive := func(what string, parts ...string) {
		t.Helper()
		if v, ok := s.get(parts...); !ok || !(v > 0) {
			t.Errorf("%s: %v = %v (present %v), want > 0", what, parts, v, ok)
		}
	}
	for _, stage := range []string{"preprocess", "detect", "ensemble"} {
		sl := `stage="` + stage + `"`
		positive("records in", "gonomaly_stage_records_in_total", sl)
		positive("records out", "gonomaly_stage_records_out_total", sl)
		positive("batches timed", "gonomaly_stage_batch_seconds_count", sl)
		positive("partitions owned", "gonomaly_stage_assigned_partitions", sl)
		in, _ := s.get("gonomaly_stage_records_in_total", sl)
		out, _ := s.get("gonomaly_stage_records_out_total", sl)
		if stage == "preprocess" && out > in {
			t.Errorf("preprocess produced %v records from %v", out, in)
		}
	}
	// The default spec's detectors, each with a score histogram; rrcf scores NaN until
	// its forest fills, so only ewma's count is sure to be positive by now.
	for _, d := range []string{"ewma", "rrcf", "seasonal"} {
		if _, ok := s.get("gonomaly_detector_score_count", `detector="`+d+`"`, `pipeline="default"`); !ok {
			t.Errorf("no gonomaly_detector_score for detector %s", d)
		}
	}
	positive("detector scores", "gonomaly_detector_score_count", `detector="ewma"`)
	positive("detector score buckets", "gonomaly_detector_score_bucket", `detector="ewma"`, `le="+Inf"`)
	for _, stage := range []string{"preprocess", "detect", "ensemble"} {
		sl := `stage="` + stage + `"`
		if v, ok := s.get("gonomaly_autoscale_replicas", sl); !ok || v < 1 || v > 2 {
			t.Errorf("gonomaly_autoscale_replicas{%s} = %v (present %v), want 1..2 (the partitions)", sl, v, ok)
		}
		if _, ok := s.get("gonomaly_autoscale_desired_replicas", sl); !ok {
			t.Errorf("no gonomaly_autoscale_desired_replicas{%s}", sl)
		}
	}
	for _, g := range []string{"sink-0", "sink-1"} {
		gl := `group="gonomaly.default.` + g + `"`
		if _, ok := s.get("gonomaly_sink_written_total", gl, `sink="jsonl"`); !ok {
			t.Errorf("no gonomaly_sink_written_total{%s,sink=\"jsonl\"}", gl)
		}
		if _, ok := s.get("gonomaly_consumer_lag_records", gl); !ok {
			t.Errorf("no gonomaly_consumer_lag_records{%s}: the sink's group lag is not exported", gl)
		}
	}
	positive("HTTP requests", "gonomaly_http_requests_total", `/api/v1/detectors`)
	positive("HTTP durations", "gonomaly_http_request_duration_seconds_count", `/api/v1/detectors`)
	positive("Go runtime", "go_goroutines")
	positive("Go heap", "go_memstats_heap_alloc_bytes")
	positive("process memory", "process_resident_memory_bytes")
	positive("process CPU", "process_cpu_seconds_total")
	if _, ok := s.get("gonomaly_worker_assigned_partitions"); !ok {
		t.Error("no gonomaly_worker_assigned_partitions: the job worker exports nothing")
	}

	// Wired by internal/app (issue 6). Checked when present, so that this test can land
	// before the wiring; once it is in, every one of these must be present.
	var missing []string
	if _, ok := s.get("gonomaly_record_latency_seconds_count"); ok {
		positive("end-to-end latency", "gonomaly_record_latency_seconds_count")
		if n, _ := s.get("gonomaly_record_latency_seconds_count"); n > 0 {
			if sum, _ := s.get("gonomaly_record_latency_seconds_sum"); sum/n > 60 {
				t.Errorf("mean end-to-end latency %.1fs of a demo stream that keeps up", sum/n)
			}
		}
	} else {
		missing = append(missing, "gonomaly_record_latency_seconds")
	}
	if _, ok := s.get("gonomaly_consumer_lag_sum"); ok {
		for _, stage := range []string{"preprocess", "detect", "ensemble"} {
			if v, ok := s.get("gonomaly_consumer_lag_sum", `.default.`+stage+`"`); !ok || v < 0 {
				t.Errorf("consumer lag of the %s group: %v (present %v)", stage, v, ok)
			}
		}
	} else {
		missing = append(missing, "gonomaly_consumer_lag_sum")
	}
	if _, ok := s.get("gonomaly_kafka_connects_total"); ok {
		positive("Kafka client connections", "gonomaly_kafka_connects_total")
		positive("Kafka client reads", "gonomaly_kafka_read_bytes_total")
	} else {
		missing = append(missing, "gonomaly_kafka_*")
	}
	if len(missing) > 0 {
		t.Logf("not wired into `gonomaly run` yet, not checked: %v", missing)
	}

	// Every gonomaly metric exported is documented.
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range s.count {
		if !strings.HasPrefix(name, "gonomaly_") {
			continue
		}
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && s.count[b+"_count"] > 0 {
				base = b
			}
		}
		if !strings.Contains(string(doc), "`"+base+"`") {
			t.Errorf("%s is exported but not documented in docs/metrics.md", base)
		}
	}

	if err := p.stop(t, 45*time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}
