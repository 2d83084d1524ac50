package jobs

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
)

// Dataset formats: the two an upload may have, and the one of a matrix stored by a job.
const (
	FormatCSV    = "csv"
	FormatNDJSON = "ndjson"
	// FormatMatrix is a dataset a job wrote (PutDataset), not parsed from text.
	FormatMatrix = "matrix"
)

// Limits of an uploaded dataset.
const (
	// MaxDatasetColumns bounds the columns of a dataset, so that one row always fits in a
	// chunk.
	MaxDatasetColumns = 10_000
	// MaxDatasetLineBytes bounds one line of an upload: a body without line breaks must
	// not make the reader hold it whole.
	MaxDatasetLineBytes = 1 << 20
	// maxColumnNameBytes bounds the header, which goes whole into the dataset's
	// description on datasets.index (a single record, under the broker's 1 MB limit).
	maxColumnNameBytes = 256 << 10
	// maxChunkBytes keeps every chunk record well under the broker's default
	// max.message.bytes (1 MB).
	maxChunkBytes = 512 << 10
	// chunksInFlight bounds the chunks produced but not yet acknowledged: what an upload
	// holds besides the chunk it is filling (4 × 512 KiB): enough to keep a broker a
	// round trip away busy.
	chunksInFlight = 4
)

// DatasetError is bad input in a dataset: where it is and what is wrong. Line is
// 1-based; Column names the column at fault, when one is.
type DatasetError struct {
	Line   int
	Column string
	Msg    string
}

func (e *DatasetError) Error() string {
	if e.Column != "" {
		return fmt.Sprintf("line %d, column %q: %s", e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
}

// UploadDataset stores a CSV or NDJSON dataset read from r. It reads r as it arrives:
// rows are parsed, encoded into chunks and produced to the datasets topic while the
// next ones are read, with at most chunksInFlight chunks awaiting the broker, so an
// upload of any size needs a few MiB. Once every chunk is acknowledged, the dataset's
// description goes to datasets.index and into the Datasets view.
//
// Bad input is a *DatasetError; errors reading r are returned as they come; Kafka failures
// are marked Transient. After an error nothing describes the dataset: chunks already
// written are orphans that no reader can find, and the datasets topic's retention
// removes them.
func (s *Store) UploadDataset(ctx context.Context, r io.Reader, format, name string) (Dataset, error) {
	hr := &hashingReader{r: r, h: sha256.New()}
	id := NewID("ds")
	var w *datasetWriter
	cols, labels, rows, err := scanDataset(hr, format, func(cols []string, labels bool) {
		w = s.newDatasetWriter(ctx, id, len(cols), labels, nil)
	}, func(row []float64, label float64) error {
		return w.add(row, label)
	})
	if w != nil {
		partition, offsets, werr := w.finish()
		if err == nil {
			err = werr
		}
		if err == nil {
			d := Dataset{
				ID: id, Name: name, Format: format, Rows: rows, Columns: cols, Labels: labels,
				Hash: "sha256:" + hex.EncodeToString(hr.h.Sum(nil)), Bytes: hr.n,
				CreatedAt: time.Now().UTC(), Partition: partition, Offsets: offsets,
			}
			return d, s.describeDataset(ctx, d)
		}
	}
	return Dataset{}, err
}

// PutDataset stores a matrix as a dataset, as UploadDataset stores an upload: a
// preprocess job's output. Labels are nil or one 0/1 per row. Its Hash is of the encoded
// chunks, and Bytes their size.
func (s *Store) PutDataset(ctx context.Context, name, source string, columns []string, X detectors.Matrix, labels []float64) (Dataset, error) {
	if err := X.Check(); err != nil {
		return Dataset{}, fmt.Errorf("dataset %q: %w", name, err)
	}
	if len(columns) != X.Cols {
		return Dataset{}, fmt.Errorf("dataset %q: %d column names for %d columns", name, len(columns), X.Cols)
	}
	if X.Cols > MaxDatasetColumns {
		return Dataset{}, fmt.Errorf("dataset %q: %d columns, more than the %d allowed", name, X.Cols, MaxDatasetColumns)
	}
	seen := make(map[string]bool, len(columns))
	for j, c := range columns {
		switch {
		case c == "":
			return Dataset{}, fmt.Errorf("dataset %q: column %d has no name", name, j)
		case strings.EqualFold(c, "label"):
			return Dataset{}, fmt.Errorf("dataset %q: column %d is named %q, which is reserved for labels (pass them apart)", name, j, c)
		case seen[c]:
			return Dataset{}, fmt.Errorf("dataset %q: column %q appears twice", name, c)
		}
		seen[c] = true
	}
	if labels != nil && len(labels) != X.Rows {
		return Dataset{}, fmt.Errorf("dataset %q: %d labels for %d rows", name, len(labels), X.Rows)
	}
	for i, v := range X.Data {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return Dataset{}, fmt.Errorf("dataset %q: row %d, column %q: %v is not a finite number", name, i/X.Cols, columns[i%X.Cols], v)
		}
	}
	for i, l := range labels {
		if l != 0 && l != 1 {
			return Dataset{}, fmt.Errorf("dataset %q: label of row %d is %v, not 0 or 1", name, i, l)
		}
	}
	h := sha256.New()
	var size int64
	id := NewID("ds")
	w := s.newDatasetWriter(ctx, id, X.Cols, labels != nil, func(chunk []byte) {
		h.Write(chunk)
		size += int64(len(chunk))
	})
	var err error
	for i := 0; i < X.Rows && err == nil; i++ {
		label := 0.0
		if labels != nil {
			label = labels[i]
		}
		err = w.add(X.Row(i), label)
	}
	partition, offsets, werr := w.finish()
	if err = cmp.Or(err, werr); err != nil {
		return Dataset{}, err
	}
	d := Dataset{
		ID: id, Name: name, Format: FormatMatrix, Rows: X.Rows, Columns: slices.Clone(columns), Labels: labels != nil,
		Hash: "sha256:" + hex.EncodeToString(h.Sum(nil)), Bytes: size, CreatedAt: time.Now().UTC(),
		Source: source, Partition: partition, Offsets: offsets,
	}
	return d, s.describeDataset(ctx, d)
}

// describeDataset writes a stored dataset's description to datasets.index, and to this
// process's view once the broker has it.
func (s *Store) describeDataset(ctx context.Context, d Dataset) error {
	b, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode dataset %s: %w", d.ID, err)
	}
	rec := &kgo.Record{Topic: s.Topics.DatasetIndex, Key: []byte(d.ID), Value: b}
	if err := s.Client.ProduceSync(ctx, rec).FirstErr(); err != nil {
		return Transient(fmt.Errorf("describe dataset %s in %s: %w", d.ID, s.Topics.DatasetIndex, err))
	}
	s.Datasets.Apply(d)
	return nil
}

// ReadDataset reads a dataset's rows back from its chunks, keeping the given columns in
// that order (all of them when columns is empty). labels is nil unless the dataset has
// them. progress, when not nil, is called with the rows read so far after each chunk.
func (s *Store) ReadDataset(ctx context.Context, d Dataset, columns []string, progress func(rowsRead int)) (X detectors.Matrix, labels []float64, cols []string, err error) {
	sel, cols, err := d.selectColumns(columns)
	if err != nil {
		return detectors.Matrix{}, nil, nil, err
	}
	if d.Rows <= 0 || len(d.Offsets) == 0 {
		return detectors.Matrix{}, nil, nil, fmt.Errorf("dataset %s has no rows", d.ID)
	}
	X = detectors.NewMatrix(d.Rows, len(sel))
	if d.Labels {
		labels = make([]float64, d.Rows)
	}
	type span struct{ first, rows int }
	spans := make([]span, 0, len(d.Offsets))
	read := 0
	err = s.readChunks(ctx, s.Topics.Datasets, d.Partition, d.ID, d.Offsets, func(at int64, value []byte) error {
		c, err := decodeDatasetChunk(value)
		if err != nil {
			return fmt.Errorf("dataset %s, chunk at offset %d: %w", d.ID, at, err)
		}
		if c.cols != len(d.Columns) || c.first+c.rows > d.Rows || (c.labels != nil) != d.Labels {
			return fmt.Errorf("dataset %s, chunk at offset %d: rows %d..%d of %d columns (labels %t) do not fit the description (%d rows of %d columns, labels %t)",
				d.ID, at, c.first, c.first+c.rows, c.cols, c.labels != nil, d.Rows, len(d.Columns), d.Labels)
		}
		for i := range c.rows {
			row := X.Row(c.first + i)
			for k, j := range sel {
				row[k] = c.value(i, j)
			}
			if labels != nil {
				labels[c.first+i] = float64(c.labels[i])
			}
		}
		spans = append(spans, span{c.first, c.rows})
		read += c.rows
		if progress != nil {
			progress(read)
		}
		return nil
	})
	if err != nil {
		return detectors.Matrix{}, nil, nil, err
	}
	// The chunks must tile the rows exactly: a gap or an overlap is a corrupt description.
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.first, b.first) })
	next := 0
	for _, sp := range spans {
		if sp.first != next {
			return detectors.Matrix{}, nil, nil, fmt.Errorf("dataset %s: its chunks do not cover row %d exactly once", d.ID, min(next, sp.first))
		}
		next += sp.rows
	}
	if next != d.Rows {
		return detectors.Matrix{}, nil, nil, fmt.Errorf("dataset %s: its chunks hold %d rows, its description says %d", d.ID, next, d.Rows)
	}
	return X, labels, cols, nil
}

// selectColumns resolves column names to positions in the dataset; none means all.
func (d Dataset) selectColumns(columns []string) (sel []int, names []string, err error) {
	if len(columns) == 0 {
		sel = make([]int, len(d.Columns))
		for j := range sel {
			sel[j] = j
		}
		return sel, slices.Clone(d.Columns), nil
	}
	seen := make(map[string]bool, len(columns))
	for _, c := range columns {
		j := slices.Index(d.Columns, c)
		if j < 0 {
			return nil, nil, fmt.Errorf("unknown column %q (dataset %s has %s)", c, d.ID, listNames(d.Columns))
		}
		if seen[c] {
			return nil, nil, fmt.Errorf("column %q is selected twice", c)
		}
		seen[c] = true
		sel = append(sel, j)
	}
	return sel, slices.Clone(columns), nil
}

// listNames quotes the first few names of a list for an error message.
func listNames(names []string) string {
	const show = 10
	q := make([]string, 0, min(len(names), show))
	for _, n := range names[:min(len(names), show)] {
		q = append(q, strconv.Quote(n))
	}
	s := strings.Join(q, ", ")
	if len(names) > show {
		s += fmt.Sprintf(" and %d more", len(names)-show)
	}
	return s
}

// hashingReader hashes and counts the bytes read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

// scanDataset parses a CSV or NDJSON dataset, calling begin once with the feature
// columns and whether there are labels, then each for every row (row is reused between
// calls). Bad input is a *DatasetError; an error from r or from each is returned as is.
func scanDataset(r io.Reader, format string, begin func(cols []string, labels bool), each func(row []float64, label float64) error) (cols []string, labels bool, rows int, err error) {
	lr := &lineReader{br: bufio.NewReaderSize(r, 64<<10)}
	var rr rowReader
	switch format {
	case FormatCSV:
		rr, err = newCSVRows(lr)
	case FormatNDJSON:
		rr, err = newNDJSONRows(lr)
	default:
		return nil, false, 0, fmt.Errorf("unknown dataset format %q (want csv or ndjson)", format)
	}
	if err != nil {
		return nil, false, 0, err
	}
	cols, labels = rr.columns()
	begin(cols, labels)
	row := make([]float64, len(cols))
	for {
		label, err := rr.next(row)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, false, rows, err
		}
		if err := each(row, label); err != nil {
			return nil, false, rows, err
		}
		rows++
	}
	if rows == 0 {
		return nil, false, 0, &DatasetError{Line: lr.line + 1, Msg: "no rows: want at least one row of values"}
	}
	return cols, labels, rows, nil
}

// rowReader reads the rows of one text format.
type rowReader interface {
	// columns are the feature names, in row order, and whether rows have a label.
	columns() ([]string, bool)
	// next fills row with the next row's features and returns its label; io.EOF after
	// the last row.
	next(row []float64) (label float64, err error)
}

// lineReader reads lines of at most MaxDatasetLineBytes and counts them.
type lineReader struct {
	br   *bufio.Reader
	line int    // the number of the line last returned
	long []byte // assembles a line longer than br's buffer
}

// next returns the next line without its line ending, or io.EOF; the slice is valid
// until the next call. Read errors are returned as they come.
func (lr *lineReader) next() ([]byte, error) {
	lr.long = lr.long[:0]
	for {
		frag, err := lr.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if len(lr.long)+len(frag) > MaxDatasetLineBytes {
				return nil, &DatasetError{Line: lr.line + 1, Msg: fmt.Sprintf("line longer than %d bytes", MaxDatasetLineBytes)}
			}
			lr.long = append(lr.long, frag...)
			continue
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		line := frag
		if len(lr.long) > 0 {
			lr.long = append(lr.long, frag...)
			line = lr.long
		}
		if err == io.EOF && len(line) == 0 {
			return nil, io.EOF
		}
		line = bytes.TrimSuffix(line, []byte("\n"))
		if len(line) > MaxDatasetLineBytes {
			return nil, &DatasetError{Line: lr.line + 1, Msg: fmt.Sprintf("line longer than %d bytes", MaxDatasetLineBytes)}
		}
		lr.line++
		line = bytes.TrimSuffix(line, []byte("\r"))
		if lr.line == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff")) // a UTF-8 byte order mark, as Excel writes
		}
		return line, nil
	}
}

// nextNonBlank skips lines of only white space, as encoding/csv does.
func (lr *lineReader) nextNonBlank() ([]byte, error) {
	for {
		line, err := lr.next()
		if err != nil || len(bytes.TrimSpace(line)) > 0 {
			return line, err
		}
	}
}

// checkColumns checks the column names of a header (CSV) or first object (NDJSON) and
// splits off the label column. position names a column for errors.
func checkColumns(line int, names []string, position func(i int) string) (features []string, featureAt []int, labelAt int, err error) {
	labelAt = -1
	total := 0
	seen := make(map[string]bool, len(names))
	for i, n := range names {
		total += len(n)
		switch {
		case n == "":
			return nil, nil, 0, &DatasetError{Line: line, Msg: position(i) + " has no name"}
		case !utf8.ValidString(n):
			return nil, nil, 0, &DatasetError{Line: line, Msg: position(i) + " has a name that is not valid UTF-8"}
		case seen[n]:
			return nil, nil, 0, &DatasetError{Line: line, Column: n, Msg: "appears twice"}
		case strings.EqualFold(n, "label"):
			if labelAt >= 0 {
				return nil, nil, 0, &DatasetError{Line: line, Column: n, Msg: fmt.Sprintf("a second label column (the first is %q)", names[labelAt])}
			}
			labelAt = i
		default:
			features = append(features, n)
			featureAt = append(featureAt, i)
		}
		seen[n] = true
	}
	switch {
	case len(features) == 0:
		return nil, nil, 0, &DatasetError{Line: line, Msg: "no feature columns: want at least one column besides label"}
	case len(features) > MaxDatasetColumns:
		return nil, nil, 0, &DatasetError{Line: line, Msg: fmt.Sprintf("%d columns, more than the %d allowed", len(features), MaxDatasetColumns)}
	case total > maxColumnNameBytes:
		return nil, nil, 0, &DatasetError{Line: line, Msg: fmt.Sprintf("the column names take %d bytes, more than the %d allowed", total, maxColumnNameBytes)}
	}
	return features, featureAt, labelAt, nil
}

// parseValue parses one cell; the message says why it is not a finite number.
func parseValue(b []byte) (float64, string) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return 0, "empty cell: every value must be a number (missing values are not supported)"
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, quoteCell(b) + " is not a number"
	}
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, quoteCell(b) + " is not a finite number"
	}
	return v, ""
}

// parseLabel parses a label cell: 0 or 1.
func parseLabel(b []byte) (float64, string) {
	v, msg := parseValue(b)
	if msg == "" && v != 0 && v != 1 {
		msg = quoteCell(bytes.TrimSpace(b)) + " is not a label: want 0 or 1"
	}
	return v, msg
}

// quoteCell quotes a cell for a message, shortened if long.
func quoteCell(b []byte) string {
	const max = 40
	if len(b) > max {
		return strconv.Quote(string(b[:max])) + "…"
	}
	return strconv.Quote(string(b))
}

// csvRows reads CSV: a header row of column names, then rows of numbers.
type csvRows struct {
	lr        *lineReader
	header    []string
	features  []string
	featureAt []int
	labelAt   int
	fields    [][]byte
}

func newCSVRows(lr *lineReader) (*csvRows, error) {
	line, err := lr.nextNonBlank()
	if err == io.EOF {
		return nil, &DatasetError{Line: 1, Msg: "empty input: want a header row of column names"}
	}
	if err != nil {
		return nil, err
	}
	fields, col, msg := splitCSVLine(line, nil)
	if msg != "" {
		return nil, &DatasetError{Line: lr.line, Msg: fmt.Sprintf("column %d: %s", col+1, msg)}
	}
	if len(fields) > MaxDatasetColumns+1 {
		return nil, &DatasetError{Line: lr.line, Msg: fmt.Sprintf("%d columns, more than the %d allowed", len(fields), MaxDatasetColumns)}
	}
	header := make([]string, len(fields))
	for i, f := range fields {
		header[i] = string(bytes.TrimSpace(f))
	}
	c := &csvRows{lr: lr, header: header, fields: fields}
	c.features, c.featureAt, c.labelAt, err = checkColumns(lr.line, header, func(i int) string { return fmt.Sprintf("column %d", i+1) })
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (c *csvRows) columns() ([]string, bool) { return c.features, c.labelAt >= 0 }

func (c *csvRows) next(row []float64) (float64, error) {
	line, err := c.lr.nextNonBlank()
	if err != nil {
		return 0, err
	}
	var col int
	var msg string
	c.fields, col, msg = splitCSVLine(line, c.fields[:0])
	if msg != "" {
		e := &DatasetError{Line: c.lr.line, Msg: msg}
		if col < len(c.header) {
			e.Column = c.header[col]
		} else {
			e.Msg = fmt.Sprintf("field %d: %s", col+1, msg)
		}
		return 0, e
	}
	if len(c.fields) != len(c.header) {
		return 0, &DatasetError{Line: c.lr.line, Msg: fmt.Sprintf("%d fields, but the header has %d columns", len(c.fields), len(c.header))}
	}
	for k, at := range c.featureAt {
		v, msg := parseValue(c.fields[at])
		if msg != "" {
			return 0, &DatasetError{Line: c.lr.line, Column: c.header[at], Msg: msg}
		}
		row[k] = v
	}
	if c.labelAt < 0 {
		return 0, nil
	}
	label, msg := parseLabel(c.fields[c.labelAt])
	if msg != "" {
		return 0, &DatasetError{Line: c.lr.line, Column: c.header[c.labelAt], Msg: msg}
	}
	return label, nil
}

// splitCSVLine splits one line of CSV at commas into dst. A field may be quoted (its
// quotes doubled inside), so it can hold commas; it cannot span lines. Quoted fields
// are unescaped in place. On error it returns the 0-based field and what is wrong.
func splitCSVLine(line []byte, dst [][]byte) (fields [][]byte, field int, msg string) {
	for i := 0; ; {
		j := i
		for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
			j++
		}
		if j < len(line) && line[j] == '"' {
			w, r := j, j+1
			closed := false
			for r < len(line) {
				if line[r] == '"' {
					if r+1 < len(line) && line[r+1] == '"' {
						line[w] = '"'
						w, r = w+1, r+2
						continue
					}
					closed = true
					r++
					break
				}
				line[w] = line[r]
				w, r = w+1, r+1
			}
			if !closed {
				return dst, len(dst), "unterminated quoted field (a quoted field cannot span lines)"
			}
			dst = append(dst, line[j:w])
			for r < len(line) && (line[r] == ' ' || line[r] == '\t') {
				r++
			}
			if r == len(line) {
				return dst, 0, ""
			}
			if line[r] != ',' {
				return dst, len(dst) - 1, fmt.Sprintf("unexpected %q after a quoted field", line[r])
			}
			i = r + 1
			continue
		}
		k := bytes.IndexByte(line[i:], ',')
		if k < 0 {
			return append(dst, line[i:]), 0, ""
		}
		dst = append(dst, line[i:i+k])
		i += k + 1
	}
}

// ndjsonRows reads NDJSON: one JSON object a line, mapping column names to numbers.
// The first object fixes the columns (in sorted order); every later one must have
// exactly those keys.
type ndjsonRows struct {
	lr       *lineReader
	features []string
	index    map[string]int // feature name → position; the label → -1
	label    string
	first    []ndjsonPair // the first object, returned by the first next
	seen     []bool
	pairs    []ndjsonPair
}

type ndjsonPair struct {
	key   []byte
	value []byte // a JSON number
}

func newNDJSONRows(lr *lineReader) (*ndjsonRows, error) {
	line, err := lr.nextNonBlank()
	if err == io.EOF {
		return nil, &DatasetError{Line: 1, Msg: "empty input: want one JSON object of column names and numbers a line"}
	}
	if err != nil {
		return nil, err
	}
	pairs, err := parseNDJSONObject(lr.line, line, nil)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(pairs))
	for i, p := range pairs {
		names[i] = string(p.key)
	}
	slices.Sort(names)
	n := &ndjsonRows{lr: lr, index: make(map[string]int, len(names))}
	var labelAt int
	n.features, _, labelAt, err = checkColumns(lr.line, names, func(i int) string { return fmt.Sprintf("key %d", i+1) })
	if err != nil {
		return nil, err
	}
	for k, f := range n.features {
		n.index[f] = k
	}
	if labelAt >= 0 {
		n.label = names[labelAt]
		n.index[n.label] = -1
	}
	n.seen = make([]bool, len(n.features))
	// The pairs point into the line buffer, which the next read reuses.
	for _, p := range pairs {
		n.first = append(n.first, ndjsonPair{key: slices.Clone(p.key), value: slices.Clone(p.value)})
	}
	return n, nil
}

func (n *ndjsonRows) columns() ([]string, bool) { return n.features, n.label != "" }

func (n *ndjsonRows) next(row []float64) (float64, error) {
	pairs := n.first
	if pairs != nil {
		n.first = nil
	} else {
		line, err := n.lr.nextNonBlank()
		if err != nil {
			return 0, err
		}
		if n.pairs, err = parseNDJSONObject(n.lr.line, line, n.pairs[:0]); err != nil {
			return 0, err
		}
		pairs = n.pairs
	}
	clear(n.seen)
	label, labelSeen := 0.0, false
	for _, p := range pairs {
		k, ok := n.index[string(p.key)]
		if !ok {
			return 0, &DatasetError{Line: n.lr.line, Column: string(p.key), Msg: fmt.Sprintf("unexpected key: the first object has %s", listNames(n.keys()))}
		}
		if (k < 0 && labelSeen) || (k >= 0 && n.seen[k]) {
			return 0, &DatasetError{Line: n.lr.line, Column: string(p.key), Msg: "appears twice in the object"}
		}
		if k < 0 {
			labelSeen = true
			v, msg := parseLabel(p.value)
			if msg != "" {
				return 0, &DatasetError{Line: n.lr.line, Column: n.label, Msg: msg}
			}
			label = v
			continue
		}
		v, msg := parseValue(p.value)
		if msg != "" {
			return 0, &DatasetError{Line: n.lr.line, Column: n.features[k], Msg: msg}
		}
		row[k] = v
		n.seen[k] = true
	}
	if len(pairs) != len(n.index) {
		for k, ok := range n.seen {
			if !ok {
				return 0, &DatasetError{Line: n.lr.line, Column: n.features[k], Msg: "missing: every object must have the first object's keys"}
			}
		}
		return 0, &DatasetError{Line: n.lr.line, Column: n.label, Msg: "missing: every object must have the first object's keys"}
	}
	return label, nil
}

// keys lists the first object's keys, sorted.
func (n *ndjsonRows) keys() []string {
	keys := slices.Clone(n.features)
	if n.label != "" {
		keys = append(keys, n.label)
		slices.Sort(keys)
	}
	return keys
}

// parseNDJSONObject parses one line holding a JSON object whose values are numbers,
// appending its members to dst. Keys are unescaped; duplicates are the caller's to find.
func parseNDJSONObject(lineNo int, line []byte, dst []ndjsonPair) ([]ndjsonPair, error) {
	p := objectParser{b: line}
	fail := func(msg string) error {
		return &DatasetError{Line: lineNo, Msg: fmt.Sprintf("invalid JSON at byte %d: %s", p.i+1, msg)}
	}
	p.space()
	if p.i == len(p.b) || p.b[p.i] != '{' {
		if p.i < len(p.b) {
			return dst, &DatasetError{Line: lineNo, Msg: fmt.Sprintf("want a JSON object of column names and numbers, got %s", describeJSON(p.b[p.i]))}
		}
		return dst, fail("unexpected end of line")
	}
	p.i++
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
	} else {
		for {
			p.space()
			key, ok := p.str()
			if !ok {
				return dst, fail(p.msg)
			}
			p.space()
			if p.i == len(p.b) || p.b[p.i] != ':' {
				return dst, fail("want ':' after a key")
			}
			p.i++
			p.space()
			if p.i == len(p.b) {
				return dst, fail("unexpected end of line")
			}
			c := p.b[p.i]
			if c != '-' && (c < '0' || c > '9') {
				what := describeJSON(c)
				if c == '"' {
					if s, ok := p.str(); ok {
						what = "the string " + quoteCell(s)
					}
				}
				return dst, &DatasetError{Line: lineNo, Column: string(key), Msg: fmt.Sprintf("want a number, got %s", what)}
			}
			num, ok := p.number()
			if !ok {
				return dst, fail(p.msg)
			}
			dst = append(dst, ndjsonPair{key: key, value: num})
			p.space()
			if p.i < len(p.b) && p.b[p.i] == ',' {
				p.i++
				continue
			}
			if p.i < len(p.b) && p.b[p.i] == '}' {
				p.i++
				break
			}
			return dst, fail("want ',' or '}' after a value")
		}
	}
	p.space()
	if p.i != len(p.b) {
		return dst, fail("unexpected data after the object (one object a line)")
	}
	return dst, nil
}

// describeJSON names the JSON value that starts with c.
func describeJSON(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return fmt.Sprintf("%q", c)
}

// objectParser scans the little of JSON that an NDJSON dataset line holds.
type objectParser struct {
	b   []byte
	i   int
	msg string // why the last scan failed
}

func (p *objectParser) space() {
	for p.i < len(p.b) && (p.b[p.i] == ' ' || p.b[p.i] == '\t' || p.b[p.i] == '\r' || p.b[p.i] == '\n') {
		p.i++
	}
}

// str scans a JSON string and returns its unescaped bytes.
func (p *objectParser) str() ([]byte, bool) {
	if p.i == len(p.b) || p.b[p.i] != '"' {
		p.msg = "want a string key"
		return nil, false
	}
	start := p.i
	escaped := false
	for j := p.i + 1; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '\\':
			escaped = true
			j++
		case c < 0x20:
			p.i = j
			p.msg = "control character in a string"
			return nil, false
		case c == '"':
			p.i = j + 1
			raw := p.b[start+1 : j]
			if !escaped {
				if !utf8.Valid(raw) {
					p.i, p.msg = start, "string is not valid UTF-8"
					return nil, false
				}
				return raw, true
			}
			var s string
			if err := json.Unmarshal(p.b[start:j+1], &s); err != nil {
				p.i, p.msg = start, "bad escape in a string"
				return nil, false
			}
			return []byte(s), true
		}
	}
	p.i = len(p.b)
	p.msg = "unterminated string"
	return nil, false
}

// number scans a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (p *objectParser) number() ([]byte, bool) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		p.msg = "malformed number"
		return nil, false
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			p.msg = "malformed number: want digits after '.'"
			return nil, false
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			p.msg = "malformed number: want digits in the exponent"
			return nil, false
		}
	}
	return p.b[start:p.i], true
}

// Dataset chunk encoding, version 1 (little-endian):
//
//	version byte | first row uint64 | rows uint32 | columns uint32 | flags byte (1: labels)
//	rows × columns float64, row-major | rows label bytes (0 or 1) if flagged
const (
	datasetChunkVersion = 1
	datasetChunkHeader  = 1 + 8 + 4 + 4 + 1
	chunkHasLabels      = 1
)

type datasetChunk struct {
	first, rows, cols int
	values            []byte
	labels            []byte // nil without labels
}

func (c datasetChunk) value(i, j int) float64 {
	return math.Float64frombits(binary.LittleEndian.Uint64(c.values[(i*c.cols+j)*8:]))
}

func decodeDatasetChunk(b []byte) (datasetChunk, error) {
	if len(b) < datasetChunkHeader {
		return datasetChunk{}, fmt.Errorf("chunk of %d bytes is shorter than its %d-byte header", len(b), datasetChunkHeader)
	}
	if b[0] != datasetChunkVersion {
		return datasetChunk{}, fmt.Errorf("chunk version %d is not supported (want %d)", b[0], datasetChunkVersion)
	}
	first := binary.LittleEndian.Uint64(b[1:])
	rows := int(binary.LittleEndian.Uint32(b[9:]))
	cols := int(binary.LittleEndian.Uint32(b[13:]))
	flags := b[17]
	if flags&^chunkHasLabels != 0 {
		return datasetChunk{}, fmt.Errorf("unknown chunk flags 0x%02x", flags)
	}
	body := b[datasetChunkHeader:]
	if rows == 0 || cols == 0 || cols > MaxDatasetColumns || first > 1<<40 {
		return datasetChunk{}, fmt.Errorf("chunk of %d rows × %d columns from row %d is out of range", rows, cols, first)
	}
	rowBytes := cols * 8
	if flags&chunkHasLabels != 0 {
		rowBytes++
	}
	if len(body)%rowBytes != 0 || len(body)/rowBytes != rows {
		return datasetChunk{}, fmt.Errorf("chunk of %d rows × %d columns has %d bytes of rows, want %d", rows, cols, len(body), rows*rowBytes)
	}
	c := datasetChunk{first: int(first), rows: rows, cols: cols, values: body[:rows*cols*8]}
	if flags&chunkHasLabels != 0 {
		c.labels = body[rows*cols*8:]
		for i, l := range c.labels {
			if l > 1 {
				return datasetChunk{}, fmt.Errorf("label of chunk row %d is %d, not 0 or 1", i, l)
			}
		}
	}
	return c, nil
}

// datasetWriter encodes rows into chunks and produces each when it is full.
type datasetWriter struct {
	p            *chunkProducer
	cols         int
	labels       bool
	rowsPerChunk int
	first, n     int    // the chunk's first row and rows so far
	buf, lab     []byte // the chunk being filled: header and values, labels
	onChunk      func([]byte)
}

func (s *Store) newDatasetWriter(ctx context.Context, id string, cols int, labels bool, onChunk func([]byte)) *datasetWriter {
	rowBytes := cols * 8
	if labels {
		rowBytes++
	}
	return &datasetWriter{
		p:    s.newChunkProducer(ctx, s.Topics.Datasets, id),
		cols: cols, labels: labels, onChunk: onChunk,
		rowsPerChunk: max(1, (maxChunkBytes-datasetChunkHeader)/rowBytes),
	}
}

func (w *datasetWriter) add(row []float64, label float64) error {
	w.appendRow(row, label)
	if w.n == w.rowsPerChunk {
		return w.flush()
	}
	return nil
}

func (w *datasetWriter) appendRow(row []float64, label float64) {
	if w.n == 0 {
		w.buf = make([]byte, datasetChunkHeader, datasetChunkHeader+w.rowsPerChunk*(w.cols*8+1))
		w.lab = w.lab[:0]
	}
	for _, v := range row {
		w.buf = binary.LittleEndian.AppendUint64(w.buf, math.Float64bits(v))
	}
	if w.labels {
		w.lab = append(w.lab, byte(label))
	}
	w.n++
}

// seal completes the chunk being filled and returns it; the next row starts a new one,
// since the record keeps the returned bytes until the broker acknowledges it.
func (w *datasetWriter) seal() []byte {
	b := w.buf
	b[0] = datasetChunkVersion
	binary.LittleEndian.PutUint64(b[1:], uint64(w.first))
	binary.LittleEndian.PutUint32(b[9:], uint32(w.n))
	binary.LittleEndian.PutUint32(b[13:], uint32(w.cols))
	b[17] = 0
	if w.labels {
		b[17] = chunkHasLabels
		b = append(b, w.lab...)
	}
	w.first += w.n
	w.n, w.buf = 0, nil
	return b
}

func (w *datasetWriter) flush() error {
	if w.n == 0 {
		return nil
	}
	b := w.seal()
	if w.onChunk != nil {
		w.onChunk(b)
	}
	return w.p.send(b)
}

// finish produces the last chunk and waits for every acknowledgement.
func (w *datasetWriter) finish() (int32, []int64, error) {
	err := w.flush()
	partition, offsets, werr := w.p.wait()
	return partition, offsets, cmp.Or(err, werr)
}

// chunkProducer produces the chunks of one dataset or one job's results, all keyed by
// its id so that they land in one partition, without waiting for each ack: at most
// chunksInFlight are unacknowledged at a time, which bounds memory and keeps an upload
// streaming.
type chunkProducer struct {
	ctx    context.Context
	client *kgo.Client
	topic  string
	key    []byte
	slots  chan struct{}
	wg     sync.WaitGroup

	mu        sync.Mutex
	offsets   []int64 // by chunk, in production order
	partition int32   // -1 until the first ack
	err       error
}

func (s *Store) newChunkProducer(ctx context.Context, topic, key string) *chunkProducer {
	return &chunkProducer{ctx: ctx, client: s.Client, topic: topic, key: []byte(key), slots: make(chan struct{}, chunksInFlight), partition: -1}
}

// send produces one chunk, waiting first while chunksInFlight are unacknowledged. An
// earlier chunk's failure is returned here, so a failed upload stops reading.
func (p *chunkProducer) send(value []byte) error {
	select {
	case p.slots <- struct{}{}:
	case <-p.ctx.Done():
		return p.ctx.Err()
	}
	p.mu.Lock()
	if err := p.err; err != nil {
		p.mu.Unlock()
		<-p.slots
		return err
	}
	i := len(p.offsets)
	p.offsets = append(p.offsets, -1)
	p.mu.Unlock()
	p.wg.Add(1)
	p.client.Produce(p.ctx, &kgo.Record{Topic: p.topic, Key: p.key, Value: value}, func(r *kgo.Record, err error) {
		defer p.wg.Done()
		defer func() { <-p.slots }()
		p.mu.Lock()
		defer p.mu.Unlock()
		switch {
		case err != nil:
			if p.err == nil {
				p.err = Transient(fmt.Errorf("store chunk %d of %s in %s: %w", i, p.key, p.topic, err))
			}
		case p.partition >= 0 && r.Partition != p.partition:
			if p.err == nil {
				// Readers consume one partition: a client that does not partition by key
				// (a manual or round-robin partitioner) cannot store chunks.
				p.err = fmt.Errorf("chunks of %s went to partitions %d and %d of %s: the producing client must partition by key", p.key, p.partition, r.Partition, p.topic)
			}
		default:
			p.partition = r.Partition
			p.offsets[i] = r.Offset
		}
	})
	return nil
}

// wait waits for every chunk sent to be acknowledged (or to fail).
func (p *chunkProducer) wait() (int32, []int64, error) {
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.partition, p.offsets, p.err
}

// readChunks consumes one partition of topic from the smallest of offsets to the
// largest and calls each with every record at one of the offsets, in offset order. key,
// when not empty, must be every such record's key. A record that is gone (removed by
// retention) is an error; Kafka failures are marked Transient.
func (s *Store) readChunks(ctx context.Context, topic string, partition int32, key string, offsets []int64, each func(offset int64, value []byte) error) error {
	if len(offsets) == 0 {
		return nil
	}
	if s.NewConsumer == nil {
		return errors.New("the job store has no consumer factory (Store.NewConsumer)")
	}
	want := slices.Clone(offsets)
	slices.Sort(want)
	want = slices.Compact(want)
	first, last := want[0], want[len(want)-1]
	if first < 0 {
		return fmt.Errorf("chunk offset %d of %s[%d] is negative", first, topic, partition)
	}
	// Check that the range is still (and already) there: otherwise the consumer would
	// wait for records that will never come. Through a new client: a long-lived one may
	// still remember the topic as missing from before it was created (kgo caches
	// metadata for MetadataMinAge).
	admCl, err := s.NewConsumer()
	if err != nil {
		return Transient(fmt.Errorf("client for %s: %w", topic, err))
	}
	defer admCl.Close()
	adm := kadm.NewClient(admCl)
	starts, err := adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return Transient(fmt.Errorf("start offsets of %s: %w", topic, err))
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return Transient(fmt.Errorf("end offsets of %s: %w", topic, err))
	}
	start, ok1 := starts.Lookup(topic, partition)
	end, ok2 := ends.Lookup(topic, partition)
	switch {
	case !ok1 || !ok2:
		return fmt.Errorf("%s has no partition %d", topic, partition)
	case start.Offset > first:
		return fmt.Errorf("the chunk at offset %d of %s[%d] is gone: the partition now starts at %d (retention removed it)", first, topic, partition, start.Offset)
	case end.Offset <= last:
		return fmt.Errorf("the chunk at offset %d of %s[%d] is past the partition's end (%d)", last, topic, partition, end.Offset)
	}
	cl, err := s.NewConsumer(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {partition: kgo.NewOffset().At(first)}}))
	if err != nil {
		return Transient(fmt.Errorf("consumer of %s: %w", topic, err))
	}
	defer cl.Close()
	next := 0
	for next < len(want) {
		fetches := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return err
		}
		if errs := fetches.Errors(); len(errs) > 0 {
			return Transient(fmt.Errorf("reading %s[%d]: %w", errs[0].Topic, errs[0].Partition, errs[0].Err))
		}
		for it := fetches.RecordIter(); !it.Done() && next < len(want); {
			r := it.Next()
			switch {
			case r.Offset < want[next]:
				continue
			case r.Offset > want[next]:
				return fmt.Errorf("the chunk at offset %d of %s[%d] is missing (the next record is at %d)", want[next], topic, partition, r.Offset)
			case key != "" && string(r.Key) != key:
				return fmt.Errorf("the record at offset %d of %s[%d] has key %q, not %q", r.Offset, topic, partition, r.Key, key)
			}
			if err := each(r.Offset, r.Value); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}
