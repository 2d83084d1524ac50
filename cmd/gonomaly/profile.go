package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/pprof/profile"
)

// cmdProfile fetches a CPU or heap profile from a running gonomaly process's metrics
// address and prints its hotspots with a hint of what each usually means: the seed's
// profiling hotspot report, done with Go's own profiles.
func cmdProfile(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("profile", flag.ContinueOnError)
	target := fs.String("target", "", "metrics address of the process (http://host:port, as its --metrics-addr)")
	kind := fs.String("kind", "cpu", "cpu (sampled for --seconds) or heap (a snapshot)")
	seconds := fs.Int("seconds", 30, "CPU profile duration")
	top := fs.Int("top", 15, "functions to print")
	sample := fs.String("sample", "", "sample type to rank by (default: cpu for cpu; inuse_space for heap, or alloc_space, alloc_objects, inuse_objects)")
	byCum := fs.Bool("cum", false, "rank by cumulative instead of flat value")
	save := fs.String("save", "", "also write the raw profile here (for go tool pprof)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *target == "" {
		return usageErr("--target is required (the process's metrics address, e.g. http://127.0.0.1:9090)")
	}
	if *kind != "cpu" && *kind != "heap" {
		return usageErr("--kind %q: must be cpu or heap", *kind)
	}
	if *seconds < 1 || *seconds > 3600 {
		return usageErr("--seconds %d: must be 1..3600", *seconds)
	}
	if *top < 1 {
		return usageErr("--top %d: must be at least 1", *top)
	}
	u, err := profileURL(*target, *kind, *seconds)
	if err != nil {
		return usageErr("--target: %v", err)
	}
	if *kind == "cpu" {
		fmt.Fprintf(env.stderr, "profiling %s for %ds…\n", *target, *seconds)
	}
	data, err := fetchProfile(ctx, u, time.Duration(*seconds)*time.Second+30*time.Second)
	if err != nil {
		return err
	}
	if *save != "" {
		if err := os.WriteFile(*save, data, 0o644); err != nil {
			return err
		}
	}
	p, err := profile.ParseData(data)
	if err != nil {
		return fmt.Errorf("%s: not a pprof profile: %w", u, err)
	}
	rep, err := hotspots(p, *sample)
	if err != nil {
		return usageErr("--sample: %v", err)
	}
	rep.print(env.stdout, *kind, *target, *top, *byCum)
	return nil
}

// profileURL is the pprof endpoint of kind under target (a host:port, a base URL, or
// any URL under /debug/pprof/).
func profileURL(target, kind string, seconds int) (string, error) {
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil {
		return "", err
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("%q is not an http(s) address", target)
	}
	base, _, _ := strings.Cut(u.Path, "/debug/pprof")
	u.Path = strings.TrimSuffix(base, "/") + "/debug/pprof/" + map[string]string{"cpu": "profile", "heap": "heap"}[kind]
	u.RawQuery = ""
	if kind == "cpu" {
		u.RawQuery = fmt.Sprintf("seconds=%d", seconds)
	}
	return u.String(), nil
}

func fetchProfile(ctx context.Context, u string, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch profile: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("fetch profile: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// pprof answers errors (a CPU profile already running) in plain text.
		return nil, fmt.Errorf("fetch profile: %s: %s: %s", u, resp.Status, bytes.TrimSpace(data[:min(len(data), 200)]))
	}
	return data, nil
}

// hotspot is one function's share of a profile.
type hotspot struct {
	name      string
	flat, cum int64
}

type hotspotReport struct {
	sampleType, unit string
	total            int64
	duration         time.Duration
	funcs            []hotspot
}

// hotspots sums a profile per function: flat is what the function itself spent (the
// innermost frame of a sample, inlined calls counted as their own functions), cum is
// flat plus everything it called (each function once per sample, so recursion does not
// count twice).
func hotspots(p *profile.Profile, sampleType string) (*hotspotReport, error) {
	idx := len(p.SampleType) - 1 // the last type is the interesting one (cpu, inuse_space)
	if sampleType == "" {
		sampleType = p.DefaultSampleType
	}
	if sampleType != "" {
		idx = slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == sampleType })
		if idx < 0 {
			var names []string
			for _, t := range p.SampleType {
				names = append(names, t.Type)
			}
			return nil, fmt.Errorf("%q is not in this profile (it has %s)", sampleType, strings.Join(names, ", "))
		}
	}
	if idx < 0 {
		return nil, fmt.Errorf("the profile has no sample types")
	}
	rep := &hotspotReport{sampleType: p.SampleType[idx].Type, unit: p.SampleType[idx].Unit, duration: time.Duration(p.DurationNanos)}
	byName := map[string]*hotspot{}
	get := func(name string) *hotspot {
		h := byName[name]
		if h == nil {
			h = &hotspot{name: name}
			byName[name] = h
		}
		return h
	}
	seen := map[string]bool{}
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v == 0 {
			continue
		}
		rep.total += v
		clear(seen)
		leaf := true
		for _, loc := range s.Location {
			lines := loc.Line
			if len(lines) == 0 { // unsymbolized: name it by address
				lines = []profile.Line{{Function: &profile.Function{Name: fmt.Sprintf("0x%x", loc.Address)}}}
			}
			for _, ln := range lines { // innermost (inlined) first
				name := "?"
				if ln.Function != nil {
					name = ln.Function.Name
				}
				h := get(name)
				if leaf {
					h.flat += v
					leaf = false
				}
				if !seen[name] {
					seen[name] = true
					h.cum += v
				}
			}
		}
	}
	for _, h := range byName {
		rep.funcs = append(rep.funcs, *h)
	}
	return rep, nil
}

func (r *hotspotReport) print(w io.Writer, kind, target string, top int, byCum bool) {
	key := func(h hotspot) int64 { return h.flat }
	order := "flat"
	if byCum {
		key, order = func(h hotspot) int64 { return h.cum }, "cum"
	}
	slices.SortFunc(r.funcs, func(a, b hotspot) int {
		return cmp.Or(cmp.Compare(key(b), key(a)), cmp.Compare(b.cum, a.cum), strings.Compare(a.name, b.name))
	})
	header := fmt.Sprintf("%s profile of %s: %s %s", kind, target, r.format(r.total), r.sampleType)
	if r.duration > 0 {
		header += fmt.Sprintf(" in %s", r.duration.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "%s; top %d of %d functions by %s\n", header, min(top, len(r.funcs)), len(r.funcs), order)
	if r.total == 0 {
		fmt.Fprintln(w, "no samples: the process was idle (profile longer, or under load)")
		return
	}
	// Numbers right-aligned in fixed widths, names and hints in aligned columns.
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%9s %6s %9s %6s\tFUNCTION\tHINT\n", "FLAT", "FLAT%", "CUM", "CUM%")
	pct := func(v int64) string { return fmt.Sprintf("%.1f%%", 100*float64(v)/float64(r.total)) }
	for _, h := range r.funcs[:min(top, len(r.funcs))] {
		fmt.Fprintf(tw, "%9s %6s %9s %6s\t%s\t%s\n", r.format(h.flat), pct(h.flat), r.format(h.cum), pct(h.cum), h.name, hotspotHint(h.name))
	}
	tw.Flush()
}

// format prints a value in the sample type's unit.
func (r *hotspotReport) format(v int64) string {
	switch r.unit {
	case "nanoseconds":
		return time.Duration(v).Round(time.Millisecond).String()
	case "bytes":
		f := float64(v)
		for _, u := range []string{"B", "kB", "MB", "GB"} {
			if f < 1024 || u == "GB" {
				if u == "B" {
					return fmt.Sprintf("%dB", v)
				}
				return fmt.Sprintf("%.1f%s", f, u)
			}
			f /= 1024
		}
	}
	return fmt.Sprint(v)
}

// hotspotHints say what a hot function usually means in gonomaly, first match wins:
// more specific prefixes come before the packages that contain them.
var hotspotHints = []struct{ match, hint string }{
	{"runtime.gcBgMarkWorker", "GC: reduce allocation or raise GOGC"},
	{"runtime.gcDrain", "GC: reduce allocation or raise GOGC"},
	{"runtime.scanobject", "GC: reduce allocation or raise GOGC"},
	{"runtime.markroot", "GC: reduce allocation or raise GOGC"},
	{"runtime.greyobject", "GC: reduce allocation or raise GOGC"},
	{"runtime.findObject", "GC: reduce allocation or raise GOGC"},
	{"runtime.bgsweep", "GC: reduce allocation or raise GOGC"},
	{"runtime.mallocgc", "allocation: look for per-record allocations"},
	{"runtime.newobject", "allocation: look for per-record allocations"},
	{"runtime.makeslice", "allocation: look for per-record allocations"},
	{"runtime.growslice", "allocation: slices growing, preallocate their capacity"},
	{"runtime.makemap", "allocation: a map per record? reuse or preallocate"},
	{"runtime.mapassign", "map writes: a map per record, or one growing"},
	{"runtime.mapaccess", "map lookups"},
	{"runtime.memmove", "copying memory: buffers copied per record"},
	{"runtime.memclr", "clearing memory: large fresh allocations"},
	{"runtime.concatstring", "string concatenation: build keys without allocating"},
	{"runtime.slicebytetostring", "[]byte to string conversion per record"},
	{"runtime.futex", "scheduler: goroutines waking and sleeping (contention or idle workers)"},
	{"runtime.usleep", "scheduler: spinning while idle"},
	{"runtime.selectgo", "channel select: goroutine hand-offs"},
	{"runtime.chan", "channel operations: goroutine hand-offs"},
	{"runtime.netpoll", "I/O: waiting on the network"},
	{"runtime.", "Go runtime"},
	{"runtime/pprof", "the profiler itself"},
	{"syscall.", "I/O: system calls (network, files)"},
	{"internal/runtime/syscall", "I/O: system calls (network, files)"},
	{"internal/poll.", "I/O: network and file reads and writes"},
	{"net.", "I/O: network"},
	{"github.com/twmb/franz-go", "Kafka client: batching, compression, requests"},
	{"github.com/klauspost/compress", "compression (Kafka batches, HTTP)"},
	{"github.com/pierrec/lz4", "compression (Kafka batches, HTTP)"},
	{"github.com/golang/snappy", "compression (Kafka batches, HTTP)"},
	{"compress/", "compression"},
	{"github.com/gonomaly/gonomaly/detectors.", "detector scoring: the algorithms' cost, see bench"},
	{"gonum.org/", "numerics (gonum): detector or training linear algebra"},
	{"encoding/json", "JSON encoding: Avro output is cheaper"},
	{"JSON", "JSON encoding: Avro output is cheaper"},
	{"github.com/linkedin/goavro", "Avro encoding"},
	{"Avro", "Avro encoding"},
	{"github.com/gonomaly/gonomaly/schemas.", "message decoding and encoding"},
	{"strconv.", "number parsing and formatting"},
	{"github.com/gonomaly/gonomaly/processors.", "stage code around the detectors"},
	{"github.com/gonomaly/gonomaly/producers.", "producer: record generation or parsing"},
	{"github.com/gonomaly/gonomaly/jobs.", "job system"},
	{"github.com/gonomaly/gonomaly/api.", "HTTP API handlers"},
	{"github.com/labstack/echo", "HTTP API"},
	{"net/http", "HTTP serving"},
	{"github.com/prometheus/", "metrics"},
	{"log/slog", "logging: lower the log level"},
	{"sync.", "locks: contention between goroutines"},
	{"hash/", "hashing: event ids and keys"},
	{"crypto/", "cryptography: TLS or hashing"},
	{"sort.", "sorting"},
	{"slices.", "slice helpers: growing, sorting, searching"},
	{"github.com/gonomaly/gonomaly", "gonomaly code: go tool pprof -list FUNC on a --save'd profile"},
}

// hotspotHint is the hint for a function name.
func hotspotHint(name string) string {
	for _, h := range hotspotHints {
		if strings.HasPrefix(name, h.match) || (h.match == "JSON" || h.match == "Avro") && strings.Contains(name, h.match) {
			return h.hint
		}
	}
	return "-"
}
