package schemas

import (
	"fmt"
	"testing"
)

// The pipeline's budget is 100k records/s on 2 cores with ~7 codec operations per record:
// well under 1µs per operation, with few allocations so that GC stays out of the way.

var designRecord = []byte(`{"series": "host-17", "ts": "2026-11-27T07:00:00Z", "values": {"cpu": 0.93, "mem": 0.41}, "tags": {"dc": "eu-1"}}`)

func benchDecodeRecord(b *testing.B, msg []byte) {
	dec := RecordDecoder{SchemaIDs: map[uint32]bool{1: true}}
	var r Record
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := dec.Decode(msg, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeRecordJSON(b *testing.B) { benchDecodeRecord(b, designRecord) }

func BenchmarkDecodeRecordJSONEpoch(b *testing.B) {
	benchDecodeRecord(b, []byte(`{"series":"host-17","ts":1795762800000,"values":{"cpu":0.93,"mem":0.41}}`))
}

func BenchmarkDecodeRecordAvro(b *testing.B) {
	var r Record
	if err := (RecordDecoder{}).Decode(designRecord, &r); err != nil {
		b.Fatal(err)
	}
	benchDecodeRecord(b, AppendRecordAvro(nil, &r))
}

func BenchmarkDecodeRecordConfluent(b *testing.B) {
	var r Record
	if err := (RecordDecoder{}).Decode(designRecord, &r); err != nil {
		b.Fatal(err)
	}
	benchDecodeRecord(b, AppendRecordConfluent(nil, 1, &r))
}

// BenchmarkGoavroDecodeRecord is the generic alternative, for comparison.
func BenchmarkGoavroDecodeRecord(b *testing.B) {
	var r Record
	if err := (RecordDecoder{}).Decode(designRecord, &r); err != nil {
		b.Fatal(err)
	}
	msg := AppendRecordAvro(nil, &r)
	c := codecFor(b, schemaRecord)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.NativeFromSingle(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func benchAppend(b *testing.B, enc func([]byte) []byte) {
	buf := enc(nil)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = enc(buf[:0])
	}
}

func BenchmarkAppendRecordJSON(b *testing.B) {
	r := sampleRecord()
	benchAppend(b, func(dst []byte) []byte { return AppendRecordJSON(dst, r) })
}

func BenchmarkAppendRecordAvro(b *testing.B) {
	r := sampleRecord()
	benchAppend(b, func(dst []byte) []byte { return AppendRecordAvro(dst, r) })
}

func BenchmarkAppendFeatures(b *testing.B) {
	f := sampleFeatures()
	benchAppend(b, func(dst []byte) []byte { return AppendFeatures(dst, f) })
}

func BenchmarkDecodeFeatures(b *testing.B) {
	msg := AppendFeatures(nil, sampleFeatures())
	var f Features
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeFeatures(msg, &f); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendScores(b *testing.B) {
	s := sampleScores()
	benchAppend(b, func(dst []byte) []byte { return AppendScores(dst, s) })
}

func BenchmarkDecodeScores(b *testing.B) {
	msg := AppendScores(nil, sampleScores())
	var s Scores
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeScores(msg, &s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendResultJSON(b *testing.B) {
	r := sampleResult()
	benchAppend(b, func(dst []byte) []byte { return AppendResultJSON(dst, r) })
}

func BenchmarkAppendResultAvro(b *testing.B) {
	r := sampleResult()
	benchAppend(b, func(dst []byte) []byte { return AppendResultAvro(dst, r) })
}

func benchDecodeResult(b *testing.B, msg []byte) {
	var r Result
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeResult(msg, &r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeResultJSON(b *testing.B) {
	benchDecodeResult(b, AppendResultJSON(nil, sampleResult()))
}
func BenchmarkDecodeResultAvro(b *testing.B) {
	benchDecodeResult(b, AppendResultAvro(nil, sampleResult()))
}

// BenchmarkDecodeRecordJSONMixed cycles through records of different series and values,
// as a partition's stream is: the series string is then allocated, feature names are not.
func BenchmarkDecodeRecordJSONMixed(b *testing.B) {
	msgs := make([][]byte, 64)
	for i := range msgs {
		msgs[i] = fmt.Appendf(nil, `{"series": "host-%d", "ts": "2026-11-27T07:%02d:00Z", "values": {"cpu": 0.%d, "mem": 0.41}, "tags": {"dc": "eu-%d"}}`, i, i%60, i, i%3)
	}
	var r Record
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := (RecordDecoder{}).Decode(msgs[i%len(msgs)], &r); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
