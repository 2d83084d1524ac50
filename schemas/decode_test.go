package schemas

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"
)

// avroMsg builds a single-object message for schema id from raw body bytes, for inputs
// no encoder would write.
func avroMsg(id schemaID, body ...byte) []byte {
	return append(soeHeaders[id][:len(soeHeaders[id]):len(soeHeaders[id])], body...)
}

// zz is the Avro (zigzag varint) encoding of v.
func zz(v int64) []byte { return appendLong(nil, v) }

func cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// goavroRecord encodes r with goavro, with extra values that our encoder would also
// write but that decoders must reject (NaN, ±Inf).
func goavroRecord(t testing.TB, values map[string]float64) []byte {
	t.Helper()
	b, err := codecFor(t, schemaRecord).SingleFromNative(nil, recordNative(&Record{Values: values}))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRecordErrors(t *testing.T) {
	auto := RecordDecoder{SchemaIDs: map[uint32]bool{42: true}}
	jsonOnly := RecordDecoder{Format: FormatJSON}
	avroOnly := RecordDecoder{Format: FormatAvro}
	confluent := RecordDecoder{Format: FormatConfluent, SchemaIDs: map[uint32]bool{42: true}}
	fp := func(id schemaID) uint64 { return allSchemas[id].Fingerprint }
	valid := AppendRecordAvro(nil, &Record{Values: map[string]float64{"x": 1}})

	tests := []struct {
		name string
		dec  RecordDecoder
		in   []byte
		want string
	}{
		// JSON syntax
		{"empty", auto, nil, "empty message"},
		{"only whitespace", jsonOnly, []byte("  \n"), "json: unexpected end of input at byte 3"},
		{"truncated", auto, []byte(`{"series": "a", "values": {"cpu": 0.5`), "json: unexpected end of input at byte 37"},
		{"truncated in string", auto, []byte(`{"series": "ho`), "json: unexpected end of input at byte 14"},
		{"truncated in escape", auto, []byte(`{"series": "a\`), "json: unexpected end of input at byte 14"},
		{"truncated literal", auto, []byte(`{"series": nu`), "json: unexpected end of input at byte 13"},
		{"truncated number", auto, []byte(`{"values": {"x": 1.`), "json: unexpected end of input at byte 19"},
		{"missing colon", auto, []byte(`{"values" {}}`), "json: expected ':' after object key, got '{' at byte 10"},
		{"missing comma", auto, []byte(`{"series": "a" "values": {}}`), "json: expected ',' or '}' after object member, got '\"' at byte 15"},
		{"trailing comma", auto, []byte(`{"values": {"x": 1},}`), "json: expected string key, got '}' at byte 20"},
		{"unquoted key", auto, []byte(`{values: {}}`), "json: expected string key, got 'v' at byte 1"},
		{"trailing data", auto, []byte(`{"values": {"x": 1}} x`), "json: unexpected 'x' after the top-level object at byte 21"},
		{"two objects", auto, []byte(`{"values": {"x": 1}}{}`), "json: unexpected '{' after the top-level object at byte 20"},
		{"array", jsonOnly, []byte(`[1]`), "json: expected '{' at the start of a message, got '[' at byte 0"},
		{"bad literal", auto, []byte(`{"series": nope}`), "json: invalid literal, want null at byte 11"},
		{"control char in string", auto, []byte("{\"series\": \"a\nb\"}"), "json: invalid control character byte 0xa in string at byte 13"},
		{"bad escape", auto, []byte(`{"series": "a\qb"}`), "json: invalid escape 'q' in string at byte 13"},
		{"bad unicode escape", auto, []byte(`{"series": "\u12x4"}`), "json: invalid \\u escape at byte 16"},
		{"leading zero", auto, []byte(`{"values": {"x": 01}}`), "json: expected ',' or '}' after object member, got '1' at byte 18"},
		{"plus sign", auto, []byte(`{"values": {"x": +1}}`), "json: invalid value starting with '+' at byte 17"},
		{"bare dot", auto, []byte(`{"values": {"x": 1.e3}}`), "json: invalid number: no digits after '.' at byte 19"},
		{"empty exponent", auto, []byte(`{"values": {"x": 1e}}`), "json: invalid number: no digits in exponent at byte 19"},
		{"deep nesting", auto, []byte(`{"x": ` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`), "json: nesting deeper than 512 at byte 519"},

		// JSON fields
		{"values missing", auto, []byte(`{"series": "a"}`), "values: missing at byte 15"},
		{"values empty", auto, []byte(`{"values": {}}`), "values: must not be empty at byte 11"},
		{"values null", auto, []byte(`{"values": null}`), "values: must not be empty at byte 11"},
		{"values not an object", auto, []byte(`{"values": [1]}`), "values: expected an object, got array at byte 11"},
		{"value is a string", auto, []byte(`{"values": {"cpu": "abc"}}`), "values.cpu: expected a finite number, got string at byte 19"},
		{"value is null", auto, []byte(`{"values": {"cpu": null}}`), "values.cpu: expected a finite number, got null at byte 19"},
		{"value is a bool", auto, []byte(`{"values": {"cpu": true}}`), "values.cpu: expected a finite number, got boolean at byte 19"},
		{"value overflows", auto, []byte(`{"values": {"cpu": 1e999}}`), "values.cpu: not a finite number (1e999) at byte 19"},
		{"odd key quoted", auto, []byte(`{"values": {"a.b": "x"}}`), `values["a.b"]: expected a finite number, got string at byte 19`},
		{"tag not a string", auto, []byte(`{"values": {"x": 1}, "tags": {"dc": 1}}`), "tags.dc: expected a string, got number at byte 36"},
		{"tags not an object", auto, []byte(`{"values": {"x": 1}, "tags": "dc"}`), "tags: expected an object, got string at byte 29"},
		{"series not a string", auto, []byte(`{"series": 17, "values": {"x": 1}}`), "series: expected a string, got number at byte 11"},
		{"ts garbage", auto, []byte(`{"ts": "yesterday", "values": {"x": 1}}`), `ts: "yesterday" is neither RFC 3339 nor epoch milliseconds at byte 7`},
		{"ts without zone", auto, []byte(`{"ts": "2026-11-27T07:00:00", "values": {"x": 1}}`), `ts: "2026-11-27T07:00:00" is neither RFC 3339 nor epoch milliseconds at byte 7`},
		{"ts impossible date", auto, []byte(`{"ts": "2026-02-29T07:00:00Z", "values": {"x": 1}}`), `ts: "2026-02-29T07:00:00Z" is neither RFC 3339 nor epoch milliseconds at byte 7`},
		{"ts fractional ms", auto, []byte(`{"ts": 1.5, "values": {"x": 1}}`), "ts: 1.5 is not an integral number of epoch milliseconds at byte 7"},
		{"ts huge", auto, []byte(`{"ts": 1e20, "values": {"x": 1}}`), "ts: epoch milliseconds 1e20 outside years 0000-9999 at byte 7"},
		{"ts past year 9999", auto, []byte(`{"ts": 253402300800000, "values": {"x": 1}}`), "ts: epoch milliseconds 253402300800000 outside years 0000-9999 at byte 7"},
		{"ts bool", auto, []byte(`{"ts": true, "values": {"x": 1}}`), "ts: expected RFC 3339 string or epoch milliseconds, got boolean at byte 7"},

		// Framing
		{"unknown first byte", auto, []byte("xyz"), "unrecognised format: byte 0x78 at offset 0 is none of '{' (JSON), 0xc3 (Avro single-object), 0x00 (Confluent)"},
		{"whitespace then garbage", auto, []byte(" \n[1]"), "unrecognised format: byte 0x5b at offset 2 is none of '{' (JSON), 0xc3 (Avro single-object), 0x00 (Confluent)"},
		{"only whitespace auto", auto, []byte("  "), "unrecognised format: byte 0x20 at offset 1 is none of '{' (JSON), 0xc3 (Avro single-object), 0x00 (Confluent)"},
		{"avro into json", jsonOnly, valid, "json: expected '{' at the start of a message, got byte 0xc3 at byte 0"},
		{"json into avro", avroOnly, []byte(`{"values": {"x": 1}}`), "avro: bad single-object magic 0x7b 0x22 (want 0xc3 0x01)"},
		{"bad single-object magic", auto, []byte{0xC3, 0x02, 1, 2, 3, 4, 5, 6, 7, 8, 0}, "avro: bad single-object magic 0xc3 0x02 (want 0xc3 0x01)"},
		{"short single-object header", auto, []byte{0xC3, 0x01, 1, 2}, "avro: single-object header truncated (4 bytes)"},
		{"unknown fingerprint", auto, []byte{0xC3, 0x01, 0xef, 0xcd, 0xab, 0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0}, "avro: unknown schema fingerprint 0x0123456789abcdef"},
		{"features on records", auto, AppendFeatures(nil, sampleFeatures()), fmt.Sprintf("avro: schema fingerprint 0x%016x is io.gonomaly.Features, want io.gonomaly.Record", fp(schemaFeatures))},
		{"unknown schema id", auto, AppendRecordConfluent(nil, 7, sampleRecord()), "unknown schema id 7"},
		{"no schema ids configured", RecordDecoder{Format: FormatConfluent}, AppendRecordConfluent(nil, 42, sampleRecord()), "unknown schema id 42"},
		{"bad confluent magic", confluent, []byte{1, 0, 0, 0, 42, 0}, "confluent: bad magic byte 0x01 (want 0x00)"},
		{"short confluent header", auto, []byte{0, 0, 0}, "confluent: header truncated (3 bytes)"},
		{"unsupported format", RecordDecoder{Format: 9}, valid, "unsupported format Format(9)"},

		// Avro body
		{"NaN", auto, goavroRecord(t, map[string]float64{"cpu": math.NaN()}), "values.cpu: not a finite number (NaN)"},
		{"+Inf", auto, goavroRecord(t, map[string]float64{"cpu": math.Inf(1)}), "values.cpu: not a finite number (+Inf)"},
		{"-Inf", auto, goavroRecord(t, map[string]float64{"cpu": math.Inf(-1)}), "values.cpu: not a finite number (-Inf)"},
		{"avro values empty", auto, avroMsg(schemaRecord, 0, 0, 0, 0), "values: must not be empty"},
		{"truncated body", auto, valid[:len(valid)-4], "values: block count 1 runs past the end of input (8 bytes left)"},
		{"truncated double", auto, avroMsg(schemaRecord, 0, 0, 2, 2, 'x', 0, 0, 0, 0, 0, 0, 0), "values: unexpected end of input"},
		{"truncated tags", auto, avroMsg(schemaRecord, cat([]byte{0, 0}, zz(1), zz(1), []byte("x"), make([]byte, 8), []byte{0}, zz(1), zz(3), []byte("k"))...), "tags: length 3 runs past the end of input (1 byte left)"},
		{"missing terminator", auto, valid[:len(valid)-1], "tags: unexpected end of input"},
		{"trailing bytes", auto, append(valid[:len(valid):len(valid)], 0, 0), "avro: 2 trailing bytes after the record"},
		{"negative string length", auto, avroMsg(schemaRecord, cat(zz(1), zz(-5))...), "series: negative length -5"},
		{"huge string length", auto, avroMsg(schemaRecord, cat(zz(1), zz(1<<40), []byte("abc"))...), "series: length 1099511627776 runs past the end of input (3 bytes left)"},
		{"huge block count", auto, avroMsg(schemaRecord, cat([]byte{0, 0}, zz(1<<50), []byte("abc"))...), "values: block count 1125899906842624 runs past the end of input (3 bytes left)"},
		{"huge negative block count", auto, avroMsg(schemaRecord, cat([]byte{0, 0}, zz(-(1<<50)), zz(9), []byte("abc"))...), "values: block count 1125899906842624 runs past the end of input (3 bytes left)"},
		{"min int64 block count", auto, avroMsg(schemaRecord, cat([]byte{0, 0}, zz(math.MinInt64))...), "values: invalid block count -9223372036854775808"},
		{"negative block size", auto, avroMsg(schemaRecord, cat([]byte{0, 0}, zz(-1), zz(-9))...), "values: negative block size -9"},
		{"varint overflow", auto, avroMsg(schemaRecord, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), "series: varint overflows 64 bits"},
		{"unterminated varint", auto, avroMsg(schemaRecord, 0xff, 0xff), "series: unexpected end of input"},
		{"bad union index", auto, avroMsg(schemaRecord, cat(zz(2))...), "series: union index 2 out of range"},
		{"negative union index", auto, avroMsg(schemaRecord, cat([]byte{0}, zz(-1))...), "ts: union index -1 out of range"},
		{"avro ts out of range", auto, avroMsg(schemaRecord, cat([]byte{0}, zz(1), zz(math.MaxInt64))...), "ts: timestamp 9223372036854775807 outside years 0000-9999"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			err := tt.dec.Decode(tt.in, &r)
			if err == nil {
				t.Fatalf("no error, decoded %+v", r)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Errorf("error is %T, want *DecodeError", err)
			}
		})
	}
}

// TestForgedLengthsDoNotAllocate checks that lengths and counts are checked against the
// input before anything is allocated for them.
func TestForgedLengthsDoNotAllocate(t *testing.T) {
	inputs := [][]byte{
		avroMsg(schemaRecord, cat(zz(1), zz(1<<62))...),
		avroMsg(schemaRecord, cat([]byte{0, 0}, zz(1<<62))...),
		AppendFeatures(nil, &Features{})[:soeHeaderLen],
	}
	f := avroMsg(schemaFeatures, cat(zz(0), zz(0), zz(1<<40))...)
	inputs = append(inputs, f)
	var r Record
	var feat Features
	for _, in := range inputs {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 100 {
			_ = RecordDecoder{}.Decode(in, &r)
			_ = DecodeFeatures(in, &feat)
		}
		runtime.ReadMemStats(&after)
		// Only the error values are allocated: a few hundred bytes per call.
		if perCall := (after.TotalAlloc - before.TotalAlloc) / 200; perCall > 1024 {
			t.Errorf("%x: %d bytes allocated per decode", in, perCall)
		}
	}
}

func TestDecodeRecordJSON(t *testing.T) {
	one := map[string]float64{"x": 1}
	tests := []struct {
		name string
		in   string
		want Record
	}{
		{"rfc3339 Z", `{"ts": "2026-11-27T07:00:00Z", "values": {"x": 1}}`, Record{TS: 1795762800000, Values: one}},
		{"rfc3339 offset", `{"ts": "2026-11-27T08:30:00+01:30", "values": {"x": 1}}`, Record{TS: 1795762800000, Values: one}},
		{"rfc3339 negative offset", `{"ts": "2026-11-27T02:00:00-05:00", "values": {"x": 1}}`, Record{TS: 1795762800000, Values: one}},
		{"rfc3339 nanoseconds truncated", `{"ts": "2026-11-27T07:00:00.123999999Z", "values": {"x": 1}}`, Record{TS: 1795762800123, Values: one}},
		{"rfc3339 one fractional digit", `{"ts": "2026-11-27T07:00:00.5Z", "values": {"x": 1}}`, Record{TS: 1795762800500, Values: one}},
		{"rfc3339 lower case", `{"ts": "2026-11-27t07:00:00z", "values": {"x": 1}}`, Record{TS: 1795762800000, Values: one}},
		{"rfc3339 space", `{"ts": "2026-11-27 07:00:00Z", "values": {"x": 1}}`, Record{TS: 1795762800000, Values: one}},
		{"rfc3339 before 1970", `{"ts": "1969-12-31T23:59:59.999Z", "values": {"x": 1}}`, Record{TS: -1, Values: one}},
		{"leap day", `{"ts": "2024-02-29T00:00:00Z", "values": {"x": 1}}`, Record{TS: 1709164800000, Values: one}},
		{"epoch ms", `{"ts": 1795762800000, "values": {"x": 1}}`, Record{TS: 1795762800000, Values: one}},
		{"epoch ms exponent", `{"ts": 1.7957628e12, "values": {"x": 1}}`, Record{TS: 1795762800000, Values: one}},
		{"epoch ms negative", `{"ts": -1000, "values": {"x": 1}}`, Record{TS: -1000, Values: one}},
		{"ts null", `{"ts": null, "series": null, "tags": null, "values": {"x": 1}}`, Record{Values: one}},
		{"whitespace", " \n\t{ \"values\" : { \"x\" : 1 } , \"series\":\"s\" }\r\n", Record{Series: "s", Values: one}},
		{"unknown fields skipped", `{"meta": {"a": [1, {"b": "\u00e9\"]}"}], "c": null, "d": [true, false, -1.5e3]}, "values": {"x": 1}, "z": []}`, Record{Values: one}},
		{"escaped keys", `{"valu\u0065s": {"c\u0070u": 1}}`, Record{Values: map[string]float64{"cpu": 1}}},
		{"escapes", `{"series": "a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00", "values": {"x": 1}}`, Record{Series: "a\"b\\c/d\b\f\n\r\té😀", Values: one}},
		{"lone surrogates", `{"series": "\ud800x\udc00\ud800\u0041", "values": {"x": 1}}`, Record{Series: "\uFFFDx\uFFFD\uFFFDA", Values: one}},
		{"invalid utf-8", "{\"series\": \"a\xffb\xc3\", \"values\": {\"x\": 1}}", Record{Series: "a\uFFFDb\uFFFD", Values: one}},
		{"utf-8", `{"series": "日本語", "values": {"ü": 1}}`, Record{Series: "日本語", Values: map[string]float64{"ü": 1}}},
		{"duplicate key", `{"values": {"x": 1, "x": 2}}`, Record{Values: map[string]float64{"x": 2}}},
		{"numbers", `{"values": {"a": -0, "b": 1E3, "c": 0.5e-3, "d": 12345678901234567890, "e": 1e-400}}`,
			Record{Values: map[string]float64{"a": math.Copysign(0, -1), "b": 1000, "c": 0.0005, "d": 12345678901234567890, "e": 0}}},
		{"tags", `{"values": {"x": 1}, "tags": {"dc": "eu-1", "empty": ""}}`, Record{Values: one, Tags: map[string]string{"dc": "eu-1", "empty": ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Record
			if err := (RecordDecoder{}).Decode([]byte(tt.in), &r); err != nil {
				t.Fatal(err)
			}
			assertEqual(t, &r, &tt.want)
			// Through the other formats and back.
			for _, enc := range [][]byte{AppendRecordJSON(nil, &r), AppendRecordAvro(nil, &r), AppendRecordConfluent(nil, 1, &r)} {
				var again Record
				if err := (RecordDecoder{SchemaIDs: map[uint32]bool{1: true}}).Decode(enc, &again); err != nil {
					t.Fatalf("%q: %v", enc, err)
				}
				assertEqual(t, &again, &tt.want)
			}
		})
	}
}

// TestDecoderReuse decodes different messages into one value, as the stages do, and
// checks that nothing leaks from one message into the next.
func TestDecoderReuse(t *testing.T) {
	var r Record
	dec := RecordDecoder{}
	if err := dec.Decode(AppendRecordAvro(nil, sampleRecord()), &r); err != nil {
		t.Fatal(err)
	}
	for _, in := range [][]byte{[]byte(`{"values": {"y": 2}}`), AppendRecordAvro(nil, &Record{Values: map[string]float64{"y": 2}})} {
		if err := dec.Decode(in, &r); err != nil {
			t.Fatal(err)
		}
		assertEqual(t, &r, &Record{Values: map[string]float64{"y": 2}})
	}

	var f Features
	if err := DecodeFeatures(AppendFeatures(nil, sampleFeatures()), &f); err != nil {
		t.Fatal(err)
	}
	small := &Features{Series: "b", Names: []string{"cpu"}, Scaled: []float64{1}, Raw: []float64{2}, Pipeline: "default"}
	if err := DecodeFeatures(AppendFeatures(nil, small), &f); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, &f, small)

	var s Scores
	if err := DecodeScores(AppendScores(nil, sampleScores()), &s); err != nil {
		t.Fatal(err)
	}
	if err := DecodeScores(AppendScores(nil, &Scores{Series: "b"}), &s); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, &s, &Scores{Series: "b"})

	var res Result
	for _, in := range [][]byte{AppendResultAvro(nil, sampleResult()), AppendResultJSON(nil, sampleResult())} {
		if err := DecodeResult(in, &res); err != nil {
			t.Fatal(err)
		}
		if err := DecodeResult([]byte(`{"series": "b", "is_anomaly": false}`), &res); err != nil {
			t.Fatal(err)
		}
		assertEqual(t, &res, &Result{Series: "b"})
	}
}

// TestJavaFingerprint checks that single-object messages written by Java Avro, whose
// canonical form drops logical types, are read.
func TestJavaFingerprint(t *testing.T) {
	msg := AppendRecordAvro(nil, sampleRecord())
	binary.LittleEndian.PutUint64(msg[2:], javaFingerprints[schemaRecord])
	var r Record
	if err := (RecordDecoder{}).Decode(msg, &r); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, &r, sampleRecord())
	// The Java form of the Record schema, checked independently of goavro's rewrite.
	const javaCanonical = `{"name":"io.gonomaly.Record","type":"record","fields":[{"name":"series","type":["null","string"]},{"name":"ts","type":["null","long"]},{"name":"values","type":{"type":"map","values":"double"}},{"name":"tags","type":{"type":"map","values":"string"}}]}`
	if got := crc64Avro([]byte(javaCanonical)); got != javaFingerprints[schemaRecord] {
		t.Errorf("Java fingerprint %x, want %x", javaFingerprints[schemaRecord], got)
	}
}

func TestDecodeInternalErrors(t *testing.T) {
	fp := func(id schemaID) uint64 { return allSchemas[id].Fingerprint }
	mismatched := sampleFeatures()
	mismatched.Scaled = mismatched.Scaled[:1]
	rawShort := sampleFeatures()
	rawShort.Raw = nil
	scoresShort := sampleScores()
	scoresShort.Raw = append(scoresShort.Raw, 1)
	partition := AppendFeatures(nil, &Features{})
	// Replace the partition varint (zigzag 0) by 2^31.
	partition = cat(partition[:len(partition)-3], zz(1<<31), []byte{0, 0})
	badBool := AppendResultAvro(nil, &Result{})
	badBool[len(badBool)-1] = 2
	nanScore := sampleResult()
	nanScore.Score = math.NaN()
	infDetector := sampleResult()
	infDetector.Detectors["hst"] = math.Inf(-1)

	features := func(b []byte) error { var f Features; return DecodeFeatures(b, &f) }
	scores := func(b []byte) error { var s Scores; return DecodeScores(b, &s) }
	result := func(b []byte) error { var r Result; return DecodeResult(b, &r) }
	tests := []struct {
		name   string
		decode func([]byte) error
		in     []byte
		want   string
	}{
		{"features scaled mismatch", features, AppendFeatures(nil, mismatched), "scaled: has 1 items for 4 names"},
		{"features raw mismatch", features, AppendFeatures(nil, rawShort), "raw: has 0 items for 4 names"},
		{"features partition range", features, partition, "source.partition: int 2147483648 out of range"},
		{"features truncated", features, AppendFeatures(nil, sampleFeatures())[:40], "names: length 3 runs past the end of input (2 bytes left)"},
		{"features wrong schema", features, AppendScores(nil, sampleScores()), fmt.Sprintf("avro: schema fingerprint 0x%016x is io.gonomaly.Scores, want io.gonomaly.Features", fp(schemaScores))},
		{"features json", features, []byte(`{}`), "avro: single-object header truncated (2 bytes)"},
		{"scores raw mismatch", scores, AppendScores(nil, scoresShort), "raw: has 3 items for 2 names"},
		{"scores truncated", scores, AppendScores(nil, sampleScores())[:120], "detectors: block count 3 runs past the end of input (3 bytes left)"},
		{"scores wrong schema", scores, AppendFeatures(nil, sampleFeatures()), fmt.Sprintf("avro: schema fingerprint 0x%016x is io.gonomaly.Features, want io.gonomaly.Scores", fp(schemaFeatures))},
		{"result bad boolean", result, badBool, "is_anomaly: invalid boolean byte 0x02"},
		{"result NaN score", result, AppendResultAvro(nil, nanScore), "score: not a finite number (NaN)"},
		{"result -Inf detector", result, AppendAnomalyEventAvro(nil, infDetector), "detectors.hst: not a finite number (-Inf)"},
		{"result wrong schema", result, AppendRecordAvro(nil, sampleRecord()), fmt.Sprintf("avro: schema fingerprint 0x%016x is io.gonomaly.Record, want io.gonomaly.Result or io.gonomaly.AnomalyEvent", fp(schemaRecord))},
		{"result truncated avro", result, AppendResultAvro(nil, sampleResult())[:30], "event_id: length 32 runs past the end of input (19 bytes left)"},
		{"result truncated json", result, AppendResultJSON(nil, sampleResult())[:50], "json: unexpected end of input at byte 50"},
		{"result confluent", result, AppendRecordConfluent(nil, 1, sampleRecord()), "json: expected '{' at the start of a message, got byte 0x0 at byte 0"},
		{"result score string", result, []byte(`{"score": "high"}`), "score: expected a finite number, got string at byte 10"},
		{"result partition fraction", result, []byte(`{"source": {"partition": 1.5}}`), "source.partition: expected an integer in [-2147483648, 2147483647], got 1.5 at byte 25"},
		{"result offset string", result, []byte(`{"source": {"offset": "1"}}`), "source.offset: expected a number, got string at byte 22"},
		{"result is_anomaly string", result, []byte(`{"is_anomaly": "yes"}`), "is_anomaly: expected a boolean, got string at byte 15"},
		{"result detected_at garbage", result, []byte(`{"detected_at": "now"}`), `detected_at: "now" is neither RFC 3339 nor epoch milliseconds at byte 16`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.decode(tt.in)
			if err == nil {
				t.Fatal("no error")
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestDecodeResultJSON(t *testing.T) {
	// An AnomalyEvent (no is_anomaly) is an anomaly; unknown fields are ignored.
	in := `{"event_id": "e1", "series": "s", "ts": 1000, "score": 0.5, "threshold": 0.4, "severity": "warning",
		"detectors": {"hst": 0.5}, "contributions": null, "values": {"x": 1},
		"source": {"topic": "t", "partition": 2, "offset": 3, "leader_epoch": 9}, "pipeline": "p",
		"model_version": "m", "detected_at": "1970-01-01T00:00:02Z", "new_field": {"a": [1]}}`
	var r Result
	if err := DecodeResult([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	want := &Result{EventID: "e1", Series: "s", TS: 1000, Score: 0.5, Threshold: 0.4, Severity: "warning",
		Detectors: map[string]float64{"hst": 0.5}, Values: map[string]float64{"x": 1},
		Source: Source{Topic: "t", Partition: 2, Offset: 3}, Pipeline: "p", ModelVersion: "m", DetectedAt: 2000, IsAnomaly: true}
	assertEqual(t, &r, want)
}

// TestJSONNonFinite checks that no encoder writes NaN or Inf, which are not JSON.
func TestJSONNonFinite(t *testing.T) {
	r := sampleResult()
	r.Score, r.Threshold = math.NaN(), math.Inf(1)
	r.Detectors["hst"] = math.Inf(-1)
	got := string(AppendResultJSON(nil, r))
	if !strings.Contains(got, `"score":0,"threshold":0,`) || !strings.Contains(got, `"hst":0,`) {
		t.Errorf("non-finite numbers not clamped: %s", got)
	}
	rec := &Record{Values: map[string]float64{"x": math.NaN()}}
	if got := string(AppendRecordJSON(nil, rec)); got != `{"values":{"x":null}}` {
		t.Errorf("record: %s", got)
	}
}

func TestParseFormat(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Format
		err  string
	}{
		{"auto", FormatAuto, ""},
		{"json", FormatJSON, ""},
		{"AVRO", FormatAvro, ""},
		{"confluent", FormatConfluent, ""},
		{"xml", 0, `unknown format "xml" (want auto, json, avro or confluent)`},
		{"", 0, `unknown format "" (want auto, json, avro or confluent)`},
	} {
		got, err := ParseFormat(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseFormat(%q) error %v, want %s", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseFormat(%q) = %v, %v", tt.in, got, err)
		}
		text, err := got.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Format
		if err := back.UnmarshalText(text); err != nil || back != got || got.String() != string(text) {
			t.Errorf("%v: text %q, back %v, %v", got, text, back, err)
		}
	}
	if _, err := Format(7).MarshalText(); err == nil {
		t.Error("invalid format marshalled")
	}
}

// TestGoavroRejectsWhatWeReject sanity-checks a few forged inputs against goavro, so that
// our stricter decoding is not mistaken for an incompatibility.
func TestGoavroRejectsWhatWeReject(t *testing.T) {
	c := codecFor(t, schemaRecord)
	for _, in := range [][]byte{
		cat(zz(1), zz(1<<40), []byte("abc")),
		cat([]byte{0, 0}, zz(1<<50), []byte("abc")),
		cat(zz(2)),
	} {
		if _, _, err := c.NativeFromBinary(in); err == nil {
			t.Errorf("goavro accepts %x", in)
		}
	}
}
