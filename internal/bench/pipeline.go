// Package bench holds gonomaly's benchmarks that run whole processes rather than single
// functions: `gonomaly bench pipeline` drives producer → every stage → sink on the
// embedded broker and measures throughput, latency and memory; `gonomaly bench api`
// drives job submissions and status reads through the HTTP API.
package bench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/producers"
	"github.com/gonomaly/gonomaly/sinks"
)

// PipelineConfig sizes a pipeline benchmark.
type PipelineConfig struct {
	Records    int64
	Series     int
	Rate       float64 // records/s cap of the producer; 0: as fast as possible
	Partitions int32
	Spec       *spec.Spec // default: the built-in spec
	Brokers    []string   // empty: the embedded broker
	// ExactlyOnce runs the stages in Kafka transactions (committed every 100 ms).
	ExactlyOnce bool
	Logger      *slog.Logger
	Progress    func(done int64, elapsed time.Duration)
}

// PipelineResult is what `gonomaly bench pipeline --json` prints.
type PipelineResult struct {
	Records       int64   `json:"records"`
	Series        int     `json:"series"`
	Partitions    int32   `json:"partitions"`
	Rate          float64 `json:"rate_cap"`
	Seconds       float64 `json:"seconds"`
	RecordsPerSec float64 `json:"records_per_sec"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	MaxMs         float64 `json:"max_ms"`
	PeakRSSMB     float64 `json:"peak_rss_mb"`
	Anomalies     int64   `json:"anomalies"`
	Detectors     string  `json:"detectors"`
	Cores         int     `json:"cores"`
	ExactlyOnce   bool    `json:"exactly_once"`
}

// Pipeline runs the benchmark. Latency is from the moment the producer hands a record
// to the client (its Kafka timestamp, carried through every stage) to the moment its
// result is synced to the sink file and committed.
func Pipeline(ctx context.Context, cfg PipelineConfig) (PipelineResult, error) {
	if cfg.Records <= 0 {
		return PipelineResult{}, fmt.Errorf("--records must be positive")
	}
	if cfg.Series <= 0 {
		cfg.Series = 100
	}
	if cfg.Partitions <= 0 {
		cfg.Partitions = 8
	}
	if cfg.Spec == nil {
		cfg.Spec = spec.Default()
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	k, err := StartKafka(ctx, cluster.Config{Brokers: cfg.Brokers, Partitions: cfg.Partitions, Prefix: fmt.Sprintf("bench%d.", time.Now().UnixNano()), Logger: log})
	if err != nil {
		return PipelineResult{}, err
	}
	defer k.Close()
	c := k.Cluster
	topics := processors.PipelineTopics(c.Prefix, cfg.Spec)

	dir, err := os.MkdirTemp("", "gonomaly-bench-")
	if err != nil {
		return PipelineResult{}, err
	}
	defer os.RemoveAll(dir)
	sink, err := sinks.Open("jsonl:" + filepath.Join(dir, "results.jsonl"))
	if err != nil {
		return PipelineResult{}, err
	}
	defer sink.Close()

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu        sync.Mutex
		latencies = make([]float64, 0, cfg.Records)
		anomalies int64
		start     time.Time
		last      time.Time
		finished  = make(chan struct{})
	)
	written := func(recs []*kgo.Record) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for _, r := range recs {
			latencies = append(latencies, float64(now.Sub(r.Timestamp).Microseconds())/1000)
			if strings.Contains(string(r.Value), `"is_anomaly":true`) {
				anomalies++
			}
		}
		last = now
		if int64(len(latencies)) >= cfg.Records {
			select {
			case <-finished:
			default:
				close(finished)
			}
		}
	}
	errc := make(chan error, 3)
	go func() {
		errc <- app.RunStages(runCtx, app.StagesConfig{Cluster: c, Spec: cfg.Spec, Logger: log, ExactlyOnce: cfg.ExactlyOnce})
	}()
	go func() {
		errc <- sinks.Run(runCtx, sink, sinks.RunnerConfig{
			Topic: topics.Results, Group: c.Prefix + "bench-sink",
			ClientOpts: []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.FetchIsolationLevel(kgo.ReadCommitted())},
			Logger:     log, Written: written,
		})
	}()
	groups := []string{c.Prefix + "bench-sink"}
	for _, st := range app.StageNames {
		groups = append(groups, app.GroupName(c.Prefix, cfg.Spec.Name, st))
	}
	readyCtx, readyCancel := context.WithTimeout(ctx, 60*time.Second)
	err = cluster.WaitAssigned(readyCtx, kadm.NewClient(k.Admin), int(cfg.Partitions), groups...)
	readyCancel()
	if err != nil {
		return PipelineResult{}, err
	}
	prodCl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...))
	if err != nil {
		return PipelineResult{}, err
	}
	defer prodCl.Close()
	gen := producers.NewSynthetic(producers.SyntheticConfig{Series: cfg.Series, Count: cfg.Records, Seed: 1})
	start = time.Now()
	pub, err := producers.NewPublisher(prodCl, topics.Records, producers.PublisherOptions{Rate: cfg.Rate})
	if err != nil {
		return PipelineResult{}, err
	}
	go func() {
		if _, err := pub.Run(runCtx, gen); err != nil {
			errc <- fmt.Errorf("producer: %w", err)
		}
	}()

	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-finished:
			break wait
		case err := <-errc:
			if err == nil {
				err = fmt.Errorf("pipeline stopped before all results were written")
			}
			return PipelineResult{}, err
		case <-ctx.Done():
			return PipelineResult{}, ctx.Err()
		case <-tick.C:
			if cfg.Progress != nil {
				mu.Lock()
				n := int64(len(latencies))
				mu.Unlock()
				cfg.Progress(n, time.Since(start))
			}
		}
	}
	mu.Lock()
	elapsed := last.Sub(start)
	lat := slices.Clone(latencies)
	nAnomalies := anomalies
	mu.Unlock()
	cancel()
	slices.Sort(lat)
	names := make([]string, len(cfg.Spec.Detectors))
	for i, d := range cfg.Spec.Detectors {
		names[i] = d.Name
	}
	return PipelineResult{
		Records:       cfg.Records,
		Series:        cfg.Series,
		Partitions:    cfg.Partitions,
		Rate:          cfg.Rate,
		Seconds:       elapsed.Seconds(),
		RecordsPerSec: float64(cfg.Records) / elapsed.Seconds(),
		P50Ms:         quantile(lat, 0.50),
		P99Ms:         quantile(lat, 0.99),
		MaxMs:         lat[len(lat)-1],
		PeakRSSMB:     PeakRSSMB(),
		Anomalies:     nAnomalies,
		Detectors:     strings.Join(names, ","),
		Cores:         runtime.NumCPU(),
		ExactlyOnce:   cfg.ExactlyOnce,
	}, nil
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return sorted[i]
}

// PeakRSSMB reads the process's peak resident set size (VmHWM) from /proc; 0 elsewhere.
func PeakRSSMB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}
