package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/bench"
)

// loadConns is the load generator's concurrency: requests in flight, each on its own
// keep-alive connection (gonomaly bench api's default on two cores).
const loadConns = 16

// phase is one endpoint's share of a load run.
type phase struct {
	Name, Route     string
	Requests, OK    int
	Codes           map[int]int
	ErrorSample     string
	Seconds, PerSec float64
	Latency         Dist
	CPUPerRequestUs float64 // this process's CPU per request; NaN against another process's API
	latencies       []float64
}

// attack drives one target at full speed (vegeta, loadConns workers) for d and
// summarises the answers; only 2xx answers count as served.
func attack(ctx context.Context, name string, d time.Duration, target vegeta.Targeter) phase {
	p := phase{Name: name}
	a := bench.Attack(ctx, bench.AttackConfig{Name: name, Targeter: target, Duration: d, Workers: loadConns,
		Failed: func(res *vegeta.Result) {
			if p.ErrorSample == "" {
				p.ErrorSample = fmt.Sprintf("%d %s", res.Code, res.Error)
			}
		}})
	p.Requests, p.OK, p.Codes, p.Seconds = a.Requests, a.Succeeded, a.Codes, a.Seconds
	for _, l := range a.Latencies {
		p.latencies = append(p.latencies, float64(l.Microseconds())/1000)
	}
	if p.Requests > 0 {
		p.CPUPerRequestUs = float64(a.CPU.Microseconds()) / float64(p.Requests)
	}
	if p.Seconds > 0 {
		p.PerSec = float64(p.OK) / p.Seconds
	}
	p.Latency = Summarize(append([]float64(nil), p.latencies...))
	return p
}

// ParseHTTPAddr reads a flag that names a server as host:port or as an http(s) URL
// (gonomaly perf --api-url, gonomaly profile --target).
func ParseHTTPAddr(raw string) (*url.URL, error) {
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%q is not an http(s) address", raw)
	}
	return u, nil
}

// APIBase turns --api-url into the server's root: http://host:port, with or without
// /api/v1.
func APIBase(raw string) (string, error) {
	u, err := ParseHTTPAddr(raw)
	if err != nil {
		return "", err
	}
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), api.Prefix)
	u.RawQuery, u.Fragment = "", ""
	return strings.TrimSuffix(u.String(), "/"), nil
}

func runLoad(ctx context.Context, r *run) error {
	d := 10 * time.Second
	if r.cfg.Short {
		d = 700 * time.Millisecond
	}
	base, where := "", ""
	if r.cfg.APIURL != "" {
		var err error
		if base, err = APIBase(r.cfg.APIURL); err != nil {
			return fmt.Errorf("--api-url: %w", err)
		}
		where = "the API at " + base + " (given with --api-url)"
	} else {
		r.progress("starting an embedded broker and the API")
		env, err := startAPI(ctx, r.log)
		if err != nil {
			return err
		}
		defer env.Close()
		base = env.Base
		where = "an API started in this process (embedded broker, job store, no workers: submitted jobs stay queued), on loopback"
	}
	header := http.Header{"Content-Type": {"application/json"}}
	if r.cfg.APIKey != "" {
		header.Set("Authorization", "Bearer "+r.cfg.APIKey)
	}
	// Jobs for the status phase: a few, submitted before it.
	client := httpClient(4)
	var ids []string
	for _, body := range detectJobs(20, 10, 3, 99) {
		id, err := submitJob(ctx, client, base+api.Prefix+"/jobs", r.cfg.APIKey, body)
		if err != nil {
			return fmt.Errorf("preparing the status phase: %w", err)
		}
		ids = append(ids, id)
	}
	submitBodies := detectJobs(256, 10, 3, 7)
	detectBody := detectRequest(100, 3)
	var next atomic.Uint64
	targets := []struct {
		name, route string
		target      vegeta.Targeter
	}{
		{"healthz", "GET /healthz", func(t *vegeta.Target) error {
			t.Method, t.URL, t.Header = http.MethodGet, base+"/healthz", header
			return nil
		}},
		{"status", "GET /api/v1/jobs/{id}", func(t *vegeta.Target) error {
			t.Method, t.Header = http.MethodGet, header
			t.URL = base + api.Prefix + "/jobs/" + ids[next.Add(1)%uint64(len(ids))]
			return nil
		}},
		{"submit", "POST /api/v1/jobs (detect job, 10 rows)", func(t *vegeta.Target) error {
			t.Method, t.URL, t.Header = http.MethodPost, base+api.Prefix+"/jobs", header
			t.Body = submitBodies[next.Add(1)%uint64(len(submitBodies))]
			return nil
		}},
		{"detect", "POST /api/v1/detect (hbos, 100 rows × 3)", func(t *vegeta.Target) error {
			t.Method, t.URL, t.Header, t.Body = http.MethodPost, base+api.Prefix+"/detect", header, detectBody
			return nil
		}},
	}
	var phases []phase
	for _, tg := range targets {
		r.progress("%s for %s", tg.route, d)
		p := attack(ctx, tg.name, d, tg.target)
		p.Route = tg.route
		if r.cfg.APIURL != "" {
			p.CPUPerRequestUs = math.NaN() // only the load generator's: the server is elsewhere
		}
		if p.OK == 0 {
			return fmt.Errorf("%s: no successful request of %d (%s)", tg.route, p.Requests, p.ErrorSample)
		}
		phases = append(phases, p)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	b := &r.sec.Body
	fmt.Fprintf(b, "vegeta drives %s with %d concurrent keep-alive connections, as fast as answers come, %s per endpoint, "+
		"one endpoint at a time. The load generator runs in this process and shares its cores; requests/s counts 2xx "+
		"answers; latency is from the request's start to the end of its answer; CPU per request is this process's CPU "+
		"time (server, broker and load generator together, when the API runs here) divided by the requests.\n", where, loadConns, d)
	t := newTable("endpoint", "requests/s", "requests", "non-2xx", "CPU per request", "p50", "p90", "p99", "max")
	var hists []histSeries
	for _, p := range phases {
		bad := p.Requests - p.OK
		badText := fmt.Sprint(bad)
		if bad > 0 {
			badText += " (" + codesText(p.Codes) + ")"
		}
		t.add(p.Route, num(p.PerSec), num(float64(p.Requests)), badText, usText(p.CPUPerRequestUs), ms(p.Latency.P50), ms(p.Latency.P90), ms(p.Latency.P99), ms(p.Latency.Max))
		hists = append(hists, histSeries{Name: p.Route, Values: p.latencies})
		r.sec.Summary = append(r.sec.Summary, Row{TypeLoad, "requests/s: " + p.Route, fmt.Sprintf("%s (p99 %s)", num(p.PerSec), ms(p.Latency.P99))})
	}
	t.write(b)
	r.plot("load_latency.png", func(path string) error {
		return latencyHistogram(path, fmt.Sprintf("API latency under load (%d connections)", loadConns), "requests", hists)
	})
	return nil
}

func codesText(codes map[int]int) string {
	var parts []string
	for _, code := range slices.Sorted(maps.Keys(codes)) {
		if code < 200 || code >= 300 {
			parts = append(parts, strconv.Itoa(code)+"×"+strconv.Itoa(codes[code]))
		}
	}
	return strings.Join(parts, " ")
}

// detectRequest is a POST /detect body: hbos over rows×cols seeded values.
func detectRequest(rows, cols int) []byte {
	rng := rand.New(rand.NewPCG(5, 5))
	data := make([][]float64, rows)
	for i := range data {
		data[i] = make([]float64, cols)
		for j := range data[i] {
			data[i][j] = float64(int(rng.NormFloat64()*1000)) / 100
		}
	}
	var buf bytes.Buffer
	json.NewEncoder(&buf).Encode(map[string]any{"algorithm": "hbos", "rows": data})
	return buf.Bytes()
}
