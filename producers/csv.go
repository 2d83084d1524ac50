package producers

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/gonomaly/gonomaly/schemas"
)

// CSVConfig says how to read a CSV file's columns. Column names match the header
// exactly.
type CSVConfig struct {
	// SeriesColumn holds each row's series id. Series instead names the one series of
	// the whole file (NAB files hold one series each). With neither, a column named
	// "series" is used if there is one.
	SeriesColumn string
	Series       string
	// TimeColumn holds RFC 3339, "2006-01-02 15:04:05" (UTC, as in NAB) or epoch
	// seconds/ms/µs/ns told apart by magnitude. Default: the first of "timestamp",
	// "ts", "time" in the header; with none, records have no time (TS 0) and take the
	// Kafka timestamp downstream.
	TimeColumn string
	// ValueColumns become Values. Default: every other named column whose first data
	// row is numeric or empty.
	ValueColumns []string
	// TagColumns become Tags (empty cells omitted). Default: none.
	TagColumns []string
	// Comma is the field separator; default ','.
	Comma rune
}

// CSVSource reads records from a CSV file with a header row. Empty cells and NaN are
// missing values, left out of Values for the preprocess stage to fill; a row with no
// value at all is an error.
type CSVSource struct {
	cr        *csv.Reader
	width     int // header field count; every row must match
	series    string
	seriesAt  int // -1: fixed series
	seriesCol string
	timeAt    int // -1: no time column
	timeName  string
	values    []csvColumn
	tags      []csvColumn
	pending   []string // the first data row, read ahead to detect numeric columns
	pendLine  int64
	done      bool
}

type csvColumn struct {
	at   int
	name string
}

// NewCSVSource reads the header (and the first data row, to pick default value
// columns) and checks the config against it.
func NewCSVSource(r io.Reader, cfg CSVConfig) (*CSVSource, error) {
	cr := csv.NewReader(r)
	if cfg.Comma != 0 {
		cr.Comma = cfg.Comma
	}
	cr.FieldsPerRecord = -1 // ragged rows are reported by us, with the line
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, &InputError{Line: 1, Err: errors.New("empty input: a header row is required")}
	}
	if err != nil {
		return nil, csvReadError(err)
	}
	header = slices.Clone(header)
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff") // Excel's UTF-8 BOM
	}
	index := make(map[string]int, len(header))
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		if h == "" {
			continue
		}
		if _, dup := index[h]; dup {
			return nil, &InputError{Line: 1, Column: h, Err: errors.New("duplicate column")}
		}
		index[h] = i
	}
	find := func(role, name string) (int, error) {
		if i, ok := index[name]; ok {
			return i, nil
		}
		return 0, &InputError{Line: 1, Err: fmt.Errorf("%s column %q is not in the header", role, name)}
	}

	s := &CSVSource{cr: cr, width: len(header), seriesAt: -1, timeAt: -1}
	used := make(map[int]bool)
	switch {
	case cfg.SeriesColumn != "" && cfg.Series != "":
		return nil, errors.New("csv: set SeriesColumn or Series, not both")
	case cfg.Series != "":
		s.series = cfg.Series
	case cfg.SeriesColumn != "":
		if s.seriesAt, err = find("series", cfg.SeriesColumn); err != nil {
			return nil, err
		}
	default:
		i, ok := index["series"]
		if !ok {
			return nil, errors.New(`csv: no series: set SeriesColumn or Series, or add a "series" column`)
		}
		s.seriesAt = i
	}
	if s.seriesAt >= 0 {
		s.seriesCol = header[s.seriesAt]
		used[s.seriesAt] = true
	}

	if cfg.TimeColumn != "" {
		if s.timeAt, err = find("time", cfg.TimeColumn); err != nil {
			return nil, err
		}
	} else {
		for _, name := range []string{"timestamp", "ts", "time"} {
			if i, ok := index[name]; ok {
				s.timeAt = i
				break
			}
		}
	}
	if s.timeAt >= 0 {
		s.timeName = header[s.timeAt]
		used[s.timeAt] = true
	}

	for _, name := range cfg.TagColumns {
		i, err := find("tag", name)
		if err != nil {
			return nil, err
		}
		s.tags = append(s.tags, csvColumn{i, name})
		used[i] = true
	}

	// Read one row ahead: the default value columns are the numeric ones.
	row, err := cr.Read()
	switch {
	case err == io.EOF:
		s.done = true
	case err != nil:
		return nil, csvReadError(err)
	default:
		line, _ := cr.FieldPos(0)
		s.pending, s.pendLine = slices.Clone(row), int64(line)
	}

	if len(cfg.ValueColumns) > 0 {
		for _, name := range cfg.ValueColumns {
			i, err := find("value", name)
			if err != nil {
				return nil, err
			}
			if used[i] {
				return nil, fmt.Errorf("csv: column %q is used twice", name)
			}
			s.values = append(s.values, csvColumn{i, name})
			used[i] = true
		}
	} else {
		for i, name := range header {
			if name == "" || used[i] {
				continue // unnamed columns are usually a dataframe's index
			}
			if s.pending != nil && i < len(s.pending) {
				if _, _, err := parseValueCell(s.pending[i]); err != nil {
					continue
				}
			}
			s.values = append(s.values, csvColumn{i, name})
		}
		if len(s.values) == 0 {
			return nil, errors.New("csv: no numeric value columns")
		}
	}
	return s, nil
}

// Next fills r with the next row. An *InputError names the bad line (and column); the
// source has moved past it.
func (s *CSVSource) Next(r *schemas.Record) error {
	var row []string
	var line int64
	switch {
	case s.pending != nil:
		row, line = s.pending, s.pendLine
		s.pending = nil
	case s.done:
		return io.EOF
	default:
		var err error
		row, err = s.cr.Read()
		if err == io.EOF {
			s.done = true
			return io.EOF
		}
		if err != nil {
			return csvReadError(err)
		}
		l, _ := s.cr.FieldPos(0)
		line = int64(l)
	}
	if len(row) != s.width {
		return &InputError{Line: line, Err: fmt.Errorf("%d fields, the header has %d", len(row), s.width)}
	}

	resetRecord(r)
	r.Series = s.series
	if s.seriesAt >= 0 {
		r.Series = strings.TrimSpace(row[s.seriesAt])
		if r.Series == "" {
			return &InputError{Line: line, Column: s.seriesCol, Err: errors.New("empty series")}
		}
		r.Series = strings.Clone(r.Series) // don't pin the whole row's backing string
	}
	if s.timeAt >= 0 {
		ts, err := parseTimeCell(strings.TrimSpace(row[s.timeAt]))
		if err != nil {
			return &InputError{Line: line, Column: s.timeName, Err: err}
		}
		r.TS = ts
	}
	for _, c := range s.values {
		v, ok, err := parseValueCell(row[c.at])
		if err != nil {
			return &InputError{Line: line, Column: c.name, Err: err}
		}
		if ok {
			r.Values[c.name] = v
		}
	}
	if len(r.Values) == 0 {
		// Downstream decoders reject a record without values; say so here, with the line.
		return &InputError{Line: line, Err: errors.New("no values: every value cell is empty")}
	}
	for _, c := range s.tags {
		if v := strings.TrimSpace(row[c.at]); v != "" {
			if r.Tags == nil {
				r.Tags = make(map[string]string, len(s.tags))
			}
			r.Tags[c.name] = strings.Clone(v)
		}
	}
	return nil
}

// parseValueCell returns the cell's number, or ok=false for a missing value (empty or
// NaN). Infinities are errors: values must be finite.
func parseValueCell(cell string) (v float64, ok bool, err error) {
	cell = strings.TrimSpace(cell)
	if cell == "" {
		return 0, false, nil
	}
	v, err = strconv.ParseFloat(cell, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return 0, false, fmt.Errorf("%q is out of range", cell)
		}
		return 0, false, fmt.Errorf("%q is not a number", cell)
	}
	if math.IsNaN(v) {
		return 0, false, nil
	}
	if math.IsInf(v, 0) {
		return 0, false, fmt.Errorf("%q is not a finite number", cell)
	}
	return v, true, nil
}

// csvReadError turns encoding/csv's errors into InputErrors with the line; anything
// else (an I/O error) passes through as fatal.
func csvReadError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		// The line the record starts on: where an unclosed quote was opened.
		return &InputError{Line: int64(pe.StartLine), Err: pe.Err}
	}
	return err
}
