package perf

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/pprof/profile"
)

// Hotspot is one function's share of a profile.
type Hotspot struct {
	Name      string
	Flat, Cum int64
}

// HotspotReport is a profile summed per function, for one sample type.
type HotspotReport struct {
	SampleType, Unit string
	Total            int64
	Duration         time.Duration
	Funcs            []Hotspot
}

// sampleIndex finds sampleType among p's sample types; "" takes the profile's default
// (or its last type: cpu, inuse_space).
func sampleIndex(p *profile.Profile, sampleType string) (int, error) {
	idx := len(p.SampleType) - 1
	if sampleType == "" {
		sampleType = p.DefaultSampleType
	}
	if sampleType != "" {
		idx = slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == sampleType })
		if idx < 0 {
			var names []string
			for _, t := range p.SampleType {
				names = append(names, t.Type)
			}
			return -1, fmt.Errorf("%q is not in this profile (it has %s)", sampleType, strings.Join(names, ", "))
		}
	}
	if idx < 0 {
		return -1, fmt.Errorf("the profile has no sample types")
	}
	return idx, nil
}

// frames calls fn with every function name of a sample's stack, innermost first (inlined
// calls as their own functions), naming unsymbolized frames by address.
func frames(s *profile.Sample, fn func(name string)) {
	for _, loc := range s.Location {
		if len(loc.Line) == 0 {
			fn(fmt.Sprintf("0x%x", loc.Address))
			continue
		}
		for _, ln := range loc.Line { // innermost (inlined) first
			name := "?"
			if ln.Function != nil {
				name = ln.Function.Name
			}
			fn(name)
		}
	}
}

// Hotspots sums a profile per function: flat is what the function itself spent (the
// innermost frame of a sample, inlined calls counted as their own functions), cum is
// flat plus everything it called (each function once per sample, so recursion does not
// count twice).
func Hotspots(p *profile.Profile, sampleType string) (*HotspotReport, error) {
	idx, err := sampleIndex(p, sampleType)
	if err != nil {
		return nil, err
	}
	rep := &HotspotReport{SampleType: p.SampleType[idx].Type, Unit: p.SampleType[idx].Unit, Duration: time.Duration(p.DurationNanos)}
	byName := map[string]*Hotspot{}
	seen := map[string]bool{}
	for _, s := range p.Sample {
		v := s.Value[idx]
		if v == 0 {
			continue
		}
		rep.Total += v
		clear(seen)
		leaf := true
		frames(s, func(name string) {
			h := byName[name]
			if h == nil {
				h = &Hotspot{Name: name}
				byName[name] = h
			}
			if leaf {
				h.Flat += v
				leaf = false
			}
			if !seen[name] {
				seen[name] = true
				h.Cum += v
			}
		})
	}
	for _, h := range byName {
		rep.Funcs = append(rep.Funcs, *h)
	}
	rep.Sort(false)
	return rep, nil
}

// Sort orders the functions by flat (or cum) value, largest first; ties by the other
// value, then by name, so reports are stable.
func (r *HotspotReport) Sort(byCum bool) {
	key := func(h Hotspot) int64 { return h.Flat }
	other := func(h Hotspot) int64 { return h.Cum }
	if byCum {
		key, other = other, key
	}
	slices.SortFunc(r.Funcs, func(a, b Hotspot) int {
		return cmp.Or(cmp.Compare(key(b), key(a)), cmp.Compare(other(b), other(a)), strings.Compare(a.Name, b.Name))
	})
}

// Format prints a value in the sample type's unit.
func (r *HotspotReport) Format(v int64) string { return formatValue(r.Unit, v) }

func formatValue(unit string, v int64) string {
	switch unit {
	case "nanoseconds":
		return time.Duration(v).Round(time.Millisecond).String()
	case "bytes":
		f := float64(v)
		for _, u := range []string{"B", "kB", "MB", "GB"} {
			if f < 1024 || u == "GB" {
				if u == "B" {
					return fmt.Sprintf("%dB", v)
				}
				return fmt.Sprintf("%.1f%s", f, u)
			}
			f /= 1024
		}
	}
	return fmt.Sprint(v)
}

// hotspotHints say what a hot function usually means in gonomaly, first match wins:
// more specific prefixes come before the packages that contain them.
var hotspotHints = []struct{ match, hint string }{
	{"runtime.gcBgMarkWorker", "GC: reduce allocation or raise GOGC"},
	{"runtime.gcDrain", "GC: reduce allocation or raise GOGC"},
	{"runtime.scanobject", "GC: reduce allocation or raise GOGC"},
	{"runtime.markroot", "GC: reduce allocation or raise GOGC"},
	{"runtime.greyobject", "GC: reduce allocation or raise GOGC"},
	{"runtime.findObject", "GC: reduce allocation or raise GOGC"},
	{"runtime.bgsweep", "GC: reduce allocation or raise GOGC"},
	{"runtime.mallocgc", "allocation: look for per-record allocations"},
	{"runtime.newobject", "allocation: look for per-record allocations"},
	{"runtime.makeslice", "allocation: look for per-record allocations"},
	{"runtime.growslice", "allocation: slices growing, preallocate their capacity"},
	{"runtime.makemap", "allocation: a map per record? reuse or preallocate"},
	{"runtime.mapassign", "map writes: a map per record, or one growing"},
	{"runtime.mapaccess", "map lookups"},
	{"runtime.memmove", "copying memory: buffers copied per record"},
	{"runtime.memclr", "clearing memory: large fresh allocations"},
	{"runtime.concatstring", "string concatenation: build keys without allocating"},
	{"runtime.slicebytetostring", "[]byte to string conversion per record"},
	{"runtime.futex", "scheduler: goroutines waking and sleeping (contention or idle workers)"},
	{"runtime.usleep", "scheduler: spinning while idle"},
	{"runtime.selectgo", "channel select: goroutine hand-offs"},
	{"runtime.chan", "channel operations: goroutine hand-offs"},
	{"runtime.netpoll", "I/O: waiting on the network"},
	{"runtime.", "Go runtime"},
	{"runtime/pprof", "the profiler itself"},
	{"syscall.", "I/O: system calls (network, files)"},
	{"internal/runtime/syscall", "I/O: system calls (network, files)"},
	{"internal/poll.", "I/O: network and file reads and writes"},
	{"net.", "I/O: network"},
	{"github.com/twmb/franz-go/pkg/kfake", "embedded broker (kfake): a real cluster takes this off the process"},
	{"github.com/twmb/franz-go", "Kafka client: batching, compression, requests"},
	{"github.com/klauspost/compress", "compression (Kafka batches, HTTP)"},
	{"github.com/pierrec/lz4", "compression (Kafka batches, HTTP)"},
	{"github.com/golang/snappy", "compression (Kafka batches, HTTP)"},
	{"compress/", "compression"},
	{"github.com/gonomaly/gonomaly/detectors.", "detector scoring: the algorithms' cost, see bench"},
	{"gonum.org/", "numerics (gonum): detector or training linear algebra"},
	{"encoding/json", "JSON encoding: Avro output is cheaper"},
	{"JSON", "JSON encoding: Avro output is cheaper"},
	{"github.com/linkedin/goavro", "Avro encoding"},
	{"Avro", "Avro encoding"},
	{"github.com/gonomaly/gonomaly/schemas.", "message decoding and encoding"},
	{"strconv.", "number parsing and formatting"},
	{"github.com/gonomaly/gonomaly/processors.", "stage code around the detectors"},
	{"github.com/gonomaly/gonomaly/producers.", "producer: record generation or parsing"},
	{"github.com/gonomaly/gonomaly/jobs.", "job system"},
	{"github.com/gonomaly/gonomaly/api.", "HTTP API handlers"},
	{"github.com/labstack/echo", "HTTP API"},
	{"net/http", "HTTP serving"},
	{"github.com/prometheus/", "metrics"},
	{"log/slog", "logging: lower the log level"},
	{"sync.", "locks: contention between goroutines"},
	{"hash/", "hashing: event ids and keys"},
	{"crypto/", "cryptography: TLS or hashing"},
	{"sort.", "sorting"},
	{"slices.", "slice helpers: growing, sorting, searching"},
	{"github.com/gonomaly/gonomaly", "gonomaly code: go tool pprof -list FUNC on a --save'd profile"},
}

// HotspotHint is the hint for a function name, "-" when none applies.
func HotspotHint(name string) string {
	for _, h := range hotspotHints {
		if strings.HasPrefix(name, h.match) || (h.match == "JSON" || h.match == "Avro") && strings.Contains(name, h.match) {
			return h.hint
		}
	}
	return "-"
}
