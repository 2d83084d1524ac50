package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/schemas"
	"github.com/gonomaly/gonomaly/sinks"
)

// LocalWebhook is the --to prefix that starts an in-process HTTP endpoint for the
// webhook sink to post to: "http://local?batch=100".
const LocalWebhook = "http://local"

// SinkConfig configures `gonomaly bench sink`.
type SinkConfig struct {
	URI    string
	Events int // anomaly events to write
	Batch  int // events per delivery, as the runner's poll batch (default 1,000)
}

// SinkResult is what `gonomaly bench sink --json` prints. Latencies are per delivered
// batch (its writes plus Sync or Deliver), the interval the runner waits before it
// commits.
type SinkResult struct {
	Sink         string  `json:"sink"`
	Events       int     `json:"events"`
	Batch        int     `json:"batch"`
	Rejected     int     `json:"rejected"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"events_per_sec"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
}

// Sink writes cfg.Events synthetic anomaly events to the sink at cfg.URI, without
// Kafka, so the figure is the sink's own ceiling.
func Sink(ctx context.Context, cfg SinkConfig) (SinkResult, error) {
	if cfg.Events <= 0 {
		cfg.Events = 100_000
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 1000
	}
	uri := cfg.URI
	if rest, ok := strings.CutPrefix(uri, LocalWebhook); ok && (rest == "" || rest[0] == '?' || rest[0] == '/') {
		addr, stop, err := localEndpoint()
		if err != nil {
			return SinkResult{}, err
		}
		defer stop()
		if strings.HasPrefix(rest, "/") {
			uri = "http://" + addr + rest
		} else {
			uri = "http://" + addr + "/hook" + rest
		}
	}
	sink, err := sinks.Open(uri)
	if err != nil {
		return SinkResult{}, err
	}
	kind := strings.SplitN(cfg.URI, ":", 2)[0]
	if kind == "http" || kind == "https" {
		kind = "webhook"
	}
	res := SinkResult{Sink: kind, Events: cfg.Events, Batch: cfg.Batch}
	// Every event gets its own id (run tag + sequence number patched into a pre-encoded
	// line), so an idempotent sink (PostgreSQL's ON CONFLICT) measures inserts, not skips.
	runTag := fmt.Sprintf("bench-%x-", time.Now().UnixNano())
	const seqDigits = 12
	lines := make([][]byte, 1000)
	idAt := make([]int, len(lines))
	for i := range lines {
		id := runTag + strings.Repeat("0", seqDigits)
		ev := &schemas.Result{EventID: id, Series: fmt.Sprintf("host-%03d", i%100), TS: 1_795_000_000_000 + int64(i),
			Score: 0.97, Threshold: 0.9, Severity: "critical", Detectors: map[string]float64{"hst": 0.95, "zscore": 0.99},
			Contributions: map[string]float64{"cpu": 0.81, "mem": 0.19}, Values: map[string]float64{"cpu": 0.93, "mem": 0.41},
			Source: schemas.Source{Topic: "gonomaly.records", Partition: 3, Offset: int64(i)}, Pipeline: "default", DetectedAt: 1_795_000_000_100 + int64(i)}
		lines[i] = schemas.AppendAnomalyEventJSON(nil, ev)
		idAt[i] = bytes.Index(lines[i], []byte(id)) + len(runTag)
	}
	var line []byte
	lat := make([]float64, 0, cfg.Events/cfg.Batch+1)
	start := time.Now()
	for done := 0; done < cfg.Events; {
		if err := ctx.Err(); err != nil {
			sink.Close()
			return res, err
		}
		t0 := time.Now()
		n := min(cfg.Batch, cfg.Events-done)
		for i := range n {
			seq, slot := done+i, (done+i)%len(lines)
			line = append(line[:0], lines[slot]...)
			for d, at := seq, idAt[slot]+seqDigits-1; at >= idAt[slot]; d, at = d/10, at-1 {
				line[at] = byte('0' + d%10)
			}
			if err := sink.Write(line); err != nil {
				sink.Close()
				return res, err
			}
		}
		if d, ok := sink.(sinks.Deliverer); ok {
			rej, err := d.Deliver(ctx)
			if err != nil {
				sink.Close()
				return res, err
			}
			res.Rejected += len(rej)
		} else if err := sink.Sync(); err != nil {
			sink.Close()
			return res, err
		}
		lat = append(lat, float64(time.Since(t0).Microseconds())/1000)
		done += n
	}
	if err := sink.Close(); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	res.EventsPerSec = float64(cfg.Events) / res.Seconds
	slices.Sort(lat)
	res.P50Ms, res.P99Ms, res.MaxMs = quantile(lat, 0.50), quantile(lat, 0.99), lat[len(lat)-1]
	return res, nil
}

// localEndpoint serves an HTTP endpoint on loopback that reads each body and answers
// 200, standing in for a webhook receiver.
func localEndpoint() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }, nil
}
