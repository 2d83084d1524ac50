package producers

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/schemas"
)

// Source yields records one at a time.
//
// Next fills the caller's record, reusing its Values and Tags maps (cleared first) so a
// long stream does not allocate a map per record. It returns io.EOF after the last
// record. An *InputError means one bad line: the source has moved past it, so the
// caller may log it and call Next again. Any other error is fatal.
//
// Sources read from an io.Reader they do not own; the caller closes the file.
type Source interface {
	Next(r *schemas.Record) error
}

// InputError is a bad line of input. It names the line (1-based, counting the header)
// and, for CSV, the column, so users can fix the file and the API can point at it.
type InputError struct {
	Line   int64
	Column string // empty when the fault is not in one column
	Err    error
}

func (e *InputError) Error() string {
	if e.Column != "" {
		return fmt.Sprintf("line %d, column %q: %v", e.Line, e.Column, e.Err)
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

func (e *InputError) Unwrap() error { return e.Err }

// resetRecord clears r for reuse, keeping its maps.
func resetRecord(r *schemas.Record) {
	r.Series = ""
	r.TS = 0
	if r.Values == nil {
		r.Values = make(map[string]float64, 4)
	} else {
		clear(r.Values)
	}
	clear(r.Tags) // nil stays nil: most sources have no tags
}

// Bounds of timestamps we accept: years 0001 to 9999, what RFC 3339 can print, so a
// record we accept can always be written back out.
const (
	minTSMillis = -62135596800000
	maxTSMillis = 253402300799999
)

// timeLayouts are tried in order for textual timestamps. NAB files use the second; the
// rest are what spreadsheets and databases commonly export. Zone-less forms are UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02",
}

// parseTimeText parses an RFC 3339 or NAB-style timestamp into Unix milliseconds.
func parseTimeText(s string) (int64, error) {
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return checkMillis(t.UnixMilli(), s)
		}
	}
	return 0, fmt.Errorf("%q is not a time (want RFC 3339, \"2006-01-02 15:04:05\" or epoch seconds/ms)", s)
}

// parseTimeCell parses a CSV time cell: text layouts, or an epoch number whose unit is
// told by its magnitude. Seconds reach 1e11 only in the year 5138 and milliseconds drop
// below it only before 1973, so the cut is safe for real data; µs and ns likewise.
func parseTimeCell(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty time")
	}
	if c := s[0]; c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9') {
		if v, err := strconv.ParseFloat(s, 64); err == nil && !strings.ContainsAny(s, ":T") {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return 0, fmt.Errorf("%q is not a time", s)
			}
			var ms float64
			switch a := math.Abs(v); {
			case a >= 1e17:
				ms = v / 1e6 // nanoseconds
			case a >= 1e14:
				ms = v / 1e3 // microseconds
			case a >= 1e11:
				ms = v // milliseconds
			default:
				ms = v * 1e3 // seconds
			}
			if ms < minTSMillis || ms > maxTSMillis {
				return 0, fmt.Errorf("%q is out of range for a time", s)
			}
			return int64(math.Round(ms)), nil
		}
	}
	return parseTimeText(s)
}

func checkMillis(ms int64, s string) (int64, error) {
	if ms < minTSMillis || ms > maxTSMillis {
		return 0, fmt.Errorf("%q is out of range for a time", s)
	}
	return ms, nil
}
