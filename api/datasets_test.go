package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
)

const oddsCardio = "../../shared/data/odds/cardio.csv"

// datasetsEnv is a broker with the job topics, a job store on it, and the API served
// over real HTTP.
type datasetsEnv struct {
	brokers []string
	store   *jobs.Store
	s       *Server
	url     string
}

func openDatasetsStore(t testing.TB) (*jobs.Store, []string) {
	t.Helper()
	brokers := testkit.Brokers(t)
	cfg := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}.WithDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	producer := testkit.Client(t, brokers)
	if err := cfg.EnsureLayout(ctx, producer); err != nil {
		t.Fatal(err)
	}
	store, err := jobs.Open(ctx, producer, jobs.TopicsFor(cfg), NewConsumerFunc(brokers))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	return store, brokers
}

func newDatasetsEnv(t *testing.T, cfg Config) *datasetsEnv {
	t.Helper()
	store, brokers := openDatasetsStore(t)
	cfg.Jobs = store
	s := newTestServer(t, cfg)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return &datasetsEnv{brokers: brokers, store: store, s: s, url: ts.URL}
}

// request sends a request over HTTP and returns the status, headers and body.
func (e *datasetsEnv) request(t *testing.T, method, path string, header map[string]string, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// wantProblem checks a problem response's status, field and line.
func wantDatasetProblem(t *testing.T, code int, header http.Header, body []byte, status int, field string, line int) Problem {
	t.Helper()
	if code != status || header.Get("Content-Type") != ProblemContentType {
		t.Fatalf("status %d (%s), want %d: %s", code, header.Get("Content-Type"), status, body)
	}
	var p Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Status != status || p.Field != field || p.Line != line || p.Detail == "" {
		t.Fatalf("problem %+v, want status %d, field %q, line %d", p, status, field, line)
	}
	return p
}

// unsizedReader hides a reader's other methods (and size), so the client streams it
// without a Content-Length.
type unsizedReader struct{ io.Reader }

func TestUploadODDSDataset(t *testing.T) {
	raw, err := os.ReadFile(oddsCardio)
	if err != nil {
		t.Skip(err)
	}
	// Bodies of other routes are limited to 1 KiB: a dataset is not.
	e := newDatasetsEnv(t, Config{MaxBodyBytes: 1 << 10})
	code, header, body := e.request(t, "POST", Prefix+"/datasets?name=cardio", map[string]string{"Content-Type": "text/csv; charset=utf-8"}, unsizedReader{bytes.NewReader(raw)})
	if code != http.StatusCreated {
		t.Fatalf("status %d: %s", code, body)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	for _, internal := range []string{"partition", "offsets"} {
		if _, ok := got[internal]; ok {
			t.Fatalf("the response shows %q: %s", internal, body)
		}
	}
	var d jobs.Dataset
	json.Unmarshal(body, &d)
	sum := sha256.Sum256(raw)
	wantX, wantLabels, wantCols := readODDSWithEncodingCSV(t, raw)
	if d.Name != "cardio" || d.Format != "csv" || d.Rows != len(wantLabels) || !d.Labels || !slices.Equal(d.Columns, wantCols) ||
		d.Hash != "sha256:"+hex.EncodeToString(sum[:]) || d.Bytes != int64(len(raw)) || d.CreatedAt.IsZero() {
		t.Fatalf("dataset %+v", d)
	}
	if loc := header.Get("Location"); loc != Prefix+"/datasets/"+d.ID {
		t.Fatalf("Location %q", loc)
	}

	code, _, again := e.request(t, "GET", Prefix+"/datasets/"+d.ID, nil, nil)
	if code != http.StatusOK || !bytes.Equal(again, body) {
		t.Fatalf("GET: status %d: %s\nPOST answered %s", code, again, body)
	}

	stored, ok := e.store.Datasets.Get(d.ID)
	if !ok {
		t.Fatal("not in the view")
	}
	X, labels, cols, err := e.store.ReadDataset(t.Context(), stored, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cols, wantCols) || !slices.Equal(X.Data, wantX) || !slices.Equal(labels, wantLabels) {
		t.Fatal("the stored matrix differs from the file")
	}

	code, header, body = e.request(t, "GET", Prefix+"/datasets/ds_nope", nil, nil)
	wantDatasetProblem(t, code, header, body, http.StatusNotFound, "id", 0)
}

// readODDSWithEncodingCSV parses an ODDS file (last column the label) with encoding/csv,
// independently of the upload's reader.
func readODDSWithEncodingCSV(t *testing.T, raw []byte) (X, labels []float64, cols []string) {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(raw)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	width := len(recs[0]) - 1
	for _, rec := range recs[1:] {
		for j, cell := range rec {
			v, err := strconv.ParseFloat(cell, 64)
			if err != nil {
				t.Fatal(err)
			}
			if j == width {
				labels = append(labels, v)
			} else {
				X = append(X, v)
			}
		}
	}
	return X, labels, recs[0][:width]
}

func TestUploadDatasetBadInput(t *testing.T) {
	e := newDatasetsEnv(t, Config{MaxDatasetBytes: 4 << 10})
	csvType := map[string]string{"Content-Type": "text/csv"}
	tests := []struct {
		name   string
		path   string
		header map[string]string
		body   string
		status int
		field  string
		line   int
		detail string
	}{
		{"ragged row", "/datasets", csvType, "a,b\n1,2\n3\n", 400, "", 3, "line 3: 1 fields, but the header has 2 columns"},
		{"not a number", "/datasets", csvType, "a,cpu\n1,2\n\n1,abc\n", 400, "cpu", 4, `line 4, column "cpu": "abc" is not a number`},
		{"no rows", "/datasets", csvType, "a,b\n", 400, "", 2, "no rows"},
		{"empty body", "/datasets", csvType, "", 400, "", 1, "empty input"},
		{"ndjson missing key", "/datasets", map[string]string{"Content-Type": "application/x-ndjson"}, "{\"a\":1,\"b\":2}\n{\"b\":1}\n", 400, "a", 2, `line 2, column "a": missing`},
		{"ndjson by query", "/datasets?format=ndjson", map[string]string{"Content-Type": "text/plain"}, "{\"a\":\"x\"}\n", 400, "a", 1, "want a number"},
		{"csv by query", "/datasets?format=csv", nil, "a\nx\n", 400, "a", 2, `"x" is not a number`},
		{"unknown format", "/datasets?format=xlsx", csvType, "a\n1\n", 400, "format", 0, `format "xlsx": want csv or ndjson`},
		{"bad name", "/datasets?name=a%00b", csvType, "a\n1\n", 400, "name", 0, "control character"},
		{"unsupported type", "/datasets", map[string]string{"Content-Type": "application/json"}, "[]", 415, "", 0, "Content-Type application/json is not a dataset format"},
		{"no type", "/datasets", nil, "a\n1\n", 415, "", 0, "no Content-Type"},
		{"malformed type", "/datasets", map[string]string{"Content-Type": "text/csv; ;"}, "a\n1\n", 415, "", 0, "Content-Type"},
		{"over the limit, declared", "/datasets", csvType, "a\n" + strings.Repeat("1\n", 3<<10), 413, "", 0, "over the limit of 4096 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, header, body := e.request(t, "POST", Prefix+tc.path, tc.header, strings.NewReader(tc.body))
			p := wantDatasetProblem(t, code, header, body, tc.status, tc.field, tc.line)
			if !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("detail %q, want %q", p.Detail, tc.detail)
			}
		})
	}
	// Over the limit without a Content-Length: stopped while streaming, and nothing is
	// described.
	code, header, body := e.request(t, "POST", Prefix+"/datasets", csvType, unsizedReader{strings.NewReader("a\n" + strings.Repeat("1\n", 3<<10))})
	wantDatasetProblem(t, code, header, body, http.StatusRequestEntityTooLarge, "", 0)
	if n := testkit.EndOffsets(t, e.brokers, e.store.Topics.DatasetIndex); n != 0 {
		t.Fatalf("%d datasets described after failed uploads", n)
	}
}

func TestDatasetRoutesWithoutJobs(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, tc := range []struct{ method, path, ct, body string }{
		{"POST", Prefix + "/datasets", "text/csv", "a\n1\n"},
		{"GET", Prefix + "/datasets/ds_x", "", ""},
		{"GET", Prefix + "/jobs/job_x/results", "", ""},
	} {
		rec := do(s.Handler(), tc.method, tc.path, tc.ct, tc.body)
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, rec.Code, rec.Body)
		}
		problemOf(t, rec)
	}
}

func TestJobResults(t *testing.T) {
	e := newDatasetsEnv(t, Config{})
	ctx := t.Context()
	const n = 25_000
	scores := make([]float64, n)
	anomalous := make([]bool, n)
	for i := range scores {
		scores[i] = math.Cos(float64(i))
		anomalous[i] = scores[i] > 0.95
	}
	scores[3] = math.Inf(1)
	loc, err := e.store.WriteResults(ctx, "job_done", scores, anomalous)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, st := range []jobs.Status{
		{ID: "job_done", Type: jobs.Detect, State: jobs.Succeeded, SubmittedAt: now, Result: &jobs.Summary{Rows: n, Results: loc}},
		{ID: "job_running", Type: jobs.Detect, State: jobs.Running, SubmittedAt: now},
		{ID: "job_trained", Type: jobs.Train, State: jobs.Succeeded, SubmittedAt: now, Result: &jobs.Summary{Rows: n}},
	} {
		if err := e.store.PublishStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	want := func(i int) jobs.ResultRow {
		s := scores[i]
		if math.IsInf(s, 1) {
			s = math.MaxFloat64
		}
		return jobs.ResultRow{Row: i, Score: s, IsAnomaly: anomalous[i]}
	}
	page := func(query string) resultsPage {
		t.Helper()
		code, header, body := e.request(t, "GET", Prefix+"/jobs/job_done/results"+query, nil, nil)
		if code != http.StatusOK || header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: status %d: %s", query, code, body)
		}
		var p resultsPage
		if err := json.Unmarshal(body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Page through every row with the default limit.
	var all []jobs.ResultRow
	for off := 0; ; {
		p := page("?offset=" + strconv.Itoa(off))
		if p.Job != "job_done" || p.Total != n || p.Offset != off || len(p.Rows) != min(DefaultResultsLimit, n-off) {
			t.Fatalf("page at %d: job %s, total %d, offset %d, %d rows", off, p.Job, p.Total, p.Offset, len(p.Rows))
		}
		all = append(all, p.Rows...)
		if p.NextOffset == nil {
			break
		}
		off = *p.NextOffset
	}
	if len(all) != n {
		t.Fatalf("%d rows in all pages", len(all))
	}
	for i, r := range all {
		if r != want(i) {
			t.Fatalf("row %d: %+v, want %+v", i, r, want(i))
		}
	}
	if p := page("?offset=9990&limit=20"); len(p.Rows) != 20 || p.Rows[0] != want(9990) || p.Rows[19] != want(10009) || *p.NextOffset != 10010 {
		t.Fatalf("across chunks: %d rows, next %v", len(p.Rows), p.NextOffset)
	}
	if p := page("?offset=30000"); p.Rows == nil || len(p.Rows) != 0 || p.NextOffset != nil {
		t.Fatalf("past the end: %+v", p)
	}

	// NDJSON, by query and by Accept.
	for _, tc := range []struct {
		query  string
		accept string
	}{
		{"?format=ndjson&offset=24990&limit=100", ""},
		{"?offset=24990", "application/x-ndjson, application/json;q=0.5"},
	} {
		code, header, body := e.request(t, "GET", Prefix+"/jobs/job_done/results"+tc.query, map[string]string{"Accept": tc.accept}, nil)
		if code != http.StatusOK || header.Get("Content-Type") != "application/x-ndjson" {
			t.Fatalf("%s: status %d, type %q: %s", tc.query, code, header.Get("Content-Type"), body)
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		i := 24990
		for ; sc.Scan(); i++ {
			var r jobs.ResultRow
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r != want(i) {
				t.Fatalf("line %q: %+v, %v", sc.Text(), r, err)
			}
		}
		if i != n {
			t.Fatalf("ndjson ended at row %d", i)
		}
	}

	for _, tc := range []struct {
		path   string
		status int
		field  string
		detail string
	}{
		{"/jobs/job_nope/results", 404, "id", `no job "job_nope"`},
		{"/jobs/job_running/results", 409, "", "job job_running is running"},
		{"/jobs/job_trained/results", 409, "", "succeeded without per-row results"},
		{"/jobs/job_done/results?offset=-1", 400, "offset", `offset "-1"`},
		{"/jobs/job_done/results?offset=x", 400, "offset", `offset "x"`},
		{"/jobs/job_done/results?limit=0", 400, "limit", "from 1 to 100000"},
		{"/jobs/job_done/results?limit=100001", 400, "limit", "from 1 to 100000"},
		{"/jobs/job_done/results?format=csv", 400, "format", "want json or ndjson"},
	} {
		code, header, body := e.request(t, "GET", Prefix+tc.path, nil, nil)
		if p := wantDatasetProblem(t, code, header, body, tc.status, tc.field, 0); !strings.Contains(p.Detail, tc.detail) {
			t.Fatalf("%s: %q, want %q", tc.path, p.Detail, tc.detail)
		}
	}
}

// FuzzDatasetUpload posts arbitrary bodies to POST /datasets as CSV and NDJSON against
// a real broker: whatever the body, the answer is 201 or a 4xx problem, never a 5xx.
func FuzzDatasetUpload(f *testing.F) {
	for _, seed := range []string{
		"a,b\n1,2\n3,4\n", "a,label\n1,0\n2,1\n", "a,b\n1,2\n3\n", "a,b\n1,x\n", "\"a\"\"\",b\n1,\"2\"\n", "",
		"{\"a\":1}\n{\"a\":2}\n", "{\"a\":1}\n{\"b\":2}\n", "{\"a\":[1]}\n", "\ufeffx\r\n1e308\r\n",
	} {
		f.Add(false, seed)
		f.Add(true, seed)
	}
	store, _ := openDatasetsStore(f)
	s, err := New(Config{Jobs: store, MaxDatasetBytes: 64 << 10})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, ndjson bool, body string) {
		ct := "text/csv"
		if ndjson {
			ct = "application/x-ndjson"
		}
		req := httptest.NewRequest("POST", Prefix+"/datasets", strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusCreated:
			var d jobs.Dataset
			if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || d.Rows == 0 || len(d.Columns) == 0 {
				t.Fatalf("%q: 201 with %s", body, rec.Body)
			}
		case rec.Code >= 500:
			t.Fatalf("%q as %s: status %d: %s", body, ct, rec.Code, rec.Body)
		case rec.Header().Get("Content-Type") != ProblemContentType:
			t.Fatalf("%q: status %d with Content-Type %q", body, rec.Code, rec.Header().Get("Content-Type"))
		}
	})
}

// TestDatasetRoutesKafkaDown: when the broker does not answer, uploads and results are
// a 503 problem, not a hang or a 500.
func TestDatasetRoutesKafkaDown(t *testing.T) {
	store, _ := openDatasetsStore(t)
	ctx := t.Context()
	loc, err := store.WriteResults(ctx, "job_done", []float64{1, 2}, []bool{false, true})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PublishStatus(ctx, jobs.Status{ID: "job_done", Type: jobs.Detect, State: jobs.Succeeded, Result: &jobs.Summary{Results: loc}}); err != nil {
		t.Fatal(err)
	}
	down, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.RecordDeliveryTimeout(time.Second), kgo.RetryTimeout(time.Second), kgo.RequestRetries(1))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	broken := *store
	broken.Client = down
	broken.NewConsumer = func(opts ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1"), kgo.RetryTimeout(time.Second), kgo.RequestRetries(1)}, opts...)...)
	}
	s := newTestServer(t, Config{Jobs: &broken})
	for _, tc := range []struct{ method, path, ct, body string }{
		{"POST", Prefix + "/datasets", "text/csv", "a\n1\n"},
		{"GET", Prefix + "/jobs/job_done/results", "", ""},
	} {
		start := time.Now()
		rec := do(s.Handler(), tc.method, tc.path, tc.ct, tc.body)
		if rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("%s %s: %d %s", tc.method, tc.path, rec.Code, rec.Body)
		}
		if p := problemOf(t, rec); p.Type != TypeUnavailable {
			t.Fatalf("%s %s: %+v", tc.method, tc.path, p)
		}
		t.Logf("%s %s: 503 after %v", tc.method, tc.path, time.Since(start).Round(time.Millisecond))
	}
}
