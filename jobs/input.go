package jobs

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/schemas"
)

// LoadInput reads a job's rows: an uploaded dataset, inline rows, or a range of the
// records topic. cols names the matrix's columns; labels is nil unless a dataset has
// them. progress, when not nil, is called with the rows read so far. Errors name the
// input field at fault; an unknown dataset wraps ErrNotFound; Kafka failures are marked
// Transient.
func (s *Store) LoadInput(ctx context.Context, in Input, progress func(rowsRead int)) (X detectors.Matrix, labels []float64, cols []string, err error) {
	if progress == nil {
		progress = func(int) {}
	}
	hasRows := len(in.Rows) > 0 || in.InlineRows > 0
	sources := 0
	for _, set := range []bool{in.Dataset != "", hasRows, in.Records != nil} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return detectors.Matrix{}, nil, nil, fmt.Errorf("input: want exactly one of dataset, rows or records, got %d", sources)
	}
	seen := make(map[string]bool, len(in.Columns))
	for _, c := range in.Columns {
		if seen[c] {
			return detectors.Matrix{}, nil, nil, fmt.Errorf("input.columns: %q is named twice", c)
		}
		seen[c] = true
	}
	switch {
	case in.Dataset != "":
		d, ok := s.Datasets.Get(in.Dataset)
		if !ok {
			// Another replica may have stored it a moment ago.
			if err := s.Datasets.Sync(ctx); err != nil {
				return detectors.Matrix{}, nil, nil, Transient(err)
			}
			d, ok = s.Datasets.Get(in.Dataset)
		}
		if !ok {
			return detectors.Matrix{}, nil, nil, fmt.Errorf("input.dataset: dataset %q: %w", in.Dataset, ErrNotFound)
		}
		if _, _, err := d.selectColumns(in.Columns); err != nil {
			return detectors.Matrix{}, nil, nil, fmt.Errorf("input.columns: %w", err)
		}
		return s.ReadDataset(ctx, d, in.Columns, progress)
	case hasRows:
		X, cols, err := inlineMatrix(in)
		if err == nil {
			progress(X.Rows)
		}
		return X, nil, cols, err
	default:
		X, cols, err := s.loadRecords(ctx, *in.Records, in.Columns, progress)
		return X, nil, cols, err
	}
}

// inlineMatrix checks inline rows and copies them into a matrix.
func inlineMatrix(in Input) (detectors.Matrix, []string, error) {
	if len(in.Rows) == 0 {
		return detectors.Matrix{}, nil, fmt.Errorf("input.rows: the job's %d inline rows are missing (a status carries only their count)", in.InlineRows)
	}
	if len(in.Rows) > MaxInlineRows {
		return detectors.Matrix{}, nil, fmt.Errorf("input.rows: %d rows, more than the %d allowed inline (upload a dataset instead)", len(in.Rows), MaxInlineRows)
	}
	width := len(in.Rows[0])
	if width == 0 {
		return detectors.Matrix{}, nil, errors.New("input.rows[0]: empty row")
	}
	cols := in.Columns
	if len(cols) == 0 {
		cols = make([]string, width)
		for j := range cols {
			cols[j] = fmt.Sprintf("x%d", j)
		}
	} else if len(cols) != width {
		return detectors.Matrix{}, nil, fmt.Errorf("input.columns: %d names for rows of %d values", len(cols), width)
	}
	X := detectors.NewMatrix(len(in.Rows), width)
	for i, row := range in.Rows {
		if len(row) != width {
			return detectors.Matrix{}, nil, fmt.Errorf("input.rows[%d]: %d values, but row 0 has %d", i, len(row), width)
		}
		for j, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return detectors.Matrix{}, nil, fmt.Errorf("input.rows[%d][%d]: %v is not a finite number", i, j, v)
			}
		}
		copy(X.Row(i), row)
	}
	return X, slices.Clone(cols), nil
}

// recordRow is one kept record of a range, before the columns are known.
type recordRow struct {
	series    string
	ts        int64
	partition int32
	offset    int64
	values    map[string]float64
}

// loadRecords reads the records of some series with a timestamp in [From, To) from every
// partition of the records topic. Each partition is read from the first record the
// broker timestamped at or after From (a record reaches Kafka after it happened, so
// nothing earlier is in range) to the end it had when the read began: stopping at the
// first record past To would drop records that arrived late. Records that do not decode
// are skipped, as the pipeline sends them to the DLQ. The records topic is assumed not
// to be written transactionally (a control record at a partition's end would never be
// returned, and the read would wait for it).
//
// Rows are ordered by timestamp (then series, partition, offset). Every kept record
// must have a value for every column: a record without one is an error naming it,
// rather than a row with a hole that every detector would reject later. Columns are
// the given ones (extra values ignored), or the sorted union of every value name.
func (s *Store) loadRecords(ctx context.Context, rr RecordRange, columns []string, progress func(int)) (detectors.Matrix, []string, error) {
	switch {
	case len(rr.Series) == 0:
		return detectors.Matrix{}, nil, errors.New("input.records.series: name at least one series")
	case !rr.To.After(rr.From):
		return detectors.Matrix{}, nil, fmt.Errorf("input.records.to: %s is not after from (%s)", rr.To.Format(time.RFC3339), rr.From.Format(time.RFC3339))
	}
	if s.NewConsumer == nil {
		return detectors.Matrix{}, nil, errors.New("the job store has no consumer factory (Store.NewConsumer)")
	}
	series := make(map[string]bool, len(rr.Series))
	for _, name := range rr.Series {
		series[name] = true
	}
	from, to := rr.From.UnixMilli(), rr.To.UnixMilli()
	topic := s.Topics.Records
	adm := kadm.NewClient(s.Client)
	starts, err := adm.ListOffsetsAfterMilli(ctx, from, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return detectors.Matrix{}, nil, Transient(fmt.Errorf("offsets of %s at %s: %w", topic, rr.From.Format(time.RFC3339), err))
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return detectors.Matrix{}, nil, Transient(fmt.Errorf("end offsets of %s: %w", topic, err))
	}
	begin := map[int32]kgo.Offset{}
	stop := map[int32]int64{} // the offset after the last record to read, per partition
	ends.Each(func(e kadm.ListedOffset) {
		if st, ok := starts.Lookup(topic, e.Partition); ok && st.Offset >= 0 && st.Offset < e.Offset {
			begin[e.Partition] = kgo.NewOffset().At(st.Offset)
			stop[e.Partition] = e.Offset
		}
	})
	var kept []recordRow
	if len(begin) > 0 {
		cl, err := s.NewConsumer(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: begin}))
		if err != nil {
			return detectors.Matrix{}, nil, Transient(fmt.Errorf("consumer of %s: %w", topic, err))
		}
		defer cl.Close()
		dec := schemas.RecordDecoder{Format: schemas.FormatAuto}
		for len(stop) > 0 {
			fetches := cl.PollFetches(ctx)
			if err := ctx.Err(); err != nil {
				return detectors.Matrix{}, nil, err
			}
			if errs := fetches.Errors(); len(errs) > 0 {
				return detectors.Matrix{}, nil, Transient(fmt.Errorf("reading %s[%d]: %w", errs[0].Topic, errs[0].Partition, errs[0].Err))
			}
			fetches.EachRecord(func(r *kgo.Record) {
				end, reading := stop[r.Partition]
				if !reading || r.Offset >= end {
					return
				}
				if r.Offset == end-1 {
					delete(stop, r.Partition)
				}
				var rec schemas.Record
				if dec.Decode(r.Value, &rec) != nil {
					return
				}
				if rec.Series == "" {
					rec.Series = string(r.Key)
				}
				if rec.TS == 0 {
					rec.TS = r.Timestamp.UnixMilli()
				}
				if series[rec.Series] && rec.TS >= from && rec.TS < to {
					kept = append(kept, recordRow{series: rec.Series, ts: rec.TS, partition: r.Partition, offset: r.Offset, values: rec.Values})
				}
			})
			progress(len(kept))
		}
	}
	if len(kept) == 0 {
		return detectors.Matrix{}, nil, fmt.Errorf("input.records: no records of series %s with ts in [%s, %s)",
			strings.Join(rr.Series, ", "), rr.From.UTC().Format(time.RFC3339Nano), rr.To.UTC().Format(time.RFC3339Nano))
	}
	slices.SortFunc(kept, func(a, b recordRow) int {
		return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.series, b.series), cmp.Compare(a.partition, b.partition), cmp.Compare(a.offset, b.offset))
	})
	cols := slices.Clone(columns)
	if len(cols) == 0 {
		union := map[string]bool{}
		for _, k := range kept {
			for name := range k.values {
				union[name] = true
			}
		}
		for name := range union {
			cols = append(cols, name)
		}
		slices.Sort(cols)
	}
	X := detectors.NewMatrix(len(kept), len(cols))
	for i, k := range kept {
		row := X.Row(i)
		for j, c := range cols {
			v, ok := k.values[c]
			if !ok {
				return detectors.Matrix{}, nil, fmt.Errorf("input.records: the record of series %q at %s[%d] offset %d has no value %q (every record must have every column; name common ones in input.columns)",
					k.series, topic, k.partition, k.offset, c)
			}
			row[j] = v
		}
	}
	return X, cols, nil
}
