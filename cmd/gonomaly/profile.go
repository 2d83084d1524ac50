package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/pprof/profile"

	"github.com/gonomaly/gonomaly/internal/perf"
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
	rep, err := perf.Hotspots(p, *sample)
	if err != nil {
		return usageErr("--sample: %v", err)
	}
	printHotspots(env.stdout, rep, *kind, *target, *top, *byCum)
	return nil
}

// profileURL is the pprof endpoint of kind under target (a host:port, a base URL, or
// any URL under /debug/pprof/).
func profileURL(target, kind string, seconds int) (string, error) {
	u, err := perf.ParseHTTPAddr(target)
	if err != nil {
		return "", err
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

// printHotspots prints the top functions of a report, each with its hint.
func printHotspots(w io.Writer, r *perf.HotspotReport, kind, target string, top int, byCum bool) {
	order := "flat"
	if byCum {
		order = "cum"
	}
	r.Sort(byCum)
	header := fmt.Sprintf("%s profile of %s: %s %s", kind, target, r.Format(r.Total), r.SampleType)
	if r.Duration > 0 {
		header += fmt.Sprintf(" in %s", r.Duration.Round(time.Millisecond))
	}
	fmt.Fprintf(w, "%s; top %d of %d functions by %s\n", header, min(top, len(r.Funcs)), len(r.Funcs), order)
	if r.Total == 0 {
		fmt.Fprintln(w, "no samples: the process was idle (profile longer, or under load)")
		return
	}
	// Numbers right-aligned in fixed widths, names and hints in aligned columns.
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%9s %6s %9s %6s\tFUNCTION\tHINT\n", "FLAT", "FLAT%", "CUM", "CUM%")
	pct := func(v int64) string { return fmt.Sprintf("%.1f%%", 100*float64(v)/float64(r.Total)) }
	for _, h := range r.Funcs[:min(top, len(r.Funcs))] {
		fmt.Fprintf(tw, "%9s %6s %9s %6s\t%s\t%s\n", r.Format(h.Flat), pct(h.Flat), r.Format(h.Cum), pct(h.Cum), h.Name, perf.HotspotHint(h.Name))
	}
	tw.Flush()
}

// hotspotHint is the hint for a function name (the table lives in internal/perf, which
// attributes the perf suite's profiles the same way).
func hotspotHint(name string) string { return perf.HotspotHint(name) }
