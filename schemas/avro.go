package schemas

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Hand-written Avro binary encoding (https://avro.apache.org/docs/1.12.0/specification/),
// only as much as our schemas need. goavro's generic codec goes through interface{}
// values and allocates per field, which the pipeline's throughput target cannot afford.

func appendLong(dst []byte, v int64) []byte {
	u := uint64(v<<1) ^ uint64(v>>63) // zigzag
	for u >= 0x80 {
		dst = append(dst, byte(u)|0x80)
		u >>= 7
	}
	return append(dst, byte(u))
}

func appendDouble(dst []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
}

func appendBool(dst []byte, v bool) []byte {
	if v {
		return append(dst, 1)
	}
	return append(dst, 0)
}

func appendString(dst []byte, s string) []byte {
	dst = appendLong(dst, int64(len(s)))
	return append(dst, s...)
}

// Arrays and maps are written as one block followed by the zero-count terminator.

func appendStringArray(dst []byte, a []string) []byte {
	if len(a) > 0 {
		dst = appendLong(dst, int64(len(a)))
		for _, s := range a {
			dst = appendString(dst, s)
		}
	}
	return append(dst, 0)
}

func appendDoubleArray(dst []byte, a []float64) []byte {
	if len(a) > 0 {
		dst = appendLong(dst, int64(len(a)))
		for _, f := range a {
			dst = appendDouble(dst, f)
		}
	}
	return append(dst, 0)
}

// Map keys are written sorted so that equal values give equal bytes (golden files,
// deduplication by content).

func appendDoubleMap(dst []byte, m map[string]float64) []byte {
	if len(m) > 0 {
		var buf [16]string
		dst = appendLong(dst, int64(len(m)))
		for _, k := range sortedKeys(m, buf[:0]) {
			dst = appendString(dst, k)
			dst = appendDouble(dst, m[k])
		}
	}
	return append(dst, 0)
}

func appendStringMap(dst []byte, m map[string]string) []byte {
	if len(m) > 0 {
		var buf [16]string
		dst = appendLong(dst, int64(len(m)))
		for _, k := range sortedKeys(m, buf[:0]) {
			dst = appendString(dst, k)
			dst = appendString(dst, m[k])
		}
	}
	return append(dst, 0)
}

func appendSource(dst []byte, s *Source) []byte {
	dst = appendString(dst, s.Topic)
	dst = appendLong(dst, int64(s.Partition))
	return appendLong(dst, s.Offset)
}

// sortedKeys returns m's keys in order, using buf's storage when it is large enough; the
// callers pass a stack array so that small maps cost no allocation.
func sortedKeys[V any](m map[string]V, buf []string) []string {
	keys := buf[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// avroReader decodes Avro binary data. The first error sticks: later reads return zero
// values, so decoders can read a whole record and check err once per section.
type avroReader struct {
	b     []byte
	i     int
	field string // field being read, for error messages
	err   *DecodeError
}

func (r *avroReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = &DecodeError{Field: r.field, Offset: -1, Msg: fmt.Sprintf(format, args...)}
	}
}

func (r *avroReader) failEOF() { r.fail("unexpected end of input") }

func (r *avroReader) left() int { return len(r.b) - r.i }

func (r *avroReader) long() int64 {
	if r.err != nil {
		return 0
	}
	var u uint64
	for shift := uint(0); ; shift += 7 {
		if r.i >= len(r.b) {
			r.failEOF()
			return 0
		}
		c := r.b[r.i]
		r.i++
		if shift == 63 && c > 1 {
			r.fail("varint overflows 64 bits")
			return 0
		}
		u |= uint64(c&0x7f) << shift
		if c < 0x80 {
			break
		}
	}
	return int64(u>>1) ^ -int64(u&1)
}

func (r *avroReader) int32() int32 {
	v := r.long()
	if v < math.MinInt32 || v > math.MaxInt32 {
		r.fail("int %d out of range", v)
		return 0
	}
	return int32(v)
}

func (r *avroReader) double() float64 {
	if r.err != nil {
		return 0
	}
	if r.left() < 8 {
		r.failEOF()
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(r.b[r.i:]))
	r.i += 8
	return f
}

func (r *avroReader) boolean() bool {
	if r.err != nil {
		return false
	}
	if r.i >= len(r.b) {
		r.failEOF()
		return false
	}
	c := r.b[r.i]
	r.i++
	if c > 1 {
		r.fail("invalid boolean byte 0x%02x", c)
	}
	return c == 1
}

// bytes returns the content of a string without copying; the length is checked against
// the input before anything is allocated, so a forged length cannot exhaust memory.
func (r *avroReader) bytes() []byte {
	n := r.long()
	if r.err != nil {
		return nil
	}
	if n < 0 {
		r.fail("negative length %d", n)
		return nil
	}
	if n > int64(r.left()) {
		r.fail("length %d runs past the end of input (%s)", n, bytesLeft(r.left()))
		return nil
	}
	b := r.b[r.i : r.i+int(n)]
	r.i += int(n)
	return b
}

// str reads a string, returning old when the bytes are the same: consecutive messages
// mostly repeat pipeline, topic and feature names, and this saves their allocations.
func (r *avroReader) str(old string) string {
	b := r.bytes()
	if r.err != nil {
		return ""
	}
	if old == string(b) {
		return old
	}
	return validString(b)
}

// unionIndex reads a union branch index in [0, n).
func (r *avroReader) unionIndex(n int64) int64 {
	i := r.long()
	if r.err == nil && (i < 0 || i >= n) {
		r.fail("union index %d out of range", i)
	}
	return i
}

// blockCount reads the item count of the next array or map block, 0 at the end. A
// negative count is followed by the block's byte size (which we do not need). The count
// is bounded by the bytes left so that callers can preallocate safely.
func (r *avroReader) blockCount(minItemSize int) int {
	n := r.long()
	if r.err != nil || n == 0 {
		return 0
	}
	if n < 0 {
		if n == math.MinInt64 {
			r.fail("invalid block count %d", n)
			return 0
		}
		n = -n
		if size := r.long(); size < 0 {
			r.fail("negative block size %d", size)
			return 0
		}
	}
	if n > int64(r.left()/minItemSize) {
		r.fail("block count %d runs past the end of input (%s)", n, bytesLeft(r.left()))
		return 0
	}
	return int(n)
}

func (r *avroReader) strings(dst []string) []string {
	old := dst[:cap(dst)]
	dst = dst[:0]
	for {
		n := r.blockCount(1)
		if n == 0 {
			return dst
		}
		dst = slices.Grow(dst, n)
		for ; n > 0; n-- {
			i := len(dst)
			var s string
			if i < len(old) {
				s = r.str(old[i])
			} else {
				s = r.str("")
			}
			if r.err != nil {
				return dst
			}
			dst = append(dst, s)
		}
	}
}

func (r *avroReader) doubles(dst []float64) []float64 {
	dst = dst[:0]
	for {
		n := r.blockCount(8)
		if n == 0 {
			return dst
		}
		dst = slices.Grow(dst, n)
		for ; n > 0; n-- {
			dst = append(dst, math.Float64frombits(binary.LittleEndian.Uint64(r.b[r.i:])))
			r.i += 8
		}
	}
}

// doubleMap reads a map<double> into m (cleared, or made if nil and the map is not empty).
func (r *avroReader) doubleMap(m map[string]float64) map[string]float64 {
	var kc keyCache
	kc.saveDoubles(m)
	clear(m)
	for {
		n := r.blockCount(9) // key length byte + 8-byte double
		if n == 0 {
			return m
		}
		if m == nil {
			m = make(map[string]float64, n)
		}
		for ; n > 0; n-- {
			k := r.bytes()
			v := r.double()
			if r.err != nil {
				return m
			}
			m[kc.key(k, validString)] = v
		}
	}
}

func (r *avroReader) stringMap(m map[string]string) map[string]string {
	var kc keyCache
	kc.saveStrings(m)
	clear(m)
	for {
		n := r.blockCount(2)
		if n == 0 {
			return m
		}
		if m == nil {
			m = make(map[string]string, n)
		}
		for ; n > 0; n-- {
			k := r.bytes()
			v := r.bytes()
			if r.err != nil {
				return m
			}
			key, val := kc.pair(k, v, validString)
			m[key] = val
		}
	}
}

func (r *avroReader) source(s *Source) {
	r.field = "source.topic"
	s.Topic = r.str(s.Topic)
	r.field = "source.partition"
	s.Partition = r.int32()
	r.field = "source.offset"
	s.Offset = r.long()
}

// timestamp reads a timestamp-millis long, rejecting instants that RFC 3339 cannot show so
// that every decoded message can be re-encoded as JSON.
func (r *avroReader) timestamp() int64 {
	ms := r.long()
	if r.err == nil && (ms < minTS || ms > maxTS) {
		r.fail("timestamp %d outside years 0000-9999", ms)
	}
	return ms
}

// end checks that the whole input was consumed: trailing bytes mean the writer used
// another schema than the fingerprint or id claims.
func (r *avroReader) end() error {
	if r.err == nil && r.i != len(r.b) {
		r.field = "avro"
		r.fail("%d trailing bytes after the record", len(r.b)-r.i)
	}
	if r.err != nil {
		return r.err
	}
	return nil
}

func bytesLeft(n int) string {
	if n == 1 {
		return "1 byte left"
	}
	return strconv.Itoa(n) + " bytes left"
}

// soeBody checks the single-object header and returns the schema and the body.
func soeBody(b []byte) (schemaID, []byte, error) {
	if len(b) < soeHeaderLen {
		return -1, nil, &DecodeError{Field: "avro", Offset: -1, Msg: "single-object header truncated (" + strconv.Itoa(len(b)) + " bytes)"}
	}
	if b[0] != soeMagic0 || b[1] != soeMagic1 {
		return -1, nil, &DecodeError{Field: "avro", Offset: -1, Msg: fmt.Sprintf("bad single-object magic 0x%02x 0x%02x (want 0xc3 0x01)", b[0], b[1])}
	}
	fp := binary.LittleEndian.Uint64(b[2:])
	id := schemaByFingerprint(fp)
	if id < 0 {
		return -1, nil, &DecodeError{Field: "avro", Offset: -1, Msg: fmt.Sprintf("unknown schema fingerprint 0x%016x", fp)}
	}
	return id, b[soeHeaderLen:], nil
}

// wrongSchema is the error for a message written with another of our schemas, e.g.
// Features sent to the records topic.
func wrongSchema(got schemaID, want string) error {
	return &DecodeError{Field: "avro", Offset: -1, Msg: fmt.Sprintf("schema fingerprint 0x%016x is %s, want %s",
		allSchemas[got].Fingerprint, allSchemas[got].Name, want)}
}

// keyCache holds the entries of a map about to be cleared for the next message. That
// message mostly has the same keys (feature, detector and tag names), and reusing their
// strings saves an allocation per entry.
type keyCache struct {
	n    int
	keys [16]string
	vals [16]string // for map<string>
}

func (c *keyCache) saveDoubles(m map[string]float64) {
	for k := range m {
		if c.n == len(c.keys) {
			return
		}
		c.keys[c.n] = k
		c.n++
	}
}

func (c *keyCache) saveStrings(m map[string]string) {
	for k, v := range m {
		if c.n == len(c.keys) {
			return
		}
		c.keys[c.n], c.vals[c.n] = k, v
		c.n++
	}
}

// key returns the cached string equal to b, or conv(b).
func (c *keyCache) key(b []byte, conv func([]byte) string) string {
	for i := range c.n {
		if c.keys[i] == string(b) {
			return c.keys[i]
		}
	}
	return conv(b)
}

// pair is key for a key and its string value.
func (c *keyCache) pair(k, v []byte, conv func([]byte) string) (string, string) {
	for i := range c.n {
		if c.keys[i] == string(k) {
			if c.vals[i] == string(v) {
				return c.keys[i], c.vals[i]
			}
			return c.keys[i], conv(v)
		}
	}
	return conv(k), conv(v)
}

func plainString(b []byte) string { return string(b) }

// validString converts b to a string, replacing each invalid UTF-8 byte with U+FFFD as
// the JSON decoder does, so that every decoded string survives re-encoding as JSON.
func validString(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	out := make([]byte, 0, len(b)+8)
	for len(b) > 0 {
		c, size := utf8.DecodeRune(b)
		if c == utf8.RuneError && size == 1 {
			out = append(out, "\uFFFD"...)
		} else {
			out = append(out, b[:size]...)
		}
		b = b[size:]
	}
	return string(out)
}
