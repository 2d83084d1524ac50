package schemas

import (
	"bytes"
	"encoding/binary"
	"math"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
)

// These tests prove the hand-written Avro codecs byte-compatible with goavro, an
// independent implementation of the same .avsc files, in both directions.

func codecFor(t testing.TB, id schemaID) *goavro.Codec {
	t.Helper()
	c, err := goavro.NewCodec(allSchemas[id].Text)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tsNative(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func nativeTS(t testing.TB, v any) int64 {
	t.Helper()
	tm, ok := v.(time.Time)
	if !ok {
		t.Fatalf("timestamp decoded as %T, want time.Time", v)
	}
	return tm.UnixMilli()
}

func doubleMapNative(m map[string]float64) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func stringMapNative(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func nativeDoubleMap(v any) map[string]float64 {
	out := map[string]float64{}
	for k, x := range v.(map[string]any) {
		out[k] = x.(float64)
	}
	return out
}

func nativeStringMap(v any) map[string]string {
	out := map[string]string{}
	for k, x := range v.(map[string]any) {
		out[k] = x.(string)
	}
	return out
}

func stringsNative(a []string) []any {
	out := make([]any, len(a))
	for i, s := range a {
		out[i] = s
	}
	return out
}

func doublesNative(a []float64) []any {
	out := make([]any, len(a))
	for i, f := range a {
		out[i] = f
	}
	return out
}

func nativeStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func nativeDoubles(v any) []float64 {
	var out []float64
	for _, x := range v.([]any) {
		out = append(out, x.(float64))
	}
	return out
}

func sourceNative(s Source) map[string]any {
	return map[string]any{"topic": s.Topic, "partition": s.Partition, "offset": s.Offset}
}

func nativeSource(v any) Source {
	m := v.(map[string]any)
	return Source{Topic: m["topic"].(string), Partition: m["partition"].(int32), Offset: m["offset"].(int64)}
}

func recordNative(r *Record) map[string]any {
	n := map[string]any{"series": nil, "ts": nil, "values": doubleMapNative(r.Values), "tags": stringMapNative(r.Tags)}
	if r.Series != "" {
		n["series"] = goavro.Union("string", r.Series)
	}
	if r.TS != 0 {
		n["ts"] = goavro.Union("long.timestamp-millis", tsNative(r.TS))
	}
	return n
}

func nativeRecord(t testing.TB, v any) *Record {
	n := v.(map[string]any)
	r := &Record{Values: nativeDoubleMap(n["values"]), Tags: nativeStringMap(n["tags"])}
	if s, ok := n["series"].(map[string]any); ok {
		r.Series = s["string"].(string)
	}
	if ts, ok := n["ts"].(map[string]any); ok {
		r.TS = nativeTS(t, ts["long.timestamp-millis"])
	}
	return r
}

func featuresNative(f *Features) map[string]any {
	return map[string]any{
		"series": f.Series, "ts": tsNative(f.TS), "names": stringsNative(f.Names),
		"scaled": doublesNative(f.Scaled), "raw": doublesNative(f.Raw), "tags": stringMapNative(f.Tags),
		"source": sourceNative(f.Source), "pipeline": f.Pipeline,
	}
}

func nativeFeatures(t testing.TB, v any) *Features {
	n := v.(map[string]any)
	return &Features{
		Series: n["series"].(string), TS: nativeTS(t, n["ts"]), Names: nativeStrings(n["names"]),
		Scaled: nativeDoubles(n["scaled"]), Raw: nativeDoubles(n["raw"]), Tags: nativeStringMap(n["tags"]),
		Source: nativeSource(n["source"]), Pipeline: n["pipeline"].(string),
	}
}

func scoresNative(s *Scores) map[string]any {
	return map[string]any{
		"series": s.Series, "ts": tsNative(s.TS), "names": stringsNative(s.Names),
		"raw": doublesNative(s.Raw), "tags": stringMapNative(s.Tags), "source": sourceNative(s.Source),
		"pipeline": s.Pipeline, "model_version": s.ModelVersion,
		"detectors": doubleMapNative(s.Detectors), "contributions": doubleMapNative(s.Contributions),
	}
}

func nativeScores(t testing.TB, v any) *Scores {
	n := v.(map[string]any)
	return &Scores{
		Series: n["series"].(string), TS: nativeTS(t, n["ts"]), Names: nativeStrings(n["names"]),
		Raw: nativeDoubles(n["raw"]), Tags: nativeStringMap(n["tags"]), Source: nativeSource(n["source"]),
		Pipeline: n["pipeline"].(string), ModelVersion: n["model_version"].(string),
		Detectors: nativeDoubleMap(n["detectors"]), Contributions: nativeDoubleMap(n["contributions"]),
	}
}

func resultNative(r *Result, withIsAnomaly bool) map[string]any {
	n := map[string]any{
		"event_id": r.EventID, "series": r.Series, "ts": tsNative(r.TS), "score": r.Score,
		"threshold": r.Threshold, "severity": r.Severity, "detectors": doubleMapNative(r.Detectors),
		"contributions": doubleMapNative(r.Contributions), "values": doubleMapNative(r.Values),
		"source": sourceNative(r.Source), "pipeline": r.Pipeline, "model_version": r.ModelVersion,
		"detected_at": tsNative(r.DetectedAt),
	}
	if withIsAnomaly {
		n["is_anomaly"] = r.IsAnomaly
	}
	return n
}

func nativeResult(t testing.TB, v any) *Result {
	n := v.(map[string]any)
	r := &Result{
		EventID: n["event_id"].(string), Series: n["series"].(string), TS: nativeTS(t, n["ts"]),
		Score: n["score"].(float64), Threshold: n["threshold"].(float64), Severity: n["severity"].(string),
		Detectors: nativeDoubleMap(n["detectors"]), Contributions: nativeDoubleMap(n["contributions"]),
		Values: nativeDoubleMap(n["values"]), Source: nativeSource(n["source"]),
		Pipeline: n["pipeline"].(string), ModelVersion: n["model_version"].(string),
		DetectedAt: nativeTS(t, n["detected_at"]), IsAnomaly: true,
	}
	if b, ok := n["is_anomaly"]; ok {
		r.IsAnomaly = b.(bool)
	}
	return r
}

// maxMapLen is the largest map in v; goavro writes maps in Go's random order, so bytes
// can be compared exactly only when no map has two entries.
func maxMapLen(maps ...any) int {
	n := 0
	for _, m := range maps {
		switch m := m.(type) {
		case map[string]float64:
			n = max(n, len(m))
		case map[string]string:
			n = max(n, len(m))
		}
	}
	return n
}

// compatCase checks one value in both directions. encode and decode are ours; native is
// the goavro form of want, fromNative converts back.
type compatCase struct {
	name       string
	schema     schemaID
	ours       []byte
	native     map[string]any
	decode     func([]byte) (any, error)
	fromNative func(testing.TB, any) any
	want       any
	exactBytes bool
}

func runCompat(t *testing.T, c compatCase) {
	t.Run(c.name, func(t *testing.T) {
		codec := codecFor(t, c.schema)

		// ours → goavro
		native, rest, err := codec.NativeFromSingle(c.ours)
		if err != nil {
			t.Fatalf("goavro cannot read our encoding: %v", err)
		}
		if len(rest) != 0 {
			t.Fatalf("goavro left %d bytes", len(rest))
		}
		assertEqual(t, c.fromNative(t, native), c.want)

		// goavro → ours
		theirs, err := codec.SingleFromNative(nil, c.native)
		if err != nil {
			t.Fatalf("goavro encode: %v", err)
		}
		got, err := c.decode(theirs)
		if err != nil {
			t.Fatalf("we cannot read goavro's encoding: %v", err)
		}
		assertEqual(t, got, c.want)

		if c.exactBytes && !bytes.Equal(c.ours, theirs) {
			t.Errorf("bytes differ\nours:   %x\ngoavro: %x", c.ours, theirs)
		}
	})
}

func TestGoavroRecord(t *testing.T) {
	records := map[string]*Record{
		"sample":      sampleRecord(),
		"single":      {Series: "s", TS: -1, Values: map[string]float64{"v": math.MaxFloat64}, Tags: map[string]string{"k": "ü"}},
		"minimal":     {Values: map[string]float64{"x": -0.0}},
		"extreme ts":  {TS: maxTS, Values: map[string]float64{"x": math.SmallestNonzeroFloat64}},
		"earliest ts": {TS: minTS, Series: "日本", Values: map[string]float64{"": 1}},
	}
	for name, r := range records {
		runCompat(t, compatCase{
			name:   name,
			schema: schemaRecord,
			ours:   AppendRecordAvro(nil, r),
			native: recordNative(r),
			decode: func(b []byte) (any, error) {
				var got Record
				return &got, RecordDecoder{Format: FormatAvro}.Decode(b, &got)
			},
			fromNative: func(t testing.TB, v any) any { return nativeRecord(t, v) },
			want:       r,
			exactBytes: maxMapLen(r.Values, r.Tags) <= 1,
		})
	}
}

// TestGoavroConfluent checks the Confluent framing around goavro's binary body.
func TestGoavroConfluent(t *testing.T) {
	r := sampleRecord()
	codec := codecFor(t, schemaRecord)
	body, err := codec.BinaryFromNative(nil, recordNative(r))
	if err != nil {
		t.Fatal(err)
	}
	msg := binary.BigEndian.AppendUint32([]byte{0}, 7)
	msg = append(msg, body...)
	var got Record
	if err := (RecordDecoder{Format: FormatConfluent, SchemaIDs: map[uint32]bool{7: true}}).Decode(msg, &got); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, &got, r)

	ours := AppendRecordConfluent(nil, 7, r)
	if !bytes.Equal(ours[:5], []byte{0, 0, 0, 0, 7}) {
		t.Errorf("header %x", ours[:5])
	}
	native, rest, err := codec.NativeFromBinary(ours[5:])
	if err != nil || len(rest) != 0 {
		t.Fatalf("goavro: %v, %d bytes left", err, len(rest))
	}
	assertEqual(t, nativeRecord(t, native), r)
}

func TestGoavroFeatures(t *testing.T) {
	values := map[string]*Features{
		"sample": sampleFeatures(),
		"empty":  {},
		"single": {Series: "s", TS: 1, Names: []string{"a"}, Scaled: []float64{math.Inf(1)}, Raw: []float64{-1},
			Tags: map[string]string{"x": "y"}, Source: Source{Topic: "t", Partition: math.MaxInt32, Offset: math.MaxInt64}, Pipeline: "p"},
		"negative": {Source: Source{Partition: math.MinInt32, Offset: math.MinInt64}, TS: minTS},
	}
	for name, f := range values {
		runCompat(t, compatCase{
			name:   name,
			schema: schemaFeatures,
			ours:   AppendFeatures(nil, f),
			native: featuresNative(f),
			decode: func(b []byte) (any, error) {
				var got Features
				return &got, DecodeFeatures(b, &got)
			},
			fromNative: func(t testing.TB, v any) any { return nativeFeatures(t, v) },
			want:       f,
			exactBytes: maxMapLen(f.Tags) <= 1,
		})
	}
}

func TestGoavroScores(t *testing.T) {
	values := map[string]*Scores{
		"sample": sampleScores(),
		"empty":  {},
		"single": {Series: "s", TS: 99, Names: []string{"a"}, Raw: []float64{2}, Tags: map[string]string{"x": "y"},
			Source: Source{Topic: "t", Partition: 1, Offset: 2}, Pipeline: "p", ModelVersion: "m",
			Detectors: map[string]float64{"hst": math.NaN()}, Contributions: map[string]float64{"a": 1}},
	}
	for name, s := range values {
		// NaN is allowed on internal topics but never equals itself; compare its bits.
		if name == "single" {
			checkScoresNaN(t, s)
			continue
		}
		runCompat(t, compatCase{
			name:   name,
			schema: schemaScores,
			ours:   AppendScores(nil, s),
			native: scoresNative(s),
			decode: func(b []byte) (any, error) {
				var got Scores
				return &got, DecodeScores(b, &got)
			},
			fromNative: func(t testing.TB, v any) any { return nativeScores(t, v) },
			want:       s,
			exactBytes: maxMapLen(s.Tags, s.Detectors, s.Contributions) <= 1,
		})
	}
}

func checkScoresNaN(t *testing.T, s *Scores) {
	codec := codecFor(t, schemaScores)
	theirs, err := codec.SingleFromNative(nil, scoresNative(s))
	if err != nil {
		t.Fatal(err)
	}
	ours := AppendScores(nil, s)
	if !bytes.Equal(ours, theirs) {
		t.Errorf("bytes differ\nours:   %x\ngoavro: %x", ours, theirs)
	}
	var got Scores
	if err := DecodeScores(theirs, &got); err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(got.Detectors["hst"]) {
		t.Errorf("detectors.hst = %v, want NaN", got.Detectors["hst"])
	}
}

func TestGoavroResult(t *testing.T) {
	values := map[string]*Result{
		"sample": sampleResult(),
		"normal": normalResult(),
		"empty":  {},
		"single": {EventID: "e", Series: "s", TS: 5, Score: 1, Threshold: 0.5, Severity: "warning",
			Detectors: map[string]float64{"a": 1}, Contributions: map[string]float64{"b": 1}, Values: map[string]float64{"c": 1},
			Source: Source{Topic: "t", Partition: 2, Offset: 3}, Pipeline: "p", ModelVersion: "m", DetectedAt: 6, IsAnomaly: true},
	}
	for name, r := range values {
		exact := maxMapLen(r.Detectors, r.Contributions, r.Values) <= 1
		runCompat(t, compatCase{
			name:   "result/" + name,
			schema: schemaResult,
			ours:   AppendResultAvro(nil, r),
			native: resultNative(r, true),
			decode: decodeResultAny,
			fromNative: func(t testing.TB, v any) any {
				return nativeResult(t, v)
			},
			want:       r,
			exactBytes: exact,
		})
		// An AnomalyEvent has no is_anomaly and decodes as an anomaly.
		event := *r
		event.IsAnomaly = true
		runCompat(t, compatCase{
			name:       "anomaly_event/" + name,
			schema:     schemaAnomalyEvent,
			ours:       AppendAnomalyEventAvro(nil, r),
			native:     resultNative(r, false),
			decode:     decodeResultAny,
			fromNative: func(t testing.TB, v any) any { return nativeResult(t, v) },
			want:       &event,
			exactBytes: exact,
		})
	}
}

// TestFingerprints checks our single-object headers against goavro's and the Avro spec.
func TestFingerprints(t *testing.T) {
	for id := range numSchemas {
		codec := codecFor(t, id)
		s := allSchemas[id]
		if s.Fingerprint != codec.Rabin {
			t.Errorf("%s: fingerprint %x, goavro %x", s.Name, s.Fingerprint, codec.Rabin)
		}
		if got := crc64Avro([]byte(s.Canonical)); got != s.Fingerprint {
			t.Errorf("%s: independent CRC-64-AVRO %x, have %x", s.Name, got, s.Fingerprint)
		}
		soe, err := codec.SingleFromNative(nil, zeroNative(id))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(soe[:soeHeaderLen], soeHeaders[id][:]) {
			t.Errorf("%s: header %x, goavro %x", s.Name, soeHeaders[id], soe[:soeHeaderLen])
		}
	}
}

func zeroNative(id schemaID) map[string]any {
	switch id {
	case schemaRecord:
		return recordNative(&Record{})
	case schemaFeatures:
		return featuresNative(&Features{})
	case schemaScores:
		return scoresNative(&Scores{})
	case schemaResult:
		return resultNative(&Result{}, true)
	}
	return resultNative(&Result{}, false)
}

// crc64Avro is the fingerprint algorithm as the Avro specification gives it, written out
// independently of goavro.
func crc64Avro(buf []byte) uint64 {
	const empty = 0xc15d213aa4d7a795
	var table [256]uint64
	for i := range table {
		fp := uint64(i)
		for range 8 {
			fp = (fp >> 1) ^ (empty & -(fp & 1))
		}
		table[i] = fp
	}
	fp := uint64(empty)
	for _, b := range buf {
		fp = (fp >> 8) ^ table[byte(fp)^b]
	}
	return fp
}

// TestAvroBlocks reads maps and arrays split into several blocks, with the negative
// counts (followed by a byte size) that Java writers use; goavro must agree.
func TestAvroBlocks(t *testing.T) {
	entry := func(k string) []byte { return cat(zz(int64(len(k))), []byte(k), appendDouble(nil, 2.5)) }
	body := cat(
		[]byte{0, 0}, // series, ts: null
		zz(-2), zz(int64(len(entry("a"))+len(entry("b")))), entry("a"), entry("b"),
		zz(1), entry("c"),
		zz(0),
		zz(0), // tags
	)
	want := &Record{Values: map[string]float64{"a": 2.5, "b": 2.5, "c": 2.5}}
	var r Record
	if err := (RecordDecoder{}).Decode(avroMsg(schemaRecord, body...), &r); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, &r, want)
	native, _, err := codecFor(t, schemaRecord).NativeFromBinary(body)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, nativeRecord(t, native), want)

	features := cat(zz(1), []byte("s"), zz(0),
		zz(-1), zz(2), zz(1), []byte("a"), zz(1), zz(1), []byte("b"), zz(0), // names in two blocks
		zz(2), appendDouble(nil, 1), appendDouble(nil, 2), zz(0), // scaled
		zz(-2), zz(16), appendDouble(nil, 3), appendDouble(nil, 4), zz(0), // raw
		zz(0), zz(0), zz(0), zz(0), zz(0))
	wantF := &Features{Series: "s", Names: []string{"a", "b"}, Scaled: []float64{1, 2}, Raw: []float64{3, 4}}
	var f Features
	if err := DecodeFeatures(avroMsg(schemaFeatures, features...), &f); err != nil {
		t.Fatal(err)
	}
	assertEqual(t, &f, wantF)
	native, _, err = codecFor(t, schemaFeatures).NativeFromBinary(features)
	if err != nil {
		t.Fatal(err)
	}
	assertEqual(t, nativeFeatures(t, native), wantF)
}
