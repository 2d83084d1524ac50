package schemas

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// The JSON pieces are checked against the standard library, an independent
// implementation of the same RFCs.

var jsonStrings = []string{
	"",
	"plain ascii",
	`quote " backslash \ slash /`,
	"controls \x00\x01\x1f\x7f \b\f\n\r\t",
	"unicode é 日本語 😀",
	"separators \u2028 \u2029",
	"invalid \xff \xc3 \xed\xa0\x80 end\xe2\x82",
	"<html> & 'quotes'",
	"\uFFFD literal replacement char",
}

// sanitize replaces each invalid UTF-8 byte with U+FFFD, as encoding/json does.
func sanitize(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += size
	}
	return b.String()
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range jsonStrings {
		out := appendJSONString(nil, s)
		if !json.Valid(out) {
			t.Errorf("%q: invalid JSON %s", s, out)
			continue
		}
		var std string
		if err := json.Unmarshal(out, &std); err != nil {
			t.Fatal(err)
		}
		if std != sanitize(s) {
			t.Errorf("%q: encoding/json reads back %q", s, std)
		}
		sc := jsonScanner{b: out}
		if got := string(sc.str()); sc.err != nil || got != sanitize(s) {
			t.Errorf("%q: our scanner reads back %q, %v", s, got, sc.err)
		}
		// And our scanner reads what encoding/json writes.
		stdOut, _ := json.Marshal(s)
		sc = jsonScanner{b: stdOut}
		if got := string(sc.str()); sc.err != nil || got != sanitize(s) {
			t.Errorf("%q: our scanner reads encoding/json's %s as %q, %v", s, stdOut, got, sc.err)
		}
	}
}

// TestJSONOutputsAreValid runs every JSON encoder's output through encoding/json.
func TestJSONOutputsAreValid(t *testing.T) {
	r := sampleRecord()
	r.Tags["weird"] = jsonStrings[3] + jsonStrings[6]
	res := sampleResult()
	res.Values = r.Values
	for _, out := range [][]byte{AppendRecordJSON(nil, r), AppendResultJSON(nil, res), AppendAnomalyEventJSON(nil, res)} {
		var v map[string]any
		if err := json.Unmarshal(out, &v); err != nil {
			t.Errorf("%s: %v", out, err)
		}
	}
}

func TestParseRFC3339MatchesTimeParse(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	zones := []*time.Location{time.UTC, time.FixedZone("", 3600), time.FixedZone("", -(9*3600 + 30*60)), time.FixedZone("", 14*3600)}
	layouts := []string{time.RFC3339, time.RFC3339Nano, "2006-01-02T15:04:05.000Z07:00", "2006-01-02T15:04:05.000000Z07:00"}
	for range 20000 {
		// Stay a day inside the range so that any offset keeps the local year in 0000-9999.
		ms := minTS + 86400000 + rng.Int64N(maxTS-minTS-2*86400000)
		tm := time.UnixMilli(ms).Add(time.Duration(rng.IntN(1e6))).In(zones[rng.IntN(len(zones))])
		s := tm.Format(layouts[rng.IntN(len(layouts))])
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := parseRFC3339([]byte(s))
		if !ok || got != want.UnixMilli() {
			t.Fatalf("%s: got %d %v, want %d", s, got, ok, want.UnixMilli())
		}
	}
}

func TestParseRFC3339Rejects(t *testing.T) {
	for _, s := range []string{
		"", "2026", "2026-11-27", "2026-11-27T07:00:00", "2026-11-27T07:00Z",
		"2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-02-29T00:00:00Z", "2100-02-29T00:00:00Z",
		"2026-04-31T00:00:00Z", "2026-11-00T00:00:00Z", "2026-11-27T24:00:00Z", "2026-11-27T07:60:00Z",
		"2026-11-27T07:00:60Z", "2026-11-27T07:00:00.Z", "2026-11-27T07:00:00+0100", "2026-11-27T07:00:00+01:00x",
		"2026-11-27T07:00:00+24:00", "2026-11-27T07:00:00+01:60", "2026-11-27T07:00:00ZZ", " 2026-11-27T07:00:00Z",
		"+2026-11-27T07:00:00Z", "2026-11-27X07:00:00Z", "2026-1a-27T07:00:00Z", "0000-01-01T00:00:00+00:01",
		"2026-11-27T07:00:00,5Z", "2026-11-27T07:00:00.5",
	} {
		if ms, ok := parseRFC3339([]byte(s)); ok {
			t.Errorf("%q accepted as %d", s, ms)
		}
	}
	for s, want := range map[string]int64{
		"0000-01-01T00:00:00Z":           minTS,
		"9999-12-31T23:59:59.999999Z":    maxTS,
		"2000-02-29T12:00:00Z":           951825600000,
		"1970-01-01T00:00:00.001+00:00":  1,
		"1970-01-01T01:00:00.000+01:00":  0,
		"1969-12-31T23:59:59.9995-00:00": -1,
	} {
		if ms, ok := parseRFC3339([]byte(s)); !ok || ms != want {
			t.Errorf("%q: %d %v, want %d", s, ms, ok, want)
		}
	}
}

func TestAppendTimeMatchesTimeFormat(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	cases := []int64{0, -1, 1, minTS, maxTS, 951825600000, 1795762800123}
	for range 20000 {
		cases = append(cases, minTS+rng.Int64N(maxTS-minTS+1))
	}
	for _, ms := range cases {
		want := time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
		if got := string(appendTime(nil, ms)); got != want {
			t.Fatalf("%d: %s, want %s", ms, got, want)
		}
		if back, ok := parseRFC3339(appendTime(nil, ms)); !ok || back != ms {
			t.Fatalf("%d: reads back as %d %v", ms, back, ok)
		}
	}
	if got := string(appendTime(nil, 1<<62)); got != "9999-12-31T23:59:59.999Z" {
		t.Errorf("clamp: %s", got)
	}
}
