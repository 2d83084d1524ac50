package client_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/client"
	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/processors"
)

// The client, the server, its Kafka clients and the test broker start goroutines: none
// may outlive its test.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stack is a real API server on a real jobs.Store over a broker (embedded, or
// KAFKA_BROKERS).
type stack struct {
	url     string
	store   *jobs.Store
	brokers []string
}

func newStack(t *testing.T, cfg api.Config) stack {
	t.Helper()
	brokers := testkit.Brokers(t)
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 4}.WithDefaults()
	topics := jobs.TopicsFor(c)
	cl := testkit.Client(t, brokers, api.ProducerOptions(topics)...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.EnsureLayout(ctx, cl); err != nil {
		t.Fatal(err)
	}
	store, err := jobs.Open(ctx, cl, topics, api.NewConsumerFunc(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	cfg.Client, cfg.Topics, cfg.Jobs = cl, api.Topics{Records: c.Topic("records")}, store
	srv, err := api.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Client().CloseIdleConnections()
		hs.Close()
	})
	return stack{url: hs.URL, store: store, brokers: brokers}
}

func newClient(t *testing.T, url string, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	return c
}

func asProblem(t *testing.T, err error, status int) *client.Problem {
	t.Helper()
	var p *client.Problem
	if !errors.As(err, &p) {
		t.Fatalf("error %v (%T), want a *client.Problem", err, err)
	}
	if p.Status != status || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Fatalf("problem %+v, want a complete one with status %d", p, status)
	}
	if !client.IsStatus(err, status) {
		t.Fatalf("IsStatus(%d) is false for %v", status, err)
	}
	return p
}

func TestJobsSubmitTrackListCancel(t *testing.T) {
	st := newStack(t, api.Config{})
	c := newClient(t, st.url+"/api/v1/") // the /api/v1 suffix is accepted
	ctx := context.Background()

	var ids []string
	for i := range 5 {
		rows := make([][]float64, 10)
		for r := range rows {
			rows[r] = []float64{float64(r + i), float64(r * i)}
		}
		got, err := c.SubmitJob(ctx, jobs.Job{Type: jobs.Detect, Algorithm: "iforest", Params: map[string]float64{"trees": float64(10 + i)}, Input: jobs.Input{Rows: rows}})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		if got.ID == "" || got.State != jobs.Queued || got.Type != jobs.Detect || got.Job.Input.InlineRows != 10 || got.Job.Params["trees"] != float64(10+i) {
			t.Fatalf("submitted status %+v", got)
		}
		ids = append(ids, got.ID)
		time.Sleep(2 * time.Millisecond) // ids sort by their millisecond
	}
	got, err := c.Job(ctx, ids[2])
	if err != nil || got.ID != ids[2] || got.State != jobs.Queued {
		t.Fatalf("Job: %+v %v", got, err)
	}

	// Pages of two, newest first, through the cursor.
	page, err := c.ListJobs(ctx, jobs.Filter{Limit: 2})
	if err != nil || len(page.Jobs) != 2 || page.NextCursor == "" || page.Jobs[0].ID != ids[4] {
		t.Fatalf("first page %+v %v", page, err)
	}
	var listed []string
	for st, err := range c.AllJobs(ctx, jobs.Filter{Limit: 2, Type: jobs.Detect}) {
		if err != nil {
			t.Fatal(err)
		}
		listed = append(listed, st.ID)
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("AllJobs %v, want %v", listed, want)
	}

	// A queued job is cancelled at once, and Wait sees it end.
	cancelled, err := c.CancelJob(ctx, ids[0])
	if err != nil || cancelled.State != jobs.Cancelled {
		t.Fatalf("cancel: %+v %v", cancelled, err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ended, err := c.Wait(waitCtx, ids[0], 10*time.Millisecond)
	if err != nil || ended.State != jobs.Cancelled {
		t.Fatalf("Wait: %+v %v", ended, err)
	}
	page, err = c.ListJobs(ctx, jobs.Filter{State: jobs.Cancelled})
	if err != nil || len(page.Jobs) != 1 || page.Jobs[0].ID != ids[0] || page.NextCursor != "" {
		t.Fatalf("cancelled jobs %+v %v", page, err)
	}
	// Wait gives up with its context on a job that stays queued.
	shortCtx, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := c.Wait(shortCtx, ids[1], 10*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "queued") {
		t.Fatalf("Wait on a queued job: %v", err)
	}

	// Unknown ids and bad jobs are problems that say what is wrong.
	_, err = c.Job(ctx, "job_nope")
	asProblem(t, err, http.StatusNotFound)
	_, err = c.CancelJob(ctx, "job_nope")
	asProblem(t, err, http.StatusNotFound)
	_, err = c.SubmitJob(ctx, jobs.Job{Type: jobs.Detect, Algorithm: "magic", Input: jobs.Input{Rows: [][]float64{{1}}}})
	if p := asProblem(t, err, http.StatusBadRequest); p.Field != "algorithm" {
		t.Fatalf("unknown algorithm: %+v", p)
	}
	_, err = c.ListJobs(ctx, jobs.Filter{State: "sleeping"})
	asProblem(t, err, http.StatusBadRequest)
	_, err = c.Results(ctx, ids[3], 0, 10) // queued: no results yet
	if p := asProblem(t, err, http.StatusConflict); !strings.Contains(p.Detail, "queued") {
		t.Fatalf("results of a queued job: %+v", p)
	}
	for _, err := range c.AllResults(ctx, ids[3], 10) {
		asProblem(t, err, http.StatusConflict)
	}
}

func TestDatasetsAndModels(t *testing.T) {
	st := newStack(t, api.Config{})
	c := newClient(t, st.url)
	ctx := context.Background()
	var csv strings.Builder
	csv.WriteString("a,b,label\n")
	for i := range 100 {
		fmt.Fprintf(&csv, "%d,%d,%d\n", i%7, i%11, i/99)
	}
	d, err := c.UploadDataset(ctx, strings.NewReader(csv.String()), client.CSV, "small")
	if err != nil {
		t.Fatal(err)
	}
	if d.ID == "" || d.Name != "small" || d.Rows != 100 || !slices.Equal(d.Columns, []string{"a", "b"}) || !d.Labels || !strings.HasPrefix(d.Hash, "sha256:") {
		t.Fatalf("dataset %+v", d)
	}
	got, err := c.Dataset(ctx, d.ID)
	if err != nil || got.ID != d.ID || got.Rows != 100 {
		t.Fatalf("Dataset: %+v %v", got, err)
	}
	_, err = c.Dataset(ctx, "ds_nope")
	asProblem(t, err, http.StatusNotFound)
	_, err = c.UploadDataset(ctx, strings.NewReader("a,b\n1,2\n3,x\n"), client.CSV, "bad")
	if p := asProblem(t, err, http.StatusBadRequest); p.Line != 3 || !strings.Contains(p.Error(), "line 3") {
		t.Fatalf("bad cell: %+v (%v)", p, p)
	}
	if _, err := c.UploadDataset(ctx, strings.NewReader(""), "xlsx", ""); err == nil || !strings.Contains(err.Error(), "csv or ndjson") {
		t.Fatalf("unknown format: %v", err)
	}

	models, err := c.Models(ctx)
	if err != nil || len(models) != 0 {
		t.Fatalf("models of a new cluster: %v %v", models, err)
	}
	_, err = c.Model(ctx, "nope")
	asProblem(t, err, http.StatusNotFound)
}

func TestDetectAndDetectors(t *testing.T) {
	c := newClient(t, newStack(t, api.Config{}).url)
	ctx := context.Background()
	list, err := c.Detectors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(list, func(d detectors.Info) bool { return d.Name == "iforest" })
	if i < 0 || list[i].Kind != detectors.KindBatch || len(list[i].Params) == 0 {
		t.Fatalf("iforest is not among the %d detectors: %+v", len(list), list)
	}
	rows := [][]float64{{1, 1}, {1.1, 0.9}, {0.9, 1}, {1, 1.1}, {9, -9}}
	resp, err := c.Detect(ctx, client.DetectRequest{Algorithm: "iforest", Params: map[string]float64{"trees": 50}, Rows: rows})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Rows != 5 || len(resp.Scores) != 5 || resp.Kind != "batch" || resp.Params["trees"] != 50 || resp.Seed != api.DefaultSeed {
		t.Fatalf("response %+v", resp)
	}
	if top := slices.Index(resp.Scores, slices.Max(resp.Scores)); top != 4 {
		t.Fatalf("scores %v: the far point is not the top", resp.Scores)
	}
	// A streaming detector's warm-up is NaN.
	resp, err = c.Detect(ctx, client.DetectRequest{Algorithm: "zscore", Rows: [][]float64{{1}, {2}, {1}, {2}, {1}, {2}}})
	if err != nil || !math.IsNaN(resp.Scores[0]) {
		t.Fatalf("zscore: %v %v", resp.Scores, err)
	}
	_, err = c.Detect(ctx, client.DetectRequest{Algorithm: "iforest", Params: map[string]float64{"trees": 0}, Rows: rows})
	if p := asProblem(t, err, http.StatusBadRequest); p.Field != "params.trees" || !strings.Contains(p.Error(), "out of range") {
		t.Fatalf("bad parameter: %+v", p)
	}
	_, err = c.Detect(ctx, client.DetectRequest{Algorithm: "iforest", Rows: [][]float64{{1, 2}, {3}}})
	if p := asProblem(t, err, http.StatusBadRequest); p.Field != "rows[1]" {
		t.Fatalf("ragged rows: %+v", p)
	}
}

func TestAccessProblems(t *testing.T) {
	st := newStack(t, api.Config{
		Keys:      []api.Key{{Name: "dash", Role: api.RoleRead, Secret: "read-0123456789abcdef"}, {Name: "ci", Role: api.RoleSubmit, Secret: "submit-0123456789abcdef"}},
		RateLimit: 1, RateBurst: 2,
	})
	ctx := context.Background()
	job := jobs.Job{Type: jobs.Detect, Algorithm: "iforest", Input: jobs.Input{Rows: [][]float64{{1}, {2}}}}

	_, err := newClient(t, st.url).SubmitJob(ctx, job)
	asProblem(t, err, http.StatusUnauthorized)
	_, err = newClient(t, st.url, client.WithAPIKey("wrong-0123456789abcdef")).Job(ctx, "job_x")
	asProblem(t, err, http.StatusUnauthorized)
	reader := newClient(t, st.url, client.WithAPIKey("read-0123456789abcdef"))
	_, err = reader.SubmitJob(ctx, job)
	if p := asProblem(t, err, http.StatusForbidden); !strings.Contains(p.Detail, "read role") {
		t.Fatalf("read key submitting: %+v", p)
	}

	hc := &http.Client{Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	submitter := newClient(t, st.url, client.WithAPIKey("submit-0123456789abcdef"), client.WithHTTPClient(hc))
	submitted, err := submitter.SubmitJob(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if submitted.Job.SubmittedBy != "ci" {
		t.Errorf("submitted_by %q, want the key's name ci", submitted.Job.SubmittedBy)
	}
	_, err = submitter.Job(ctx, submitted.ID) // the burst's second token
	if err != nil {
		t.Fatal(err)
	}
	_, err = submitter.Job(ctx, submitted.ID)
	if p := asProblem(t, err, http.StatusTooManyRequests); p.RetryAfter != time.Second {
		t.Fatalf("rate limited: %+v, want Retry-After 1s", p)
	}
}

// TestProblemFromAnyErrorPage: an error answer that is not a problem document (a
// proxy's page) still becomes a *Problem with its status and text.
func TestProblemFromAnyErrorPage(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusBadGateway)
		fmt.Fprint(w, "<html>upstream down</html>")
	}))
	defer hs.Close()
	_, err := newClient(t, hs.URL).Job(context.Background(), "job_x")
	p := asProblem(t, err, http.StatusBadGateway)
	if p.Detail != "<html>upstream down</html>" || p.RetryAfter != 7*time.Second || p.Error() != "502 Bad Gateway: <html>upstream down</html>" {
		t.Fatalf("%+v: %v", p, p)
	}
	// A transport failure is an error, not a problem.
	hs.Close()
	_, err = newClient(t, hs.URL).Job(context.Background(), "job_x")
	var pp *client.Problem
	if err == nil || errors.As(err, &pp) || !strings.Contains(err.Error(), "GET /jobs/job_x") {
		t.Fatalf("transport error: %v", err)
	}
}

func TestNewChecksTheAddress(t *testing.T) {
	for _, bad := range []string{"", "127.0.0.1:8080", "ftp://host", "http://", "http://[::1"} {
		if _, err := client.New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

// startWorker runs a job worker with the real executors on the stack's store until the
// test ends.
func startWorker(t *testing.T, st stack) {
	t.Helper()
	w, err := processors.NewWorker(processors.WorkerConfig{
		Store: st.store, Executors: processors.JobExecutors(), ClientOpts: []kgo.Opt{kgo.SeedBrokers(st.brokers...)},
		Concurrency: 2, WatchInterval: 50 * time.Millisecond, ProgressInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

// TestJobRunsToResults: a dataset uploaded through the client, a detect job on it run by
// a worker, Wait until it succeeds, and every result row paged back in order, with the
// planted outliers on top; then a train job publishes a model the client lists.
func TestJobRunsToResults(t *testing.T) {
	st := newStack(t, api.Config{})
	startWorker(t, st)
	c := newClient(t, st.url)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 300
	outliers := map[int]bool{17: true, 150: true, 299: true}
	var csv strings.Builder
	csv.WriteString("x,y,label\n")
	for i := range n {
		x, y, label := float64(i%10)/10, float64(i%7)/7, 0
		if outliers[i] {
			x, y, label = 25+float64(i%3), -30, 1
		}
		fmt.Fprintf(&csv, "%g,%g,%d\n", x, y, label)
	}
	d, err := c.UploadDataset(ctx, strings.NewReader(csv.String()), client.CSV, "planted")
	if err != nil {
		t.Fatal(err)
	}
	queued, err := c.SubmitJob(ctx, jobs.Job{Type: jobs.Detect, Algorithm: "iforest", Params: map[string]float64{"trees": 100}, Seed: 3,
		Contamination: 0.01, Input: jobs.Input{Dataset: d.ID}})
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.Wait(ctx, queued.ID, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != jobs.Succeeded || done.Result == nil || done.Result.Rows != n || done.Result.Anomalies != 3 || done.Result.Metrics["roc_auc"] < 0.99 {
		t.Fatalf("finished status %+v (error %+v, result %+v)", done, done.Error, done.Result)
	}

	page, err := c.Results(ctx, queued.ID, 290, 50)
	if err != nil || page.Total != n || page.Offset != 290 || len(page.Rows) != 10 || page.NextOffset != 0 || page.Rows[9].Row != 299 || !page.Rows[9].IsAnomaly {
		t.Fatalf("last page %+v %v", page, err)
	}
	var rows []jobs.ResultRow
	for r, err := range c.AllResults(ctx, queued.ID, 37) {
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	if len(rows) != n {
		t.Fatalf("%d rows, want %d", len(rows), n)
	}
	for i, r := range rows {
		if r.Row != i || r.IsAnomaly != outliers[i] {
			t.Fatalf("row %d: %+v (outlier %v)", i, r, outliers[i])
		}
	}

	trained, err := c.SubmitJob(ctx, jobs.Job{Type: jobs.Train, Algorithm: "iforest", Model: "planted-iforest", Input: jobs.Input{Dataset: d.ID}})
	if err != nil {
		t.Fatal(err)
	}
	if done, err = c.Wait(ctx, trained.ID, 20*time.Millisecond); err != nil || done.State != jobs.Succeeded {
		t.Fatalf("train: %+v %v", done, err)
	}
	models, err := c.Models(ctx)
	if err != nil || len(models) != 1 || models[0].Name != "planted-iforest" || models[0].Version != 1 || models[0].Training.Dataset != d.ID {
		t.Fatalf("models %+v %v", models, err)
	}
	versions, err := c.Model(ctx, "planted-iforest")
	if err != nil || len(versions) != 1 || versions[0].JobID != trained.ID {
		t.Fatalf("versions %+v %v", versions, err)
	}
}
