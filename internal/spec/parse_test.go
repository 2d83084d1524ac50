package spec

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
	"gopkg.in/yaml.v3"
)

// badSpecs are spec files with the exact error Parse must return for them, file
// pipeline.yaml. {known} stands for the registered detector names, which grow as
// detectors are added.
var badSpecs = []struct {
	name, yaml, want string
}{
	// Unknown keys, at every depth.
	{"unknown top-level key", "nmae: x\n",
		`pipeline.yaml:1: nmae: unknown field (known: name, input, features, preprocess, detectors, ensemble, output)`},
	{"unknown input key", "input:\n  topic: records\n  formatt: json\n",
		`pipeline.yaml:3: input.formatt: unknown field (known: topic, format, max_bytes, schema_ids)`},
	{"unknown detector key", "detectors:\n  - algorithm: spectest\n    windw: 5\n",
		`pipeline.yaml:3: detectors[0].windw: unknown field (known: name, algorithm, model, params, weight)`},
	{"unknown ensemble key", "ensemble: {treshold: 0.9}\n",
		`pipeline.yaml:1: ensemble.treshold: unknown field (known: method, calibration, calibration_window, threshold, warmup, likelihood, suppress)`},
	{"unknown likelihood key", "ensemble:\n  likelihood: {shrot: 10}\n",
		`pipeline.yaml:2: ensemble.likelihood.shrot: unknown field (known: short, long)`},
	{"unknown parameter", "detectors:\n  - algorithm: spectest\n    params:\n      windw: 5\n",
		`pipeline.yaml:4: detectors[0].params.windw: detector spectest: unknown parameter "windw" (known: window, alpha)`},
	{"alias repeats a detector", "detectors:\n  - &d {algorithm: spectest}\n  - *d\n",
		`pipeline.yaml:3: detectors[1].name: duplicate detector name "spectest" (also detectors[0])`},
	{"merge key", "input:\n  <<: {topic: x}\n",
		`pipeline.yaml:2: input.<<: merge keys are not supported`},
	{"non-scalar key", "input:\n  ? [a]\n  : 1\n",
		`pipeline.yaml:2: input: expected a field name, got a list`},

	// Wrong types.
	{"string for number", "name: p\ndetectors:\n  - algorithm: spectest\n  - name: second\n    algorithm: spectest\n    params:\n      window: abc\n",
		`pipeline.yaml:7: detectors[1].params.window: expected a number, got "abc"`},
	{"quoted number", "ensemble:\n  threshold: \"0.9\"\n",
		`pipeline.yaml:2: ensemble.threshold: expected a number, got "0.9"`},
	{"fraction for whole number", "preprocess:\n  window: 12.5\n",
		`pipeline.yaml:2: preprocess.window: expected a whole number, got 12.5`},
	{"infinite whole number", "ensemble:\n  warmup: .inf\n",
		`pipeline.yaml:2: ensemble.warmup: expected a whole number, got .inf`},
	{"huge whole number", "input:\n  max_bytes: 99999999999999999999\n",
		`pipeline.yaml:2: input.max_bytes: number 99999999999999999999 is out of range`},
	{"huge int", "input:\n  max_bytes: 9223372036854775807\n",
		`pipeline.yaml:2: input.max_bytes: number 9223372036854775807 is out of range`},
	{"list for mapping", "input: [records, json]\n",
		`pipeline.yaml:1: input: expected a mapping, got a list`},
	{"string for mapping", "preprocess: robust\n",
		`pipeline.yaml:1: preprocess: expected a mapping, got "robust"`},
	{"mapping for list", "detectors:\n  algorithm: zscore\n",
		`pipeline.yaml:2: detectors: expected a list of detectors, got a mapping`},
	{"mapping for features", "features: {cpu: 1}\n",
		`pipeline.yaml:1: features: expected a list of feature names or all, got a mapping`},
	{"string for features", "features: cpu\n",
		`pipeline.yaml:1: features: expected a list of feature names or all, got "cpu"`},
	{"mapping for string", "name: {first: a}\n",
		`pipeline.yaml:1: name: expected a string, got a mapping`},
	{"list for number", "detectors:\n  - algorithm: spectest\n    weight: [1]\n",
		`pipeline.yaml:3: detectors[0].weight: expected a number, got a list`},
	{"null detector", "detectors:\n  -\n  - algorithm: spectest\n",
		`pipeline.yaml:2: detectors[0]: expected a mapping, got null`},
	{"string detector", "detectors: [spectest]\n",
		`pipeline.yaml:1: detectors[0]: expected a mapping, got "spectest"`},
	{"binary for string", "name: !!binary aGVsbG8=\n",
		`pipeline.yaml:1: name: expected a string, got !!binary "aGVsbG8="`},
	{"tagged mapping", "input: !custom {topic: x}\n",
		`pipeline.yaml:1: input: expected a mapping, got a mapping tagged !custom`},
	{"schema id out of range", "input:\n  schema_ids: [1, 4294967296, -1]\n",
		"pipeline.yaml:2: input.schema_ids[1]: must be between 1 and 4294967295, got 4294967296\n" +
			"pipeline.yaml:2: input.schema_ids[2]: must be between 1 and 4294967295, got -1"},

	// Bad enumerations.
	{"bad ensemble method", "ensemble:\n  method: median2\n",
		`pipeline.yaml:2: ensemble.method: "median2" is not one of mean, max, weighted_mean, median, aom, vote`},
	{"bad input format", "input:\n  format: xml\n",
		`pipeline.yaml:2: input.format: "xml" is not one of auto, json, avro, confluent`},
	{"bad output format", "output:\n  format: confluent\n",
		`pipeline.yaml:2: output.format: "confluent" is not one of json, avro`},
	{"bad missing", "preprocess:\n  missing: drop\n",
		`pipeline.yaml:2: preprocess.missing: "drop" is not one of previous, zero, reject`},
	{"bad scaling", "preprocess:\n  scaling: minmax\n",
		`pipeline.yaml:2: preprocess.scaling: "minmax" is not one of robust, none`},
	{"bad calibration", "ensemble:\n  calibration: isotonic\n",
		`pipeline.yaml:2: ensemble.calibration: "isotonic" is not one of ecdf, gaussian, pot`},

	// Duplicates.
	{"duplicate top-level key", "name: a\nname: b\n",
		`pipeline.yaml:2: name: duplicate key (first at line 1)`},
	{"duplicate parameter", "detectors:\n  - algorithm: spectest\n    params:\n      window: 10\n      window: 20\n",
		`pipeline.yaml:5: detectors[0].params.window: duplicate key (first at line 4)`},
	{"duplicate detector names", "detectors:\n  - algorithm: spectest\n  - algorithm: spectest\n    params: {window: 10}\n",
		`pipeline.yaml:3: detectors[1].name: duplicate detector name "spectest" (also detectors[0])`},
	{"duplicate explicit detector names", "detectors:\n  - {name: a, algorithm: spectest}\n  - {name: a, algorithm: spectest}\n",
		`pipeline.yaml:3: detectors[1].name: duplicate detector name "a" (also detectors[0])`},
	{"duplicate feature", "features: [cpu, mem, cpu]\n",
		`pipeline.yaml:1: features[2]: duplicate feature "cpu" (also features[0])`},
	{"duplicate schema id", "input: {schema_ids: [3, 3]}\n",
		`pipeline.yaml:1: input.schema_ids[1]: duplicate schema id 3 (also input.schema_ids[0])`},

	// Detectors and their parameters.
	{"empty detectors", "detectors: []\n",
		`pipeline.yaml:1: detectors: at least one detector is required`},
	{"missing algorithm", "detectors:\n  - name: a\n",
		`pipeline.yaml:2: detectors[0].algorithm: required (known: {known}), or model: the name of a trained model`},
	{"model and algorithm", "detectors:\n  - algorithm: spectest\n    model: cpu\n",
		`pipeline.yaml:3: detectors[0].model: give either algorithm or model, not both (a trained model's algorithm was fixed by its train job)`},
	{"model with params", "detectors:\n  - model: cpu\n    params: {window: 10}\n",
		`pipeline.yaml:3: detectors[0].params: a trained model's parameters were fixed by its train job; params go with algorithm`},
	{"bad model name", "detectors:\n  - name: m\n    model: cpu iforest\n",
		`pipeline.yaml:3: detectors[0].model: "cpu iforest" is not a valid name (1 to 64 characters of a-z, A-Z, 0-9, '.', '_', '-')`},
	{"model not a string", "detectors:\n  - model: [cpu]\n",
		`pipeline.yaml:2: detectors[0].model: expected a string, got a list`},
	{"duplicate model entries", "detectors:\n  - model: cpu\n  - model: cpu\n",
		`pipeline.yaml:3: detectors[1].name: duplicate detector name "cpu" (also detectors[0])`},
	{"unknown algorithm", "detectors:\n  - algorithm: nosuch\n",
		`pipeline.yaml:2: detectors[0].algorithm: unknown detector "nosuch" (known: {known})`},
	{"parameter out of range", "name: p\ninput:\n  topic: records\nfeatures: all\ndetectors:\n  - name: fast\n    algorithm: spectest\n    params:\n      window: 5\n",
		`pipeline.yaml:9: detectors[0].params.window: detector spectest: parameter window = 5 is out of range [8, 100000]`},
	{"every bad parameter", "detectors:\n  - algorithm: spectest\n    params:\n      window: 8.5\n      alpha: 2\n",
		"pipeline.yaml:4: detectors[0].params.window: detector spectest: parameter window = 8.5 must be a whole number\n" +
			"pipeline.yaml:5: detectors[0].params.alpha: detector spectest: parameter alpha = 2 is out of range [0, 1]"},
	{"NaN parameter", "detectors:\n  - algorithm: spectest\n    params: {alpha: .nan}\n",
		`pipeline.yaml:3: detectors[0].params.alpha: detector spectest: parameter alpha = NaN is out of range [0, 1]`},
	{"zero weight", "detectors:\n  - algorithm: spectest\n    weight: 0\n",
		`pipeline.yaml:3: detectors[0].weight: must be greater than 0, got 0`},
	{"infinite weight", "detectors:\n  - algorithm: spectest\n    weight: .inf\n",
		`pipeline.yaml:3: detectors[0].weight: must be finite, got +Inf`},
	{"bad detector name", "detectors:\n  - name: my detector\n    algorithm: spectest\n",
		`pipeline.yaml:2: detectors[0].name: "my detector" is not a valid name (1 to 64 characters of a-z, A-Z, 0-9, '.', '_', '-')`},

	// Ranges and names.
	{"likelihood short negative", "ensemble:\n  likelihood:\n    short: -1\n",
		`pipeline.yaml:3: ensemble.likelihood.short: must be between 0 and 10000, got -1`},
	{"likelihood long too short", "ensemble:\n  likelihood: {short: 10, long: 1}\n",
		`pipeline.yaml:2: ensemble.likelihood.long: must be between 2 and 1000000, got 1`},
	{"suppress too long", "ensemble:\n  suppress: 100001\n",
		`pipeline.yaml:2: ensemble.suppress: must be between 0 and 100000, got 100001`},
	{"threshold zero", "ensemble: {threshold: 0}\n",
		`pipeline.yaml:1: ensemble.threshold: must be greater than 0 and at most 1, got 0`},
	{"threshold above one", "ensemble: {threshold: 1.5}\n",
		`pipeline.yaml:1: ensemble.threshold: must be greater than 0 and at most 1, got 1.5`},
	{"threshold NaN", "ensemble: {threshold: .nan}\n",
		`pipeline.yaml:1: ensemble.threshold: must be greater than 0 and at most 1, got NaN`},
	{"preprocess window too small", "preprocess: {window: 1}\n",
		`pipeline.yaml:1: preprocess.window: must be between 2 and 100000, got 1`},
	{"calibration window too large", "ensemble: {calibration_window: 1e9}\n",
		`pipeline.yaml:1: ensemble.calibration_window: must be between 16 and 1000000, got 1000000000`},
	{"calibration window too small", "ensemble: {calibration_window: 15}\n",
		`pipeline.yaml:1: ensemble.calibration_window: must be between 16 and 1000000, got 15`},
	{"negative warmup", "ensemble: {warmup: -1}\n",
		`pipeline.yaml:1: ensemble.warmup: must be between 0 and 1000000, got -1`},
	{"max_bytes too small", "input: {max_bytes: 100}\n",
		`pipeline.yaml:1: input.max_bytes: must be between 1024 (1 KiB) and 16777216 (16 MiB), got 100`},
	{"no schema ids", "input: {schema_ids: []}\n",
		`pipeline.yaml:1: input.schema_ids: must list at least one schema id`},
	{"empty feature", "features: [cpu, \"\"]\n",
		`pipeline.yaml:1: features[1]: feature name is empty`},
	{"control character in feature", "features: [\"cpu\\n\", \"a\\x00\", \"\\x85\"]\n",
		"pipeline.yaml:1: features[0]: feature name \"cpu\\n\" contains a control character or invalid UTF-8\n" +
			"pipeline.yaml:1: features[1]: feature name \"a\\x00\" contains a control character or invalid UTF-8\n" +
			"pipeline.yaml:1: features[2]: feature name \"\\u0085\" contains a control character or invalid UTF-8"},
	{"bad pipeline name", "name: \"\"\n",
		`pipeline.yaml:1: name: "" is not a valid name (1 to 64 characters of a-z, A-Z, 0-9, '.', '_', '-')`},
	{"bad topic", "input:\n  topic: my records\n",
		`pipeline.yaml:2: input.topic: "my records" is not a valid Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, '.', '_', '-'; not . or ..)`},
	{"dot-dot topic", "output:\n  anomalies: ..\n",
		`pipeline.yaml:2: output.anomalies: ".." is not a valid Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, '.', '_', '-'; not . or ..)`},
	{"long topic", "output:\n  results: " + strings.Repeat("r", 250) + "\n",
		`pipeline.yaml:2: output.results: "` + strings.Repeat("r", 64) + `…" is not a valid Kafka topic name (1 to 249 characters of a-z, A-Z, 0-9, '.', '_', '-'; not . or ..)`},
	{"output onto input", "output:\n  results: records\n",
		`pipeline.yaml:2: output.results: topic "records" is also used by input.topic`},
	{"input onto output", "input:\n  topic: anomalies\n",
		`pipeline.yaml:2: input.topic: topic "anomalies" is also used by output.anomalies`},
	{"results onto anomalies", "output:\n  results: alerts\n  anomalies: alerts\n",
		`pipeline.yaml:3: output.anomalies: topic "alerts" is also used by output.results`},

	// The file as a whole.
	{"empty file", "", `pipeline.yaml:1: spec is empty`},
	{"only comments", "# nothing yet\n\n", `pipeline.yaml:1: spec is empty`},
	{"null document", "~\n", `pipeline.yaml:1: spec is empty`},
	{"list document", "- name: x\n", `pipeline.yaml:1: expected a mapping of pipeline fields, got a list`},
	{"two documents", "name: a\n---\nname: b\n", `pipeline.yaml:2: a spec is one YAML document; found a second one`},
	{"tab indentation", "input:\n\ttopic: x\n",
		`pipeline.yaml:2: invalid YAML: found a tab character in indentation; YAML indents with spaces`},
	{"tab after spaces", "input:\n  topic: x\n  \tformat: json\n",
		`pipeline.yaml:3: invalid YAML: found a tab character in indentation; YAML indents with spaces`},
	{"tab in block scalar", "name: |\n\tx\n",
		`pipeline.yaml:2: invalid YAML: found a tab character in indentation; YAML indents with spaces`},
	{"tab on the first line", "\tname: x\n",
		`pipeline.yaml:1: invalid YAML: found a tab character in indentation; YAML indents with spaces`},
	{"missing colon", "name: a\ninput:\n  topic records\n  format: json\n",
		`pipeline.yaml:4: invalid YAML: mapping values are not allowed in this context`},
	{"unclosed flow list", "name: x\n\nfeatures: [cpu, mem\noutput: {}\n",
		`pipeline.yaml:3: invalid YAML: did not find expected ',' or ']'`},
	{"bad indentation", "name: x\ninput:\n  topic: a\n format: json\n",
		`pipeline.yaml:4: invalid YAML: did not find expected key`},
	{"unknown anchor", "name: x\ndetectors:\n  - *det\n",
		`pipeline.yaml:3: invalid YAML: unknown anchor 'det' referenced`},

	// All problems at once, in line order.
	{"many problems", "name: p\ninput:\n  format: xml\n  topic: 7\n  extra: 1\nensemble:\n  threshold: 2\n  method: medium\noutput:\n  format: csv\n",
		"pipeline.yaml:3: input.format: \"xml\" is not one of auto, json, avro, confluent\n" +
			"pipeline.yaml:5: input.extra: unknown field (known: topic, format, max_bytes, schema_ids)\n" +
			"pipeline.yaml:7: ensemble.threshold: must be greater than 0 and at most 1, got 2\n" +
			"pipeline.yaml:8: ensemble.method: \"medium\" is not one of mean, max, weighted_mean, median, aom, vote\n" +
			"pipeline.yaml:10: output.format: \"csv\" is not one of json, avro"},
	{"no cascade from a bad detector", "detectors:\n  - [spectest]\n  - algorithm: [spectest]\n",
		"pipeline.yaml:2: detectors[0]: expected a mapping, got a list\n" +
			"pipeline.yaml:3: detectors[1].algorithm: expected a string, got a list"},
}

func TestParseBad(t *testing.T) {
	known := knownDetectors()
	for _, tc := range badSpecs {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Parse([]byte(tc.yaml), "pipeline.yaml")
			if err == nil {
				t.Fatalf("Parse succeeded, want error\n%s\ngot %+v", tc.want, s)
			}
			want := strings.ReplaceAll(tc.want, "{known}", known)
			if err.Error() != want {
				t.Errorf("wrong error\n got: %s\nwant: %s", err, want)
			}
			var se *Error
			if !errors.As(err, &se) || len(se.Errors) == 0 {
				t.Errorf("error %T is not an *Error with problems", err)
			}
		})
	}
}

func TestParseCapsErrors(t *testing.T) {
	var b strings.Builder
	for i := range MaxErrors + 5 {
		b.WriteString("unknown" + strings.Repeat("x", i) + ": 1\n")
	}
	_, err := Parse([]byte(b.String()), "p.yaml")
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want *Error", err)
	}
	if len(se.Errors) != MaxErrors || se.Omitted != 5 {
		t.Fatalf("got %d errors and %d omitted, want %d and 5", len(se.Errors), se.Omitted, MaxErrors)
	}
	if !strings.HasSuffix(err.Error(), "\n... and 5 more errors") {
		t.Errorf("error does not end with the count of omitted errors:\n%s", err)
	}
	var fe FieldError
	if !errors.As(err, &fe) || fe.Line != 1 || fe.Path != "unknown" {
		t.Errorf("errors.As found %+v, want the first problem", fe)
	}
}

// TestParseAliasBomb checks that aliases cannot make a small file expensive to walk.
func TestParseAliasBomb(t *testing.T) {
	var b strings.Builder
	b.WriteString("detectors:\n  - &d\n    algorithm: spectest\n    params:\n")
	for i := range 1000 {
		b.WriteString("      p" + strconv.Itoa(i) + ": 1\n")
	}
	for range 200 {
		b.WriteString("  - *d\n")
	}
	_, err := Parse([]byte(b.String()), "bomb.yaml")
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("got %v, want *Error", err)
	}
	if !strings.Contains(err.Error(), "spec has more than 100000 values") {
		t.Errorf("error does not mention the size limit:\n%s", err)
	}
}

func TestParseBadRealDetectorParam(t *testing.T) {
	// The registry's own message, whatever zscore's range is, located at the parameter.
	info, err := detectors.Lookup("zscore")
	if err != nil {
		t.Fatal(err)
	}
	p := info.Params[0]
	bad := p.Min - 1
	_, resolveErr := info.Resolve(detectors.Params{p.Name: bad})
	if resolveErr == nil {
		t.Fatalf("zscore accepts %s = %v", p.Name, bad)
	}
	src := "detectors:\n  - algorithm: zscore\n    params:\n      " + p.Name + ": " + formatFloat(bad) + "\n"
	_, err = Parse([]byte(src), "pipeline.yaml")
	want := "pipeline.yaml:4: detectors[0].params." + p.Name + ": " + resolveErr.Error()
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

func spectest(name string, window, alpha, weight float64) Detector {
	return Detector{Name: name, Algorithm: "spectest", Params: map[string]float64{"window": window, "alpha": alpha}, Weight: weight}
}

// goodSpecs are partial spec files with what Parse must make of them: the default spec
// changed by edit.
var goodSpecs = []struct {
	name, yaml string
	edit       func(s *Spec)
}{
	{"name only", "name: checkout\n", func(s *Spec) { s.Name = "checkout" }},
	{"one input field", "input:\n  topic: sensors\n", func(s *Spec) { s.Input.Topic = "sensors" }},
	{"null section keeps defaults", "input:\nensemble: ~\nname: x\n", func(s *Spec) { s.Name = "x" }},
	{"some ensemble fields", "ensemble:\n  threshold: 0.95\n  warmup: 0\n", func(s *Spec) {
		s.Ensemble.Threshold = 0.95
		s.Ensemble.Warmup = 0
	}},
	{"features list", "features: [cpu, mem]\n", func(s *Spec) { s.Features = []string{"cpu", "mem"} }},
	{"features all", "features: all\n", func(*Spec) {}},
	{"features empty list", "features: []\n", func(*Spec) {}},
	{"awkward feature names", "features: [\"<<\", \"a: b\", \" x \", \"\\u2028\", \"~\", \"温度\"]\n", func(s *Spec) {
		s.Features = []string{"<<", "a: b", " x ", "\u2028", "~", "温度"}
	}},
	{"feature named all", "features: [all]\n", func(s *Spec) { s.Features = []string{"all"} }},
	{"numeric names", "features: [2024, 1.5, true]\nname: 42\n", func(s *Spec) {
		s.Features = []string{"2024", "1.5", "true"}
		s.Name = "42"
	}},
	{"detectors get defaults", "detectors:\n  - algorithm: spectest\n  - name: slow\n    algorithm: spectest\n    params: {window: 1000}\n    weight: 2\n",
		func(s *Spec) {
			s.Detectors = []Detector{spectest("spectest", 64, 0.5, 1), spectest("slow", 1000, 0.5, 2)}
		}},
	{"detectors naming trained models", "detectors:\n  - model: cpu-iforest\n  - name: b\n    model: cpu-iforest\n    weight: 2\n  - algorithm: spectest\n",
		func(s *Spec) {
			s.Detectors = []Detector{{Name: "cpu-iforest", Model: "cpu-iforest", Weight: 1}, {Name: "b", Model: "cpu-iforest", Weight: 2}, spectest("spectest", 64, 0.5, 1)}
		}},
	{"null parameter keeps its default", "detectors:\n  - algorithm: spectest\n    params: {window: ~, alpha: 0.25}\n",
		func(s *Spec) { s.Detectors = []Detector{spectest("spectest", 64, 0.25, 1)} }},
	{"whole numbers written as floats", "preprocess: {window: 1e3}\ninput: {max_bytes: 0x800}\n", func(s *Spec) {
		s.Preprocess.Window = 1000
		s.Input.MaxBytes = 2048
	}},
	{"anchors and aliases", "ensemble: {warmup: &w 3}\ndetectors:\n  - &d {algorithm: spectest, name: a, weight: *w}\n  - {algorithm: spectest, name: b, weight: *w}\n",
		func(s *Spec) {
			s.Detectors = []Detector{spectest("a", 64, 0.5, 3), spectest("b", 64, 0.5, 3)}
			s.Ensemble.Warmup = 3
		}},
	{"full topic names", "input: {topic: acme.sensors}\noutput: {results: acme.scored, anomalies: alerts}\n", func(s *Spec) {
		s.Input.Topic = "acme.sensors"
		s.Output.Results = "acme.scored"
		s.Output.Anomalies = "alerts"
	}},
	{"document markers and comments", "---\n# comment\nname: x # trailing\n...\n", func(s *Spec) { s.Name = "x" }},
}

func TestParseGood(t *testing.T) {
	for _, tc := range goodSpecs {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.yaml), "pipeline.yaml")
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			tc.edit(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("parsed spec does not validate: %v", err)
			}
		})
	}
}

func TestDefault(t *testing.T) {
	s := Default()
	want := &Spec{
		Name:       "default",
		Input:      Input{Topic: "records", Format: FormatAuto, MaxBytes: 1 << 20, SchemaIDs: []uint32{1}},
		Preprocess: Preprocess{Missing: MissingPrevious, Scaling: ScalingRobust, Window: 2000},
		Ensemble: Ensemble{Method: MethodMax, Calibration: CalibrationPOT, CalibrationWindow: 2000, Threshold: 0.9995, Warmup: 100,
			Likelihood: Likelihood{Short: 0, Long: 5000}, Suppress: 100},
		Output: Output{Format: FormatJSON, Results: "results", Anomalies: "anomalies"},
	}
	for _, d := range []struct {
		name  string
		given detectors.Params
	}{{"ewma", detectors.Params{"alpha": 0.01}}, {"rrcf", detectors.Params{"trees": 16, "tree_size": 1000}}, {"seasonal", detectors.Params{"min_samples": 4}}} {
		name := d.name
		info, err := detectors.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		params, err := info.Resolve(d.given)
		if err != nil {
			t.Fatal(err)
		}
		want.Detectors = append(want.Detectors, Detector{Name: name, Algorithm: name, Params: params, Weight: 1})
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Default() = %+v\nwant %+v", s, want)
	}

	// Each call is a copy of its own.
	s.Detectors[0].Params["window"] = -1
	s.Input.SchemaIDs[0] = 9
	if again := Default(); !reflect.DeepEqual(again, want) {
		t.Errorf("changing one Default() changed the next: %+v", again)
	}
}

// TestDefaultYAMLSetsEveryField keeps default.yaml complete: a field it left out would
// silently default to Go's zero value.
func TestDefaultYAMLSetsEveryField(t *testing.T) {
	var doc map[string]any
	if err := yaml.Unmarshal([]byte(DefaultYAML), &doc); err != nil {
		t.Fatal(err)
	}
	var check func(typ reflect.Type, m map[string]any, path string)
	check = func(typ reflect.Type, m map[string]any, path string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			v, ok := m[key]
			if !ok {
				t.Errorf("default.yaml does not set %s%s", path, key)
				continue
			}
			if f.Type.Kind() == reflect.Struct {
				sub, _ := v.(map[string]any)
				check(f.Type, sub, path+key+".")
			}
		}
	}
	check(reflect.TypeFor[Spec](), doc, "")
}

// TestExampleIsDefault keeps the commented example in deploy/ equal to the built-in spec.
func TestExampleIsDefault(t *testing.T) {
	s, err := Load(filepath.Join("..", "..", "deploy", "pipeline.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(s, want) {
		t.Errorf("deploy/pipeline.example.yaml = %+v\nDefault() = %+v", s, want)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	bad := filepath.Join(dir, "bad.yaml")
	big := filepath.Join(dir, "big.yaml")
	write := func(path, data string) {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(good, "name: loaded\n")
	write(bad, "name: loaded\nnmae: x\n")
	write(big, "name: x\n"+strings.Repeat("#\n", MaxSize))

	if s, err := Load(good); err != nil || s.Name != "loaded" {
		t.Errorf("Load(good) = %v, %v", s, err)
	}
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+":2: nmae: unknown field") {
		t.Errorf("Load(bad) error does not name the file and line: %v", err)
	}
	if _, err := Load(big); err == nil || err.Error() != big+": spec is larger than 1048576 bytes" {
		t.Errorf("Load(big) = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
}

func TestValidate(t *testing.T) {
	s := Default()
	if err := s.Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
	s.Detectors = append(s.Detectors, Detector{Algorithm: "spectest"})
	s.Ensemble.Threshold = 0
	err := s.Validate()
	want := "detectors[3].name: \"\" is not a valid name (1 to 64 characters of a-z, A-Z, 0-9, '.', '_', '-')\n" +
		"detectors[3].weight: must be greater than 0, got 0\n" +
		"ensemble.threshold: must be greater than 0 and at most 1, got 0"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
	if err := (&Spec{}).Validate(); err == nil {
		t.Error("the zero Spec validates")
	}
}

func TestTopic(t *testing.T) {
	s := Default()
	for _, tc := range []struct{ prefix, name, want string }{
		{"gonomaly.", "records", "gonomaly.records"},
		{"gonomaly.", "acme.sensors", "acme.sensors"},
		{"", "records", "records"},
		{"team-a.", "results", "team-a.results"},
	} {
		if got := s.Topic(tc.prefix, tc.name); got != tc.want {
			t.Errorf("Topic(%q, %q) = %q, want %q", tc.prefix, tc.name, got, tc.want)
		}
	}
}

func TestFieldErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		fe   FieldError
		want string
	}{
		{FieldError{File: "p.yaml", Line: 3, Path: "input.topic", Msg: "bad"}, "p.yaml:3: input.topic: bad"},
		{FieldError{File: "p.yaml", Line: 1, Msg: "spec is empty"}, "p.yaml:1: spec is empty"},
		{FieldError{File: "p.yaml", Path: "name", Msg: "bad"}, "p.yaml: name: bad"},
		{FieldError{Line: 3, Path: "name", Msg: "bad"}, "line 3: name: bad"},
		{FieldError{Path: "name", Msg: "bad"}, "name: bad"},
	} {
		if got := tc.fe.Error(); got != tc.want {
			t.Errorf("%+v formats as %q, want %q", tc.fe, got, tc.want)
		}
	}
}

// TestShippedSpecsParse: every spec shipped in deploy/ must load.
func TestShippedSpecsParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "deploy", "pipeline.*.yaml"))
	if err != nil || len(files) < 2 {
		t.Fatalf("shipped specs: %v %v", files, err)
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}
