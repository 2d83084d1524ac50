package perf

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The test types, in the order `all` runs them: the ones that need a quiet process
// (profiles, micro-benchmarks, heap deltas) before the ones that leave brokers and
// goroutines behind them.
const (
	TypeProfiling    = "profiling"
	TypeOptimization = "optimization"
	TypeMemory       = "memory"
	TypeQueue        = "queue"
	TypeConcurrent   = "concurrent"
	TypeLoad         = "load"
	TypeScalability  = "scalability"
)

// Types lists every test type in run order.
var Types = []string{TypeProfiling, TypeOptimization, TypeMemory, TypeQueue, TypeConcurrent, TypeLoad, TypeScalability}

// ParseTypes reads a --test-type value: one type, several comma-separated, or all.
// The error names the unknown type and lists the valid ones.
func ParseTypes(s string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.ToLower(strings.TrimSpace(t))
		switch {
		case t == "all":
			out = append(out, Types...)
		case slices.Contains(Types, t):
			out = append(out, t)
		case t == "":
		default:
			return nil, fmt.Errorf("unknown test type %q (valid: %s, all)", t, strings.Join(Types, ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no test type given (valid: %s, all)", strings.Join(Types, ", "))
	}
	// In run order, each once, whatever order they were given in.
	return slices.DeleteFunc(slices.Clone(Types), func(t string) bool { return !slices.Contains(out, t) }), nil
}

// Config says what to run and where to write the report.
type Config struct {
	Types []string // from ParseTypes
	// SkipProfiling leaves out the profiling type (for a process already being
	// profiled, or a quicker run).
	SkipProfiling bool
	// APIURL is the API the load type drives (http://host:port); empty starts one in
	// this process. APIKey is sent as a bearer token when set.
	APIURL, APIKey string
	OutDir         string
	// Short runs each type in seconds, for tests; the figures are then indicative only.
	Short bool
	// Executable is a gonomaly binary for the concurrent type's process model (each
	// process runs `gonomaly process`); empty runs the instances in this process with
	// their own clients instead, and the report says so.
	Executable string
	// Command is the command line, for the report.
	Command string
	// Progress receives one line per step ("[3/7] queue: 2 workers…"); nil: none.
	Progress io.Writer
	Logger   *slog.Logger
}

// Row is one line of the summary table.
type Row struct {
	Type, Metric, Value string
}

// Section is one test type's part of the report.
type Section struct {
	Type, Title string
	Body        strings.Builder // markdown
	Summary     []Row
	Plots       []string // file names in OutDir
	Seconds     float64
	Err         error
}

// Report is what Run measured.
type Report struct {
	Sections []*Section
	Started  time.Time
	Machine  Machine
}

// Rows is the summary table: every section's rows, failures included.
func (r *Report) Rows() []Row {
	var rows []Row
	for _, s := range r.Sections {
		if s.Err != nil {
			rows = append(rows, Row{s.Type, "FAILED", oneLine(s.Err.Error())})
		}
		rows = append(rows, s.Summary...)
	}
	return rows
}

// run is one Run's shared state.
type run struct {
	cfg  Config
	log  *slog.Logger
	step int
	of   int
	sec  *Section
}

// progress prints "[i/n] type: what…" on the progress writer.
func (r *run) progress(format string, args ...any) {
	if r.cfg.Progress == nil {
		return
	}
	fmt.Fprintf(r.cfg.Progress, "[%d/%d] %s: %s…\n", r.step, r.of, r.sec.Type, fmt.Sprintf(format, args...))
}

// path is a file in the output directory.
func (r *run) path(name string) string { return r.cfg.OutDir + string(os.PathSeparator) + name }

// plot records a plot of the current section, or the error that kept it from being drawn.
func (r *run) plot(name string, draw func(path string) error) {
	if err := draw(r.path(name)); err != nil {
		r.sec.Err = errors.Join(r.sec.Err, fmt.Errorf("plot %s: %w", name, err))
		return
	}
	r.sec.Plots = append(r.sec.Plots, name)
	fmt.Fprintf(&r.sec.Body, "\n![%s](%s)\n", name, name)
}

var runners = map[string]struct {
	title string
	fn    func(context.Context, *run) error
}{
	TypeProfiling:    {"CPU and heap profiles of the pipeline under load", runProfiling},
	TypeOptimization: {"before/after pairs of the code's optimisations", runOptimization},
	TypeMemory:       {"bytes per series of each streaming detector, RSS as series grow", runMemory},
	TypeQueue:        {"job throughput and latency by worker count", runQueue},
	TypeConcurrent:   {"goroutines per partition, a single loop, several processes", runConcurrent},
	TypeLoad:         {"HTTP load on the API", runLoad},
	TypeScalability:  {"pipeline records/s by consumers per stage", runScalability},
}

// Run runs the configured test types in order, writes OutDir/report.md and the plots,
// and returns the report. A type that fails is reported as failed and the others still
// run; the error joins every failure.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	types := slices.Clone(cfg.Types)
	if cfg.SkipProfiling {
		types = slices.DeleteFunc(types, func(t string) bool { return t == TypeProfiling })
	}
	if len(types) == 0 {
		return nil, errors.New("nothing to run: --skip-profiling left no test type")
	}
	if cfg.OutDir == "" {
		cfg.OutDir = "perf-report"
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, log: cfg.Logger, of: len(types)}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	rep := &Report{Started: time.Now(), Machine: readMachine()}
	var errs []error
	for i, t := range types {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		r.step = i + 1
		r.sec = &Section{Type: t, Title: runners[t].title}
		rep.Sections = append(rep.Sections, r.sec)
		r.progress("starting")
		start := time.Now()
		err := runners[t].fn(ctx, r)
		r.sec.Seconds = time.Since(start).Seconds()
		r.sec.Err = errors.Join(err, r.sec.Err)
		if r.sec.Err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, r.sec.Err))
			r.progress("FAILED: %v", oneLine(r.sec.Err.Error()))
		}
		runtime.GC() // the next type starts from a collected heap
	}
	if err := writeReport(rep, cfg); err != nil {
		errs = append(errs, err)
	}
	return rep, errors.Join(errs...)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
