package sinks

import (
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// readAll returns the lines of path's rotated files (gunzipped, oldest first) and of
// path, and the rotated names.
func readAll(t *testing.T, path string) ([]string, []string) {
	t.Helper()
	ext := filepath.Ext(path)
	rotated, _ := filepath.Glob(strings.TrimSuffix(path, ext) + ".*" + ext + "*")
	slices.Sort(rotated)
	var lines []string
	for _, p := range append(slices.Clone(rotated), path) {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(p, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			data, _ = io.ReadAll(zr)
		}
		lines = append(lines, strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")...)
	}
	return lines, rotated
}

func TestFileRotatesBySizeAndGzipsClosedFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	s, err := Open("jsonl:" + path + "?max_bytes=1kB")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 100 {
		line := fmt.Sprintf(`{"event_id":"e%03d","pad":"%s"}`, i, strings.Repeat("x", 50))
		want = append(want, line)
		if err := s.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 9 {
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, rotated := readAll(t, path)
	if !slices.Equal(got, want) {
		t.Fatalf("files hold %d lines, want the %d written, in order", len(got), len(want))
	}
	if len(rotated) < 5 {
		t.Fatalf("rotated files %v; want ~7 of 1 kB", rotated)
	}
	for _, p := range rotated {
		if !strings.HasSuffix(p, ".gz") {
			t.Fatalf("rotated file %s left uncompressed after Close", p)
		}
		if st, _ := os.Stat(p); st == nil {
			t.Fatalf("%s missing", p)
		}
	}
}

func TestFileRotatesByAge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.jsonl")
	cfg, err := ParseFileURI("jsonl:" + path + "?max_age=1h&gzip=false")
	if err != nil {
		t.Fatal(err)
	}
	sink, err := OpenFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := sink.(*fileSink)
	now := time.Date(2026, 11, 27, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	s.opened = now
	for i := range 4 {
		if err := s.Write(fmt.Appendf(nil, `{"i":%d}`, i)); err != nil {
			t.Fatal(err)
		}
		now = now.Add(40 * time.Minute)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	got, rotated := readAll(t, path)
	if len(rotated) != 1 || !strings.HasSuffix(rotated[0], ".20261127T082000.000000000Z.jsonl") {
		t.Fatalf("rotated %v; want one file closed at 08:20 UTC", rotated)
	}
	if !slices.Equal(got, []string{`{"i":0}`, `{"i":1}`, `{"i":2}`, `{"i":3}`}) {
		t.Fatalf("lines %q", got)
	}
}

func TestFileCompressesWhatAPreviousRunLeft(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.jsonl")
	left := filepath.Join(dir, "a.20261127T070000.000000000Z.jsonl")
	os.WriteFile(left, []byte("{\"old\":1}\n"), 0o644)
	os.WriteFile(left+".gz.tmp", []byte("half"), 0o644)
	other := filepath.Join(dir, "a.notastamp.jsonl")
	os.WriteFile(other, []byte("x"), 0o644)
	s, err := Open("jsonl:" + path + "?max_bytes=1MiB")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{left: false, left + ".gz.tmp": false, left + ".gz": true, other: true} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists=%v, want %v", p, err == nil, want)
		}
	}
}

func TestCSVHeaderColumnsAndRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.csv")
	s, err := Open("csv:" + path)
	if err != nil {
		t.Fatal(err)
	}
	ev := `{"event_id":"e1","series":"host,17","ts":"2026-11-27T07:00:00Z","score":0.97,"threshold":0.9,"severity":"critical","values":{"cpu":0.93},"pipeline":"default","detected_at":"2026-11-27T07:00:01Z"}`
	if err := s.Write([]byte(ev)); err != nil {
		t.Fatal(err)
	}
	var rej *RejectedError
	if err := s.Write([]byte(`{"broken`)); !errors.As(err, &rej) {
		t.Fatalf("broken line: %v; want a rejection", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening an existing file adds no second header.
	s, _ = Open("csv:" + path)
	s.Write([]byte(ev))
	s.Close()
	data, _ := os.ReadFile(path)
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"e1", "host,17", "2026-11-27T07:00:00Z", "0.97", "0.9", "critical", "default", "2026-11-27T07:00:01Z", `{"cpu":0.93}`}
	if len(rows) != 3 || !slices.Equal(rows[0], csvHeader) || !slices.Equal(rows[1], want) || !slices.Equal(rows[2], want) {
		t.Fatalf("rows %q", rows)
	}
}

func TestParseFileURIErrors(t *testing.T) {
	for _, uri := range []string{"jsonl:?max_bytes=1", "csv:/x?max_bytes=lots", "jsonl:/x?max_age=1", "jsonl:/x?gzip=maybe", "jsonl:/x?max_size=1", "jsonl:/x?max_bytes=1&max_bytes=2", "jsonl:/x?max_bytes=0"} {
		if _, err := ParseFileURI(uri); err == nil || !strings.Contains(err.Error(), "jsonl:") && !strings.Contains(err.Error(), "csv:") {
			t.Errorf("ParseFileURI(%q): %v; want an error naming the URI", uri, err)
		}
	}
	cfg, err := ParseFileURI("jsonl:/var/x.jsonl?max_bytes=64MiB&max_age=1h")
	if err != nil || cfg.MaxBytes != 64<<20 || cfg.MaxAge != time.Hour || !cfg.Gzip || cfg.Path != "/var/x.jsonl" {
		t.Fatalf("%+v %v", cfg, err)
	}
}

func FuzzParseFileURI(f *testing.F) {
	for _, s := range []string{"jsonl:/a.jsonl", "csv:/a.csv?max_bytes=10MB&max_age=1h&gzip=false", "jsonl:x?max_bytes=9223372036854775807GiB", "jsonl:x?%zz", "csv:?", "jsonl:a?max_bytes=1kib"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		cfg, err := ParseFileURI(uri)
		if err != nil {
			return
		}
		if cfg.Path == "" || cfg.MaxBytes < 0 || cfg.MaxAge < 0 {
			t.Fatalf("%q parsed to %+v", uri, cfg)
		}
	})
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"4096", "100MB", "64MiB", "1gib", "", "x", "99999999999999999999", "1 kB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := parseBytes(s); err == nil && n <= 0 {
			t.Fatalf("parseBytes(%q) = %d", s, n)
		}
	})
}
