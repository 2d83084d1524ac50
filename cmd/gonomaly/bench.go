package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/pprof"
	"runtime/trace"
	"time"

	"github.com/gonomaly/gonomaly/internal/bench"
	"github.com/gonomaly/gonomaly/internal/cluster"
)

func cmdBench(ctx context.Context, args []string, env *environment) error {
	if len(args) > 0 && args[0] == "api" {
		return cmdBenchAPI(ctx, args[1:], env)
	}
	if len(args) > 0 && args[0] == "sink" {
		return cmdBenchSink(ctx, args[1:], env)
	}
	if len(args) > 0 && args[0] == "detectors" {
		return cmdBenchDetectors(ctx, args[1:], env)
	}
	if len(args) == 0 || args[0] != "pipeline" {
		return usageErr("which benchmark? gonomaly bench pipeline --records N --series S [--rate R] [--eos] [--json] | gonomaly bench api --duration 20s [--rate R] [--workers N] [--json] | gonomaly bench sink --to URI [--events N] [--batch B] [--json] | gonomaly bench detectors --dataset PATH [--detectors iforest,ecod,hbos,knn] [--stream-series PATH [--labels FILE]] [--subsample N] [--seed S] [--json]")
	}
	fs := flag.NewFlagSet("bench pipeline", flag.ContinueOnError)
	records := fs.Int64("records", 1_000_000, "records to push through the pipeline")
	series := fs.Int("series", 1000, "series in the synthetic stream")
	rate := fs.Float64("rate", 0, "producer cap in records/s (0: as fast as possible)")
	partitions := fs.Int("partitions", 8, "partitions per topic")
	brokers := fs.String("brokers", "", "run against this cluster instead of the embedded broker")
	specPath := fs.String("spec", "", "pipeline spec (default: built-in)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	eos := fs.Bool("eos", false, "run the stages exactly-once (Kafka transactions, committed every 100 ms)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	traceFile := fs.String("trace", "", "write a Go execution trace of the run to this file")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	stopProfiles, err := startProfiles(*cpuProfile, *traceFile)
	if err != nil {
		return err
	}
	defer stopProfiles()
	s, err := loadSpec(*specPath)
	if err != nil {
		return err
	}
	res, err := bench.Pipeline(ctx, bench.PipelineConfig{
		Records: *records, Series: *series, Rate: *rate, Partitions: int32(*partitions),
		Spec: s, Brokers: cluster.ParseBrokers(*brokers), ExactlyOnce: *eos, Logger: env.log,
		Progress: func(done int64, elapsed time.Duration) {
			fmt.Fprintf(env.stderr, "results written %d/%d (%.0f%%) after %s\n", done, *records, 100*float64(done)/float64(*records), elapsed.Round(time.Second))
		},
	})
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		return enc.Encode(res)
	}
	mode := "at-least-once"
	if res.ExactlyOnce {
		mode = "exactly-once"
	}
	fmt.Fprintf(env.stdout, "%d records, %d series, %d partitions, detectors %s, %s\n", res.Records, res.Series, res.Partitions, res.Detectors, mode)
	fmt.Fprintf(env.stdout, "throughput  %.0f records/s end to end (%.1f s)\n", res.RecordsPerSec, res.Seconds)
	fmt.Fprintf(env.stdout, "latency     p50 %.1f ms  p99 %.1f ms  max %.1f ms (produce → result synced)\n", res.P50Ms, res.P99Ms, res.MaxMs)
	fmt.Fprintf(env.stdout, "memory      peak RSS %.0f MB\n", res.PeakRSSMB)
	return nil
}

// startProfiles starts a CPU profile and an execution trace when asked to; the returned
// func stops them.
func startProfiles(cpuPath, tracePath string) (func(), error) {
	var stops []func()
	stop := func() {
		for _, s := range stops {
			s()
		}
	}
	if cpuPath != "" {
		f, err := os.Create(cpuPath)
		if err != nil {
			return stop, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return stop, err
		}
		stops = append(stops, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if tracePath != "" {
		f, err := os.Create(tracePath)
		if err != nil {
			return stop, err
		}
		if err := trace.Start(f); err != nil {
			f.Close()
			return stop, err
		}
		stops = append(stops, func() { trace.Stop(); f.Close() })
	}
	return stop, nil
}

// cmdBenchSink measures one sink on its own: events/s and the latency of a delivered
// batch. --to http://local[?options] posts to an in-process endpoint.
func cmdBenchSink(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("bench sink", flag.ContinueOnError)
	to := fs.String("to", "", "sink URI (jsonl:PATH, csv:PATH, http(s)://…, or http://local[?batch=100] for an in-process endpoint)")
	events := fs.Int("events", 1_000_000, "events to write")
	batch := fs.Int("batch", 1000, "events per delivered batch (the runner's poll batch)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *to == "" {
		return usageErr("bench sink needs --to URI")
	}
	res, err := bench.Sink(ctx, bench.SinkConfig{URI: *to, Events: *events, Batch: *batch})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(res)
	}
	fmt.Fprintf(env.stdout, "%s sink: %d events in batches of %d, %d rejected\n", res.Sink, res.Events, res.Batch, res.Rejected)
	fmt.Fprintf(env.stdout, "throughput  %.0f events/s (%.2f s)\n", res.EventsPerSec, res.Seconds)
	fmt.Fprintf(env.stdout, "latency     p50 %.2f ms  p99 %.2f ms  max %.2f ms per batch (write + durable)\n", res.P50Ms, res.P99Ms, res.MaxMs)
	return nil
}
