package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/cluster"
)

// APIConfig sizes an API benchmark.
type APIConfig struct {
	// Duration is the length of each phase.
	Duration time.Duration
	// Rate caps each phase's requests/s; 0: as fast as Workers concurrent requests go.
	Rate float64
	// Workers is the number of concurrent requests (and keep-alive connections);
	// default 8 per core: enough to keep the cores busy while requests wait for acks.
	Workers    int
	Partitions int32
	Brokers    []string // empty: the embedded broker
	// Auth configures an API key and sends it with every request, to include the cost
	// of authentication.
	Auth   bool
	Logger *slog.Logger
	// Phase, if set, is told when a phase starts.
	Phase func(name string)
}

// PhaseResult is what one phase measured. Latency is from the request's start to the
// end of its answer's body, as the load generator (in the same process) saw it.
type PhaseResult struct {
	Name     string `json:"name"`
	Requests int    `json:"requests"`
	// Succeeded counts 2xx answers; Errors the rest, transport failures included.
	Succeeded      int            `json:"succeeded"`
	Errors         int            `json:"errors"`
	StatusCodes    map[string]int `json:"status_codes"`
	ErrorSamples   []string       `json:"error_samples,omitempty"`
	Seconds        float64        `json:"seconds"`
	RequestsPerSec float64        `json:"requests_per_sec"` // successful requests per second
	P50Ms          float64        `json:"p50_ms"`
	P90Ms          float64        `json:"p90_ms"`
	P99Ms          float64        `json:"p99_ms"`
	MaxMs          float64        `json:"max_ms"`
	// CPUSeconds is the CPU time the whole process (server, broker and load generator)
	// used during the phase, and CPUPerRequestUs its share per request: on a shared
	// machine a steadier measure of cost than requests/s.
	CPUSeconds      float64 `json:"cpu_seconds"`
	CPUPerRequestUs float64 `json:"cpu_per_request_us"`
}

// APIResult is what `gonomaly bench api --json` prints.
type APIResult struct {
	Submit PhaseResult `json:"submit"`
	Status PhaseResult `json:"status"`
	// QueuedInKafka is the number of jobs the submit phase left on the detect queue
	// topic: every accepted submission must be there.
	QueuedInKafka int64   `json:"queued_in_kafka"`
	Workers       int     `json:"workers"`
	RateCap       float64 `json:"rate_cap"`
	Partitions    int32   `json:"partitions"`
	Auth          bool    `json:"auth"`
	Cores         int     `json:"cores"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
}

// benchKey is the API key of a benchmark with Auth.
const benchKey = "bench-0123456789abcdef0123"

// API runs the benchmark: an embedded broker (unless Brokers), an API server on
// 127.0.0.1 in this process with a real job store and no workers (submitted jobs stay
// queued), and vegeta driving it over HTTP. Phase 1 submits small detect jobs (10
// inline rows each, varied algorithms, parameters and values); phase 2 reads the
// statuses of the submitted jobs.
func API(ctx context.Context, cfg APIConfig) (APIResult, error) {
	if cfg.Duration <= 0 {
		return APIResult{}, fmt.Errorf("--duration must be positive")
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8 * runtime.NumCPU()
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 8
	}
	envCfg := APIEnvConfig{
		Cluster:  cluster.Config{Brokers: cfg.Brokers, Partitions: cfg.Partitions, Prefix: fmt.Sprintf("benchapi%d.", time.Now().UnixNano()), Logger: cfg.Logger},
		ClientID: "gonomaly-bench-api",
	}
	header := http.Header{"Content-Type": {"application/json"}}
	if cfg.Auth {
		envCfg.Keys = []api.Key{{Name: "bench", Role: api.RoleSubmit, Secret: benchKey}}
		header.Set("Authorization", "Bearer "+benchKey)
	}
	env, err := StartAPI(ctx, envCfg)
	if err != nil {
		return APIResult{}, err
	}
	defer env.Close()
	base := env.Base + api.Prefix

	bodies := jobBodies(1024, 1)
	if err := warmUp(ctx, base+"/jobs", bodies[0], header); err != nil {
		return APIResult{}, err
	}

	res := APIResult{Workers: cfg.Workers, RateCap: cfg.Rate, Partitions: cfg.Partitions, Auth: cfg.Auth, Cores: runtime.NumCPU()}
	var next atomic.Uint64
	submitURL := base + "/jobs"
	submit := func(t *vegeta.Target) error {
		t.Method, t.URL, t.Header = http.MethodPost, submitURL, header
		t.Body = bodies[next.Add(1)%uint64(len(bodies))]
		return nil
	}
	if cfg.Phase != nil {
		cfg.Phase("submit")
	}
	var ids []string
	res.Submit = attack(ctx, "submit", submit, cfg, func(r *vegeta.Result) {
		if id := StatusID(r.Body); id != "" {
			ids = append(ids, id)
		}
	})
	if res.Submit.Succeeded > 0 && len(ids) == 0 {
		return res, fmt.Errorf("no job id in the submit answers")
	}
	// The API's own client, which produced the jobs: the admin client's view of the topic may
	// still be from before it was created.
	queued, err := endOffsets(ctx, env.Store.Client, env.Store.Topics.Detect)
	if err != nil {
		return res, err
	}
	res.QueuedInKafka = queued - 1 // the warm-up's

	if len(ids) > 0 {
		urls := make([]string, len(ids))
		for i, id := range ids {
			urls[i] = base + "/jobs/" + id
		}
		next.Store(0)
		status := func(t *vegeta.Target) error {
			t.Method, t.Header = http.MethodGet, header
			t.URL = urls[next.Add(1)%uint64(len(urls))]
			return nil
		}
		if cfg.Phase != nil {
			cfg.Phase("status")
		}
		res.Status = attack(ctx, "status", status, cfg, nil)
	}
	res.PeakRSSMB = PeakRSSMB()
	return res, ctx.Err()
}

// AttackConfig is one load phase for Attack.
type AttackConfig struct {
	Name     string
	Targeter vegeta.Targeter
	Duration time.Duration
	// Workers is the number of concurrent requests, each on its own keep-alive connection.
	Workers int
	// Rate caps the requests/s; 0: as fast as the workers go.
	Rate float64
	// OK, if set, is handed every 2xx answer, body included; without it answers' bodies
	// are drained, not kept.
	OK func(*vegeta.Result)
	// Failed, if set, is handed every other answer, transport failures included.
	Failed func(*vegeta.Result)
}

// Attacked is what an attack measured.
type Attacked struct {
	Requests  int
	Succeeded int         // 2xx answers without a transport error
	Codes     map[int]int // answers by status code (0: none)
	// Latencies are the successful requests', from the request's start to the end of its
	// answer's body, in the order they came.
	Latencies []time.Duration
	// Seconds is from the first request's start to the end of the last answer.
	Seconds float64
	// CPU is the CPU time the whole process used during the attack.
	CPU time.Duration
}

// Attack drives cfg.Targeter with vegeta for cfg.Duration (or until ctx ends); OK and
// Failed are called on the attack's one collecting goroutine.
func Attack(ctx context.Context, cfg AttackConfig) Attacked {
	opts := []func(*vegeta.Attacker){
		vegeta.Workers(uint64(cfg.Workers)), vegeta.MaxWorkers(uint64(cfg.Workers)),
		vegeta.Connections(cfg.Workers), vegeta.KeepAlive(true), vegeta.Redirects(vegeta.NoFollow),
	}
	if cfg.OK == nil {
		opts = append(opts, vegeta.MaxBody(0)) // drained, not kept
	}
	a := vegeta.NewAttacker(opts...)
	stop := context.AfterFunc(ctx, func() { a.Stop() })
	defer stop()
	// Per 1000 s keeps fractional rates; a zero rate is vegeta's "as fast as the workers go".
	pacer := vegeta.ConstantPacer{Freq: int(math.Round(cfg.Rate * 1000)), Per: 1000 * time.Second}
	out := Attacked{Codes: map[int]int{}, Latencies: make([]time.Duration, 0, 1<<16)}
	cpuStart := ProcessCPU()
	var first, last time.Time
	for r := range a.Attack(cfg.Targeter, pacer, cfg.Duration, cfg.Name) {
		out.Requests++
		out.Codes[int(r.Code)]++
		if r.Code >= 200 && r.Code < 300 && r.Error == "" {
			out.Succeeded++
			out.Latencies = append(out.Latencies, r.Latency)
			if cfg.OK != nil {
				cfg.OK(r)
			}
		} else if cfg.Failed != nil {
			cfg.Failed(r)
		}
		if first.IsZero() || r.Timestamp.Before(first) {
			first = r.Timestamp
		}
		if end := r.Timestamp.Add(r.Latency); end.After(last) {
			last = end
		}
	}
	out.CPU = ProcessCPU() - cpuStart
	out.Seconds = last.Sub(first).Seconds()
	return out
}

// attack runs one phase and summarises it; each answer is also handed to each, on the
// phase's one collecting goroutine.
func attack(ctx context.Context, name string, targeter vegeta.Targeter, cfg APIConfig, each func(*vegeta.Result)) PhaseResult {
	out := PhaseResult{Name: name, StatusCodes: map[string]int{}}
	seen := map[string]bool{}
	a := Attack(ctx, AttackConfig{
		Name: name, Targeter: targeter, Duration: cfg.Duration, Workers: cfg.Workers, Rate: cfg.Rate, OK: each,
		Failed: func(r *vegeta.Result) {
			msg := r.Error
			if len(r.Body) > 0 {
				msg += ": " + string(bytes.TrimSpace(r.Body[:min(len(r.Body), 300)]))
			}
			if !seen[msg] && len(out.ErrorSamples) < 5 {
				seen[msg] = true
				out.ErrorSamples = append(out.ErrorSamples, msg)
			}
		},
	})
	out.Requests, out.Succeeded, out.Errors = a.Requests, a.Succeeded, a.Requests-a.Succeeded
	for code, n := range a.Codes {
		out.StatusCodes[strconv.Itoa(code)] = n
	}
	out.CPUSeconds = a.CPU.Seconds()
	if out.Requests > 0 {
		out.CPUPerRequestUs = out.CPUSeconds * 1e6 / float64(out.Requests)
	}
	out.Seconds = a.Seconds
	if out.Seconds > 0 {
		out.RequestsPerSec = float64(out.Succeeded) / out.Seconds
	}
	latencies := a.Latencies
	slices.Sort(latencies)
	ms := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(q*float64(len(latencies)-1))].Microseconds()) / 1000
	}
	out.P50Ms, out.P90Ms, out.P99Ms, out.MaxMs = ms(0.50), ms(0.90), ms(0.99), ms(1)
	return out
}

// jobBodies builds n varied small detect jobs: 10 rows of 2 to 4 columns, one of a few
// algorithms with a parameter or two, seeded.
func jobBodies(n int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 7))
	type algo struct {
		name   string
		params func() map[string]float64
	}
	algos := []algo{
		{"iforest", func() map[string]float64 { return map[string]float64{"trees": float64(50 + rng.IntN(100))} }},
		{"hbos", func() map[string]float64 { return map[string]float64{"n_bins": float64(5 + rng.IntN(10))} }},
		{"ecod", func() map[string]float64 { return nil }},
		{"knn", func() map[string]float64 { return map[string]float64{"n_neighbors": float64(1 + rng.IntN(5))} }},
		{"lof", func() map[string]float64 { return map[string]float64{"n_neighbors": float64(2 + rng.IntN(5))} }},
	}
	out := make([][]byte, n)
	for i := range out {
		a := algos[i%len(algos)]
		cols := 2 + rng.IntN(3)
		rows := make([][]float64, 10)
		for r := range rows {
			rows[r] = make([]float64, cols)
			for c := range rows[r] {
				rows[r][c] = float64(int(rng.NormFloat64()*1000)) / 100
			}
		}
		job := map[string]any{
			"type": "detect", "algorithm": a.name, "input": map[string]any{"rows": rows},
			"seed": rng.Uint64N(1000), "contamination": 0.1,
		}
		if p := a.params(); p != nil {
			job["params"] = p
		}
		out[i], _ = json.Marshal(job) // maps of strings and numbers
	}
	return out
}

// warmUp submits one job, so the producer has its metadata before measuring.
func warmUp(ctx context.Context, url string, body []byte, header http.Header) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = header.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("warm-up submission: %w", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	http.DefaultClient.CloseIdleConnections()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("warm-up submission: %s: %s", resp.Status, bytes.TrimSpace(b.Bytes()))
	}
	return nil
}

// StatusID finds the "id" member of a job status answer without decoding all of it.
func StatusID(body []byte) string {
	const key = `"id":"`
	i := bytes.Index(body, []byte(key))
	if i < 0 {
		return ""
	}
	rest := body[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return string(rest[:j])
}

func endOffsets(ctx context.Context, cl *kgo.Client, topic string) (int64, error) {
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	if err := ends.Error(); err != nil {
		return 0, err
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum, nil
}

// ProcessCPU is the user and system CPU time of the whole process (every thread, so the
// garbage collector's work counts too), as Python's time.process_time is. On a shared
// machine CPU per unit of work is a steadier measure of cost than throughput, which
// depends on how much of the cores the other jobs leave.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
