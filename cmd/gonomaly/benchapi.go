package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/internal/bench"
	"github.com/gonomaly/gonomaly/internal/cluster"
)

// cmdBenchAPI is `gonomaly bench api`: job submissions, then status reads, against an
// API server in this process (see bench.API).
func cmdBenchAPI(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("bench api", flag.ContinueOnError)
	duration := fs.Duration("duration", 20*time.Second, "length of each phase (submit, then status)")
	rate := fs.Float64("rate", 0, "requests/s cap of each phase (0: as fast as the workers go)")
	workers := fs.Int("workers", 8*runtime.NumCPU(), "concurrent requests (keep-alive connections)")
	partitions := fs.Int("partitions", 8, "partitions per topic")
	brokers := fs.String("brokers", "", "run against this cluster instead of the embedded broker")
	auth := fs.Bool("auth", false, "configure an API key and send it with every request")
	asJSON := fs.Bool("json", false, "print one JSON object")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run (server and load generator) to this file")
	traceFile := fs.String("trace", "", "write a Go execution trace of the run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile to this file after the submit phase (the queued jobs held)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *duration <= 0 || *workers < 1 || *rate < 0 || *partitions < 1 {
		return usageErr("--duration, --workers and --partitions must be positive, --rate not negative")
	}
	stopProfiles, err := startProfiles(*cpuProfile, *traceFile)
	if err != nil {
		return err
	}
	defer stopProfiles()
	res, err := bench.API(ctx, bench.APIConfig{
		Duration: *duration, Rate: *rate, Workers: *workers, Partitions: int32(*partitions),
		Brokers: cluster.ParseBrokers(*brokers), Auth: *auth, Logger: env.log,
		Phase: func(name string) {
			if name == "status" && *memProfile != "" {
				if err := writeHeapProfile(*memProfile); err != nil {
					env.log.Error("heap profile", "error", err)
				}
			}
			fmt.Fprintf(env.stderr, "phase %s: %s\n", name, *duration)
		},
	})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(res)
	}
	printAPIBench(env.stdout, res)
	return nil
}

func printAPIBench(w io.Writer, res bench.APIResult) {
	fmt.Fprintf(w, "%d workers, rate cap %s, %d partitions, %d cores, auth %v\n", res.Workers, rateText(res.RateCap), res.Partitions, res.Cores, res.Auth)
	for _, p := range []bench.PhaseResult{res.Submit, res.Status} {
		if p.Name == "" {
			continue
		}
		fmt.Fprintf(w, "%-7s %8.0f req/s ok  (%d requests, %d errors%s in %.1f s)  latency p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  cpu %.0f µs/request\n",
			p.Name, p.RequestsPerSec, p.Requests, p.Errors, codesText(p.StatusCodes), p.Seconds, p.P50Ms, p.P90Ms, p.P99Ms, p.MaxMs, p.CPUPerRequestUs)
		for _, e := range p.ErrorSamples {
			fmt.Fprintf(w, "        error: %s\n", e)
		}
	}
	fmt.Fprintf(w, "queued  %d jobs on the detect queue topic after the submit phase\n", res.QueuedInKafka)
	fmt.Fprintf(w, "memory  peak RSS %.0f MB\n", res.PeakRSSMB)
}

func rateText(r float64) string {
	if r == 0 {
		return "none"
	}
	return fmt.Sprintf("%g/s", r)
}

func codesText(codes map[string]int) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(codes)) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, codes[k]))
	}
	return "; " + strings.Join(parts, " ")
}

// writeHeapProfile writes the live heap (after a GC) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.WriteHeapProfile(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
