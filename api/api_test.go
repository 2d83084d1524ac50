package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func newTestServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func do(h http.Handler, method, path, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// problemOf checks rec is a problem+json response and decodes it.
func problemOf(t *testing.T, rec *httptest.ResponseRecorder) Problem {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != ProblemContentType {
		t.Fatalf("Content-Type %q, want %s; body %s", ct, ProblemContentType, rec.Body)
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", rec.Body, err)
	}
	if p.Status != rec.Code || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Fatalf("incomplete problem for status %d: %+v", rec.Code, p)
	}
	return p
}

func TestErrorsAreProblems(t *testing.T) {
	s := newTestServer(t, Config{MaxBodyBytes: 4 << 10, MaxRows: 5})
	big := `{"algorithm":"iforest","rows":[` + strings.Repeat("[1],", 2000) + `[1]]}`
	tests := []struct {
		name, method, path, ct, body string
		status                       int
		field                        string   // want this field member ("" = none)
		detail                       []string // detail contains each
		index, line                  int      // want these members when > 0 (index: i+1)
	}{
		{"unknown route", "GET", "/api/v1/nope", "", "", 404, "", []string{"no route GET /api/v1/nope"}, 0, 0},
		{"unknown root route", "GET", "/", "", "", 404, "", []string{"no route"}, 0, 0},
		{"wrong method", "DELETE", "/api/v1/detectors", "", "", 405, "", []string{"DELETE", "allowed:", "GET"}, 0, 0},
		{"wrong method on detect", "GET", "/api/v1/detect", "", "", 405, "", []string{"allowed:", "POST"}, 0, 0},
		{"body too large", "POST", "/api/v1/detect", "application/json", big, 413, "", []string{"4096 bytes"}, 0, 0},

		{"detect: empty body", "POST", "/api/v1/detect", "application/json", "", 400, "", []string{"empty body"}, 0, 0},
		{"detect: malformed JSON", "POST", "/api/v1/detect", "application/json", `{"algorithm": "iforest",`, 400, "", []string{"unexpected end"}, 0, 0},
		{"detect: syntax error offset", "POST", "/api/v1/detect", "application/json", `{"algorithm": iforest}`, 400, "", []string{"byte 15"}, 0, 0},
		{"detect: not an object", "POST", "/api/v1/detect", "application/json", `[1,2]`, 400, "", []string{"want a JSON object"}, 0, 0},
		{"detect: trailing data", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1]]} {}`, 400, "", []string{"after the JSON object"}, 0, 0},
		{"detect: wrong type", "POST", "/api/v1/detect", "application/json", `{"algorithm": 3, "rows": [[1]]}`, 400, "algorithm", []string{"algorithm: want a string, got a JSON number"}, 0, 0},
		{"detect: negative seed", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1]],"seed":-1}`, 400, "seed", []string{"seed", "non-negative whole number"}, 0, 0},
		{"detect: unknown field", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1]],"bogus":1}`, 400, "bogus", []string{`unknown field "bogus"`}, 0, 0},
		{"detect: missing algorithm", "POST", "/api/v1/detect", "application/json", `{"rows":[[1]]}`, 400, "algorithm", []string{"missing", "iforest", "zscore"}, 0, 0},
		{"detect: unknown algorithm", "POST", "/api/v1/detect", "application/json", `{"algorithm":"magic","rows":[[1]]}`, 400, "algorithm", []string{`unknown detector "magic"`, "iforest", "zscore"}, 0, 0},
		{"detect: param out of range", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","params":{"trees":0},"rows":[[1]]}`, 400, "params.trees", []string{"trees", "out of range [1, 10000]"}, 0, 0},
		{"detect: param not whole", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","params":{"trees":1.5},"rows":[[1]]}`, 400, "params.trees", []string{"whole number"}, 0, 0},
		{"detect: unknown param", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","params":{"leaves":3},"rows":[[1]]}`, 400, "params.leaves", []string{`unknown parameter "leaves"`, "trees"}, 0, 0},
		{"detect: param wrong type", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","params":{"trees":"many"},"rows":[[1]]}`, 400, "params.trees", []string{"want a number, got a string"}, 0, 0},
		{"detect: params not an object", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","params":[1],"rows":[[1]]}`, 400, "params", []string{"params"}, 0, 0},
		{"detect: params inconsistent", "POST", "/api/v1/detect", "application/json", `{"algorithm":"zscore","params":{"window":8,"min_samples":9},"rows":[[1]]}`, 400, "params", []string{"min_samples"}, 0, 0},
		{"detect: missing rows", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest"}`, 400, "rows", []string{"rows: missing"}, 0, 0},
		{"detect: empty rows", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[]}`, 400, "rows", []string{"rows: empty"}, 0, 0},
		{"detect: rows not an array", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":{"a":1}}`, 400, "rows", []string{"want an array of rows, got an object"}, 0, 0},
		{"detect: row not an array", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1],2]}`, 400, "rows[1]", []string{"rows[1]: want an array of numbers"}, 0, 0},
		{"detect: empty row", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1],[]]}`, 400, "rows[1]", []string{"empty row"}, 0, 0},
		{"detect: ragged rows", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1,2],[3,4],[5]]}`, 400, "rows[2]", []string{"rows[2]: has 1 values, want 2", "rows[0]"}, 0, 0},
		{"detect: null value", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1,2],[3,null]]}`, 400, "rows[1][1]", []string{"rows[1][1]: want a number, got null"}, 0, 0},
		{"detect: string value", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1,"2"]]}`, 400, "rows[0][1]", []string{"got a string"}, 0, 0},
		{"detect: non-finite value", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1],[1e999]]}`, 400, "rows[1][0]", []string{"1e999 is not a finite number"}, 0, 0},
		{"detect: too many rows", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1],[2],[3],[4],[5],[6]]}`, 413, "rows", []string{"more than 5 rows"}, 0, 0},
		{"detect: train too wide", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1,2]],"train":[[1,2],[1,2,3]]}`, 400, "train[1]", []string{"train[1]: has 3 values, want 2 (the width of rows)"}, 0, 0},
		{"detect: too many train rows", "POST", "/api/v1/detect", "application/json", `{"algorithm":"iforest","rows":[[1]],"train":[[1],[2],[3],[4],[5],[6]]}`, 413, "train", []string{"more than 5 rows"}, 0, 0},
		{"detect: cannot fit", "POST", "/api/v1/detect", "application/json", `{"algorithm":"lof","rows":[[1]]}`, 400, "rows", []string{"cannot fit lof", "at least 2"}, 0, 0},

		{"records: empty body", "POST", "/api/v1/records", "application/json", "", 400, "", []string{"empty body"}, 0, 0},
		{"records: not an array", "POST", "/api/v1/records", "application/json", `{"series":"a","values":{"x":1}}`, 400, "", []string{"want a JSON array of records, got an object"}, 0, 0},
		{"records: empty array", "POST", "/api/v1/records", "application/json", `[]`, 400, "", []string{"no records"}, 0, 0},
		{"records: malformed", "POST", "/api/v1/records", "application/json", `[{"series":"a","values":{"x":1}},{"series":`, 400, "", []string{"unexpected end"}, 2, 0},
		{"records: missing values", "POST", "/api/v1/records", "application/json", `[{"series":"a","values":{"x":1}},{"series":"b"}]`, 400, "values", []string{"record 1: values: missing"}, 2, 0},
		{"records: wrong type", "POST", "/api/v1/records", "", `[{"series":"a","values":{"x":"high"}}]`, 400, "values.x", []string{"record 0: values.x"}, 1, 0},
		{"records: missing series", "POST", "/api/v1/records", "application/json", `[{"values":{"x":1}}]`, 400, "series", []string{"record 0: series: missing"}, 1, 0},
		{"records: bad ts", "POST", "/api/v1/records", "application/json", `[{"series":"a","ts":"yesterday","values":{"x":1}}]`, 400, "ts", []string{"record 0: ts"}, 1, 0},
		{"records: not an object", "POST", "/api/v1/records", "application/json", `[{"series":"a","values":{"x":1}}, 7]`, 400, "", []string{"record 1"}, 2, 0},
		{"records: trailing data", "POST", "/api/v1/records", "application/json", `[{"series":"a","values":{"x":1}}] x`, 400, "", []string{"after the array"}, 0, 0},
		{"records: ndjson bad line", "POST", "/api/v1/records", "application/x-ndjson", "{\"series\":\"a\",\"values\":{\"x\":1}}\n\n{\"series\":\"a\",\"values\":{}}\n", 400, "values", []string{"line 3: values: must not be empty"}, 0, 3},
		{"records: ndjson malformed", "POST", "/api/v1/records", "application/x-ndjson", "{\"series\":\"a\",\"values\":{\"x\":1}}\n{\"series\"\n", 400, "", []string{"line 2"}, 0, 2},
		{"records: ndjson empty", "POST", "/api/v1/records", "application/x-ndjson", "\n\n", 400, "", []string{"no records"}, 0, 0},
		{"records: unsupported type", "POST", "/api/v1/records", "text/csv", "series,x\na,1\n", 415, "", []string{"text/csv"}, 0, 0},
		{"records: no client", "POST", "/api/v1/records", "application/json", `[{"series":"a","values":{"x":1}}]`, 503, "", []string{"not configured"}, 0, 0},
		{"readyz before serving", "GET", "/readyz", "", "", 503, "", []string{"not ready"}, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(s.Handler(), tt.method, tt.path, tt.ct, tt.body)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			p := problemOf(t, rec)
			if p.Field != tt.field {
				t.Errorf("field %q, want %q (detail %q)", p.Field, tt.field, p.Detail)
			}
			for _, want := range tt.detail {
				if !strings.Contains(p.Detail, want) {
					t.Errorf("detail %q does not contain %q", p.Detail, want)
				}
			}
			if tt.index > 0 && (p.Index == nil || *p.Index != tt.index-1) {
				t.Errorf("index %v, want %d", p.Index, tt.index-1)
			}
			if tt.line > 0 && p.Line != tt.line {
				t.Errorf("line %d, want %d", p.Line, tt.line)
			}
		})
	}
}

func TestDetectorsListsTheRegistry(t *testing.T) {
	s := newTestServer(t, Config{})
	rec := do(s.Handler(), "GET", "/api/v1/detectors", "", "")
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var got struct {
		Detectors []struct {
			Name, Kind, Doc string
			Params          []struct {
				Name              string
				Default, Min, Max float64
				Integer           bool
			}
		}
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range got.Detectors {
		names = append(names, d.Name)
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "zscore") {
		t.Fatalf("names %v: want sorted, with zscore", names)
	}
	i := slices.Index(names, "iforest")
	if i < 0 {
		t.Fatalf("no iforest in %v", names)
	}
	d := got.Detectors[i]
	if d.Kind != "batch" || d.Doc == "" {
		t.Fatalf("iforest: %+v", d)
	}
	trees := slices.IndexFunc(d.Params, func(p struct {
		Name              string
		Default, Min, Max float64
		Integer           bool
	}) bool {
		return p.Name == "trees"
	})
	if trees < 0 {
		t.Fatalf("iforest params %+v: no trees", d.Params)
	}
	if p := d.Params[trees]; p.Default != 100 || p.Min != 1 || p.Max != 10000 || !p.Integer {
		t.Fatalf("trees %+v", p)
	}
}

type detectResult struct {
	Algorithm string
	Kind      string
	Params    map[string]float64
	Seed      uint64
	Rows      int
	Scores    []*float64
}

func postDetect(t *testing.T, s *Server, body string) detectResult {
	t.Helper()
	rec := do(s.Handler(), "POST", "/api/v1/detect", "application/json", body)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var r detectResult
	if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDetectIForestScoresTheFarPointHighest(t *testing.T) {
	s := newTestServer(t, Config{})
	var rows []string
	for i := range 40 {
		rows = append(rows, fmt.Sprintf("[%g, %g]", float64(i%7)*0.1, float64(i%5)*0.1))
	}
	rows = append(rows, "[9, -9]")
	body := `{"algorithm": "iforest", "params": {"trees": 50}, "rows": [` + strings.Join(rows, ",") + `], "seed": 7}`
	r := postDetect(t, s, body)
	if r.Algorithm != "iforest" || r.Kind != "batch" || r.Rows != 41 || len(r.Scores) != 41 || r.Seed != 7 {
		t.Fatalf("response %+v", r)
	}
	if r.Params["trees"] != 50 || r.Params["max_samples"] != 256 {
		t.Fatalf("params not resolved: %v", r.Params)
	}
	far := *r.Scores[40]
	for i, sc := range r.Scores[:40] {
		if sc == nil || *sc >= far {
			t.Fatalf("row %d scores %v, the far point %v", i, sc, far)
		}
	}
	// Same request, same scores; fitting on other rows scores the given ones.
	if again := postDetect(t, s, body); *again.Scores[3] != *r.Scores[3] {
		t.Fatalf("not deterministic: %v vs %v", *again.Scores[3], *r.Scores[3])
	}
	trained := postDetect(t, s, `{"algorithm":"iforest","rows":[[0.2,0.2],[9,-9]],"train":[`+strings.Join(rows[:40], ",")+`]}`)
	if len(trained.Scores) != 2 || *trained.Scores[1] <= *trained.Scores[0] {
		t.Fatalf("trained scores %v", trained.Scores)
	}
}

func TestDetectZScoreStreamsRowsInOrder(t *testing.T) {
	s := newTestServer(t, Config{})
	var rows []string
	for i := range 30 {
		rows = append(rows, fmt.Sprintf("[%g]", 10+float64(i%3)))
	}
	rows = append(rows, "[50]")
	r := postDetect(t, s, `{"algorithm": "zscore", "params": {"window": 16, "min_samples": 8}, "rows": [`+strings.Join(rows, ",")+`]}`)
	if r.Kind != "streaming" || len(r.Scores) != 31 || r.Seed != DefaultSeed {
		t.Fatalf("response %+v", r)
	}
	last := r.Scores[30]
	if last == nil {
		t.Fatal("the spike has no score")
	}
	for i, sc := range r.Scores[:30] {
		if sc != nil && *sc >= *last {
			t.Fatalf("row %d scores %v ≥ the spike's %v", i, *sc, *last)
		}
	}
}

func TestDetectStreamingWarmUpIsNull(t *testing.T) {
	s := newTestServer(t, Config{})
	r := postDetect(t, s, `{"algorithm": "seasonal", "rows": [[1],[2],[1]]}`)
	if len(r.Scores) != 3 || r.Scores[0] != nil {
		t.Fatalf("warm-up scores %v, want null first", r.Scores)
	}
	rec := do(s.Handler(), "POST", "/api/v1/detect", "application/json", `{"algorithm": "seasonal", "rows": [[1]]}`)
	if !strings.Contains(rec.Body.String(), `"scores":[null]`) {
		t.Fatalf("body %s: want null scores", rec.Body)
	}
}

// TestEveryDetectorScoresASmallBatch: no registered detector fails (or panics) on a
// plain request, so /detect covers the whole catalogue.
func TestEveryDetectorScoresASmallBatch(t *testing.T) {
	s := newTestServer(t, Config{})
	var rows []string
	for i := range 60 {
		rows = append(rows, fmt.Sprintf("[%g, %g, %g]", float64(i%7), float64(i%11)*0.5, float64(i%3)))
	}
	for _, name := range detectorNames() {
		t.Run(name, func(t *testing.T) {
			r := postDetect(t, s, `{"algorithm":"`+name+`","rows":[`+strings.Join(rows, ",")+`]}`)
			if len(r.Scores) != 60 {
				t.Fatalf("%d scores", len(r.Scores))
			}
		})
	}
}

func TestHealthAndMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := newTestServer(t, Config{Registerer: reg})
	if rec := do(s.Handler(), "GET", "/healthz", "", ""); rec.Code != 200 {
		t.Fatalf("healthz %d", rec.Code)
	}
	s.SetReady(true)
	if rec := do(s.Handler(), "GET", "/readyz", "", ""); rec.Code != 200 {
		t.Fatalf("readyz %d", rec.Code)
	}
	do(s.Handler(), "GET", "/api/v1/detectors", "", "")
	do(s.Handler(), "POST", "/api/v1/detect", "application/json", "{")
	do(s.Handler(), "GET", "/no/such/path/123", "", "")
	do(s.Handler(), "PUT", "/api/v1/detect", "", "")
	for _, c := range []struct {
		route, method, status string
	}{
		{"/api/v1/detectors", "GET", "200"},
		{"/api/v1/detect", "POST", "400"},
		{"unmatched", "GET", "404"},
		{"/api/v1/detect", "PUT", "405"},
	} {
		if n := testutil.ToFloat64(s.metrics.requests.WithLabelValues(c.route, c.method, c.status)); n != 1 {
			t.Errorf("requests{%s %s %s} = %v, want 1", c.route, c.method, c.status, n)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "gonomaly_http_request_duration_seconds"); err != nil || n != 6 {
		t.Errorf("duration series %d (%v), want 6", n, err)
	}
	// A second server on the same registry shares the metrics rather than failing.
	if _, err := New(Config{Registerer: reg}); err != nil {
		t.Fatal(err)
	}
}

func TestServeShutsDownWithTheContext(t *testing.T) {
	s := newTestServer(t, Config{})
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	resp, err := http.Get("http://" + ln.Addr().String() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("readyz %d while serving", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	http.DefaultClient.CloseIdleConnections()
}
