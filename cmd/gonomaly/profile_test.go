package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gonomaly/gonomaly/internal/telemetry"
)

// burn keeps a core busy until stop is set, so a CPU profile has samples.
func burn(stop *atomic.Bool) (n uint64) {
	for !stop.Load() {
		for i := range 10_000 {
			n += uint64(i) * n
		}
	}
	return n
}

func TestProfilePrintsHotspots(t *testing.T) {
	srv, err := telemetry.Listen("127.0.0.1:0", telemetry.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx, slog.New(slog.DiscardHandler))
	var stop atomic.Bool
	defer stop.Store(true)
	go burn(&stop)

	for _, tc := range []struct {
		args   []string
		header string
	}{
		{[]string{"--target", srv.Addr(), "--seconds", "1", "--top", "5"}, "cpu profile of " + srv.Addr() + ": "},
		{[]string{"--target", "http://" + srv.Addr() + "/debug/pprof/", "--kind", "heap", "--sample", "alloc_space"}, "alloc_space"},
	} {
		var stdout, stderr strings.Builder
		env := &environment{stdout: &stdout, stderr: &stderr, log: slog.New(slog.DiscardHandler)}
		if err := cmdProfile(ctx, tc.args, env); err != nil {
			t.Fatalf("profile %v: %v\n%s", tc.args, err, stderr.String())
		}
		out := stdout.String()
		t.Logf("profile %v:\n%s", tc.args, out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.Contains(lines[0], tc.header) || len(lines) < 3 || !strings.Contains(lines[1], "FLAT%") || !strings.Contains(lines[1], "HINT") {
			t.Fatalf("profile %v: want a header, column names and rows, got:\n%s", tc.args, out)
		}
		if tc.args[len(tc.args)-1] == "5" && len(lines) > 2+5 {
			t.Errorf("--top 5 printed %d rows:\n%s", len(lines)-2, out)
		}
		for _, row := range lines[2:] {
			if !strings.Contains(row, "%") {
				t.Errorf("row without percentages: %q", row)
			}
		}
		if tc.header != "alloc_space" && !strings.Contains(out, "burn") {
			t.Errorf("the busy function is not among the CPU hotspots:\n%s", out)
		}
	}
}

func TestProfileUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--target", "127.0.0.1:1", "--kind", "goroutine"}, `--kind "goroutine": must be cpu or heap`},
		{[]string{}, "--target is required"},
		{[]string{"--target", "127.0.0.1:1", "--seconds", "0"}, "--seconds 0"},
		{[]string{"--target", "ftp://x"}, "not an http(s) address"},
	} {
		env := &environment{stdout: &strings.Builder{}, stderr: &strings.Builder{}, log: slog.New(slog.DiscardHandler)}
		err := cmdProfile(context.Background(), tc.args, env)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("profile %v: %v, want a usage error mentioning %q", tc.args, err, tc.want)
		}
	}
}

func TestProfileUnreachableTarget(t *testing.T) {
	env := &environment{stdout: &strings.Builder{}, stderr: &strings.Builder{}, log: slog.New(slog.DiscardHandler)}
	err := cmdProfile(context.Background(), []string{"--target", "127.0.0.1:1", "--kind", "heap"}, env)
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(err.Error(), "fetch profile") {
		t.Fatalf("unreachable target: %v, want a fetch error", err)
	}
}

func TestHotspotHints(t *testing.T) {
	for name, want := range map[string]string{
		"runtime.mallocgc":       "allocation",
		"runtime.gcBgMarkWorker": "GC: reduce allocation or raise GOGC",
		"syscall.Syscall6":       "I/O",
		"github.com/twmb/franz-go/pkg/kgo.(*Client).produce":             "Kafka client",
		"github.com/gonomaly/gonomaly/detectors.(*HalfSpaceTrees).Score": "detector scoring",
		"encoding/json.Marshal":                                 "JSON encoding",
		"github.com/gonomaly/gonomaly/schemas.AppendResultJSON": "JSON encoding",
		"main.mystery": "-",
	} {
		if got := hotspotHint(name); !strings.HasPrefix(got, want) {
			t.Errorf("hint(%s) = %q, want %q…", name, got, want)
		}
	}
}
