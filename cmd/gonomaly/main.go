// Command gonomaly is the one binary of the gonomaly anomaly-detection pipeline: flags
// and GONOMALY_* environment variables become configuration, then the chosen command
// runs. The work itself lives in the packages; this file only dispatches.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string, env *environment) error
}

// environment is what commands share: output streams and the logger.
type environment struct {
	stdout io.Writer
	stderr io.Writer
	stdin  io.Reader
	log    *slog.Logger
}

var commands = []command{
	{"run", "everything in one process: embedded broker (unless --brokers), stages, printer, metrics; --demo adds a synthetic producer", cmdRun},
	{"broker", "standalone embedded Kafka-compatible broker with --data-dir persistence", cmdBroker},
	{"produce", "publish records from CSV, NDJSON, stdin or a synthetic generator", cmdProduce},
	{"process", "run one or more pipeline stages (--stage preprocess,detect,ensemble) as consumer groups", cmdProcess},
	{"api", "the HTTP API (/api/v1: jobs, datasets, models, detectors, detect, records, anomaly stream) on --api-addr", cmdAPI},
	{"worker", "job workers: consumer groups of the job queues (--queues detect,ensemble,preprocess,train)", cmdWorker},
	{"jobs", "submit, status, list, cancel and results of jobs, through the HTTP API", cmdJobs},
	{"sink", "write a topic to a sink (--to stdout|jsonl:PATH)", cmdSink},
	{"topics", "list topics with partitions and end offsets", cmdTopics},
	{"lag", "consumer lag per partition of a group", cmdLag},
	{"eval", "detection quality on labelled data: eval odds (PyOD protocol), eval nab (NAB scoring)", cmdEval},
	{"bench", "benchmarks: bench pipeline, bench api", cmdBench},
	{"profile", "fetch a CPU or heap profile from a process's --metrics-addr and print its hotspots with hints", cmdProfile},
	{"perf", "the performance test suite: --test-type profiling|optimization|queue|concurrent|memory|load|scalability|all, report and plots in --out", cmdPerf},
}

func main() {
	env := &environment{stdout: os.Stdout, stderr: os.Stderr, stdin: os.Stdin}
	os.Exit(run(os.Args[1:], env))
}

func run(args []string, env *environment) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == args[0] {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(env.stderr, "gonomaly: unknown command %q\n\n", args[0])
		usage(env.stderr)
		return 2
	}
	env.log = newLogger(env.stderr, os.Getenv("GONOMALY_LOG_LEVEL"))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := cmd.run(ctx, args[1:], env)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(env.stderr, "gonomaly %s: %v\n", cmd.name, err)
		return 2
	default:
		fmt.Fprintf(env.stderr, "gonomaly %s: %v\n", cmd.name, err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "gonomaly: anomaly detection on Kafka")
	fmt.Fprintln(w, "\nusage: gonomaly COMMAND [flags]   (gonomaly COMMAND -h for its flags)")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nEvery flag also reads GONOMALY_<FLAG> from the environment (--metrics-addr → GONOMALY_METRICS_ADDR).")
}

var errUsage = errors.New("usage")

func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	switch strings.ToLower(level) {
	case "debug":
		l = slog.LevelDebug
	case "warn":
		l = slog.LevelWarn
	case "error":
		l = slog.LevelError
	default:
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
}

// parseFlags parses args and then fills every flag not given on the command line from
// GONOMALY_<NAME>, so Kubernetes can configure by environment.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stderr)
			fs.Usage()
			return err
		}
		return usageErr("%v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] {
			return
		}
		name := "GONOMALY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", name, v, err))
			}
		}
	})
	if len(errs) > 0 {
		return usageErr("%v", errors.Join(errs...))
	}
	return nil
}

// shutdownDeadline bounds a graceful stop; past it the process exits anyway.
const shutdownDeadline = 30 * time.Second

// untilDone runs fn and, once ctx is cancelled, gives it shutdownDeadline to return.
func untilDone(ctx context.Context, log *slog.Logger, fn func(context.Context) error) error {
	errc := make(chan error, 1)
	go func() { errc <- fn(ctx) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "deadline", shutdownDeadline)
	select {
	case err := <-errc:
		return err
	case <-time.After(shutdownDeadline):
		return fmt.Errorf("graceful shutdown did not finish within %s", shutdownDeadline)
	}
}

// splitList splits a comma-separated flag value, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
