package main

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
)

// TestWorkerCommandRunsJobsAndStopsCleanly: `gonomaly worker` against a broker process
// runs a detect job submitted to its queue, and exits 0 on SIGTERM.
func TestWorkerCommandRunsJobsAndStopsCleanly(t *testing.T) {
	_, addr := startBroker(t)
	p := start(t, "worker", "--brokers", addr, "--partitions", "2", "--queues", "detect,train", "--concurrency", "2", "--worker-id", "cli-worker", "--metrics-addr", "127.0.0.1:0")
	go io.Copy(io.Discard, p.stdout)
	waitFor(t, "the worker to start", 20*time.Second, func() bool { return strings.Contains(p.stderr.String(), "worker started") })

	// The worker created the layout; a client here submits as the API would.
	c := cluster.Config{Brokers: []string{addr}, Partitions: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	store, err := jobs.Open(ctx, testkit.Client(t, c.Brokers), jobs.TopicsFor(c), api.NewConsumerFunc(c.Brokers, kgo.FetchMaxWait(100*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	rows := make([][]float64, 200)
	for i := range rows {
		rows[i] = []float64{float64(i % 10), float64(i % 7)}
	}
	rows[150] = []float64{90, -70}
	st, err := store.Submit(ctx, jobs.Job{Type: jobs.Detect, Algorithm: "ecod", Input: jobs.Input{Rows: rows}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the job to end", 30*time.Second, func() bool {
		got, _ := store.Statuses.Get(st.ID)
		return got.State.Terminal()
	})
	end, _ := store.Statuses.Get(st.ID)
	if end.State != jobs.Succeeded || end.Worker != "cli-worker" || end.Result == nil || end.Result.Rows != 200 || end.Result.Anomalies < 1 {
		t.Fatalf("job ended as %+v (error %+v, result %+v)", end, end.Error, end.Result)
	}
	m := regexp.MustCompile(`serving metrics" addr=(\S+)`).FindStringSubmatch(p.stderr.String())
	if m == nil {
		t.Fatalf("no metrics address in the log:\n%s", p.stderr.String())
	}
	resp, err := http.Get(m[1])
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), `gonomaly_worker_jobs_finished_total{state="succeeded",type="detect"} 1`) {
		t.Errorf("metrics do not count the job:\n%s", metrics)
	}
	http.DefaultClient.CloseIdleConnections()
	if err := p.stop(t, 20*time.Second); err != nil {
		t.Fatalf("worker exited with %v after SIGTERM, want 0", err)
	}
	if log := p.stderr.String(); !strings.Contains(log, "worker stopped") {
		t.Errorf("no clean stop in the log:\n%s", log)
	}
}

func TestWorkerCommandUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--queues", "detect,sort"}, `--queues: unknown job type "sort"`},
		{[]string{"--queues", " , "}, "--queues: name at least one"},
		{[]string{"--concurrency", "0"}, "--concurrency 0: must be 1..1024"},
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
	} {
		cmd := exec.Command(binary, append([]string{"worker", "--brokers", "127.0.0.1:1"}, tc.args...)...)
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("worker %v: %v, want exit status 2\n%s", tc.args, err, out)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("worker %v: output does not contain %q:\n%s", tc.args, tc.want, out)
		}
	}
	// The environment configures as flags do.
	cmd := exec.Command(binary, "worker", "--brokers", "127.0.0.1:1")
	cmd.Env = append(cmd.Environ(), "GONOMALY_QUEUES=train,nightly")
	if out, _ := cmd.CombinedOutput(); !strings.Contains(string(out), `unknown job type "nightly"`) {
		t.Errorf("GONOMALY_QUEUES is not read: %s", out)
	}
}
