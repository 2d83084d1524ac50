package jobs

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
)

func TestValidateAcceptsEveryTypesMinimalJob(t *testing.T) {
	rows := Input{Rows: [][]float64{{1, 2}, {3, 4}}}
	day := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	good := map[string]Job{
		"detect with algorithm":    {Type: Detect, Input: rows, Algorithm: "iforest", Params: detectors.Params{"trees": 50}},
		"detect with model":        {Type: Detect, Input: Input{Dataset: "ds_01abc"}, Model: "cpu-model"},
		"detect with model@ver":    {Type: Detect, Input: Input{Dataset: "ds_01abc"}, Model: "cpu.model_v-2@3"},
		"detect streaming":         {Type: Detect, Input: rows, Algorithm: "zscore", Params: detectors.Params{"window": 16, "min_samples": 4}},
		"train":                    {Type: Train, Input: Input{Dataset: "ds_1"}, Algorithm: "ecod", Model: "nightly"},
		"ensemble":                 {Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "iforest"}, {Algorithm: "hbos", Weight: 2}}, Combiner: "weighted_mean"},
		"ensemble default combine": {Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "ecod"}}},
		"preprocess":               {Type: Preprocess, Input: rows, Scaling: "robust"},
		"records input":            {Type: Detect, Input: Input{Records: &RecordRange{Series: []string{"host-1"}, From: day, To: day.Add(time.Hour)}, Columns: []string{"cpu"}}, Algorithm: "iforest"},
		"named columns":            {Type: Detect, Input: Input{Rows: [][]float64{{1, 2}}, Columns: []string{"cpu", "mem"}}, Algorithm: "iforest"},
		"limits":                   {Type: Detect, Input: rows, Algorithm: "iforest", Contamination: 0.5, MaxAttempts: 10, Timeout: Duration(time.Minute)},
		"max inline rows":          {Type: Detect, Input: Input{Rows: make([][]float64, MaxInlineRows)}, Algorithm: "iforest"},
	}
	for i := range good["max inline rows"].Input.Rows {
		good["max inline rows"].Input.Rows[i] = []float64{float64(i)}
	}
	for name, j := range good {
		if err := Validate(j); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateNamesTheFieldAtFault(t *testing.T) {
	rows := Input{Rows: [][]float64{{1, 2}, {3, 4}}}
	day := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	tooMany := make([][]float64, MaxInlineRows+1)
	for i := range tooMany {
		tooMany[i] = []float64{1}
	}
	many := make([]DetectorSpec, MaxEnsembleDetectors+1)
	for i := range many {
		many[i].Algorithm = "hbos"
	}
	tests := []struct {
		name  string
		job   Job
		field string
		msg   string // the message contains this
	}{
		{"no type", Job{Input: rows, Algorithm: "iforest"}, "type", "missing (known: detect, ensemble, preprocess, train)"},
		{"unknown type", Job{Type: "cluster", Input: rows}, "type", `unknown job type "cluster"`},
		{"no input", Job{Type: Detect, Algorithm: "iforest"}, "input", "exactly one of input.dataset, input.rows or input.records"},
		{"empty rows", Job{Type: Detect, Input: Input{Rows: [][]float64{}}, Algorithm: "iforest"}, "input.rows", "empty"},
		{"two inputs", Job{Type: Detect, Input: Input{Dataset: "ds_1", Rows: [][]float64{{1}}}, Algorithm: "iforest"}, "input", "not input.dataset and input.rows"},
		{"three inputs", Job{Type: Detect, Input: Input{Dataset: "ds_1", Rows: [][]float64{{1}}, Records: &RecordRange{}}, Algorithm: "iforest"}, "input", "input.dataset and input.rows and input.records"},
		{"inline_rows given", Job{Type: Detect, Input: Input{Dataset: "ds_1", InlineRows: 3}, Algorithm: "iforest"}, "input.inline_rows", "set by the server"},
		{"too many rows", Job{Type: Detect, Input: Input{Rows: tooMany}, Algorithm: "iforest"}, "input.rows", "10001 rows is more than 10000"},
		{"ragged rows", Job{Type: Detect, Input: Input{Rows: [][]float64{{1, 2}, {3, 4}, {5}}}, Algorithm: "iforest"}, "input.rows[2]", "has 1 values, want 2"},
		{"empty row", Job{Type: Detect, Input: Input{Rows: [][]float64{{}}}, Algorithm: "iforest"}, "input.rows[0]", "empty row"},
		{"NaN value", Job{Type: Detect, Input: Input{Rows: [][]float64{{1, 2}, {3, math.NaN()}}}, Algorithm: "iforest"}, "input.rows[1][1]", "NaN is not a finite number"},
		{"Inf value", Job{Type: Detect, Input: Input{Rows: [][]float64{{math.Inf(-1)}}}, Algorithm: "iforest"}, "input.rows[0][0]", "-Inf"},
		{"bad dataset id", Job{Type: Detect, Input: Input{Dataset: "../etc/passwd"}, Algorithm: "iforest"}, "input.dataset", "not allowed"},
		{"columns count", Job{Type: Detect, Input: Input{Rows: [][]float64{{1, 2}}, Columns: []string{"a"}}, Algorithm: "iforest"}, "input.columns", "names 1 columns, but the rows have 2"},
		{"duplicate column", Job{Type: Detect, Input: Input{Dataset: "ds_1", Columns: []string{"a", "b", "a"}}, Algorithm: "iforest"}, "input.columns[2]", `"a" is also input.columns[0]`},
		{"empty column", Job{Type: Detect, Input: Input{Dataset: "ds_1", Columns: []string{""}}, Algorithm: "iforest"}, "input.columns[0]", "empty"},
		{"no series", Job{Type: Detect, Input: Input{Records: &RecordRange{From: day, To: day.Add(1)}}, Algorithm: "iforest"}, "input.records.series", "at least one series"},
		{"empty series", Job{Type: Detect, Input: Input{Records: &RecordRange{Series: []string{"a", ""}, From: day, To: day.Add(1)}}, Algorithm: "iforest"}, "input.records.series[1]", "empty"},
		{"control char series", Job{Type: Detect, Input: Input{Records: &RecordRange{Series: []string{"a\nb"}, From: day, To: day.Add(1)}}, Algorithm: "iforest"}, "input.records.series[0]", "control character at byte 1"},
		{"no from", Job{Type: Detect, Input: Input{Records: &RecordRange{Series: []string{"a"}, To: day}}, Algorithm: "iforest"}, "input.records.from", "missing"},
		{"no to", Job{Type: Detect, Input: Input{Records: &RecordRange{Series: []string{"a"}, From: day}}, Algorithm: "iforest"}, "input.records.to", "missing"},
		{"from after to", Job{Type: Detect, Input: Input{Records: &RecordRange{Series: []string{"a"}, From: day, To: day}}, Algorithm: "iforest"}, "input.records.to", "is not after input.records.from"},

		{"detect without algorithm or model", Job{Type: Detect, Input: rows}, "algorithm", "missing: give algorithm (" /* then the names */},
		{"detect with both", Job{Type: Detect, Input: rows, Algorithm: "iforest", Model: "m"}, "model", "not both"},
		{"detect model with params", Job{Type: Detect, Input: rows, Model: "m", Params: detectors.Params{"trees": 3}}, "params", "params go with algorithm"},
		{"detect bad model name", Job{Type: Detect, Input: rows, Model: "my model"}, "model", `has ' '`},
		{"detect bad model version", Job{Type: Detect, Input: rows, Model: "m@0"}, "model", "after '@' must be a whole number"},
		{"detect model version not a number", Job{Type: Detect, Input: rows, Model: "m@latest"}, "model", "after '@' must be a whole number"},
		{"detect long model name", Job{Type: Detect, Input: rows, Model: strings.Repeat("m", 65)}, "model", "longer than 64"},
		{"unknown algorithm", Job{Type: Detect, Input: rows, Algorithm: "magic"}, "algorithm", `unknown detector "magic"`},
		{"param out of range", Job{Type: Detect, Input: rows, Algorithm: "iforest", Params: detectors.Params{"trees": 0}}, "params.trees", "out of range [1, 10000]"},
		{"param not whole", Job{Type: Detect, Input: rows, Algorithm: "iforest", Params: detectors.Params{"trees": 1.5}}, "params.trees", "whole number"},
		{"unknown param", Job{Type: Detect, Input: rows, Algorithm: "iforest", Params: detectors.Params{"leaves": 3}}, "params.leaves", `unknown parameter "leaves"`},
		{"NaN param", Job{Type: Detect, Input: rows, Algorithm: "iforest", Params: detectors.Params{"trees": math.NaN()}}, "params.trees", "out of range"},
		{"params inconsistent", Job{Type: Detect, Input: rows, Algorithm: "zscore", Params: detectors.Params{"window": 8, "min_samples": 9}}, "params", "min_samples"},

		{"train without algorithm", Job{Type: Train, Input: rows, Model: "m"}, "algorithm", "missing: the detector to train"},
		{"train without model", Job{Type: Train, Input: rows, Algorithm: "ecod"}, "model", "missing: the name to publish"},
		{"train with version", Job{Type: Train, Input: rows, Algorithm: "ecod", Model: "m@2"}, "model", "without @version"},
		{"train bad name", Job{Type: Train, Input: rows, Algorithm: "ecod", Model: "a/b"}, "model", "has '/'"},
		{"train bad param", Job{Type: Train, Input: rows, Algorithm: "hbos", Params: detectors.Params{"n_bins": -1}, Model: "m"}, "params.n_bins", "out of range"},

		{"ensemble without detectors", Job{Type: Ensemble, Input: rows}, "detectors", "at least one"},
		{"ensemble too many", Job{Type: Ensemble, Input: rows, Detectors: many}, "detectors", "33 detectors is more than 32"},
		{"ensemble member without algorithm", Job{Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "hbos"}, {}}}, "detectors[1].algorithm", "missing"},
		{"ensemble member unknown", Job{Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "nope"}}}, "detectors[0].algorithm", `unknown detector "nope"`},
		{"ensemble member bad param", Job{Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "hbos"}, {Algorithm: "iforest", Params: detectors.Params{"trees": 1e9}}}}, "detectors[1].params.trees", "out of range"},
		{"ensemble negative weight", Job{Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "hbos", Weight: -1}}}, "detectors[0].weight", "≥ 0"},
		{"ensemble NaN weight", Job{Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "hbos", Weight: math.NaN()}}}, "detectors[0].weight", "NaN"},
		{"ensemble unknown combiner", Job{Type: Ensemble, Input: rows, Detectors: []DetectorSpec{{Algorithm: "hbos"}}, Combiner: "sum"}, "combiner", `unknown combiner "sum" (known: mean, max, weighted_mean, median, aom, vote)`},
		{"ensemble with algorithm", Job{Type: Ensemble, Input: rows, Algorithm: "iforest", Detectors: []DetectorSpec{{Algorithm: "hbos"}}}, "algorithm", "not used by ensemble jobs"},
		{"ensemble with model", Job{Type: Ensemble, Input: rows, Model: "m", Detectors: []DetectorSpec{{Algorithm: "hbos"}}}, "model", "not used by ensemble jobs"},

		{"preprocess without scaling", Job{Type: Preprocess, Input: rows}, "scaling", "missing (known: standard, robust, minmax)"},
		{"preprocess unknown scaling", Job{Type: Preprocess, Input: rows, Scaling: "log"}, "scaling", `unknown scaling "log"`},
		{"preprocess with algorithm", Job{Type: Preprocess, Input: rows, Scaling: "standard", Algorithm: "iforest"}, "algorithm", "not used by preprocess jobs"},
		{"preprocess with model", Job{Type: Preprocess, Input: rows, Scaling: "standard", Model: "m"}, "model", "not used by preprocess jobs"},
		{"scaling on detect", Job{Type: Detect, Input: rows, Algorithm: "iforest", Scaling: "standard"}, "scaling", "not used by detect jobs"},
		{"detectors on train", Job{Type: Train, Input: rows, Algorithm: "iforest", Model: "m", Detectors: []DetectorSpec{{Algorithm: "hbos"}}}, "detectors", "not used by train jobs"},
		{"combiner on detect", Job{Type: Detect, Input: rows, Algorithm: "iforest", Combiner: "max"}, "combiner", "not used by detect jobs"},

		{"contamination too high", Job{Type: Detect, Input: rows, Algorithm: "iforest", Contamination: 0.6}, "contamination", "0.6 is out of range (0, 0.5]"},
		{"contamination negative", Job{Type: Detect, Input: rows, Algorithm: "iforest", Contamination: -0.1}, "contamination", "out of range"},
		{"contamination NaN", Job{Type: Detect, Input: rows, Algorithm: "iforest", Contamination: math.NaN()}, "contamination", "out of range"},
		{"max_attempts too many", Job{Type: Detect, Input: rows, Algorithm: "iforest", MaxAttempts: 11}, "max_attempts", "11 is out of range [1, 10]"},
		{"max_attempts negative", Job{Type: Detect, Input: rows, Algorithm: "iforest", MaxAttempts: -1}, "max_attempts", "out of range"},
		{"timeout negative", Job{Type: Detect, Input: rows, Algorithm: "iforest", Timeout: Duration(-time.Second)}, "timeout", "-1s is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.job)
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("got %v, want a *FieldError for %s", err, tt.field)
			}
			if fe.Field != tt.field {
				t.Errorf("field %q, want %q (%v)", fe.Field, tt.field, err)
			}
			if !strings.Contains(fe.Msg, tt.msg) {
				t.Errorf("message %q does not contain %q", fe.Msg, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), tt.field+": ") {
				t.Errorf("error %q does not start with the field", err)
			}
		})
	}
}

func TestDecodeJob(t *testing.T) {
	job := Job{ID: "job_1", Type: Detect, Algorithm: "ecod", Input: Input{Rows: [][]float64{{1, 2}}}, Timeout: Duration(time.Minute)}
	value, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeJob([]byte("job_1"), value)
	if err != nil || got.ID != "job_1" || got.Input.Rows[0][1] != 2 || time.Duration(got.Timeout) != time.Minute {
		t.Fatalf("DecodeJob: %+v, %v", got, err)
	}
	for name, tc := range map[string]struct{ key, value string }{
		"not JSON":      {"job_1", "{"},
		"not an object": {"job_1", "[]"},
		"wrong type":    {"job_1", `{"id":"job_1","type":7}`},
		"bad timeout":   {"job_1", `{"id":"job_1","timeout":"soon"}`},
		"no id":         {"job_1", `{"type":"detect"}`},
		"other key":     {"job_2", `{"id":"job_1"}`},
		"no key":        {"", `{"id":"job_1"}`},
	} {
		if _, err := DecodeJob([]byte(tc.key), []byte(tc.value)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// FuzzDecodeJob feeds arbitrary queue records to what a worker does with them first:
// DecodeJob, then Validate. Neither may panic, and a valid job survives a round trip.
func FuzzDecodeJob(f *testing.F) {
	for _, seed := range []string{
		`{"id":"job_1","type":"detect","algorithm":"iforest","params":{"trees":10},"input":{"rows":[[1,2],[3,4]]}}`,
		`{"id":"job_1","type":"ensemble","detectors":[{"algorithm":"hbos","weight":2},{"algorithm":"zscore","params":{"window":8,"min_samples":9}}],"combiner":"aom","input":{"dataset":"ds_1"}}`,
		`{"id":"job_1","type":"train","algorithm":"ecod","model":"m@2","input":{"records":{"series":["a"],"from":"2026-11-27T00:00:00Z","to":"2026-11-26T00:00:00Z"}}}`,
		`{"id":"job_1","type":"preprocess","scaling":"robust","input":{"rows":[[1]],"inline_rows":1},"timeout":"1h","max_attempts":11}`,
		`{"id":"job_1","type":"detect","model":"m","params":{"trees":-1e308},"contamination":0.5,"input":{"rows":[[1],[2,3]]}}`,
	} {
		f.Add("job_1", seed)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		job, err := DecodeJob([]byte(key), []byte(value))
		if err != nil {
			return
		}
		if Validate(job) != nil {
			return
		}
		again, err := json.Marshal(job)
		if err != nil {
			t.Fatalf("a valid job does not encode: %v", err)
		}
		back, err := DecodeJob([]byte(key), again)
		if err != nil {
			t.Fatalf("a valid job does not decode again: %v\n%s", err, again)
		}
		if err := Validate(back); err != nil {
			t.Fatalf("a valid job is invalid after a round trip: %v\n%s", err, again)
		}
	})
}
