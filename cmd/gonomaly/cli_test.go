package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// gonomaly runs a command to completion and returns its stdout and stderr.
func gonomaly(t *testing.T, args ...string) (string, string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gonomaly %s: %v\nstderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countLines(path string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	return strings.Count(string(data), "\n")
}

// TestCommandsAvroThroughTheStages: records published as Avro by `produce` pass through
// `process` with Avro output, `sink` writes them as JSON lines, and `topics` and `lag`
// report what happened.
func TestCommandsAvroThroughTheStages(t *testing.T) {
	_, addr := startBroker(t)
	dir := t.TempDir()
	specPath := filepath.Join(dir, "pipeline.yaml")
	if err := os.WriteFile(specPath, []byte("name: avro\noutput:\n  format: avro\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := start(t, "process", "--brokers", addr, "--spec", specPath, "--partitions", "4")
	go io.Copy(io.Discard, proc.stdout)
	waitFor(t, "the stages to start", 20*time.Second, func() bool {
		return strings.Count(proc.stderr.String(), "stage started") == 3
	})

	labels := filepath.Join(dir, "labels.csv")
	_, stderr := gonomaly(t, "produce", "--brokers", addr, "--synthetic", "--series-count", "5", "--count", "3000", "--format", "avro", "--labels", labels)
	if !strings.Contains(stderr, "published 3000 records to gonomaly.records") {
		t.Fatalf("produce did not report what it published:\n%s", stderr)
	}
	if data, err := os.ReadFile(labels); err != nil || !strings.HasPrefix(string(data), "series,ts,kind,end_ts\n") {
		t.Fatalf("labels file: %v %q", err, data)
	}

	out := filepath.Join(dir, "results.jsonl")
	sink := start(t, "sink", "--brokers", addr, "--from", "results", "--to", "jsonl:"+out)
	go io.Copy(io.Discard, sink.stdout)
	waitFor(t, "3000 results in the sink file", 60*time.Second, func() bool { return countLines(out) >= 3000 })
	if err := sink.stop(t, 15*time.Second); err != nil {
		t.Fatalf("sink exit: %v", err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r struct {
			IsAnomaly *bool  `json:"is_anomaly"`
			Pipeline  string `json:"pipeline"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.IsAnomaly == nil || r.Pipeline != "avro" {
			t.Fatalf("sink line %q: %v", sc.Text(), err)
		}
	}

	topics, _ := gonomaly(t, "topics", "--brokers", addr)
	if !regexp.MustCompile(`gonomaly\.records\s+4\s+3000\s`).MatchString(topics) || !regexp.MustCompile(`gonomaly\.results\s+4\s+3000\s`).MatchString(topics) {
		t.Fatalf("topics output:\n%s", topics)
	}
	// While nothing is committed, lag finds the topics from the members' assignments.
	if lag, _ := gonomaly(t, "lag", "--brokers", addr, "--group", "gonomaly.avro.ensemble"); !strings.Contains(lag, "gonomaly.scores") {
		t.Fatalf("lag of a running group without --topic:\n%s", lag)
	}
	waitFor(t, "the detect group to catch up", 20*time.Second, func() bool {
		lag, _ := gonomaly(t, "lag", "--brokers", addr, "--group", "gonomaly.avro.detect", "--topic", "gonomaly.features")
		return regexp.MustCompile(`TOTAL \(gonomaly\.avro\.detect\)\s+0\n`).MatchString(lag)
	})
	if err := proc.stop(t, 20*time.Second); err != nil {
		t.Fatalf("process exit: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
		code int
	}{
		{[]string{"nonsense"}, `unknown command "nonsense"`, 2},
		{[]string{"produce"}, "choose exactly one input", 2},
		{[]string{"process", "--stage", "train"}, `unknown stage "train"`, 2},
		{[]string{"lag"}, "--group is required", 2},
		{[]string{"run", "--spec", "/nonexistent.yaml"}, "/nonexistent.yaml", 1},
		{[]string{"sink", "--to", "ftp://x"}, `sink "ftp://x": unknown kind`, 2},
	} {
		cmd := exec.Command(binary, tc.args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("gonomaly %v: exit %d, output %q; want exit %d mentioning %q", tc.args, code, out, tc.code, tc.want)
		}
	}
}
