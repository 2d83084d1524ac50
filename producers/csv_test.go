package producers

import (
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gonomaly/gonomaly/schemas"
)

func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

// NAB's files: "timestamp,value", zone-less times, one series per file.
func TestCSVSourceNAB(t *testing.T) {
	f, err := os.Open("/work/shared/data/nab/realKnownCause/nyc_taxi.csv")
	if err != nil {
		t.Skip("NAB data not available:", err)
	}
	defer f.Close()
	src, err := NewCSVSource(f, CSVConfig{Series: "nyc_taxi"})
	if err != nil {
		t.Fatal(err)
	}
	recs := drain(t, src, -1)
	if len(recs) != 10320 {
		t.Fatalf("got %d records, want 10320", len(recs))
	}
	first, last := recs[0], recs[len(recs)-1]
	want := schemas.Record{Series: "nyc_taxi", TS: ms("2014-07-01T00:00:00Z"), Values: map[string]float64{"value": 10844}}
	if !reflect.DeepEqual(first, want) {
		t.Errorf("first record %+v, want %+v", first, want)
	}
	if last.TS != ms("2015-01-31T23:30:00Z") || last.Values["value"] != 26288 {
		t.Errorf("last record %+v", last)
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].TS-recs[i-1].TS != 30*60*1000 {
			t.Fatalf("record %d: step %d ms, want 30 min", i, recs[i].TS-recs[i-1].TS)
		}
	}
}

const multiCSV = `series,timestamp,cpu,mem,host,note
a,2026-11-27T07:00:00Z,0.93,0.41,h1,ok
b,2026-11-27T07:00:00Z,0.50,,h2,
a,2026-11-27T07:01:00Z,NaN,0.45,h1,"quoted, with comma"
`

func TestCSVSourceColumns(t *testing.T) {
	t0, t1 := ms("2026-11-27T07:00:00Z"), ms("2026-11-27T07:01:00Z")
	tests := []struct {
		name string
		cfg  CSVConfig
		want []schemas.Record
		bad  int // rows without any value
	}{
		{
			// Default: the "series" and "timestamp" columns are found by name and every
			// other column numeric in the first row is a value; text columns are not.
			name: "defaults",
			want: []schemas.Record{
				{Series: "a", TS: t0, Values: map[string]float64{"cpu": 0.93, "mem": 0.41}},
				{Series: "b", TS: t0, Values: map[string]float64{"cpu": 0.5}},
				{Series: "a", TS: t1, Values: map[string]float64{"mem": 0.45}},
			},
		},
		{
			name: "selected values and tags",
			cfg:  CSVConfig{SeriesColumn: "host", TimeColumn: "timestamp", ValueColumns: []string{"mem"}, TagColumns: []string{"series", "note"}},
			want: []schemas.Record{
				{Series: "h1", TS: t0, Values: map[string]float64{"mem": 0.41}, Tags: map[string]string{"series": "a", "note": "ok"}},
				{Series: "h1", TS: t1, Values: map[string]float64{"mem": 0.45}, Tags: map[string]string{"series": "a", "note": "quoted, with comma"}},
			},
			bad: 1,
		},
		{
			name: "fixed series",
			cfg:  CSVConfig{Series: "all", ValueColumns: []string{"cpu"}},
			want: []schemas.Record{
				{Series: "all", TS: t0, Values: map[string]float64{"cpu": 0.93}},
				{Series: "all", TS: t0, Values: map[string]float64{"cpu": 0.5}},
			},
			bad: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := NewCSVSource(strings.NewReader(multiCSV), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, bad := drainLenient(t, src)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
			if len(bad) != tt.bad {
				t.Errorf("bad lines %q, want %d", bad, tt.bad)
			}
		})
	}
}

func TestCSVSourceTimes(t *testing.T) {
	want := ms("2014-07-01T00:00:00Z")
	for _, cell := range []string{
		"2014-07-01T00:00:00Z",
		"2014-07-01T02:00:00+02:00",
		"2014-07-01 00:00:00",
		"2014-07-01 00:00:00.000",
		"2014-07-01T00:00:00",
		"1404172800",       // epoch seconds
		"1404172800.0",     // epoch seconds, as a float
		"1404172800000",    // epoch ms
		"1404172800000000", // epoch µs
	} {
		src, err := NewCSVSource(strings.NewReader("ts;v\n"+cell+";1\n"), CSVConfig{Series: "s", Comma: ';'})
		if err != nil {
			t.Fatalf("%s: %v", cell, err)
		}
		recs := drain(t, src, -1)
		if recs[0].TS != want {
			t.Errorf("%s: ts %d, want %d", cell, recs[0].TS, want)
		}
	}
	// Without a time column records carry no time: the Kafka timestamp is used.
	src, err := NewCSVSource(strings.NewReader("v\n1\n"), CSVConfig{Series: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if recs := drain(t, src, -1); recs[0].TS != 0 {
		t.Errorf("no time column: ts %d, want 0", recs[0].TS)
	}
}

func TestCSVSourceErrors(t *testing.T) {
	// 15 good rows, so the bad ones land on line 17 as in the documentation.
	good := "timestamp,cpu,mem\n" + strings.Repeat("2026-01-01 00:00:00,1,2\n", 15)
	tests := []struct {
		name, input string
		cfg         CSVConfig
		want        string // the error, exactly
	}{
		{"not a number", good + "2026-01-01 00:00:00,abc,2\n", CSVConfig{Series: "s"}, `line 17, column "cpu": "abc" is not a number`},
		{"infinite", good + "2026-01-01 00:00:00,1,+Inf\n", CSVConfig{Series: "s"}, `line 17, column "mem": "+Inf" is not a finite number`},
		{"out of range", good + "2026-01-01 00:00:00,1e999,1\n", CSVConfig{Series: "s"}, `line 17, column "cpu": "1e999" is out of range`},
		{"ragged short", good + "2026-01-01 00:00:00,1\n", CSVConfig{Series: "s"}, `line 17: 2 fields, the header has 3`},
		{"ragged long", good + "2026-01-01 00:00:00,1,2,3\n", CSVConfig{Series: "s"}, `line 17: 4 fields, the header has 3`},
		{"bad time", good + "yesterday,1,2\n", CSVConfig{Series: "s"}, `line 17, column "timestamp": "yesterday" is not a time (want RFC 3339, "2006-01-02 15:04:05" or epoch seconds/ms)`},
		{"empty time", good + ",1,2\n", CSVConfig{Series: "s"}, `line 17, column "timestamp": empty time`},
		{"bare quote", good + "2026-01-01 00:00:00,1\"2,3\n", CSVConfig{Series: "s"}, `line 17: bare " in non-quoted-field`},
		{"no values", good + "2026-01-01 00:00:00,,NaN\n", CSVConfig{Series: "s"}, `line 17: no values: every value cell is empty`},
		{"empty series", "host,cpu\nh1,1\n,2\n", CSVConfig{SeriesColumn: "host"}, `line 3, column "host": empty series`},
		{"first row bad", "timestamp,cpu\nnever,1\n", CSVConfig{Series: "s"}, `line 2, column "timestamp": "never" is not a time (want RFC 3339, "2006-01-02 15:04:05" or epoch seconds/ms)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, err := NewCSVSource(strings.NewReader(tt.input), tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			var r schemas.Record
			for err == nil {
				err = src.Next(&r)
			}
			if err == io.EOF || err.Error() != tt.want {
				t.Fatalf("error %q, want %q", err, tt.want)
			}
			var ie *InputError
			if !errors.As(err, &ie) || ie.Line == 0 {
				t.Fatalf("error %T %v is not an *InputError with a line", err, err)
			}
		})
	}
}

func TestNewCSVSourceErrors(t *testing.T) {
	tests := []struct {
		name, input string
		cfg         CSVConfig
		want        string
	}{
		{"empty", "", CSVConfig{Series: "s"}, "line 1: empty input: a header row is required"},
		{"missing value column", "ts,cpu\n1,2\n", CSVConfig{Series: "s", ValueColumns: []string{"mem"}}, `line 1: value column "mem" is not in the header`},
		{"missing time column", "ts,cpu\n1,2\n", CSVConfig{Series: "s", TimeColumn: "when"}, `line 1: time column "when" is not in the header`},
		{"missing series column", "ts,cpu\n1,2\n", CSVConfig{SeriesColumn: "host"}, `line 1: series column "host" is not in the header`},
		{"no series", "ts,cpu\n1,2\n", CSVConfig{}, `csv: no series: set SeriesColumn or Series, or add a "series" column`},
		{"both series", "ts,cpu\n1,2\n", CSVConfig{Series: "s", SeriesColumn: "cpu"}, "csv: set SeriesColumn or Series, not both"},
		{"duplicate column", "ts,cpu,cpu\n1,2,3\n", CSVConfig{Series: "s"}, `line 1, column "cpu": duplicate column`},
		{"no numeric column", "ts,name\n1,x\n", CSVConfig{Series: "s"}, "csv: no numeric value columns"},
		{"column used twice", "ts,cpu\n1,2\n", CSVConfig{Series: "s", ValueColumns: []string{"cpu", "cpu"}}, `csv: column "cpu" is used twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewCSVSource(strings.NewReader(tt.input), tt.cfg)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// After a bad line the source carries on with the next: that is what SkipBad relies on.
func TestCSVSourceContinuesAfterBadLine(t *testing.T) {
	in := "\ufefftimestamp,value\n1404172800,1\n1404172860,x\n\n1404172920,\"3\n1404172980,4\n"
	src, err := NewCSVSource(strings.NewReader(in), CSVConfig{Series: "s"})
	if err != nil {
		t.Fatal(err)
	}
	var r schemas.Record
	var got []string
	for {
		err := src.Next(&r)
		if err == io.EOF {
			break
		}
		if err != nil {
			got = append(got, err.Error())
			continue
		}
		got = append(got, "ok")
	}
	want := []string{"ok", `line 3, column "value": "x" is not a number`, `line 5: extraneous or missing " in quoted-field`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
}
