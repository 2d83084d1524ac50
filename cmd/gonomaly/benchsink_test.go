package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/gonomaly/gonomaly/internal/bench"
)

// TestBenchSinkRuns: `gonomaly bench sink --json` against a file and the in-process
// webhook endpoint writes every event and reports a rate and latencies.
func TestBenchSinkRuns(t *testing.T) {
	for _, to := range []string{"jsonl:" + filepath.Join(t.TempDir(), "a.jsonl?max_bytes=64kB"), "http://local?batch=50"} {
		out, _ := gonomaly(t, "bench", "sink", "--to", to, "--events", "5000", "--batch", "500", "--json")
		var res bench.SinkResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if res.Events != 5000 || res.Batch != 500 || res.Rejected != 0 || res.EventsPerSec <= 0 || res.P50Ms <= 0 || res.P50Ms > res.P99Ms || res.P99Ms > res.MaxMs {
			t.Errorf("%s: %+v", to, res)
		}
	}
}
