package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// Fuzz properties: decoders never panic, fail only with *DecodeError, and whatever they
// accept re-encodes (in every format the type has) to bytes that decode to the same value.
// Encodings are canonical (sorted maps, one block), so "the same value" is checked as
// "the same bytes", which also compares NaNs and -0 exactly.

const fuzzSchemaID = 42

func recordSeeds() [][]byte {
	minimal := &Record{Values: map[string]float64{"x": 1}}
	return [][]byte{
		AppendRecordJSON(nil, sampleRecord()),
		AppendRecordAvro(nil, sampleRecord()),
		AppendRecordConfluent(nil, fuzzSchemaID, sampleRecord()),
		AppendRecordJSON(nil, minimal),
		AppendRecordAvro(nil, minimal),
		[]byte(`{"series": "host-17", "ts": "2026-11-27T07:00:00Z", "values": {"cpu": 0.93, "mem": 0.41}, "tags": {"dc": "eu-1"}}`),
		[]byte(`{"ts": 1795762800000, "values": {"cpu": -1.5e-3}, "extra": [1, {"a": null}, "\u00e9"]}`),
		[]byte(`{"series": "a\"b\\\ud83d\ude00\ud800", "ts": "2026-11-27T08:00:00.123456+01:00", "values": {"x": 1e308}}`),
		[]byte(" \n{\"values\":{\"x\":0}}\n"),
		// Java-style writers split maps into blocks with negative counts and byte sizes.
		avroMsg(schemaRecord, cat([]byte{0, 0}, zz(-1), zz(10), zz(1), []byte("a"), make([]byte, 8), zz(1), zz(1), []byte("b"), make([]byte, 8), []byte{0, 0})...),
		[]byte(`{"values": {"cpu": "abc"}}`),
		[]byte(`{"series": "a", "values": {"cpu": 0.5`),
	}
}

func featuresSeeds() [][]byte {
	return [][]byte{
		AppendFeatures(nil, sampleFeatures()),
		AppendFeatures(nil, &Features{}),
		AppendFeatures(nil, &Features{Names: []string{"a"}, Scaled: []float64{math.NaN()}, Raw: []float64{math.Inf(-1)}}),
		avroMsg(schemaFeatures, cat(zz(1), []byte("s"), zz(2), zz(-1), zz(2), zz(1), []byte("a"), zz(0), zz(1), make([]byte, 8), zz(0), zz(1), make([]byte, 8), zz(0), zz(0), zz(0), zz(0), zz(0), zz(0))...),
	}
}

func scoresSeeds() [][]byte {
	return [][]byte{
		AppendScores(nil, sampleScores()),
		AppendScores(nil, &Scores{}),
		AppendScores(nil, &Scores{Detectors: map[string]float64{"hst": math.NaN()}}),
	}
}

func resultSeeds() [][]byte {
	return [][]byte{
		AppendResultJSON(nil, sampleResult()),
		AppendResultAvro(nil, sampleResult()),
		AppendAnomalyEventJSON(nil, sampleResult()),
		AppendAnomalyEventAvro(nil, sampleResult()),
		AppendResultJSON(nil, normalResult()),
		AppendResultAvro(nil, &Result{}),
		[]byte(`{"event_id": "e", "ts": 5, "source": {"partition": -1, "offset": 1e3}, "is_anomaly": false, "x": {}}`),
	}
}

// TestWriteFuzzCorpus writes the seeds as files in Go's corpus format, so that plain
// `go test` runs them and `-fuzz` starts from them. It runs only with -update.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*update {
		t.Skip("run with -update to rewrite testdata/fuzz seeds")
	}
	for name, seeds := range map[string][][]byte{
		"FuzzDecodeRecord":   recordSeeds(),
		"FuzzDecodeFeatures": featuresSeeds(),
		"FuzzDecodeScores":   scoresSeeds(),
		"FuzzDecodeResult":   resultSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, b := range seeds {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %T %v is not a *DecodeError", err, err)
	}
	if msg := err.Error(); msg == "" || !utf8.ValidString(de.Field) {
		t.Fatalf("bad error %q", msg)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	for _, s := range recordSeeds() {
		f.Add(s)
	}
	dec := RecordDecoder{SchemaIDs: map[uint32]bool{fuzzSchemaID: true}}
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := dec.Decode(b, &r); err != nil {
			checkDecodeError(t, err)
			return
		}
		if len(r.Values) == 0 || r.TS < minTS || r.TS > maxTS {
			t.Fatalf("invalid record accepted: %+v", r)
		}
		for k, v := range r.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) || !utf8.ValidString(k) {
				t.Fatalf("invalid value %q=%v accepted", k, v)
			}
		}
		canonical := AppendRecordAvro(nil, &r)
		for _, enc := range [][]byte{AppendRecordJSON(nil, &r), canonical, AppendRecordConfluent(nil, fuzzSchemaID, &r)} {
			// Decode into a dirty value too: reuse must not leak old fields.
			for _, into := range []*Record{{}, sampleRecord()} {
				if err := dec.Decode(enc, into); err != nil {
					t.Fatalf("re-encoded %q: %v", enc, err)
				}
				if again := AppendRecordAvro(nil, into); !bytes.Equal(again, canonical) {
					t.Fatalf("round trip through %q changed the value:\n%+v\n%+v", enc, r, *into)
				}
			}
		}
	})
}

func FuzzDecodeFeatures(f *testing.F) {
	for _, s := range featuresSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v Features
		if err := DecodeFeatures(b, &v); err != nil {
			checkDecodeError(t, err)
			return
		}
		if len(v.Scaled) != len(v.Names) || len(v.Raw) != len(v.Names) {
			t.Fatalf("misaligned features accepted: %+v", v)
		}
		canonical := AppendFeatures(nil, &v)
		for _, into := range []*Features{{}, sampleFeatures()} {
			if err := DecodeFeatures(canonical, into); err != nil {
				t.Fatal(err)
			}
			if again := AppendFeatures(nil, into); !bytes.Equal(again, canonical) {
				t.Fatalf("round trip changed the value:\n%+v\n%+v", v, *into)
			}
		}
	})
}

func FuzzDecodeScores(f *testing.F) {
	for _, s := range scoresSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v Scores
		if err := DecodeScores(b, &v); err != nil {
			checkDecodeError(t, err)
			return
		}
		canonical := AppendScores(nil, &v)
		for _, into := range []*Scores{{}, sampleScores()} {
			if err := DecodeScores(canonical, into); err != nil {
				t.Fatal(err)
			}
			if again := AppendScores(nil, into); !bytes.Equal(again, canonical) {
				t.Fatalf("round trip changed the value:\n%+v\n%+v", v, *into)
			}
		}
	})
}

func FuzzDecodeResult(f *testing.F) {
	for _, s := range resultSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var v Result
		if err := DecodeResult(b, &v); err != nil {
			checkDecodeError(t, err)
			return
		}
		canonical := AppendResultAvro(nil, &v)
		event := v
		event.IsAnomaly = true
		eventCanonical := AppendResultAvro(nil, &event)
		for _, tt := range []struct {
			enc  []byte
			want []byte
		}{
			{AppendResultJSON(nil, &v), canonical},
			{canonical, canonical},
			{AppendAnomalyEventJSON(nil, &v), eventCanonical},
			{AppendAnomalyEventAvro(nil, &v), eventCanonical},
		} {
			for _, into := range []*Result{{}, sampleResult()} {
				if err := DecodeResult(tt.enc, into); err != nil {
					t.Fatalf("re-encoded %q: %v", tt.enc, err)
				}
				if again := AppendResultAvro(nil, into); !bytes.Equal(again, tt.want) {
					t.Fatalf("round trip through %q changed the value:\n%+v\n%+v", tt.enc, v, *into)
				}
			}
		}
	})
}
