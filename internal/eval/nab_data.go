package eval

import (
	"bufio"
	"bytes"
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
	"time"
)

// NABSeries is one labelled series of a NAB corpus: its rows in file order and its
// windows mapped to row indices.
type NABSeries struct {
	NABLabels           // Name is the corpus key, "category/name.csv"
	TS        []int64   // Unix milliseconds, in file order (NAB has one step back in time)
	Values    []float64 // finite
}

// NABCorpus is a loaded corpus, series sorted by name.
type NABCorpus struct {
	Series []*NABSeries
	// Unmatched are label keys with no file under the data directory. They are not an
	// error so that a subset of NAB can be scored with NAB's own combined_windows.json;
	// the caller should say so, because the score is then not comparable with NAB's.
	Unmatched []string
}

// Labels returns the scorer's view of every series.
func (c *NABCorpus) Labels() []NABLabels {
	out := make([]NABLabels, len(c.Series))
	for i, s := range c.Series {
		out[i] = s.NABLabels
	}
	return out
}

// Windows counts the anomaly windows of the corpus.
func (c *NABCorpus) Windows() int {
	n := 0
	for _, s := range c.Series {
		n += len(s.Windows)
	}
	return n
}

// LoadNAB reads a corpus laid out like NAB's: dataDir/<category>/<name>.csv files with a
// `timestamp,value` header, and a labels file mapping "category/name.csv" to windows
// [[start, end], ...]. CSV files at other depths are not series (NAB keeps its labels
// and licence beside the categories). A series without a labels entry is an error — an
// unlabelled file would silently score as "no anomalies" — and errors name file and line.
func LoadNAB(dataDir, labelsPath string) (*NABCorpus, error) {
	labels, err := loadNABLabels(labelsPath)
	if err != nil {
		return nil, err
	}
	// Exactly two levels: NAB keeps its labels and licence beside the categories.
	var paths []string
	cats, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, err
	}
	for _, c := range cats {
		if !c.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(dataDir, c.Name()))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if !f.IsDir() && strings.HasSuffix(f.Name(), ".csv") {
				paths = append(paths, c.Name()+"/"+f.Name())
			}
		}
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("%s: no <category>/<name>.csv files", dataDir)
	}
	slices.Sort(paths)

	var unlabelled []string
	for _, p := range paths {
		if _, ok := labels[p]; !ok {
			unlabelled = append(unlabelled, p)
		}
	}
	if len(unlabelled) > 0 {
		return nil, fmt.Errorf("%s: no windows for %d series in %s: %s (an empty list [] marks a series without anomalies)",
			labelsPath, len(unlabelled), dataDir, strings.Join(unlabelled, ", "))
	}

	c := &NABCorpus{}
	for _, p := range paths {
		s, err := loadNABSeries(filepath.Join(dataDir, filepath.FromSlash(p)), p, labels[p])
		if err != nil {
			return nil, err
		}
		c.Series = append(c.Series, s)
		delete(labels, p)
	}
	for k := range labels {
		c.Unmatched = append(c.Unmatched, k)
	}
	slices.Sort(c.Unmatched)
	return c, nil
}

// nabLabelWindow is a window as the labels file gives it, with the line it is on.
type nabLabelWindow struct {
	start, end time.Time
	line       int
}

// loadNABLabels reads combined_windows.json: {"category/name.csv": [[start, end], ...]}.
func loadNABLabels(path string) (map[string][]nabLabelWindow, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string][]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s%s: %w", path, jsonErrorLine(data, err), err)
	}
	// Windows are located by searching for their raw text, so errors can name a line
	// even though encoding/json does not keep positions.
	out := make(map[string][]nabLabelWindow, len(raw))
	for key, ws := range raw {
		keyAt := bytes.Index(data, []byte(strconv.Quote(key)))
		var list []nabLabelWindow
		from := max(keyAt, 0)
		for j, w := range ws {
			at := bytes.Index(data[from:], w)
			line := 0
			if at >= 0 {
				line = 1 + bytes.Count(data[:from+at], []byte("\n"))
				from += at + len(w)
			}
			where := fmt.Sprintf("%s:%d: %s window %d", path, line, key, j+1)
			var pair []string
			if err := json.Unmarshal(w, &pair); err != nil || len(pair) != 2 {
				return nil, fmt.Errorf("%s: want [\"start\", \"end\"], got %s", where, w)
			}
			start, err1 := parseNABTime(pair[0])
			end, err2 := parseNABTime(pair[1])
			if err := errors.Join(err1, err2); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			if end.Before(start) {
				return nil, fmt.Errorf("%s: ends (%s) before it starts (%s)", where, pair[1], pair[0])
			}
			list = append(list, nabLabelWindow{start: start, end: end, line: line})
		}
		slices.SortFunc(list, func(a, b nabLabelWindow) int { return a.start.Compare(b.start) })
		out[key] = list
	}
	return out, nil
}

// jsonErrorLine turns the offset in a json error into " line N" (or nothing).
func jsonErrorLine(data []byte, err error) string {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 || off > int64(len(data)) {
		return ""
	}
	return fmt.Sprintf(":%d", 1+bytes.Count(data[:off], []byte("\n")))
}

// parseNABTime reads NAB's "2014-07-01 00:00:00" with optional fractional seconds (the
// labels carry ".000000"), or RFC 3339; times without a zone are UTC.
func parseNABTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.DateTime, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("timestamp %q: want \"2006-01-02 15:04:05[.ffffff]\" or RFC 3339", s)
}

// loadNABSeries reads one series and maps its windows to rows: a window covers the first
// row at or after its start to the last row at or before its end. Rows are taken in file
// order even where time steps back (NAB's machine_temperature_system_failure does, by an
// hour), so the scan stops at the first row past the end rather than searching.
func loadNABSeries(path, name string, windows []nabLabelWindow) (*NABSeries, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := csv.NewReader(bufio.NewReaderSize(f, 1<<16))
	cr.ReuseRecord = true
	cr.FieldsPerRecord = 2
	header, err := cr.Read()
	if err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("%s:1: empty file, want header timestamp,value", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if strings.TrimPrefix(strings.TrimSpace(header[0]), "\ufeff") != "timestamp" || strings.TrimSpace(header[1]) != "value" {
		return nil, fmt.Errorf("%s:1: header %q, want timestamp,value", path, strings.Join(header, ","))
	}
	s := &NABSeries{NABLabels: NABLabels{Name: name}}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err) // csv.ParseError names the line
		}
		t, err := parseNABTime(rec[0])
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		ts := t.UnixMilli()
		v, err := strconv.ParseFloat(strings.TrimSpace(rec[1]), 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%s:%d: value %q is not a finite number", path, line, rec[1])
		}
		s.TS = append(s.TS, ts)
		s.Values = append(s.Values, v)
	}
	if len(s.TS) == 0 {
		return nil, fmt.Errorf("%s: no rows", path)
	}
	s.Rows = len(s.TS)
	s.Probation = NABProbation(s.Rows)
	for j, w := range windows {
		start, end := w.start.UnixMilli(), w.end.UnixMilli()
		l := 0 // first row at or after the start
		for l < s.Rows && s.TS[l] < start {
			l++
		}
		r := l // then the run of rows up to the end
		for r < s.Rows && s.TS[r] <= end {
			r++
		}
		r--
		if l > r {
			return nil, fmt.Errorf("%s: window %d of %s [%s, %s] (labels line %d) covers no row of the series",
				path, j+1, name, w.start.Format(time.DateTime), w.end.Format(time.DateTime), w.line)
		}
		if k := len(s.Windows); k > 0 && l <= s.Windows[k-1].End {
			return nil, fmt.Errorf("%s: window %d of %s (labels line %d) overlaps the one before it",
				path, j+1, name, w.line)
		}
		s.Windows = append(s.Windows, NABWindow{Start: l, End: r})
	}
	return s, nil
}
