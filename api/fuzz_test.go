package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAPIHandlers sends arbitrary bodies to POST /detect and POST /records (JSON and
// NDJSON): bad input is never a 5xx, and every error is a problem document. /records has
// no Kafka client here, so valid input stops at its 503 before publishing.
func FuzzAPIHandlers(f *testing.F) {
	for _, seed := range []string{
		`{"algorithm":"iforest","params":{"trees":5},"rows":[[1,2],[3,4],[9,9]],"seed":3}`,
		`{"algorithm":"zscore","rows":[[1],[2],[3],[4],[5],[6],[7],[8],[9],[50]]}`,
		`{"algorithm":"lof","rows":[[1],[1],[1]],"train":[[0],[0]]}`,
		`{"algorithm":"hst","rows":[[0,0,0]]}`,
		`{"algorithm":"knn","params":{"k":1},"rows":[[1e308,-1e308],[0,0]]}`,
		`{"algorithm":"pca","rows":[[1,1],[1,1]]}`,
		`[{"series":"a","ts":"2026-11-27T07:00:00Z","values":{"x":1},"tags":{"k":"v"}}]`,
		"{\"series\":\"a\",\"values\":{\"x\":1}}\n{\"series\":\"b\",\"ts\":1,\"values\":{\"y\":2}}\n",
		`[{"series":"a","values":{"x":1e999}}]`,
		`{"rows":[[`,
	} {
		for mode := range uint8(3) {
			f.Add(mode, seed)
		}
	}
	s, err := New(Config{MaxBodyBytes: 64 << 10, MaxRows: 200})
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	f.Fuzz(func(t *testing.T, mode uint8, body string) {
		path, ct := "/api/v1/detect", "application/json"
		switch mode % 3 {
		case 1:
			path = "/api/v1/records"
		case 2:
			path, ct = "/api/v1/records", "application/x-ndjson"
		}
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 && !(rec.Code == 503 && path == "/api/v1/records") {
			t.Fatalf("POST %s %q: status %d: %s", path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 400 && rec.Header().Get("Content-Type") != ProblemContentType {
			t.Fatalf("POST %s %q: status %d with Content-Type %q", path, body, rec.Code, rec.Header().Get("Content-Type"))
		}
	})
}
