package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
)

// jobsEnv is a broker with the job topics and an API server whose job store reads and
// writes them, as `gonomaly api` builds it.
type jobsEnv struct {
	brokers []string
	topics  jobs.Topics
	client  *kgo.Client
	store   *jobs.Store
	s       *Server
	h       http.Handler
}

func newJobsEnv(t testing.TB, cfg Config) *jobsEnv {
	t.Helper()
	brokers := testkit.Brokers(t)
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := testkit.Client(t, brokers)
	if err := c.EnsureLayout(ctx, cl); err != nil {
		t.Fatal(err)
	}
	e := &jobsEnv{brokers: brokers, topics: jobs.TopicsFor(c), client: cl}
	e.store, e.s = e.replica(t, cfg)
	e.h = e.s.Handler()
	return e
}

// replica opens another store and server on the same topics: another API replica.
func (e *jobsEnv) replica(t testing.TB, cfg Config) (*jobs.Store, *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := testkit.Client(t, e.brokers, ProducerOptions(e.topics)...)
	store, err := jobs.Open(ctx, cl, e.topics, NewConsumerFunc(e.brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	cfg.Jobs = store
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	return store, newTestServer(t, cfg)
}

func decodeStatus(t *testing.T, rec *httptest.ResponseRecorder) jobs.Status {
	t.Helper()
	var st jobs.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("status body %q: %v", rec.Body, err)
	}
	return st
}

func (e *jobsEnv) submit(t *testing.T, body string) jobs.Status {
	t.Helper()
	rec := do(e.h, "POST", "/api/v1/jobs", "application/json", body)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("POST /jobs %s: status %d: %s", body, rec.Code, rec.Body)
	}
	return decodeStatus(t, rec)
}

const detectBody = `{"type":"detect","algorithm":"iforest","params":{"trees":10},"input":{"rows":[[1,2],[3,4],[5,6]],"columns":["cpu","mem"]},"seed":7,"timeout":"90s","max_attempts":2,"contamination":0.2}`

func TestSubmitJobQueuesItOnKafka(t *testing.T) {
	e := newJobsEnv(t, Config{})
	rec := do(e.h, "POST", "/api/v1/jobs", "application/json", detectBody)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	st := decodeStatus(t, rec)
	if loc := rec.Header().Get("Location"); loc != "/api/v1/jobs/"+st.ID {
		t.Errorf("Location %q for job %s", loc, st.ID)
	}
	j := st.Job
	if !strings.HasPrefix(st.ID, "job_") || st.State != jobs.Queued || st.Type != jobs.Detect || st.SubmittedAt.IsZero() ||
		j.ID != st.ID || j.Algorithm != "iforest" || j.Params["trees"] != 10 || j.Seed != 7 || time.Duration(j.Timeout) != 90*time.Second ||
		j.MaxAttempts != 2 || j.Contamination != 0.2 || j.Input.InlineRows != 3 || j.Input.Rows != nil || len(j.Input.Columns) != 2 {
		t.Fatalf("queued status %+v", st)
	}
	if strings.Contains(rec.Body.String(), `"rows":[[`) {
		t.Errorf("the status carries the inline rows: %s", rec.Body)
	}

	// The job itself, with its rows, is on the detect queue, keyed by its id.
	recs := testkit.ReadN(t, e.brokers, e.topics.Detect, 1, 10*time.Second)
	if len(recs) != 1 || string(recs[0].Key) != st.ID {
		t.Fatalf("detect queue holds %d records", len(recs))
	}
	var queued jobs.Job
	if err := json.Unmarshal(recs[0].Value, &queued); err != nil || len(queued.Input.Rows) != 3 || queued.Input.Rows[2][1] != 6 {
		t.Fatalf("queued job %s: %v", recs[0].Value, err)
	}
	// And its status on jobs.status, where a replica started later reads it.
	_, other := e.replica(t, Config{})
	got := do(other.Handler(), "GET", "/api/v1/jobs/"+st.ID, "", "")
	if got.Code != http.StatusOK || decodeStatus(t, got).State != jobs.Queued {
		t.Fatalf("GET from a new replica: %d %s", got.Code, got.Body)
	}
}

// TestSubmitJobWithTheMostInlineRows: 10,000 rows of 12 columns (2 MB of JSON) are more
// than Kafka's default 1 MB message; the queue topics take them.
func TestSubmitJobWithTheMostInlineRows(t *testing.T) {
	e := newJobsEnv(t, Config{})
	row := "[" + strings.TrimSuffix(strings.Repeat("0.123456789012,", 12), ",") + "]"
	body := `{"type":"detect","algorithm":"hbos","input":{"rows":[` + strings.TrimSuffix(strings.Repeat(row+",", jobs.MaxInlineRows), ",") + `]}}`
	if rec := do(e.h, "POST", "/api/v1/jobs", "application/json", body); rec.Code != http.StatusAccepted {
		t.Fatalf("%d rows, %d bytes: status %d: %s", jobs.MaxInlineRows, len(body), rec.Code, rec.Body)
	}
}

func TestAnotherReplicaAnswersForAJobAtOnce(t *testing.T) {
	e := newJobsEnv(t, Config{})
	_, other := e.replica(t, Config{})
	for i := range 5 {
		st := e.submit(t, detectBody)
		// No wait: a miss makes the other replica catch up before it answers 404.
		rec := do(other.Handler(), "GET", "/api/v1/jobs/"+st.ID, "", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("job %d: GET on the other replica: %d %s", i, rec.Code, rec.Body)
		}
	}
}

func TestGetJobHidesWhereResultsLie(t *testing.T) {
	e := newJobsEnv(t, Config{})
	st := e.submit(t, detectBody)
	st.State, st.FinishedAt = jobs.Succeeded, time.Now().UTC()
	st.Result = &jobs.Summary{Rows: 3, Columns: 2, Anomalies: 1, Threshold: 0.7,
		Results: &jobs.ResultsLocation{Partition: 1, Offsets: []int64{4}, ChunkRows: 1000, Rows: 3}}
	if err := e.store.PublishStatus(context.Background(), st); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/jobs/" + st.ID, "/api/v1/jobs"} {
		rec := do(e.h, "GET", path, "", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %s", path, rec.Code, rec.Body)
		}
		body := rec.Body.String()
		if strings.Contains(body, "results_location") || !strings.Contains(body, `"anomalies":1`) || !strings.Contains(body, `"state":"succeeded"`) {
			t.Errorf("GET %s: %s", path, body)
		}
	}
	// The view keeps the location: only the answer is stripped.
	if kept, _ := e.store.Statuses.Get(st.ID); kept.Result.Results == nil {
		t.Error("the view lost the results location")
	}
}

func TestListJobsFiltersAndPages(t *testing.T) {
	e := newJobsEnv(t, Config{})
	var ids []string
	for i := range 7 {
		body := detectBody
		if i%3 == 2 {
			body = `{"type":"preprocess","scaling":"minmax","input":{"rows":[[1],[2]]}}`
		}
		ids = append(ids, e.submit(t, body).ID)
		time.Sleep(2 * time.Millisecond) // ids order by millisecond
	}
	cancelled := do(e.h, "DELETE", "/api/v1/jobs/"+ids[0], "", "")
	if cancelled.Code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", cancelled.Code, cancelled.Body)
	}

	list := func(query string) jobList {
		t.Helper()
		rec := do(e.h, "GET", "/api/v1/jobs"+query, "", "")
		if rec.Code != http.StatusOK {
			t.Fatalf("GET /jobs%s: %d %s", query, rec.Code, rec.Body)
		}
		var l jobList
		if err := json.Unmarshal(rec.Body.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(rec.Body.String(), `"jobs":null`) {
			t.Errorf("jobs is null in %s", rec.Body)
		}
		return l
	}
	idsOf := func(l jobList) string {
		var out []string
		for _, st := range l.Jobs {
			out = append(out, st.ID)
		}
		return strings.Join(out, ",")
	}
	if got, want := idsOf(list("")), strings.Join([]string{ids[6], ids[5], ids[4], ids[3], ids[2], ids[1], ids[0]}, ","); got != want {
		t.Errorf("all jobs, newest first:\n got %s\nwant %s", got, want)
	}
	if got, want := idsOf(list("?type=preprocess")), ids[5]+","+ids[2]; got != want {
		t.Errorf("preprocess jobs %s, want %s", got, want)
	}
	if got := idsOf(list("?state=cancelled")); got != ids[0] {
		t.Errorf("cancelled jobs %s, want %s", got, ids[0])
	}
	if got := list("?state=running&type=train"); len(got.Jobs) != 0 || got.NextCursor != "" {
		t.Errorf("no running train jobs, got %+v", got)
	}
	// Pages of two through the cursor cover every queued detect job once.
	var paged []string
	cursor := ""
	for pages := 0; ; pages++ {
		q := "?type=detect&state=queued&limit=2"
		if cursor != "" {
			q += "&cursor=" + cursor
		}
		page := list(q)
		if len(page.Jobs) > 2 || pages > 5 {
			t.Fatalf("page %+v", page)
		}
		if idsOf(page) != "" {
			paged = append(paged, idsOf(page))
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if got, want := strings.Join(paged, ","), strings.Join([]string{ids[6], ids[4], ids[3], ids[1]}, ","); got != want {
		t.Errorf("paged detect jobs %s, want %s", got, want)
	}
}

func TestCancelJob(t *testing.T) {
	e := newJobsEnv(t, Config{})
	queued := e.submit(t, detectBody)
	rec := do(e.h, "DELETE", "/api/v1/jobs/"+queued.ID, "", "")
	if rec.Code != http.StatusAccepted {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	if st := decodeStatus(t, rec); st.State != jobs.Cancelled || st.FinishedAt.IsZero() {
		t.Fatalf("a queued job is cancelled at once: %+v", st)
	}
	// Again: nothing changes.
	if rec := do(e.h, "DELETE", "/api/v1/jobs/"+queued.ID, "", ""); rec.Code != http.StatusAccepted || decodeStatus(t, rec).State != jobs.Cancelled {
		t.Fatalf("second cancel: %d %s", rec.Code, rec.Body)
	}

	// A running job gets a cancel request, which its worker acts on.
	running := e.submit(t, detectBody)
	running.State, running.Worker, running.Attempt = jobs.Running, "w1", 1
	if err := e.store.PublishStatus(context.Background(), running); err != nil {
		t.Fatal(err)
	}
	rec = do(e.h, "DELETE", "/api/v1/jobs/"+running.ID, "", "")
	if st := decodeStatus(t, rec); rec.Code != http.StatusAccepted || st.State != jobs.Running || !st.CancelRequested {
		t.Fatalf("cancel of a running job: %d %+v", rec.Code, st)
	}
	// The request is on jobs.status, for the worker's view.
	_, other := e.replica(t, Config{})
	if st := decodeStatus(t, do(other.Handler(), "GET", "/api/v1/jobs/"+running.ID, "", "")); !st.CancelRequested {
		t.Fatalf("another replica does not see the cancel request: %+v", st)
	}
}

func TestJobRoutesAnswerProblems(t *testing.T) {
	e := newJobsEnv(t, Config{MaxBodyBytes: 1 << 20})
	ctx := context.Background()
	// A dataset and a model that exist, as their topics describe them.
	ds, _ := json.Marshal(jobs.Dataset{ID: "ds_known", Format: "csv", Rows: 3, Columns: []string{"a"}, CreatedAt: time.Now()})
	model, _ := json.Marshal(jobs.Model{Name: "cpu", Version: 1, Algorithm: "ecod", Columns: []string{"a"}, CreatedAt: time.Now()})
	if err := e.client.ProduceSync(ctx,
		&kgo.Record{Topic: e.topics.DatasetIndex, Key: []byte("ds_known"), Value: ds},
		&kgo.Record{Topic: e.topics.Models, Key: []byte("cpu"), Value: model}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{
		`{"type":"detect","model":"cpu","input":{"dataset":"ds_known"}}`,
		`{"type":"detect","model":"cpu@1","input":{"rows":[[1]]}}`,
		`{"type":"train","algorithm":"ecod","model":"new-model","input":{"dataset":"ds_known","columns":["a"]}}`,
		`{"type":"ensemble","detectors":[{"algorithm":"iforest","params":{"trees":5},"weight":2},{"algorithm":"hbos"}],"combiner":"weighted_mean","input":{"rows":[[1],[2]]}}`,
		`{"type":"preprocess","scaling":"robust","input":{"records":{"series":["host-1"],"from":"2026-11-27T00:00:00Z","to":"2026-11-28T00:00:00+01:00"}}}`,
		`{"type":"detect","algorithm":"zscore","input":{"rows":[[1]]},"params":null,"model":null,"seed":18446744073709551615}`,
	} {
		e.submit(t, ok)
	}

	tooMany := `{"type":"detect","algorithm":"ecod","input":{"rows":[` + strings.Repeat("[1],", jobs.MaxInlineRows) + `[1]]}}`
	tests := []struct {
		name, method, path, body string
		status                   int
		field                    string
		detail                   string
	}{
		{"empty body", "POST", "/api/v1/jobs", "", 400, "", "empty body"},
		{"malformed", "POST", "/api/v1/jobs", `{"type":"detect",`, 400, "", "unexpected end"},
		{"syntax error", "POST", "/api/v1/jobs", `{"type": detect}`, 400, "", "byte 10"},
		{"not an object", "POST", "/api/v1/jobs", `["detect"]`, 400, "", "want a JSON object, got an array"},
		{"trailing data", "POST", "/api/v1/jobs", detectBody + ` {}`, 400, "", "after the JSON object"},
		{"unknown field", "POST", "/api/v1/jobs", `{"type":"detect","algo":"iforest","input":{"rows":[[1]]}}`, 400, "algo", `unknown field "algo" (known: type, input,`},
		{"id is the server's", "POST", "/api/v1/jobs", `{"id":"job_mine","type":"detect","algorithm":"ecod","input":{"rows":[[1]]}}`, 400, "id", `unknown field "id"`},
		{"unknown input field", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[[1]],"inline_rows":1}}`, 400, "input.inline_rows", `unknown field "input.inline_rows"`},
		{"unknown records field", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"records":{"series":["a"],"since":"x"}}}`, 400, "input.records.since", "unknown field"},
		{"unknown detector field", "POST", "/api/v1/jobs", `{"type":"ensemble","detectors":[{"algorithm":"ecod"},{"algorithm":"hbos","weigth":2}],"input":{"rows":[[1]]}}`, 400, "detectors[1].weigth", "unknown field"},
		{"type not a string", "POST", "/api/v1/jobs", `{"type":1,"input":{"rows":[[1]]}}`, 400, "type", "type: want a string, got the number 1"},
		{"input not an object", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":"ds_1"}`, 400, "input", "input: want an object, got a string"},
		{"rows not an array", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":{"a":1}}}`, 400, "input.rows", "want an array of rows, got an object"},
		{"row not an array", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[[1],2]}}`, 400, "input.rows[1]", "want an array of numbers, got the number 2"},
		{"cell not a number", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[[1,2],[3,"4"]]}}`, 400, "input.rows[1][1]", "want a number, got a string"},
		{"cell null", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[[null]]}}`, 400, "input.rows[0][0]", "got null"},
		{"cell not finite", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[[1],[1e999]]}}`, 400, "input.rows[1][0]", "1e999 is not a finite number"},
		{"ragged rows", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[[1,2],[3]]}}`, 400, "input.rows[1]", "has 1 values, want 2"},
		{"empty rows", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[]}}`, 400, "input.rows", "empty"},
		{"too many rows", "POST", "/api/v1/jobs", tooMany, 413, "input.rows", "10001 rows is more than 10000"},
		{"column not a string", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[[1,2]],"columns":["a",2]}}`, 400, "input.columns[1]", "want a string"},
		{"series not strings", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"records":{"series":[1],"from":"2026-11-27T00:00:00Z","to":"2026-11-28T00:00:00Z"}}}`, 400, "input.records.series[0]", "want a string, got the number 1"},
		{"bad time", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"records":{"series":["a"],"from":"yesterday","to":"2026-11-28T00:00:00Z"}}}`, 400, "input.records.from", `"yesterday" is not an RFC 3339 time`},
		{"empty range", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"records":{"series":["a"],"from":"2026-11-28T00:00:00Z","to":"2026-11-28T00:00:00Z"}}}`, 400, "input.records.to", "is not after"},
		{"params not an object", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"iforest","params":[1],"input":{"rows":[[1]]}}`, 400, "params", "want an object of numbers"},
		{"param not a number", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"iforest","params":{"trees":"many"},"input":{"rows":[[1]]}}`, 400, "params.trees", "params.trees: want a number, got a string"},
		{"member param not a number", "POST", "/api/v1/jobs", `{"type":"ensemble","detectors":[{"algorithm":"ecod"},{"algorithm":"iforest","params":{"trees":true}}],"input":{"rows":[[1]]}}`, 400, "detectors[1].params.trees", "got a boolean"},
		{"member param out of range", "POST", "/api/v1/jobs", `{"type":"ensemble","detectors":[{"algorithm":"ecod"},{"algorithm":"iforest","params":{"trees":0}}],"input":{"rows":[[1]]}}`, 400, "detectors[1].params.trees", "out of range [1, 10000]"},
		{"detectors not an array", "POST", "/api/v1/jobs", `{"type":"ensemble","detectors":{"algorithm":"ecod"},"input":{"rows":[[1]]}}`, 400, "detectors", "want an array"},
		{"seed negative", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","seed":-1,"input":{"rows":[[1]]}}`, 400, "seed", "seed: want a whole number from 0"},
		{"seed too big", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","seed":18446744073709551616,"input":{"rows":[[1]]}}`, 400, "seed", "whole number"},
		{"max_attempts fraction", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","max_attempts":1.5,"input":{"rows":[[1]]}}`, 400, "max_attempts", "whole number"},
		{"max_attempts too many", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","max_attempts":11,"input":{"rows":[[1]]}}`, 400, "max_attempts", "out of range"},
		{"timeout a number", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","timeout":90,"input":{"rows":[[1]]}}`, 400, "timeout", `want a duration string such as "90s"`},
		{"timeout without unit", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","timeout":"90","input":{"rows":[[1]]}}`, 400, "timeout", "with a unit"},
		{"timeout negative", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","timeout":"-5s","input":{"rows":[[1]]}}`, 400, "timeout", "negative"},
		{"contamination a string", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","contamination":"10%","input":{"rows":[[1]]}}`, 400, "contamination", "want a number"},
		{"contamination too high", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","contamination":0.9,"input":{"rows":[[1]]}}`, 400, "contamination", "out of range (0, 0.5]"},
		{"missing type", "POST", "/api/v1/jobs", `{"algorithm":"ecod","input":{"rows":[[1]]}}`, 400, "type", "type: missing"},
		{"unknown type", "POST", "/api/v1/jobs", `{"type":"sort","input":{"rows":[[1]]}}`, 400, "type", `unknown job type "sort"`},
		{"missing input", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod"}`, 400, "input", "exactly one of"},
		{"two inputs", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"dataset":"ds_known","rows":[[1]]}}`, 400, "input", "not input.dataset and input.rows"},
		{"unknown algorithm", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"magic","input":{"rows":[[1]]}}`, 400, "algorithm", `unknown detector "magic"`},
		{"unknown param", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"iforest","params":{"leaves":2},"input":{"rows":[[1]]}}`, 400, "params.leaves", `unknown parameter "leaves"`},
		{"algorithm and model", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","model":"cpu","input":{"rows":[[1]]}}`, 400, "model", "not both"},
		{"train without name", "POST", "/api/v1/jobs", `{"type":"train","algorithm":"ecod","input":{"rows":[[1]]}}`, 400, "model", "missing"},
		{"unknown combiner", "POST", "/api/v1/jobs", `{"type":"ensemble","detectors":[{"algorithm":"ecod"}],"combiner":"sum","input":{"rows":[[1]]}}`, 400, "combiner", `unknown combiner "sum"`},
		{"unknown scaling", "POST", "/api/v1/jobs", `{"type":"preprocess","scaling":"log","input":{"rows":[[1]]}}`, 400, "scaling", `unknown scaling "log"`},
		{"missing dataset", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"dataset":"ds_gone"}}`, 404, "input.dataset", `no dataset "ds_gone"`},
		{"missing model", "POST", "/api/v1/jobs", `{"type":"detect","model":"memory","input":{"rows":[[1]]}}`, 404, "model", "memory"},
		{"missing model version", "POST", "/api/v1/jobs", `{"type":"detect","model":"cpu@2","input":{"rows":[[1]]}}`, 404, "model", "the latest version is 1"},
		{"body too large", "POST", "/api/v1/jobs", `{"type":"detect","algorithm":"ecod","input":{"rows":[` + strings.Repeat("[1],", 300_000) + `[1]]}}`, 413, "", "bytes"},

		{"get unknown", "GET", "/api/v1/jobs/job_00000000000000000000000000", "", 404, "id", `no job "job_00000000000000000000000000"`},
		{"get not an id", "GET", "/api/v1/jobs/not-a-job", "", 404, "id", "no job"},
		{"cancel unknown", "DELETE", "/api/v1/jobs/job_nope", "", 404, "id", `no job "job_nope"`},
		{"list bad state", "GET", "/api/v1/jobs?state=sleeping", "", 400, "state", `unknown job state "sleeping"`},
		{"list bad type", "GET", "/api/v1/jobs?type=sort", "", 400, "type", `unknown job type "sort"`},
		{"list limit zero", "GET", "/api/v1/jobs?limit=0", "", 400, "limit", "from 1 to 1000"},
		{"list limit too big", "GET", "/api/v1/jobs?limit=1001", "", 400, "limit", "from 1 to 1000"},
		{"list limit not a number", "GET", "/api/v1/jobs?limit=ten", "", 400, "limit", `"ten" is not a whole number`},
		{"list bad cursor", "GET", "/api/v1/jobs?cursor=zzz", "", 400, "cursor", "not a job id"},
		{"list unknown parameter", "GET", "/api/v1/jobs?status=running", "", 400, "status", `unknown query parameter "status" (known: state, type, limit, cursor)`},
		{"list repeated parameter", "GET", "/api/v1/jobs?state=queued&state=running", "", 400, "state", "given 2 times"},
		{"wrong method", "PUT", "/api/v1/jobs/job_x", "", 405, "", "allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(e.h, tt.method, tt.path, "application/json", tt.body)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.status, rec.Body)
			}
			p := problemOf(t, rec)
			if p.Field != tt.field {
				t.Errorf("field %q, want %q (detail %q)", p.Field, tt.field, p.Detail)
			}
			if !strings.Contains(p.Detail, tt.detail) {
				t.Errorf("detail %q does not contain %q", p.Detail, tt.detail)
			}
		})
	}
}

func TestJobRoutesWithoutAJobStoreAnswer503(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, r := range []struct{ method, path, body string }{
		{"POST", "/api/v1/jobs", detectBody}, {"GET", "/api/v1/jobs", ""}, {"GET", "/api/v1/jobs/job_x", ""}, {"DELETE", "/api/v1/jobs/job_x", ""},
	} {
		rec := do(s.Handler(), r.method, r.path, "application/json", r.body)
		if rec.Code != http.StatusServiceUnavailable || !strings.Contains(problemOf(t, rec).Detail, "job system is not configured") {
			t.Errorf("%s %s: %d %s", r.method, r.path, rec.Code, rec.Body)
		}
	}
}

// When Kafka does not take the job, the answer is a 503 to retry, not a 500.
func TestSubmitJobWhenKafkaFailsAnswers503(t *testing.T) {
	e := newJobsEnv(t, Config{ProduceTimeout: 2 * time.Second})
	queued := e.submit(t, detectBody)
	e.store.Client.Close() // the store's producer: its views keep reading
	rec := do(e.h, "POST", "/api/v1/jobs", "application/json", detectBody)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(problemOf(t, rec).Detail, "was not queued") {
		t.Fatalf("submit: %d %s", rec.Code, rec.Body)
	}
	rec = do(e.h, "DELETE", "/api/v1/jobs/"+queued.ID, "", "")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(problemOf(t, rec).Detail, "not recorded") {
		t.Fatalf("cancel: %d %s", rec.Code, rec.Body)
	}
	// Reads are served from memory still.
	if rec := do(e.h, "GET", "/api/v1/jobs/"+queued.ID, "", ""); rec.Code != http.StatusOK {
		t.Fatalf("get: %d %s", rec.Code, rec.Body)
	}
}

// FuzzJobRequest posts arbitrary bodies to POST /jobs on a server with a real job
// store: whatever the body, the answer is never a 5xx, and every error is a problem.
func FuzzJobRequest(f *testing.F) {
	for _, seed := range []string{
		detectBody,
		`{"type":"detect","model":"cpu@2","input":{"dataset":"ds_x"}}`,
		`{"type":"ensemble","detectors":[{"algorithm":"iforest","params":{"trees":5},"weight":2},{"algorithm":"hbos"}],"combiner":"aom","input":{"rows":[[1],[2]]}}`,
		`{"type":"preprocess","scaling":"minmax","input":{"records":{"series":["a"],"from":"2026-11-27T00:00:00Z","to":"2026-11-28T00:00:00Z"}}}`,
		`{"type":"train","algorithm":"zscore","params":{"window":8,"min_samples":9},"model":"m","input":{"rows":[[1e308],[-1e308]]}}`,
		`{"type":"detect","algorithm":"ecod","input":{"rows":[[1,2],[3]]},"seed":-0,"timeout":"1h1m","max_attempts":1e1}`,
		`{"input":{"rows":[[`,
	} {
		f.Add(seed)
	}
	e := newJobsEnv(f, Config{MaxBodyBytes: 64 << 10})
	f.Fuzz(func(t *testing.T, body string) {
		rec := do(e.h, "POST", "/api/v1/jobs", "application/json", body)
		if rec.Code >= 500 {
			t.Fatalf("POST /jobs %q: status %d: %s", body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Header().Get("Content-Type") != ProblemContentType {
			t.Fatalf("POST /jobs %q: status %d with Content-Type %q", body, rec.Code, rec.Header().Get("Content-Type"))
		}
		if rec.Code == http.StatusAccepted {
			var st jobs.Status
			if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.State != jobs.Queued || st.ID == "" {
				t.Fatalf("POST /jobs %q: accepted %s (%v)", body, rec.Body, err)
			}
		}
	})
}
