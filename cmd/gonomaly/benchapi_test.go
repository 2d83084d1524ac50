package main

import (
	"encoding/json"
	"testing"

	"github.com/gonomaly/gonomaly/internal/bench"
)

// TestBenchAPIRuns: a one-second `gonomaly bench api --json` submits jobs, reads their
// statuses, finds every accepted job on the queue topic, and prints every field.
func TestBenchAPIRuns(t *testing.T) {
	out, _ := gonomaly(t, "bench", "api", "--duration", "1s", "--workers", "4", "--partitions", "2", "--auth", "--json")
	var res bench.APIResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	for _, p := range []bench.PhaseResult{res.Submit, res.Status} {
		if p.Requests == 0 || p.Succeeded != p.Requests || p.Errors != 0 || p.RequestsPerSec <= 0 || p.Seconds < 0.5 ||
			p.P50Ms <= 0 || p.P50Ms > p.P90Ms || p.P90Ms > p.P99Ms || p.P99Ms > p.MaxMs || p.CPUSeconds <= 0 || p.CPUPerRequestUs <= 0 {
			t.Errorf("phase %+v", p)
		}
	}
	if res.Submit.Name != "submit" || res.Submit.StatusCodes["202"] != res.Submit.Requests || res.Status.StatusCodes["200"] != res.Status.Requests {
		t.Errorf("phases %+v / %+v", res.Submit, res.Status)
	}
	if res.QueuedInKafka != int64(res.Submit.Succeeded) {
		t.Errorf("%d jobs on the queue topic, %d accepted", res.QueuedInKafka, res.Submit.Succeeded)
	}
	if !res.Auth || res.Workers != 4 || res.Partitions != 2 || res.Cores < 1 || res.PeakRSSMB <= 0 {
		t.Errorf("result %+v", res)
	}
	var fields map[string]any
	json.Unmarshal([]byte(out), &fields)
	for _, k := range []string{"submit", "status", "queued_in_kafka", "workers", "rate_cap", "partitions", "auth", "cores", "peak_rss_mb"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("no %q in %s", k, out)
		}
	}
}
