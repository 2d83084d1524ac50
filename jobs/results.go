package jobs

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
)

// ResultsChunkRows is how many rows of results one record of jobs.results holds: 10,000
// rows are about 80 KiB, so a page of results reads one or two records.
const ResultsChunkRows = 10_000

// Results chunk encoding, version 1 (little-endian):
//
//	version byte | first row uint64 | rows uint32 | rows × float64 score |
//	ceil(rows/8) bytes of is_anomaly bits, row i at bit i%8 of byte i/8, unused bits 0
const (
	resultsChunkVersion = 1
	resultsChunkHeader  = 1 + 8 + 4
)

// WriteResults stores a job's per-row scores and labels in jobs.results, keyed by the
// job ID, ResultsChunkRows rows a record, and says where they are. A NaN score is an
// error (it has no rank); Kafka failures are marked Transient.
func (s *Store) WriteResults(ctx context.Context, jobID string, scores []float64, anomalous []bool) (*ResultsLocation, error) {
	if len(scores) != len(anomalous) {
		return nil, fmt.Errorf("results of job %s: %d scores but %d anomaly flags", jobID, len(scores), len(anomalous))
	}
	for i, v := range scores {
		if math.IsNaN(v) {
			return nil, fmt.Errorf("results of job %s: row %d scored NaN", jobID, i)
		}
	}
	p := s.newChunkProducer(ctx, s.Topics.Results, jobID)
	var err error
	for first := 0; first < len(scores) && err == nil; first += ResultsChunkRows {
		end := min(first+ResultsChunkRows, len(scores))
		err = p.send(encodeResultsChunk(first, scores[first:end], anomalous[first:end]))
	}
	partition, offsets, werr := p.wait()
	if err == nil {
		err = werr
	}
	if err != nil {
		return nil, err
	}
	if offsets == nil {
		offsets, partition = []int64{}, 0
	}
	return &ResultsLocation{Partition: partition, Offsets: offsets, ChunkRows: ResultsChunkRows, Rows: len(scores)}, nil
}

// ReadResults reads rows [offset, offset+limit) of a job's results (fewer at the end),
// consuming only the chunks that hold them.
func (s *Store) ReadResults(ctx context.Context, loc ResultsLocation, offset, limit int) ([]ResultRow, error) {
	if offset < 0 || limit < 0 {
		return nil, fmt.Errorf("results offset %d and limit %d must not be negative", offset, limit)
	}
	if loc.Rows < 0 || (loc.Rows > 0 && loc.ChunkRows <= 0) {
		return nil, fmt.Errorf("results location of %d rows in chunks of %d is invalid", loc.Rows, loc.ChunkRows)
	}
	if offset >= loc.Rows || limit == 0 {
		return []ResultRow{}, nil
	}
	end := loc.Rows
	if limit < loc.Rows-offset {
		end = offset + limit
	}
	if want := (loc.Rows + loc.ChunkRows - 1) / loc.ChunkRows; len(loc.Offsets) != want {
		return nil, fmt.Errorf("results location of %d rows in chunks of %d has %d offsets, want %d", loc.Rows, loc.ChunkRows, len(loc.Offsets), want)
	}
	c0, c1 := offset/loc.ChunkRows, (end-1)/loc.ChunkRows
	chunkAt := make(map[int64]int, c1-c0+1)
	for c := c0; c <= c1; c++ {
		chunkAt[loc.Offsets[c]] = c
	}
	out := make([]ResultRow, end-offset)
	filled := 0
	err := s.readChunks(ctx, s.Topics.Results, loc.Partition, "", loc.Offsets[c0:c1+1], func(at int64, value []byte) error {
		c := chunkAt[at]
		ch, err := decodeResultsChunk(value)
		if err != nil {
			return fmt.Errorf("results chunk at offset %d: %w", at, err)
		}
		if first, rows := c*loc.ChunkRows, min(loc.ChunkRows, loc.Rows-c*loc.ChunkRows); ch.first != first || ch.rows != rows {
			return fmt.Errorf("results chunk at offset %d holds rows %d..%d, want %d..%d", at, ch.first, ch.first+ch.rows, first, first+rows)
		}
		for i := max(offset, ch.first); i < min(end, ch.first+ch.rows); i++ {
			k := i - ch.first
			out[i-offset] = ResultRow{Row: i, Score: ch.score(k), IsAnomaly: ch.anomalous(k)}
			filled++
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if filled != len(out) {
		return nil, fmt.Errorf("results chunks held %d of rows %d..%d", filled, offset, end)
	}
	return out, nil
}

func encodeResultsChunk(first int, scores []float64, anomalous []bool) []byte {
	n := len(scores)
	b := make([]byte, resultsChunkHeader, resultsChunkHeader+8*n+(n+7)/8)
	b[0] = resultsChunkVersion
	binary.LittleEndian.PutUint64(b[1:], uint64(first))
	binary.LittleEndian.PutUint32(b[9:], uint32(n))
	for _, v := range scores {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	bits := make([]byte, (n+7)/8)
	for i, a := range anomalous {
		if a {
			bits[i/8] |= 1 << (i % 8)
		}
	}
	return append(b, bits...)
}

type resultsChunk struct {
	first, rows int
	scores      []byte
	bits        []byte
}

func (c resultsChunk) score(i int) float64 {
	return math.Float64frombits(binary.LittleEndian.Uint64(c.scores[8*i:]))
}

func (c resultsChunk) anomalous(i int) bool { return c.bits[i/8]&(1<<(i%8)) != 0 }

func decodeResultsChunk(b []byte) (resultsChunk, error) {
	if len(b) < resultsChunkHeader {
		return resultsChunk{}, fmt.Errorf("chunk of %d bytes is shorter than its %d-byte header", len(b), resultsChunkHeader)
	}
	if b[0] != resultsChunkVersion {
		return resultsChunk{}, fmt.Errorf("chunk version %d is not supported (want %d)", b[0], resultsChunkVersion)
	}
	first := binary.LittleEndian.Uint64(b[1:])
	rows := int(binary.LittleEndian.Uint32(b[9:]))
	if rows == 0 || first > 1<<40 {
		return resultsChunk{}, fmt.Errorf("chunk of %d rows from row %d is out of range", rows, first)
	}
	body := b[resultsChunkHeader:]
	if want := 8*rows + (rows+7)/8; len(body) != want {
		return resultsChunk{}, fmt.Errorf("chunk of %d rows has %d bytes of rows, want %d", rows, len(body), want)
	}
	c := resultsChunk{first: int(first), rows: rows, scores: body[:8*rows], bits: body[8*rows:]}
	for i := range rows {
		if math.IsNaN(c.score(i)) {
			return resultsChunk{}, fmt.Errorf("row %d of the chunk scored NaN", c.first+i)
		}
	}
	if rem := rows % 8; rem != 0 && c.bits[len(c.bits)-1]>>rem != 0 {
		return resultsChunk{}, fmt.Errorf("chunk of %d rows has flags set past its last row", rows)
	}
	return c, nil
}
