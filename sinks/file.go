package sinks

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

type fileFormat int

const (
	formatJSONL fileFormat = iota
	formatCSV
)

func (f fileFormat) String() string { return [...]string{"jsonl", "csv"}[f] }

// csvHeader names the CSV sink's columns; values is the event's values map as JSON.
var csvHeader = []string{"event_id", "series", "ts", "score", "threshold", "severity", "pipeline", "detected_at", "values"}

// rotatedLayout stamps a rotated file's name: fixed width, so names sort by time.
const rotatedLayout = "20060102T150405.000000000Z"

// FileConfig configures a JSONL or CSV file sink.
type FileConfig struct {
	Path     string
	Format   fileFormat
	MaxBytes int64         // rotate before a write would pass this size; 0: never
	MaxAge   time.Duration // rotate a file this old at the next write; 0: never
	Gzip     bool          // compress rotated files in the background
}

// ParseFileURI reads "jsonl:PATH?max_bytes=64MiB&max_age=1h&gzip=true" (or csv:).
func ParseFileURI(uri string) (FileConfig, error) {
	var cfg FileConfig
	rest, ok := strings.CutPrefix(uri, "jsonl:")
	if !ok {
		if rest, ok = strings.CutPrefix(uri, "csv:"); !ok {
			return cfg, fmt.Errorf("sink %q: not a file sink (jsonl:PATH or csv:PATH)", uri)
		}
		cfg.Format = formatCSV
	}
	path, query, _ := strings.Cut(rest, "?")
	if path == "" {
		return cfg, fmt.Errorf("sink %q: %s needs a path (%s:/var/lib/gonomaly/anomalies.%s)", uri, cfg.Format, cfg.Format, cfg.Format)
	}
	o, err := parseOptions(strconv.Quote(uri), query)
	if err != nil {
		return cfg, err
	}
	cfg.Path = path
	if cfg.MaxBytes, err = o.bytes("max_bytes", 0); err != nil {
		return cfg, err
	}
	if cfg.MaxAge, err = o.duration("max_age", 0, time.Second, 100*365*24*time.Hour); err != nil {
		return cfg, err
	}
	if cfg.Gzip, err = o.bool("gzip", true); err != nil {
		return cfg, err
	}
	return cfg, o.unknown()
}

func openFile(uri string) (Sink, error) {
	cfg, err := ParseFileURI(uri)
	if err != nil {
		return nil, err
	}
	s, err := OpenFile(cfg)
	if err != nil {
		return nil, fmt.Errorf("sink %q: %w", uri, err)
	}
	return s, nil
}

// fileSink appends lines (JSONL) or rows (CSV) to Path through a buffer, fsyncs on Sync,
// and rotates the file by size and age: the full file is fsynced, renamed to
// NAME.<UTC time>.EXT, and gzipped in the background. A rotated file is only removed
// once its .gz is complete and synced, and files a previous process left uncompressed
// are compressed when the sink opens again, so no file is ever lost.
type fileSink struct {
	cfg    FileConfig
	now    func() time.Time
	f      *os.File
	w      *bufio.Writer
	size   int64 // bytes in the current file, buffered ones included
	rows   int   // data lines in the current file since it was opened
	opened time.Time

	row  bytes.Buffer // one CSV row being encoded
	csvw *csv.Writer
	rec  []string

	gz *compressor
}

// OpenFile opens a file sink.
func OpenFile(cfg FileConfig) (Sink, error) {
	if dir := filepath.Dir(cfg.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	s := &fileSink{cfg: cfg, now: time.Now, rec: make([]string, len(csvHeader))}
	s.csvw = csv.NewWriter(&s.row)
	if err := s.openCurrent(); err != nil {
		return nil, err
	}
	if cfg.Gzip && (cfg.MaxBytes > 0 || cfg.MaxAge > 0) {
		s.gz = newCompressor()
		left, err := s.leftovers()
		if err != nil {
			s.f.Close()
			return nil, err
		}
		for _, p := range left {
			s.gz.add(p)
		}
	}
	return s, nil
}

func (s *fileSink) kind() string { return s.cfg.Format.String() }

func (s *fileSink) openCurrent() error {
	f, err := os.OpenFile(s.cfg.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	s.f, s.size, s.rows, s.opened = f, st.Size(), 0, s.now()
	if s.w == nil {
		s.w = bufio.NewWriterSize(f, 256<<10)
	} else {
		s.w.Reset(f)
	}
	if s.cfg.Format == formatCSV && s.size == 0 {
		// Not through s.row: a rotation may run while s.row holds the row to write.
		n, _ := s.w.WriteString(strings.Join(csvHeader, ",") + "\n")
		s.size += int64(n)
	}
	return nil
}

// rotatedName is the name a file gets when it is rotated at t.
func (s *fileSink) rotatedName(t time.Time) string {
	ext := filepath.Ext(s.cfg.Path)
	return strings.TrimSuffix(s.cfg.Path, ext) + "." + t.UTC().Format(rotatedLayout) + ext
}

// leftovers lists rotated files a previous process did not compress, and removes
// half-written .gz.tmp files (their source is still there).
func (s *fileSink) leftovers() ([]string, error) {
	ext := filepath.Ext(s.cfg.Path)
	stem := filepath.Base(strings.TrimSuffix(s.cfg.Path, ext)) + "."
	entries, err := os.ReadDir(filepath.Dir(s.cfg.Path))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, stem) {
			continue
		}
		mid := strings.TrimPrefix(name, stem)
		full := filepath.Join(filepath.Dir(s.cfg.Path), name)
		switch {
		case strings.HasSuffix(mid, ext+".gz.tmp") && isStamp(strings.TrimSuffix(mid, ext+".gz.tmp")):
			if err := os.Remove(full); err != nil {
				return nil, err
			}
		case strings.HasSuffix(mid, ext) && isStamp(strings.TrimSuffix(mid, ext)):
			out = append(out, full)
		}
	}
	slices.Sort(out)
	return out, nil
}

func isStamp(s string) bool { _, err := time.Parse(rotatedLayout, s); return err == nil }

func (s *fileSink) Write(line []byte) error {
	if s.cfg.Format == formatCSV {
		row, err := s.csvRow(line)
		if err != nil {
			return Reject(err)
		}
		return s.append(row, false)
	}
	return s.append(line, true)
}

func (s *fileSink) append(b []byte, newline bool) error {
	n := int64(len(b))
	if newline {
		n++
	}
	if s.rows > 0 && ((s.cfg.MaxBytes > 0 && s.size+n > s.cfg.MaxBytes) || (s.cfg.MaxAge > 0 && s.now().Sub(s.opened) >= s.cfg.MaxAge)) {
		if err := s.rotate(); err != nil {
			return fmt.Errorf("rotate %s: %w", s.cfg.Path, err)
		}
	}
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	if newline {
		if err := s.w.WriteByte('\n'); err != nil {
			return err
		}
	}
	s.size += n
	s.rows++
	return nil
}

// rotate makes the current file durable, renames it, and starts a new one. The rename
// is synced in the directory before the new file takes writes.
func (s *fileSink) rotate() error {
	if err := s.Sync(); err != nil {
		return err
	}
	if err := s.f.Close(); err != nil {
		return err
	}
	name := s.rotatedName(s.now())
	if err := os.Rename(s.cfg.Path, name); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(s.cfg.Path)); err != nil {
		return err
	}
	if err := s.openCurrent(); err != nil {
		return err
	}
	if s.gz != nil {
		s.gz.add(name)
	}
	return nil
}

// csvEvent is what the CSV sink reads from an event or result line.
type csvEvent struct {
	EventID    string             `json:"event_id"`
	Series     string             `json:"series"`
	TS         json.RawMessage    `json:"ts"`
	Score      *float64           `json:"score"`
	Threshold  *float64           `json:"threshold"`
	Severity   string             `json:"severity"`
	Pipeline   string             `json:"pipeline"`
	DetectedAt json.RawMessage    `json:"detected_at"`
	Values     map[string]float64 `json:"values"`
}

func (s *fileSink) csvRow(line []byte) ([]byte, error) {
	var ev csvEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return nil, fmt.Errorf("csv: not an event: %w", err)
	}
	values, err := json.Marshal(ev.Values)
	if err != nil {
		return nil, fmt.Errorf("csv: values: %w", err)
	}
	s.rec[0], s.rec[1], s.rec[2] = ev.EventID, ev.Series, rawScalar(ev.TS)
	s.rec[3], s.rec[4] = formatFloat(ev.Score), formatFloat(ev.Threshold)
	s.rec[5], s.rec[6], s.rec[7], s.rec[8] = ev.Severity, ev.Pipeline, rawScalar(ev.DetectedAt), string(values)
	s.row.Reset()
	if err := s.csvw.Write(s.rec); err != nil {
		return nil, err
	}
	s.csvw.Flush()
	return s.row.Bytes(), s.csvw.Error()
}

// rawScalar renders a JSON string unquoted and anything else as it is.
func rawScalar(raw json.RawMessage) string {
	var str string
	if json.Unmarshal(raw, &str) == nil {
		return str
	}
	if string(raw) == "null" {
		return ""
	}
	return string(raw)
}

func formatFloat(f *float64) string {
	if f == nil || math.IsNaN(*f) {
		return ""
	}
	return strconv.FormatFloat(*f, 'g', -1, 64)
}

func (s *fileSink) Sync() error {
	if err := s.w.Flush(); err != nil {
		return err
	}
	return fsync(s.f)
}

// Close syncs and closes the file, then waits for background compression to finish.
func (s *fileSink) Close() error {
	err := errors.Join(s.Sync(), s.f.Close())
	if s.gz != nil {
		err = errors.Join(err, s.gz.close())
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return fsync(d)
}

// compressor gzips rotated files one at a time in the background.
type compressor struct {
	mu      sync.Mutex
	cond    *sync.Cond
	queue   []string
	closing bool
	err     error
	done    chan struct{}
}

func newCompressor() *compressor {
	c := &compressor{done: make(chan struct{})}
	c.cond = sync.NewCond(&c.mu)
	go c.run()
	return c
}

func (c *compressor) add(path string) {
	c.mu.Lock()
	c.queue = append(c.queue, path)
	c.mu.Unlock()
	c.cond.Signal()
}

func (c *compressor) run() {
	defer close(c.done)
	for {
		c.mu.Lock()
		for len(c.queue) == 0 && !c.closing {
			c.cond.Wait()
		}
		if len(c.queue) == 0 {
			c.mu.Unlock()
			return
		}
		path := c.queue[0]
		c.queue = c.queue[1:]
		c.mu.Unlock()
		if err := gzipFile(path); err != nil {
			// The rotated file stays as it is; the next open compresses it.
			c.mu.Lock()
			c.err = errors.Join(c.err, err)
			c.mu.Unlock()
		}
	}
}

// close waits until every queued file is compressed.
func (c *compressor) close() error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.cond.Broadcast()
	<-c.done
	return c.err
}

// gzipFile writes path.gz next to path and removes path only once the .gz is synced
// under its final name.
func gzipFile(path string) error {
	src, err := os.Open(path)
	if err != nil {
		return err
	}
	defer src.Close()
	tmp := path + ".gz.tmp"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(dst)
	_, err = io.Copy(zw, src)
	err = errors.Join(err, zw.Close(), dst.Sync(), dst.Close())
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("gzip %s: %w", path, err)
	}
	if err := os.Rename(tmp, path+".gz"); err != nil {
		return err
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return err
	}
	return os.Remove(path)
}
