package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/client"
	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/jobs"
)

// The job system end to end, every part its own process as in production: a broker, the
// API, workers and a pipeline stage, talking only through Kafka and HTTP.

var oddsDir = filepath.Join("..", "..", "..", "shared", "data", "odds")

// startWorker runs `gonomaly worker` with a short session timeout, so that a killed
// worker's jobs move to another within seconds rather than Kafka's default 45 s.
func startWorker(t *testing.T, brokerAddr, id string, extra ...string) *process {
	t.Helper()
	p := start(t, append([]string{"worker", "--brokers", brokerAddr, "--partitions", "4", "--worker-id", id, "--concurrency", "1", "--session-timeout", "6s"}, extra...)...)
	go io.Copy(io.Discard, p.stdout)
	return p
}

func waitState(t *testing.T, c *client.Client, id string, within time.Duration, ok func(jobs.Status) bool) jobs.Status {
	t.Helper()
	var st jobs.Status
	waitFor(t, "job "+id+" to reach the expected state", within, func() bool {
		var err error
		st, err = c.Job(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return ok(st)
	})
	return st
}

// longDataset uploads rows that an Isolation Forest of many trees takes seconds to score,
// so that a job can be killed or cancelled while it runs.
func longDataset(t *testing.T, c *client.Client) jobs.Dataset {
	t.Helper()
	var b bytes.Buffer
	b.WriteString("a,b,c,d\n")
	for i := range 60_000 {
		fmt.Fprintf(&b, "%d,%d,%d,%d\n", i%97, i%89, i%83, i%79)
	}
	ds, err := c.UploadDataset(context.Background(), &b, "csv", "long")
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func longJob(ds jobs.Dataset) jobs.Job {
	return jobs.Job{Type: jobs.Detect, Algorithm: "iforest", Params: detectors.Params{"trees": 4000}, Input: jobs.Input{Dataset: ds.ID}}
}

// TestJobsAcrossProcesses: upload an ODDS dataset, detect with Isolation Forest through an
// exactly-once worker, check the stored results' ROC-AUC against the file's labels; kill the worker
// running a long job and see the other finish it exactly once; cancel a long job; restart
// the API and see every status again.
func TestJobsAcrossProcesses(t *testing.T) {
	cardio := filepath.Join(oddsDir, "cardio.csv")
	raw, err := os.ReadFile(cardio)
	if err != nil {
		t.Skipf("ODDS data not available: %v", err)
	}
	ctx := context.Background()
	_, brokerAddr := startBroker(t)
	apiProc, base := startAPI(t, brokerAddr, nil)
	c, err := client.New(base)
	if err != nil {
		t.Fatal(err)
	}
	// Exactly-once workers: a job's terminal status and its offset commit in one
	// transaction (the default mode is covered by processors' worker tests).
	workers := map[string]*process{"w1": startWorker(t, brokerAddr, "w1", "--exactly-once"), "w2": startWorker(t, brokerAddr, "w2", "--exactly-once")}

	// Detect on an uploaded dataset; the results match the labels as PyOD's figures say.
	ds, err := c.UploadDataset(ctx, bytes.NewReader(raw), "csv", "cardio")
	if err != nil {
		t.Fatal(err)
	}
	if ds.Rows != 1831 || len(ds.Columns) != 21 || !ds.Labels {
		t.Fatalf("cardio uploaded as %+v", ds)
	}
	st, err := c.SubmitJob(ctx, jobs.Job{Type: jobs.Detect, Algorithm: "iforest", Input: jobs.Input{Dataset: ds.ID}, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	st = waitState(t, c, st.ID, 60*time.Second, func(s jobs.Status) bool { return s.State.Terminal() })
	if st.State != jobs.Succeeded || st.Result == nil || st.Result.Rows != 1831 {
		t.Fatalf("detect job: %+v", st)
	}
	var scores []float64
	for row, err := range c.AllResults(ctx, st.ID, 500) {
		if err != nil {
			t.Fatal(err)
		}
		if row.Row != len(scores) {
			t.Fatalf("result row %d at position %d", row.Row, len(scores))
		}
		scores = append(scores, row.Score)
	}
	auc := detectors.ROCAUC(scores, cardioLabels(t, raw))
	t.Logf("Isolation Forest on cardio through a worker: ROC-AUC %.4f of the stored scores", auc)
	if auc < 0.9 || math.Abs(auc-st.Result.Metrics["roc_auc"]) > 1e-9 {
		t.Fatalf("ROC-AUC of the stored scores %.4f (PyOD publishes 0.93 for IForest on cardio); the job reported %v", auc, st.Result.Metrics["roc_auc"])
	}

	// Kill the worker running a long job: the other finishes it, once.
	long := longDataset(t, c)
	st, err = c.SubmitJob(ctx, longJob(long))
	if err != nil {
		t.Fatal(err)
	}
	st = waitState(t, c, st.ID, 30*time.Second, func(s jobs.Status) bool { return s.State == jobs.Running && s.Progress > 0 })
	first := st.Worker
	if workers[first] == nil {
		t.Fatalf("job running on unknown worker %q", first)
	}
	workers[first].cmd.Process.Kill()
	st = waitState(t, c, st.ID, 90*time.Second, func(s jobs.Status) bool { return s.State.Terminal() })
	if st.State != jobs.Succeeded || st.Worker == first || st.Result.Rows != 60_000 {
		t.Fatalf("after killing %s: %+v", first, st)
	}
	if n := countKeyed(t, brokerAddr, "gonomaly.jobs.status", st.ID, func(s jobs.Status) bool { return s.State == jobs.Succeeded }); n != 1 {
		t.Fatalf("job %s succeeded %d times", st.ID, n)
	}
	survivor := "w1"
	if first == "w1" {
		survivor = "w2"
	}

	// Cancel a long job while it runs.
	st, err = c.SubmitJob(ctx, longJob(long))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, c, st.ID, 30*time.Second, func(s jobs.Status) bool { return s.State == jobs.Running })
	asked := time.Now()
	if _, err := c.CancelJob(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	st = waitState(t, c, st.ID, 10*time.Second, func(s jobs.Status) bool { return s.State.Terminal() })
	if st.State != jobs.Cancelled {
		t.Fatalf("cancelled job: %+v", st)
	}
	t.Logf("cancel took %s; worker %s", time.Since(asked).Round(time.Millisecond), survivor)

	// A restarted API recovers every status from jobs.status.
	before := map[string]jobs.State{}
	for s, err := range c.AllJobs(ctx, jobs.Filter{}) {
		if err != nil {
			t.Fatal(err)
		}
		before[s.ID] = s.State
	}
	if len(before) != 3 {
		t.Fatalf("%d jobs listed, want 3: %v", len(before), before)
	}
	if err := apiProc.stop(t, 15*time.Second); err != nil {
		t.Fatalf("API exit: %v", err)
	}
	_, base = startAPI(t, brokerAddr, nil)
	c, _ = client.New(base)
	for id, state := range before {
		got, err := c.Job(ctx, id)
		if err != nil || got.State != state {
			t.Fatalf("after restart, job %s: %+v, %v (was %s)", id, got, err, state)
		}
	}
}

// cardioLabels reads the label column of an ODDS file.
func cardioLabels(t *testing.T, raw []byte) []int {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	labels := make([]int, 0, len(recs)-1)
	for _, r := range recs[1:] {
		v, err := strconv.ParseFloat(r[len(r)-1], 64)
		if err != nil {
			t.Fatal(err)
		}
		labels = append(labels, int(v))
	}
	return labels
}

// countKeyed counts the records of a topic with the given key whose status matches,
// reading every partition to its end offset (however long a loaded machine takes).
func countKeyed(t *testing.T, brokerAddr, topic, key string, match func(jobs.Status) bool) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Read committed, as every view does; control records (transaction markers) are kept
	// only so that a marker at a partition's end is reached.
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	left := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			left[o.Partition] = o.Offset
		}
	})
	n := 0
	for len(left) > 0 {
		f := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("reading %s to its end: %v", topic, ctx.Err())
		}
		f.EachRecord(func(r *kgo.Record) {
			var st jobs.Status
			if !r.Attrs.IsControl() && string(r.Key) == key && json.Unmarshal(r.Value, &st) == nil && match(st) {
				n++
			}
			if r.Offset+1 >= left[r.Partition] {
				delete(left, r.Partition)
			}
		})
	}
	return n
}

// TestTrainedModelHotSwapsIntoStream: a pipeline whose spec names a model scores with the
// version a train job publishes, and switches to the next version without a restart.
func TestTrainedModelHotSwapsIntoStream(t *testing.T) {
	ctx := context.Background()
	_, brokerAddr := startBroker(t)
	_, base := startAPI(t, brokerAddr, nil)
	startWorker(t, brokerAddr, "w1")
	specPath := filepath.Join(t.TempDir(), "model.yaml")
	os.WriteFile(specPath, []byte("name: swap\ndetectors:\n  - model: cpu\n"), 0o644)
	stages := start(t, "process", "--brokers", brokerAddr, "--partitions", "4", "--spec", specPath, "--stage", "preprocess,detect,ensemble")
	go io.Copy(io.Discard, stages.stdout)
	c, err := client.New(base)
	if err != nil {
		t.Fatal(err)
	}

	train := func(shift float64) jobs.ModelRef {
		rows := make([][]float64, 200)
		for i := range rows {
			rows[i] = []float64{shift + float64(i%20)}
		}
		st, err := c.SubmitJob(ctx, jobs.Job{Type: jobs.Train, Algorithm: "hbos", Model: "cpu", Input: jobs.Input{Rows: rows, Columns: []string{"cpu"}}})
		if err != nil {
			t.Fatal(err)
		}
		st = waitState(t, c, st.ID, 30*time.Second, func(s jobs.Status) bool { return s.State.Terminal() })
		if st.State != jobs.Succeeded || st.Result.Model == nil {
			t.Fatalf("train job: %+v", st)
		}
		return *st.Result.Model
	}
	versions := make(chan string, 1024)
	go func() {
		cl, err := kgo.NewClient(kgo.SeedBrokers(brokerAddr), kgo.ConsumeTopics("gonomaly.results"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			return
		}
		defer cl.Close()
		for {
			f := cl.PollFetches(context.Background())
			if f.IsClientClosed() {
				return
			}
			f.EachRecord(func(r *kgo.Record) {
				var res struct {
					ModelVersion string `json:"model_version"`
				}
				json.Unmarshal(r.Value, &res)
				select {
				case versions <- res.ModelVersion:
				default:
				}
			})
		}
	}()
	sendAndSee := func(want string) {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for round := 0; ; round++ {
			var recs []string
			for i := range 20 {
				recs = append(recs, fmt.Sprintf(`{"series":"host-%d","values":{"cpu":%d}}`, i%3, (round+i)%20))
			}
			if err := postRecords(base, "["+strings.Join(recs, ",")+"]"); err != nil {
				t.Fatal(err)
			}
			for drained := false; !drained; {
				select {
				case v := <-versions:
					if slices.Contains(strings.Split(v, "+"), want) { // "spec-…+cpu@2", or "cpu@2" alone
						return
					}
				case <-deadline:
					t.Fatalf("no result scored by %s within 30 s", want)
				case <-time.After(300 * time.Millisecond):
					drained = true
				}
			}
		}
	}
	if v := train(0); v.Version != 1 {
		t.Fatalf("first model version %+v", v)
	}
	sendAndSee("cpu@1")
	if v := train(100); v.Version != 2 {
		t.Fatalf("second model version %+v", v)
	}
	sendAndSee("cpu@2")
}

func postRecords(base, body string) error {
	resp, err := httpPost(base+"/api/v1/records", "application/json", body)
	if err != nil {
		return err
	}
	if resp != 202 {
		return fmt.Errorf("POST /records: %d", resp)
	}
	return nil
}

func httpPost(url, contentType, body string) (int, error) {
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestAPIFiresSchedules: `gonomaly api --schedules` submits a schedule's job every period;
// two replicas loading the same file fire each period once.
func TestAPIFiresSchedules(t *testing.T) {
	_, brokerAddr := startBroker(t)
	path := filepath.Join(t.TempDir(), "schedules.yaml")
	os.WriteFile(path, []byte("schedules:\n  - name: tick\n    cron: '@every 1s'\n    job: {type: detect, algorithm: hbos, input: {rows: [[1], [2], [30]]}}\n"), 0o644)
	_, base := startAPI(t, brokerAddr, nil, "--schedules", path)
	startAPI(t, brokerAddr, nil, "--schedules", path)
	c, err := client.New(base)
	if err != nil {
		t.Fatal(err)
	}
	var page client.JobPage
	waitFor(t, "3 scheduled jobs", 20*time.Second, func() bool {
		page, err = c.ListJobs(context.Background(), jobs.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(page.Jobs) >= 3
	})
	seen := map[string]bool{}
	for _, st := range page.Jobs {
		if st.Job.Schedule != "tick" || st.Job.SubmittedBy != "scheduler" || seen[st.ID] {
			t.Fatalf("job %+v", st)
		}
		seen[st.ID] = true
	}
	if _, _, code := runCmd(t, nil, "api", "--brokers", brokerAddr, "--schedules", filepath.Join(t.TempDir(), "missing.yaml")); code == 0 {
		t.Fatal("a missing schedules file did not fail the start")
	}
}
