package producers

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/gonomaly/gonomaly/schemas"
)

func TestNDJSONSource(t *testing.T) {
	in := strings.Join([]string{
		`{"series": "host-17", "ts": "2026-11-27T07:00:00Z", "values": {"cpu": 0.93, "mem": 0.41}, "tags": {"dc": "eu-1"}}`,
		``,
		`   `,
		`{"series": "host-18", "ts": 1795762800000, "values": {"cpu": 1e-3, "mem": null}}` + "\r",
		`{"series": "host-19", "values": {"cpu": -2}, "extra": [1, 2]}`,
		`{"series": "host-20", "ts": "2026-11-27 07:00:00", "values": {"cpu": 5}, "tags": {}}`,
		`{"series": "host-21", "ts": 1.7957628e12, "values": {"cpu": 6}}`, // no final newline
	}, "\n")
	src := NewNDJSONSource(strings.NewReader(in))
	got := drain(t, src, -1)
	t0 := ms("2026-11-27T07:00:00Z")
	want := []schemas.Record{
		{Series: "host-17", TS: t0, Values: map[string]float64{"cpu": 0.93, "mem": 0.41}, Tags: map[string]string{"dc": "eu-1"}},
		{Series: "host-18", TS: 1795762800000, Values: map[string]float64{"cpu": 0.001}},
		{Series: "host-19", Values: map[string]float64{"cpu": -2}},
		{Series: "host-20", TS: t0, Values: map[string]float64{"cpu": 5}},
		{Series: "host-21", TS: 1795762800000, Values: map[string]float64{"cpu": 6}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// Tags and values from one line must not leak into the next.
func TestNDJSONSourceReuse(t *testing.T) {
	in := `{"series": "a", "values": {"x": 1, "y": 2}, "tags": {"k": "v"}}` + "\n" + `{"series": "b", "values": {"z": 3}}`
	src := NewNDJSONSource(strings.NewReader(in))
	var r schemas.Record
	if err := src.Next(&r); err != nil {
		t.Fatal(err)
	}
	if err := src.Next(&r); err != nil {
		t.Fatal(err)
	}
	if want := (schemas.Record{Series: "b", Values: map[string]float64{"z": 3}, Tags: map[string]string{}}); !reflect.DeepEqual(r, want) {
		t.Errorf("second record %+v, want %+v", r, want)
	}
}

func TestNDJSONSourceErrors(t *testing.T) {
	tests := []struct{ name, line, want string }{
		{"syntax", `{"series": "a", "values": {"x": 1}`, "invalid JSON"},
		{"not an object", `[1, 2]`, "want a JSON object, not array"},
		{"no series", `{"values": {"x": 1}}`, `missing "series"`},
		{"empty series", `{"series": "", "values": {"x": 1}}`, `missing "series"`},
		{"series not a string", `{"series": 7, "values": {"x": 1}}`, "series: cannot use a JSON number here"},
		{"no values", `{"series": "a"}`, `missing "values"`},
		{"values null", `{"series": "a", "values": null}`, "values: must be an object"},
		{"values array", `{"series": "a", "values": [1]}`, "values: must be an object of numbers"},
		{"all null", `{"series": "a", "values": {"x": null}}`, "values: no numbers"},
		{"string value", `{"series": "a", "values": {"x": 1, "y": "2"}}`, `values.y: "2" is not a number`},
		{"huge value", `{"series": "a", "values": {"x": 1e999}}`, "values.x: 1e999 is not a number"},
		{"bad ts", `{"series": "a", "ts": "noon", "values": {"x": 1}}`, `ts: "noon" is not a time`},
		{"fractional ts", `{"series": "a", "ts": 1.5, "values": {"x": 1}}`, "ts: 1.5 is not a time"},
		{"ts out of range", `{"series": "a", "ts": 1e300, "values": {"x": 1}}`, "ts: 1e300 is"},
		{"ts bool", `{"series": "a", "ts": true, "values": {"x": 1}}`, "ts: true is not a time"},
		{"tags not strings", `{"series": "a", "values": {"x": 1}, "tags": {"k": 1}}`, "tags"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Line 3 is bad; lines 1 and 4 are good and must still be read.
			good := `{"series": "g", "values": {"x": 1}}`
			src := NewNDJSONSource(strings.NewReader(good + "\n\n" + tt.line + "\n" + good + "\n"))
			recs, bad := drainLenient(t, src)
			if len(recs) != 2 || len(bad) != 1 {
				t.Fatalf("got %d records and errors %q, want 2 records and 1 error", len(recs), bad)
			}
			if !strings.HasPrefix(bad[0], "line 3: ") || !strings.Contains(bad[0], tt.want) {
				t.Errorf("error %q, want line 3 and %q", bad[0], tt.want)
			}
		})
	}
}

func TestNDJSONSourceLongLines(t *testing.T) {
	// A valid record padded with spaces to exactly MaxNDJSONLine bytes is accepted.
	rec := `{"series": "a", "values": {"x": 1}}`
	exact := rec[:len(rec)-1] + strings.Repeat(" ", MaxNDJSONLine-len(rec)) + "}"
	tooLong := exact + " "
	in := exact + "\r\n" + tooLong + "\n" + rec + "\n" + tooLong // the last without newline
	recs, bad := drainLenient(t, NewNDJSONSource(strings.NewReader(in)))
	if len(recs) != 2 {
		t.Errorf("got %d records, want 2", len(recs))
	}
	want := []string{"line 2: line longer than 1048576 bytes", "line 4: line longer than 1048576 bytes"}
	if !reflect.DeepEqual(bad, want) {
		t.Errorf("errors %q, want %q", bad, want)
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// I/O errors are not bad lines: they end the stream and are not *InputError.
func TestSourcesIOError(t *testing.T) {
	boom := errors.New("disk on fire")
	var r schemas.Record
	err := NewNDJSONSource(io.MultiReader(strings.NewReader(`{"series":"a","values":{"x":1}}`+"\n"), failingReader{boom})).Next(&r)
	if err != nil {
		t.Fatalf("first line: %v", err)
	}
	src := NewNDJSONSource(failingReader{boom})
	var ie *InputError
	if err := src.Next(&r); !errors.Is(err, boom) || errors.As(err, &ie) {
		t.Errorf("ndjson: %v, want the I/O error", err)
	}
	csvSrc, err := NewCSVSource(io.MultiReader(strings.NewReader("ts,v\n1,2\n3,4\n"), failingReader{boom}), CSVConfig{Series: "s"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = func() ([]schemas.Record, error) {
		for {
			if err := csvSrc.Next(&r); err != nil {
				return nil, err
			}
		}
	}()
	if !errors.Is(err, boom) || errors.As(err, &ie) {
		t.Errorf("csv: %v, want the I/O error", err)
	}
}
