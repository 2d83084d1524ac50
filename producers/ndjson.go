package producers

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"

	"github.com/gonomaly/gonomaly/schemas"
)

// MaxNDJSONLine is the longest line NDJSONSource accepts. Longer lines are reported as
// bad and skipped, so one runaway line does not end the stream.
const MaxNDJSONLine = 1 << 20

// NDJSONSource reads records in DESIGN.md's Record JSON form, one per line:
//
//	{"series": "host-17", "ts": "2026-11-27T07:00:00Z", "values": {"cpu": 0.93}, "tags": {"dc": "eu-1"}}
//
// ts is RFC 3339 or epoch milliseconds, and may be absent (the Kafka timestamp is used
// downstream). A null value is a missing value, but a record needs at least one number. Blank lines are skipped; unknown
// fields are ignored so newer writers can add some.
type NDJSONSource struct {
	br   *bufio.Reader
	line int64
	long []byte // assembles lines longer than br's buffer
	rec  ndjsonRecord
}

// ndjsonRecord is the decoding target. Values and Tags decode into maps kept across
// lines so a long file does not allocate two maps per line.
type ndjsonRecord struct {
	Series *string           `json:"series"`
	TS     ndjsonTime        `json:"ts"`
	Values ndjsonValues      `json:"values"`
	Tags   map[string]string `json:"tags"`
}

// NewNDJSONSource returns a source reading r.
func NewNDJSONSource(r io.Reader) *NDJSONSource {
	return &NDJSONSource{br: bufio.NewReaderSize(r, 64<<10)}
}

// Next fills r with the next record. An *InputError names the bad line; the source has
// moved past it.
func (s *NDJSONSource) Next(r *schemas.Record) error {
	for {
		line, err := s.readLine()
		if err != nil {
			return err // io.EOF, an I/O error, or an InputError for an overlong line
		}
		if s.line == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff")) // a UTF-8 BOM from Windows tools
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		return s.decode(line, r)
	}
}

func (s *NDJSONSource) decode(line []byte, r *schemas.Record) error {
	rec := &s.rec
	rec.Series, rec.TS = nil, ndjsonTime{}
	if rec.Values.m == nil {
		rec.Values.m = make(map[string]ndjsonFloat, 4)
	}
	clear(rec.Values.m)
	rec.Values.present = false
	clear(rec.Tags)
	if err := json.Unmarshal(line, rec); err != nil {
		return &InputError{Line: s.line, Err: jsonError(err)}
	}
	switch {
	case rec.Series == nil || *rec.Series == "":
		return &InputError{Line: s.line, Err: errors.New(`missing "series"`)}
	case !rec.Values.present:
		return &InputError{Line: s.line, Err: errors.New(`missing "values"`)}
	}
	resetRecord(r)
	r.Series = *rec.Series
	r.TS = rec.TS.ms
	for k, v := range rec.Values.m {
		if v.ok {
			r.Values[k] = v.v
		}
	}
	if len(r.Values) == 0 {
		return &InputError{Line: s.line, Err: errors.New("values: no numbers (all null or empty)")}
	}
	if len(rec.Tags) > 0 {
		if r.Tags == nil {
			r.Tags = make(map[string]string, len(rec.Tags))
		}
		for k, v := range rec.Tags {
			r.Tags[k] = v
		}
	}
	return nil
}

// readLine returns the next line without its newline, counting lines. The slice is
// valid until the next call.
func (s *NDJSONSource) readLine() ([]byte, error) {
	s.long = s.long[:0]
	tooLong := false
	for {
		chunk, err := s.br.ReadSlice('\n')
		if !tooLong {
			if len(s.long)+len(chunk) > MaxNDJSONLine+2 { // +2: the "\r\n" is not content
				tooLong = true
				s.long = s.long[:0]
			} else if err == bufio.ErrBufferFull || len(s.long) > 0 {
				s.long = append(s.long, chunk...)
			}
		}
		switch {
		case err == bufio.ErrBufferFull:
			continue
		case err == io.EOF && len(chunk) == 0 && len(s.long) == 0 && !tooLong:
			return nil, io.EOF
		case err != nil && err != io.EOF:
			return nil, err
		}
		s.line++
		if tooLong {
			return nil, &InputError{Line: s.line, Err: fmt.Errorf("line longer than %d bytes", MaxNDJSONLine)}
		}
		if len(s.long) > 0 {
			chunk = s.long
		}
		chunk = bytes.TrimSuffix(chunk, []byte("\n"))
		chunk = bytes.TrimSuffix(chunk, []byte("\r"))
		if len(chunk) > MaxNDJSONLine {
			return nil, &InputError{Line: s.line, Err: fmt.Errorf("line longer than %d bytes", MaxNDJSONLine)}
		}
		return chunk, nil
	}
}

// jsonError rewords encoding/json's errors to name the field, not Go types.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return fmt.Errorf("want a JSON object, not %s", te.Value)
		}
		return fmt.Errorf("%s: cannot use a JSON %s here", te.Field, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, err)
	}
	return err
}

// ndjsonTime decodes ts: an RFC 3339 string or epoch milliseconds; null or absent → 0.
type ndjsonTime struct{ ms int64 }

func (t *ndjsonTime) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.ms = 0
		return nil
	}
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		ms, err := parseTimeText(str)
		if err != nil {
			return fmt.Errorf("ts: %w", err)
		}
		t.ms = ms
		return nil
	}
	ms, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(string(b), 64)
		if ferr != nil || math.IsInf(f, 0) || f != math.Trunc(f) {
			return fmt.Errorf("ts: %s is not a time (want RFC 3339 or integer epoch ms)", b)
		}
		ms = int64(f) // 1.7e12 style integers
	}
	if ms < minTSMillis || ms > maxTSMillis {
		return fmt.Errorf("ts: %s is out of range", b)
	}
	t.ms = ms
	return nil
}

// ndjsonValues decodes "values" while noting that it was present.
type ndjsonValues struct {
	m       map[string]ndjsonFloat
	present bool
}

func (v *ndjsonValues) UnmarshalJSON(b []byte) error {
	v.present = true
	if string(b) == "null" {
		return errors.New("values: must be an object")
	}
	if len(b) == 0 || b[0] != '{' {
		return errors.New("values: must be an object of numbers")
	}
	if err := json.Unmarshal(b, &v.m); err != nil {
		// Only now pay for finding which key was bad: the fast path decodes without
		// keeping each value's bytes.
		var raw map[string]json.RawMessage
		if json.Unmarshal(b, &raw) == nil {
			for _, k := range slices.Sorted(maps.Keys(raw)) {
				var f ndjsonFloat
				if ferr := f.UnmarshalJSON(raw[k]); ferr != nil {
					return fmt.Errorf("values.%s: %w", k, ferr)
				}
			}
		}
		return fmt.Errorf("values: %w", err)
	}
	return nil
}

// ndjsonFloat is a finite number, or null for a missing value.
type ndjsonFloat struct {
	v  float64
	ok bool
}

func (f *ndjsonFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*f = ndjsonFloat{}
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil || len(b) == 0 || b[0] == '"' {
		return fmt.Errorf("%s is not a number", b)
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Errorf("%s is not a finite number", b)
	}
	*f = ndjsonFloat{v: v, ok: true}
	return nil
}
