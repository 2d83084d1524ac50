package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
)

// openModelsStore opens a job Store on a fresh layout, as an API replica or a worker
// opens one; open opens another on the same topics, as another replica.
func openModelsStore(t *testing.T) (store *jobs.Store, open func() *jobs.Store) {
	t.Helper()
	brokers := testkit.Brokers(t)
	cfg := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cfg.EnsureLayout(ctx, testkit.Client(t, brokers)); err != nil {
		t.Fatal(err)
	}
	open = func() *jobs.Store {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := jobs.Open(ctx, testkit.Client(t, brokers), jobs.TopicsFor(cfg), NewConsumerFunc(brokers))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return s
	}
	return open(), open
}

func publishTestModel(t *testing.T, store *jobs.Store, name string, threshold float64) jobs.Model {
	t.Helper()
	m, err := store.PublishModel(context.Background(), jobs.Model{
		Name: name, Algorithm: "iforest", Params: detectors.Params{"trees": 10}, Columns: []string{"cpu", "mem"},
		Threshold: threshold, Snapshot: []byte(strings.Repeat("s", 1000)), Training: jobs.Training{Rows: 50},
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func getJSON(t *testing.T, h http.Handler, path string, into any) *httptest.ResponseRecorder {
	t.Helper()
	rec := do(h, http.MethodGet, Prefix+path, "", "")
	if rec.Code == http.StatusOK && into != nil {
		if err := json.Unmarshal(rec.Body.Bytes(), into); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, rec.Body)
		}
	}
	return rec
}

func TestModelRoutes(t *testing.T) {
	trainer, open := openModelsStore(t)
	replica := open() // the API's own view, fed by the topic only
	h := newTestServer(t, Config{Jobs: replica}).Handler()

	var list struct{ Models []map[string]any }
	if rec := getJSON(t, h, "/models", &list); rec.Code != http.StatusOK || list.Models == nil || len(list.Models) != 0 {
		t.Fatalf("GET /models with none: %d %s", rec.Code, rec.Body)
	}

	publishTestModel(t, trainer, "mem", 0.7)
	publishTestModel(t, trainer, "cpu", 0.5)
	publishTestModel(t, trainer, "cpu", 0.6)

	// A name just trained through another process is found: the miss syncs the view.
	var one struct {
		Name     string
		Versions []map[string]any
	}
	if rec := getJSON(t, h, "/models/cpu", &one); rec.Code != http.StatusOK {
		t.Fatalf("GET /models/cpu: %d %s", rec.Code, rec.Body)
	}
	if one.Name != "cpu" || len(one.Versions) != 2 || one.Versions[0]["version"] != 2.0 || one.Versions[1]["version"] != 1.0 ||
		one.Versions[0]["threshold"] != 0.6 {
		t.Fatalf("versions of cpu, newest first: %+v", one)
	}
	for _, v := range one.Versions {
		if _, ok := v["snapshot"]; ok {
			t.Fatal("a listed version carries its snapshot")
		}
		for _, field := range []string{"name", "version", "algorithm", "params", "columns", "created_at", "training"} {
			if _, ok := v[field]; !ok {
				t.Fatalf("version lacks %s: %v", field, v)
			}
		}
	}

	if rec := getJSON(t, h, "/models", &list); rec.Code != http.StatusOK {
		t.Fatalf("GET /models: %d %s", rec.Code, rec.Body)
	}
	if len(list.Models) != 2 || list.Models[0]["name"] != "cpu" || list.Models[0]["version"] != 2.0 || list.Models[1]["name"] != "mem" {
		t.Fatalf("GET /models lists %+v; want cpu@2 and mem@1, by name", list.Models)
	}
	if _, ok := list.Models[0]["snapshot"]; ok {
		t.Fatal("GET /models carries snapshots")
	}

	for _, tc := range []struct {
		path   string
		status int
		detail string
	}{
		{"/models/disk", http.StatusNotFound, `no model "disk"`},
		{"/models/cpu@2", http.StatusBadRequest, "names a version"},
		{"/models/" + strings.Repeat("x", 65), http.StatusNotFound, "longer than 64"},
		{"/models/a%20b", http.StatusNotFound, `"a b"`},
	} {
		rec := getJSON(t, h, tc.path, nil)
		p := problemOf(t, rec)
		if rec.Code != tc.status || p.Field != "name" || !strings.Contains(p.Detail, tc.detail) {
			t.Errorf("GET %s: %d %+v; want %d naming the field and mentioning %q", tc.path, rec.Code, p, tc.status, tc.detail)
		}
	}
}

func TestModelRoutesWithoutJobs(t *testing.T) {
	h := newTestServer(t, Config{}).Handler()
	for _, path := range []string{"/models", "/models/cpu"} {
		rec := getJSON(t, h, path, nil)
		if p := problemOf(t, rec); rec.Code != http.StatusServiceUnavailable || p.Status != http.StatusServiceUnavailable {
			t.Errorf("GET %s without a job store: %d %+v", path, rec.Code, p)
		}
	}
}

// TestDetectWithTrainedModel: POST /detect with a model scores exactly as the fitted
// detector does, for a batch and a streaming model, and names what is wrong otherwise.
func TestDetectWithTrainedModel(t *testing.T) {
	store, _ := openModelsStore(t)
	h := newTestServer(t, Config{Jobs: store}).Handler()
	train := detectors.NewMatrix(200, 2)
	for i := range train.Rows {
		train.Data[2*i], train.Data[2*i+1] = float64(i%13), float64(i%7)
	}
	rows := detectors.Matrix{Rows: 3, Cols: 2, Data: []float64{1, 2, 50, -50, 6, 3}}
	for _, algo := range []string{"iforest", "zscore"} {
		info, _ := detectors.Lookup(algo)
		params, _ := info.Resolve(nil)
		want := make([]float64, rows.Rows)
		var snap []byte
		if info.NewBatch != nil {
			det, _ := info.NewBatch(params, 9)
			if err := det.Fit(train); err != nil {
				t.Fatal(err)
			}
			det.Score(rows, want)
			snap, _ = det.(detectors.Persistent).MarshalBinary()
		} else {
			det, _ := info.NewStreaming(params, 9)
			for i := range train.Rows {
				det.ScoreLearn("api", train.Row(i), nil)
			}
			snap, _ = det.(detectors.Persistent).MarshalBinary()
			for i := range rows.Rows {
				want[i] = det.ScoreLearn("api", rows.Row(i), nil)
			}
		}
		m, err := store.PublishModel(context.Background(), jobs.Model{
			Name: "m-" + algo, Algorithm: algo, Params: params, Seed: 9, Columns: []string{"cpu", "mem"},
			Threshold: 0.7, Snapshot: snap, Training: jobs.Training{Rows: train.Rows},
		})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // a streaming model starts every request from its trained state
			rec := do(h, "POST", Prefix+"/detect", "application/json", `{"model":"m-`+algo+`","rows":[[1,2],[50,-50],[6,3]]}`)
			var got struct {
				Model     string
				Threshold float64
				Scores    []float64
			}
			if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &got) != nil {
				t.Fatalf("%s: %d %s", algo, rec.Code, rec.Body)
			}
			if got.Model != "m-"+algo+"@1" || got.Threshold != 0.7 || len(got.Scores) != 3 || m.Version != 1 {
				t.Fatalf("%s: %s", algo, rec.Body)
			}
			for i := range want {
				if got.Scores[i] != want[i] {
					t.Fatalf("%s: scores %v, the fitted detector gives %v", algo, got.Scores, want)
				}
			}
		}
	}
	for _, tc := range []struct {
		body  string
		code  int
		field string
	}{
		{`{"model":"m-iforest","algorithm":"iforest","rows":[[1,2]]}`, 400, "algorithm"},
		{`{"model":"m-iforest","seed":3,"rows":[[1,2]]}`, 400, "seed"},
		{`{"model":"nope","rows":[[1,2]]}`, 404, "model"},
		{`{"model":"m-iforest@7","rows":[[1,2]]}`, 404, "model"},
		{`{"model":"bad name!","rows":[[1,2]]}`, 400, "model"},
		{`{"model":"m-iforest","rows":[[1,2,3]]}`, 400, "rows[0]"},
		{`{"model":"m-iforest"}`, 400, "rows"},
	} {
		rec := do(h, "POST", Prefix+"/detect", "application/json", tc.body)
		if rec.Code != tc.code || !strings.Contains(rec.Body.String(), `"field":"`+tc.field) {
			t.Errorf("%s: %d %s, want %d naming %s", tc.body, rec.Code, rec.Body, tc.code, tc.field)
		}
	}
	if rec := do(newTestServer(t, Config{}).Handler(), "POST", Prefix+"/detect", "application/json", `{"model":"m","rows":[[1]]}`); rec.Code != 503 {
		t.Errorf("without a job store: %d %s", rec.Code, rec.Body)
	}
}
