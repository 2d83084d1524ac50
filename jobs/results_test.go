package jobs

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gonomaly/gonomaly/internal/testkit"
)

func TestWriteAndReadResults(t *testing.T) {
	store, brokers := chunkTestStore(t, 3)
	ctx := chunkTestCtx(t)
	const n = 3*ResultsChunkRows + 1234
	scores := make([]float64, n)
	anomalous := make([]bool, n)
	for i := range scores {
		scores[i] = math.Sin(float64(i))
		anomalous[i] = scores[i] > 0.9
	}
	scores[17] = math.Inf(1) // some detectors score a point unlike any other +Inf
	loc, err := store.WriteResults(ctx, "job_r", scores, anomalous)
	if err != nil {
		t.Fatal(err)
	}
	if loc.Rows != n || loc.ChunkRows != ResultsChunkRows || len(loc.Offsets) != 4 {
		t.Fatalf("location %+v", loc)
	}
	check := func(offset, limit, wantLen int) {
		t.Helper()
		rows, err := store.ReadResults(ctx, *loc, offset, limit)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != wantLen {
			t.Fatalf("[%d, +%d): %d rows, want %d", offset, limit, len(rows), wantLen)
		}
		for k, r := range rows {
			i := offset + k
			if r.Row != i || r.Score != scores[i] || r.IsAnomaly != anomalous[i] {
				t.Fatalf("[%d, +%d): row %d is %+v, want score %v anomalous %t", offset, limit, i, r, scores[i], anomalous[i])
			}
		}
	}
	check(0, 10, 10)
	check(9_995, 10, 10)                                        // across a chunk boundary
	check(ResultsChunkRows, ResultsChunkRows, ResultsChunkRows) // exactly one chunk
	check(0, n, n)                                              // all of them
	check(n-5, 1000, 5)                                         // past the end: what is there
	check(n, 10, 0)
	check(5, 0, 0)
	if rows, err := store.ReadResults(ctx, *loc, n+100, 10); err != nil || rows == nil || len(rows) != 0 {
		t.Fatalf("past the end: %v, %v", rows, err)
	}
	if _, err := store.ReadResults(ctx, *loc, -1, 10); err == nil {
		t.Fatal("negative offset accepted")
	}
	// The chunks are keyed by the job and all in the location's partition.
	chunks := testkit.ReadN(t, brokers, store.Topics.Results, len(loc.Offsets), 10*time.Second)
	if len(chunks) != len(loc.Offsets) {
		t.Fatalf("%d chunks in %s, want %d", len(chunks), store.Topics.Results, len(loc.Offsets))
	}
	for _, r := range chunks {
		if string(r.Key) != "job_r" || r.Partition != loc.Partition {
			t.Fatalf("chunk keyed %q in partition %d, location says %d", r.Key, r.Partition, loc.Partition)
		}
	}

	// A location that does not match the chunks is an error, never wrong rows.
	bad := *loc
	bad.Offsets = slices.Clone(loc.Offsets)
	bad.Offsets[1], bad.Offsets[2] = bad.Offsets[2], bad.Offsets[1]
	if _, err := store.ReadResults(ctx, bad, ResultsChunkRows, 10); err == nil || !strings.Contains(err.Error(), "holds rows 20000..30000, want 10000..20000") {
		t.Fatalf("swapped offsets: %v", err)
	}
	bad.Offsets = loc.Offsets[:3]
	if _, err := store.ReadResults(ctx, bad, 0, 10); err == nil || !strings.Contains(err.Error(), "has 3 offsets, want 4") {
		t.Fatalf("missing offset: %v", err)
	}
}

func TestWriteResultsRejects(t *testing.T) {
	store, _ := chunkTestStore(t, 1)
	ctx := chunkTestCtx(t)
	if _, err := store.WriteResults(ctx, "job_x", []float64{1, 2}, []bool{true}); err == nil || !strings.Contains(err.Error(), "2 scores but 1 anomaly flags") {
		t.Fatalf("length mismatch: %v", err)
	}
	if _, err := store.WriteResults(ctx, "job_x", []float64{1, math.NaN()}, []bool{true, false}); err == nil || !strings.Contains(err.Error(), "row 1 scored NaN") {
		t.Fatalf("NaN: %v", err)
	}
	loc, err := store.WriteResults(ctx, "job_empty", nil, nil)
	if err != nil || loc.Rows != 0 || len(loc.Offsets) != 0 {
		t.Fatalf("no rows: %+v, %v", loc, err)
	}
	if rows, err := store.ReadResults(ctx, *loc, 0, 10); err != nil || len(rows) != 0 {
		t.Fatalf("reading no rows: %v, %v", rows, err)
	}
}

func TestResultsChunkCodec(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 16, 10_000} {
		scores := make([]float64, n)
		flags := make([]bool, n)
		for i := range n {
			scores[i] = float64(i) - 0.5
			flags[i] = i%3 == 0
		}
		b := encodeResultsChunk(42, scores, flags)
		c, err := decodeResultsChunk(b)
		if err != nil {
			t.Fatalf("%d rows: %v", n, err)
		}
		if c.first != 42 || c.rows != n {
			t.Fatalf("%d rows: decoded first %d, rows %d", n, c.first, c.rows)
		}
		for i := range n {
			if c.score(i) != scores[i] || c.anomalous(i) != flags[i] {
				t.Fatalf("%d rows: row %d is %v %t", n, i, c.score(i), c.anomalous(i))
			}
		}
	}
	good := encodeResultsChunk(0, []float64{1, 2, 3}, []bool{true, false, true})
	for _, tc := range []struct {
		name string
		b    []byte
		msg  string
	}{
		{"empty", nil, "shorter than its 13-byte header"},
		{"version", append([]byte{9}, good[1:]...), "version 9"},
		{"truncated", good[:len(good)-1], "has 24 bytes of rows, want 25"},
		{"stray flag", append(slices.Clone(good[:len(good)-1]), 0b1000_0101), "flags set past its last row"},
		{"NaN", encodeResultsChunk(0, []float64{math.NaN()}, []bool{false}), "scored NaN"},
		{"no rows", encodeResultsChunk(0, nil, nil), "out of range"},
	} {
		if _, err := decodeResultsChunk(tc.b); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.msg)
		}
	}
}

// FuzzResultsChunk: the decoder never panics, and what it accepts is the canonical
// encoding of what it decoded.
func FuzzResultsChunk(f *testing.F) {
	f.Add(encodeResultsChunk(0, []float64{1, 2, 3}, []bool{true, false, true}))
	f.Add(encodeResultsChunk(10_000, []float64{math.Inf(-1), 0, 5, 6, 7, 8, 9, 10, 11}, make([]bool, 9)))
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeResultsChunk(b)
		if err != nil {
			return
		}
		scores := make([]float64, c.rows)
		flags := make([]bool, c.rows)
		for i := range c.rows {
			scores[i], flags[i] = c.score(i), c.anomalous(i)
		}
		if again := encodeResultsChunk(c.first, scores, flags); !bytes.Equal(again, b) {
			t.Fatalf("%x decoded, but its rows encode as %x", b, again)
		}
	})
}
