package perf

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRunInProcess runs the types that exercise the harness's own concurrency (the
// pipeline runner with labels, the single loop, in-process instances, the job queue)
// in short mode under this test binary, so that -race covers them: the command's test
// runs every type through the real binary, without the race detector.
func TestRunInProcess(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var progress strings.Builder
	start := time.Now()
	rep, err := Run(ctx, Config{Types: []string{TypeConcurrent, TypeQueue}, OutDir: dir, Short: true, Progress: &progress})
	t.Logf("took %s\n%s", time.Since(start), progress.String())
	if err != nil {
		t.Fatal(err)
	}
	report, err := os.ReadFile(filepath.Join(dir, "report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## concurrent — ", "## queue — ", "in-process instances", "standing in for processes"} {
		if !strings.Contains(string(report), want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if len(rep.Rows()) < 6 {
		t.Errorf("summary rows: %+v", rep.Rows())
	}
}
