package detectors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Snapshots of streaming detectors and calibrators (their Persistent implementations)
// share one layout: a format version byte, a byte naming the type, then the type's
// configuration and state. Fixed-width numbers are little-endian; counts and small
// integers are unsigned LEB128 varints (binary.AppendUvarint). A snapshot carries its
// configuration, so it restores into a zero value as well as into a configured instance,
// and it is canonical: map entries are written sorted, so equal states give equal bytes.
//
// Decoding never panics and never trusts a length: every count is checked against the
// bytes left and against snapshotMemoryLimit before anything is allocated, every index
// against what it indexes, and structures (trees, windows) are validated as they are
// rebuilt. On error the receiver is unchanged.

// snapshotVersion is the layout above; bump it when any type's encoding changes.
const snapshotVersion = 1

// Type tags, after the version byte: a snapshot restored into the wrong type is an error,
// not garbage.
const (
	snapZScore byte = 1 + iota
	snapEWMA
	snapHST
	snapRRCF
	snapXStream
	snapSeasonal
	snapECDF
	snapGaussian
	snapPOT
	snapRolling
	snapWindowedGaussian // the gaussian detector; snapGaussian is the calibrator
)

var (
	// ErrSnapshotVersion: the snapshot was written by a format this build does not read.
	ErrSnapshotVersion = errors.New("unknown snapshot format version")
	// ErrSnapshotCorrupt: the snapshot is truncated, of another type, or inconsistent.
	ErrSnapshotCorrupt = errors.New("corrupt snapshot")
)

// snapshotMemoryLimit bounds what restoring one snapshot may allocate, so that a corrupt
// configuration (trees = 1000, tree_size = 100000, a wide forest) fails instead of taking
// the process down. A variable so the fuzz test can lower it.
var snapshotMemoryLimit = 8 << 30

// snapWriter appends a snapshot.
type snapWriter struct{ b []byte }

func newSnapWriter(kind byte, sizeHint int) *snapWriter {
	w := &snapWriter{b: make([]byte, 0, sizeHint+2)}
	w.b = append(w.b, snapshotVersion, kind)
	return w
}

func (w *snapWriter) u8(v byte)      { w.b = append(w.b, v) }
func (w *snapWriter) uvar(v uint64)  { w.b = binary.AppendUvarint(w.b, v) }
func (w *snapWriter) ivar(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *snapWriter) u64(v uint64)   { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *snapWriter) f64(v float64)  { w.u64(math.Float64bits(v)) }
func (w *snapWriter) boolean(v bool) { w.u8(byte(b2u(v))) }
func (w *snapWriter) str(s string)   { w.uvar(uint64(len(s))); w.b = append(w.b, s...) }
func (w *snapWriter) raw(p []byte)   { w.uvar(uint64(len(p))); w.b = append(w.b, p...) }
func (w *snapWriter) int(v int)      { w.uvar(uint64(v)) }
func (w *snapWriter) floats(v []float64) {
	for _, x := range v {
		w.f64(x)
	}
}

// snapReader decodes a snapshot. The first error sticks: later reads return zeros, so a
// decoder reads straight through and checks err (or done) once.
type snapReader struct {
	b      []byte
	off    int
	err    error
	what   string // the type, for messages
	budget int    // bytes it may still allocate
}

// newSnapReader checks the version and type bytes.
func newSnapReader(data []byte, kind byte, what string) (*snapReader, error) {
	r := &snapReader{b: data, what: what, budget: snapshotMemoryLimit}
	switch {
	case len(data) < 2:
		return nil, fmt.Errorf("%s snapshot: %d bytes, too short: %w", what, len(data), ErrSnapshotCorrupt)
	case data[0] != snapshotVersion:
		return nil, fmt.Errorf("%s snapshot: format version %d, this build reads %d: %w", what, data[0], snapshotVersion, ErrSnapshotVersion)
	case data[1] != kind:
		return nil, fmt.Errorf("%s snapshot: type tag %d, want %d (a snapshot of another type?): %w", what, data[1], kind, ErrSnapshotCorrupt)
	}
	r.off = 2
	return r, nil
}

// fail records the first error.
func (r *snapReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%s snapshot at byte %d: %s: %w", r.what, r.off, fmt.Sprintf(format, args...), ErrSnapshotCorrupt)
	}
}

func (r *snapReader) left() int { return len(r.b) - r.off }

func (r *snapReader) take(n int, field string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.left() {
		r.fail("truncated reading %s", field)
		return nil
	}
	p := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return p
}

func (r *snapReader) u8(field string) byte {
	if p := r.take(1, field); p != nil {
		return p[0]
	}
	return 0
}

func (r *snapReader) boolean(field string) bool {
	switch v := r.u8(field); v {
	case 0:
		return false
	case 1:
		return true
	default:
		r.fail("%s = %d is not a boolean", field, v)
		return false
	}
}

func (r *snapReader) uvar(field string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b[r.off:])
	if n <= 0 {
		r.fail("truncated or overlong varint reading %s", field)
		return 0
	}
	r.off += n
	return v
}

func (r *snapReader) ivar(field string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b[r.off:])
	if n <= 0 {
		r.fail("truncated or overlong varint reading %s", field)
		return 0
	}
	r.off += n
	return v
}

func (r *snapReader) u64(field string) uint64 {
	if p := r.take(8, field); p != nil {
		return binary.LittleEndian.Uint64(p)
	}
	return 0
}

func (r *snapReader) f64(field string) float64 { return math.Float64frombits(r.u64(field)) }

// finite reads a float64 that must be finite.
func (r *snapReader) finite(field string) float64 {
	v := r.f64(field)
	if r.err == nil && !finite(v) {
		r.fail("%s = %v is not finite", field, v)
	}
	return v
}

// intIn reads an integer that must lie in [lo, hi].
func (r *snapReader) intIn(lo, hi int, field string) int {
	v := r.uvar(field)
	if r.err != nil {
		return lo
	}
	if v > uint64(math.MaxInt32)<<16 || int(v) < lo || int(v) > hi {
		r.fail("%s = %d is out of range [%d, %d]", field, v, lo, hi)
		return lo
	}
	return int(v)
}

// count reads how many items follow, each taking at least minBytes of the snapshot, so
// a corrupt count fails here instead of driving a huge allocation.
func (r *snapReader) count(minBytes int, field string) int {
	v := r.uvar(field)
	if r.err != nil {
		return 0
	}
	if v > uint64(r.left()/max(minBytes, 1)) {
		r.fail("%s = %d, more than the %d bytes left can hold", field, v, r.left())
		return 0
	}
	return int(v)
}

// alloc charges n bytes to the allocation budget and reports whether they fit.
func (r *snapReader) alloc(n int, field string) bool {
	if r.err != nil {
		return false
	}
	if n < 0 || n > r.budget {
		r.fail("%s needs %d bytes, over the %d bytes a snapshot may allocate", field, n, r.budget)
		return false
	}
	r.budget -= n
	return true
}

func (r *snapReader) str(field string) string {
	n := r.count(1, field)
	return string(r.take(n, field))
}

func (r *snapReader) raw(field string) []byte {
	n := r.count(1, field)
	return r.take(n, field)
}

// floats fills v with float64s.
func (r *snapReader) floats(v []float64, field string) {
	p := r.take(8*len(v), field)
	if p == nil {
		return
	}
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(p[8*i:]))
	}
}

// done is the decoder's verdict: its first error, or trailing bytes.
func (r *snapReader) done() error {
	if r.err == nil && r.left() != 0 {
		r.fail("%d bytes left over", r.left())
	}
	return r.err
}

// sortedKeys returns a map's keys in order, for canonical snapshots.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// sortedInts returns a map's integer keys in order.
func sortedInts[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
