package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/gonomaly/gonomaly/internal/perf"
)

// cmdPerf is `gonomaly perf`: the performance test suite (internal/perf), writing
// DIR/report.md with PNG plots and printing the summary table.
func cmdPerf(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("perf", flag.ContinueOnError)
	testType := fs.String("test-type", "all", "what to run: "+strings.Join(perf.Types, ", ")+", or all (comma-separated for several)")
	skipProfiling := fs.Bool("skip-profiling", false, "leave out the profiling type (CPU and heap profiles)")
	apiURL := fs.String("api-url", "", "API the load type drives (http://host:port); empty starts one in this process")
	apiKey := fs.String("api-key", "", "API key sent as a bearer token to --api-url")
	out := fs.String("out", "perf-report", "directory for report.md, the PNG plots and the raw profiles")
	short := fs.Bool("short", false, "run each type in seconds (indicative figures, for tests)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	types, err := perf.ParseTypes(*testType)
	if err != nil {
		return usageErr("--test-type: %v", err)
	}
	if *skipProfiling && len(types) == 1 && types[0] == perf.TypeProfiling {
		return usageErr("--skip-profiling with --test-type profiling leaves nothing to run")
	}
	if *apiURL != "" {
		if _, err := perf.APIBase(*apiURL); err != nil {
			return usageErr("--api-url: %v", err)
		}
	}
	if *out == "" {
		return usageErr("--out must name a directory")
	}
	// The stages and workers the suite starts log their starts and stops at info: noise
	// between the progress lines, unless asked for.
	log := env.log
	if os.Getenv("GONOMALY_LOG_LEVEL") == "" {
		log = newLogger(env.stderr, "warn")
	}
	// The concurrent type's process model re-runs this binary as `gonomaly process`.
	exe, err := os.Executable()
	if err != nil {
		env.log.Warn("no path to this executable: the concurrent type runs its processes as in-process instances", "error", err)
		exe = ""
	}
	rep, err := perf.Run(ctx, perf.Config{
		Types: types, SkipProfiling: *skipProfiling, APIURL: *apiURL, APIKey: *apiKey, OutDir: *out, Short: *short,
		Executable: exe, Command: strings.Join(append([]string{"gonomaly", "perf"}, args...), " "),
		Progress: env.stderr, Logger: log,
	})
	if rep != nil {
		perf.WriteSummary(env.stdout, rep)
		fmt.Fprintf(env.stderr, "report: %s\n", *out+string(os.PathSeparator)+"report.md")
	}
	return err
}
