package producers

import (
	"bytes"
	"errors"
	"io"
	"math"
	"testing"

	"github.com/gonomaly/gonomaly/schemas"
)

// checkSource drains src past bad lines and checks the promises every source makes:
// no panic, every bad line is an *InputError with a line, lines never go backwards,
// records carry a series and finite values, and the stream ends.
func checkSource(t *testing.T, src Source, inputLen int) {
	var r schemas.Record
	var lastLine int64
	// Each call consumes at least one input byte or a line; anything more is a loop.
	for calls := 0; calls <= inputLen+2; calls++ {
		err := src.Next(&r)
		if err == io.EOF {
			return
		}
		if err != nil {
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %v (%T) is not an *InputError", err, err)
			}
			if ie.Line <= 0 || ie.Line < lastLine {
				t.Fatalf("error %q: line %d after line %d", err, ie.Line, lastLine)
			}
			lastLine = ie.Line
			continue
		}
		if r.Series == "" || len(r.Values) == 0 {
			t.Fatalf("record without series or values: %+v", r)
		}
		for k, v := range r.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("value %s = %v", k, v)
			}
		}
		if r.TS < minTSMillis || r.TS > maxTSMillis {
			t.Fatalf("ts %d out of range", r.TS)
		}
	}
	t.Fatalf("no io.EOF after %d calls on %d bytes", inputLen+2, inputLen)
}

func FuzzCSVSource(f *testing.F) {
	f.Add([]byte("timestamp,value\n2014-07-01 00:00:00,10844\n2014-07-01 00:30:00,8127\n"))
	f.Add([]byte("series,ts,cpu,mem\na,1404172800,1,\nb,1404172800000,x,2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Two configs: a fixed series and a series column found by name.
		for _, cfg := range []CSVConfig{{Series: "s"}, {}} {
			src, err := NewCSVSource(bytes.NewReader(data), cfg)
			if err != nil {
				continue // config/header errors are fine; they must only not panic
			}
			checkSource(t, src, len(data))
		}
	})
}

func FuzzNDJSONSource(f *testing.F) {
	f.Add([]byte(`{"series": "host-17", "ts": "2026-11-27T07:00:00Z", "values": {"cpu": 0.93, "mem": 0.41}, "tags": {"dc": "eu-1"}}` + "\n"))
	f.Add([]byte(`{"series": "a", "ts": 1795762800000, "values": {"x": null, "y": 1}}` + "\n\n{bad\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSource(t, NewNDJSONSource(bytes.NewReader(data)), len(data))
	})
}
