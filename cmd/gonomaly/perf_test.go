package main

import (
	"context"
	"errors"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPerfShortAllTypes runs `gonomaly perf --test-type all --short` as a process (so
// the concurrent type re-runs the binary as `gonomaly process`) and checks the report:
// a section per type, the summary table, and every plot a real PNG.
func TestPerfShortAllTypes(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "perf", "--test-type", "all", "--short", "--out", dir)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("gonomaly perf --short took %s\nstdout:\n%s", time.Since(start).Round(time.Millisecond), stdout.String())
	if err != nil {
		t.Fatalf("gonomaly perf: %v\nstderr:\n%s", err, stderr.String())
	}

	types := []string{"profiling", "optimization", "memory", "queue", "concurrent", "load", "scalability"}
	progress := stderr.String()
	for i, typ := range types {
		if want := "[" + strconv.Itoa(i+1) + "/7] " + typ + ": "; !strings.Contains(progress, want) {
			t.Errorf("stderr lacks progress line %q:\n%s", want, progress)
		}
	}
	if !strings.Contains(progress, "queue: 2 workers, ") {
		t.Errorf("stderr lacks the queue's per-step progress:\n%s", progress)
	}

	data, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	report := string(data)
	if strings.Contains(report, "FAILED") {
		t.Errorf("report.md has a failed type:\n%s", report)
	}
	summary, _, _ := strings.Cut(report[strings.Index(report, "## Summary"):], "\n## profiling")
	if !strings.HasPrefix(summary, "## Summary") || !strings.Contains(summary, "| test type | metric | value |") {
		t.Fatalf("report.md has no summary table before the sections:\n%s", report)
	}
	for _, typ := range types {
		if !strings.Contains(report, "\n## "+typ+" — ") {
			t.Errorf("report.md has no %s section", typ)
		}
		if !strings.Contains(summary, "\n| "+typ+" | ") {
			t.Errorf("the summary table has no %s row", typ)
		}
		if !strings.Contains(stdout.String(), "\n"+typ+" ") {
			t.Errorf("the printed summary has no %s row", typ)
		}
	}
	for _, want := range []string{
		"| 8 | 8 |", // scalability's 8 consumers on 8 partitions
		"child processes (`" + binary + " process`", // the concurrent type really re-ran the binary
		"CPU by part", "| detect |", "hbos, 100 rows",
		"float32 vs float64 feature storage", "reused vs fresh buffers", "batched vs per-record produce", "vectorised vs scalar scoring",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}

	for _, name := range []string{
		"profile_cpu_by_part.png", "profile_heap_by_part.png", "optimization_speedups.png",
		"memory_bytes_per_series.png", "memory_rss_vs_series.png", "queue_throughput.png", "queue_latency.png",
		"concurrent_throughput.png", "load_latency.png", "scalability_throughput.png",
	} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("plot %s: %v", name, err)
			continue
		}
		st, _ := f.Stat()
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Errorf("plot %s is not a PNG: %v", name, err)
			continue
		}
		if b := img.Bounds(); b.Dx() < 400 || b.Dy() < 250 || st.Size() < 8<<10 {
			t.Errorf("plot %s is %dx%d, %d bytes: too small to hold a plot", name, b.Dx(), b.Dy(), st.Size())
		}
		if !strings.Contains(report, "]("+name+")") {
			t.Errorf("report.md does not show %s", name)
		}
	}
	for _, name := range []string{"cpu.pprof", "heap.pprof"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("raw profile %s: %v", name, err)
		}
	}
}

func TestPerfUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--test-type", "throughput"}, []string{`"throughput"`, "profiling", "optimization", "queue", "concurrent", "memory", "load", "scalability", "all"}},
		{[]string{"--test-type", "queue,bogus"}, []string{`"bogus"`, "valid:"}},
		{[]string{"--test-type", "profiling", "--skip-profiling"}, []string{"leaves nothing to run"}},
		{[]string{"--out", ""}, []string{"--out"}},
		{[]string{"--api-url", "ftp://api"}, []string{"--api-url", "not an http(s) address"}},
		{[]string{"--api-url", "ftp://api"}, []string{"--api-url", "not an http(s) address"}},
		{[]string{"extra"}, []string{`unexpected argument "extra"`}},
	} {
		env := &environment{stdout: &strings.Builder{}, stderr: &strings.Builder{}, log: slog.New(slog.DiscardHandler)}
		err := cmdPerf(context.Background(), tc.args, env)
		if !errors.Is(err, errUsage) {
			t.Errorf("perf %v: %v, want a usage error", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("perf %v: %q lacks %q", tc.args, err, w)
			}
		}
	}
}
