package schemas

import (
	"bytes"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

const goldenDir = "testdata/golden"

// The fixtures exercise what can go wrong on the wire: several map entries (sort order),
// non-ASCII and characters that need escaping, negative and large numbers.

func sampleRecord() *Record {
	return &Record{
		Series: "host-17",
		TS:     1795762800123, // 2026-11-27T07:00:00.123Z
		Values: map[string]float64{"cpu": 0.93, "mem": 0.41, "disk.io": 1.5e-7, "net": -12345678.25},
		Tags:   map[string]string{"dc": "eu-1", "owner": "Zoë \"ops\"\n\t<team>"},
	}
}

func sampleSource() Source {
	return Source{Topic: "gonomaly.records", Partition: 3, Offset: 12345}
}

func sampleFeatures() *Features {
	return &Features{
		Series:   "host-17",
		TS:       1795762800123,
		Names:    []string{"cpu", "disk.io", "mem", "net"},
		Scaled:   []float64{1.25, -0.5, 0, 3e10},
		Raw:      []float64{0.93, 1.5e-7, 0.41, -12345678.25},
		Tags:     map[string]string{"dc": "eu-1", "rack": "r7"},
		Source:   sampleSource(),
		Pipeline: "default",
	}
}

func sampleScores() *Scores {
	return &Scores{
		Series:        "host-17",
		TS:            1795762800123,
		Names:         []string{"cpu", "mem"},
		Raw:           []float64{0.93, 0.41},
		Tags:          map[string]string{"dc": "eu-1"},
		Source:        sampleSource(),
		Pipeline:      "default",
		ModelVersion:  "hst-2026-11-27T06:00:00Z",
		Detectors:     map[string]float64{"hst": 0.71, "zscore": 4.2, "lof": 1.9},
		Contributions: map[string]float64{"cpu": 0.81, "mem": 0.19},
	}
}

func sampleResult() *Result {
	return &Result{
		EventID:       "gonomaly.records/3/12345/default",
		Series:        "host-17",
		TS:            1795762800123,
		Score:         0.97,
		Threshold:     0.9,
		Severity:      "critical",
		Detectors:     map[string]float64{"hst": 0.95, "zscore": 0.99},
		Contributions: map[string]float64{"cpu": 0.81, "mem": 0.19},
		Values:        map[string]float64{"cpu": 0.93, "mem": 0.41},
		Source:        sampleSource(),
		Pipeline:      "default",
		ModelVersion:  "v7",
		DetectedAt:    1795762800456,
		IsAnomaly:     true,
	}
}

// normalize makes nil and empty maps and slices compare equal: decoders reuse or leave
// them nil, and neither the wire formats nor the pipeline tell them apart.
func normalize(v any) any {
	rv := reflect.ValueOf(v).Elem()
	out := reflect.New(rv.Type()).Elem()
	out.Set(rv)
	for i := 0; i < out.NumField(); i++ {
		f := out.Field(i)
		if (f.Kind() == reflect.Map || f.Kind() == reflect.Slice) && f.Len() == 0 {
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return out.Interface()
}

func assertEqual(t *testing.T, got, want any) {
	t.Helper()
	if g, w := normalize(got), normalize(want); !reflect.DeepEqual(g, w) {
		t.Errorf("decoded value differs\n got: %+v\nwant: %+v", g, w)
	}
}

// checkGolden compares got with the golden file, or rewrites it with -update. Binary
// encodings are stored as hex dumps so that reviews can read them.
func checkGolden(t *testing.T, name string, got []byte, binary bool) {
	t.Helper()
	text := got
	if binary {
		name += ".hex"
		text = []byte(hex.Dump(got))
	}
	path := filepath.Join(goldenDir, name)
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, text, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./schemas -update to create it)", err)
	}
	if !bytes.Equal(text, want) {
		t.Errorf("%s differs from the golden file (go test ./schemas -update rewrites it)\n got: %s\nwant: %s", path, text, want)
	}
}

func TestGolden(t *testing.T) {
	confluentRecord := RecordDecoder{SchemaIDs: map[uint32]bool{42: true}}
	tests := []struct {
		file   string
		binary bool
		encode func() []byte
		decode func(b []byte) (any, error)
		want   any
	}{
		{
			file:   "record.json",
			encode: func() []byte { return AppendRecordJSON(nil, sampleRecord()) },
			decode: func(b []byte) (any, error) {
				var r Record
				return &r, RecordDecoder{Format: FormatJSON}.Decode(b, &r)
			},
			want: sampleRecord(),
		},
		{
			file:   "record.avro",
			binary: true,
			encode: func() []byte { return AppendRecordAvro(nil, sampleRecord()) },
			decode: func(b []byte) (any, error) {
				var r Record
				return &r, RecordDecoder{Format: FormatAvro}.Decode(b, &r)
			},
			want: sampleRecord(),
		},
		{
			file:   "record.confluent",
			binary: true,
			encode: func() []byte { return AppendRecordConfluent(nil, 42, sampleRecord()) },
			decode: func(b []byte) (any, error) {
				var r Record
				return &r, confluentRecord.Decode(b, &r)
			},
			want: sampleRecord(),
		},
		{
			file:   "record_minimal.json",
			encode: func() []byte { return AppendRecordJSON(nil, &Record{Values: map[string]float64{"x": 1}}) },
			decode: func(b []byte) (any, error) {
				var r Record
				return &r, RecordDecoder{}.Decode(b, &r)
			},
			want: &Record{Values: map[string]float64{"x": 1}},
		},
		{
			file:   "record_minimal.avro",
			binary: true,
			encode: func() []byte { return AppendRecordAvro(nil, &Record{Values: map[string]float64{"x": 1}}) },
			decode: func(b []byte) (any, error) {
				var r Record
				return &r, RecordDecoder{}.Decode(b, &r)
			},
			want: &Record{Values: map[string]float64{"x": 1}},
		},
		{
			file:   "features.avro",
			binary: true,
			encode: func() []byte { return AppendFeatures(nil, sampleFeatures()) },
			decode: func(b []byte) (any, error) {
				var f Features
				return &f, DecodeFeatures(b, &f)
			},
			want: sampleFeatures(),
		},
		{
			file:   "scores.avro",
			binary: true,
			encode: func() []byte { return AppendScores(nil, sampleScores()) },
			decode: func(b []byte) (any, error) {
				var s Scores
				return &s, DecodeScores(b, &s)
			},
			want: sampleScores(),
		},
		{
			file:   "result.json",
			encode: func() []byte { return AppendResultJSON(nil, sampleResult()) },
			decode: decodeResultAny,
			want:   sampleResult(),
		},
		{
			file:   "result_normal.json",
			encode: func() []byte { return AppendResultJSON(nil, normalResult()) },
			decode: decodeResultAny,
			want:   normalResult(),
		},
		{
			file:   "result.avro",
			binary: true,
			encode: func() []byte { return AppendResultAvro(nil, sampleResult()) },
			decode: decodeResultAny,
			want:   sampleResult(),
		},
		{
			file:   "anomaly_event.json",
			encode: func() []byte { return AppendAnomalyEventJSON(nil, sampleResult()) },
			decode: decodeResultAny,
			want:   sampleResult(),
		},
		{
			file:   "anomaly_event.avro",
			binary: true,
			encode: func() []byte { return AppendAnomalyEventAvro(nil, sampleResult()) },
			decode: decodeResultAny,
			want:   sampleResult(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got := tt.encode()
			checkGolden(t, tt.file, got, tt.binary)
			v, err := tt.decode(got)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			assertEqual(t, v, tt.want)
		})
	}
}

func normalResult() *Result {
	r := sampleResult()
	r.Score, r.Severity, r.IsAnomaly = 0.12, "none", false
	r.Contributions = nil
	return r
}

func decodeResultAny(b []byte) (any, error) {
	var r Result
	return &r, DecodeResult(b, &r)
}

// TestGoldenSchemas pins each schema's canonical form and fingerprint: a change to an
// .avsc file changes the bytes every consumer sees, and should be deliberate.
func TestGoldenSchemas(t *testing.T) {
	var b strings.Builder
	for _, s := range Schemas() {
		fmt.Fprintf(&b, "%s (%s)\nfingerprint 0x%016x\n%s\n\n", s.Name, s.File, s.Fingerprint, s.Canonical)
	}
	b.WriteString("Java Avro reduces logical types to their primitive in canonical forms; also accepted:\n")
	for id, fp := range javaFingerprints {
		fmt.Fprintf(&b, "%s 0x%016x\n", allSchemas[id].Name, fp)
	}
	checkGolden(t, "schemas.txt", []byte(b.String()), false)
}

// TestDesignExample decodes the record from DESIGN.md verbatim.
func TestDesignExample(t *testing.T) {
	in := `{"series": "host-17", "ts": "2026-11-27T07:00:00Z", "values": {"cpu": 0.93, "mem": 0.41}, "tags": {"dc": "eu-1"}}`
	var r Record
	if err := (RecordDecoder{}).Decode([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	want := &Record{Series: "host-17", TS: 1795762800000, Values: map[string]float64{"cpu": 0.93, "mem": 0.41}, Tags: map[string]string{"dc": "eu-1"}}
	assertEqual(t, &r, want)
}
