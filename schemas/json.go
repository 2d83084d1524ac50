package schemas

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// A hand-written JSON scanner for our flat message shapes. encoding/json would need
// reflection, an intermediate map or RawMessage per field and would not report which
// field was wrong; this one decodes straight into the destination struct and never
// allocates for keys or ASCII strings it only compares.

// maxDepth bounds nesting in skipped values so hostile input cannot grow the stack.
const maxDepth = 512

type jsonScanner struct {
	b   []byte
	i   int
	err *DecodeError
}

func (s *jsonScanner) fail(field string, at int, msg string) {
	if s.err == nil {
		s.err = &DecodeError{Field: field, Offset: at, Msg: msg}
	}
}

func (s *jsonScanner) syntax(msg string) { s.fail("json", s.i, msg) }

func (s *jsonScanner) failEOF() {
	if s.err == nil {
		s.i = len(s.b)
		s.syntax("unexpected end of input")
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (s *jsonScanner) skipSpace() {
	for s.i < len(s.b) && isSpace(s.b[s.i]) {
		s.i++
	}
}

// peek skips whitespace and returns the next byte, or 0 (with an error) at the end.
func (s *jsonScanner) peek() byte {
	s.skipSpace()
	if s.i >= len(s.b) {
		s.failEOF()
		return 0
	}
	return s.b[s.i]
}

func describeByte(c byte) string {
	if c >= 0x20 && c < 0x7f {
		return strconv.QuoteRune(rune(c))
	}
	return "byte 0x" + strconv.FormatUint(uint64(c), 16)
}

// kind names the JSON type starting with c, for "expected X, got Y" messages.
func kind(c byte) string {
	switch c {
	case '"':
		return "string"
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return "number"
	}
	return describeByte(c)
}

// expectKind reports a type error for field if the next value does not start with want.
func (s *jsonScanner) expectKind(field string, want byte, wantName string) bool {
	c := s.peek()
	if s.err != nil {
		return false
	}
	if c != want {
		s.fail(field, s.i, "expected "+wantName+", got "+kind(c))
		return false
	}
	return true
}

// literal consumes true, false or null.
func (s *jsonScanner) literal(lit string) {
	if len(s.b)-s.i < len(lit) {
		if string(s.b[s.i:]) == lit[:len(s.b)-s.i] {
			s.failEOF()
			return
		}
	} else if string(s.b[s.i:s.i+len(lit)]) == lit {
		s.i += len(lit)
		return
	}
	s.syntax("invalid literal, want " + lit)
}

// null consumes a null if one comes next and says so.
func (s *jsonScanner) null() bool {
	if s.peek() == 'n' {
		s.literal("null")
		return s.err == nil
	}
	return false
}

// beginObject consumes '{' (the caller has checked it is there).
func (s *jsonScanner) beginObject() { s.i++ }

// nextKey returns the next member's key, positioned at its value, or false at the
// closing '}'. n counts the members read so far.
func (s *jsonScanner) nextKey(n *int) ([]byte, bool) {
	c := s.peek()
	if s.err != nil {
		return nil, false
	}
	if c == '}' {
		s.i++
		return nil, false
	}
	if *n > 0 {
		if c != ',' {
			s.syntax("expected ',' or '}' after object member, got " + describeByte(c))
			return nil, false
		}
		s.i++
		c = s.peek()
		if s.err != nil {
			return nil, false
		}
	}
	if c != '"' {
		s.syntax("expected string key, got " + describeByte(c))
		return nil, false
	}
	key := s.str()
	if s.err != nil {
		return nil, false
	}
	c = s.peek()
	if s.err != nil {
		return nil, false
	}
	if c != ':' {
		s.syntax("expected ':' after object key, got " + describeByte(c))
		return nil, false
	}
	s.i++
	*n++
	return key, true
}

// str reads a string (the scanner is at its opening quote). The result aliases the input
// unless the string has escapes or invalid UTF-8; invalid bytes become U+FFFD.
func (s *jsonScanner) str() []byte {
	start := s.i + 1
	i := start
	for i < len(s.b) {
		c := s.b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return s.b[start:i]
		case c == '\\' || c < 0x20:
			return s.strSlow(start, i)
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(s.b[i:])
			if r == utf8.RuneError && size == 1 {
				return s.strSlow(start, i)
			}
			i += size
		}
	}
	s.failEOF()
	return nil
}

func (s *jsonScanner) strSlow(start, i int) []byte {
	out := make([]byte, i-start, i-start+16)
	copy(out, s.b[start:i])
	for i < len(s.b) {
		c := s.b[i]
		switch {
		case c == '"':
			s.i = i + 1
			return out
		case c < 0x20:
			s.i = i
			s.syntax("invalid control character " + describeByte(c) + " in string")
			return nil
		case c == '\\':
			if i+1 >= len(s.b) {
				s.failEOF()
				return nil
			}
			e := s.b[i+1]
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := s.hex4(i + 2)
				if !ok {
					return nil
				}
				i += 6
				if r >= 0xD800 && r < 0xDC00 {
					// A high surrogate needs a low one; a lone surrogate becomes U+FFFD.
					if i+1 < len(s.b) && s.b[i] == '\\' && s.b[i+1] == 'u' {
						if r2, ok := s.hex4(i + 2); !ok {
							return nil
						} else if r2 >= 0xDC00 && r2 < 0xE000 {
							r = 0x10000 + (r-0xD800)<<10 + (r2 - 0xDC00)
							i += 6
						} else {
							r = utf8.RuneError
						}
					} else {
						r = utf8.RuneError
					}
				} else if r >= 0xDC00 && r < 0xE000 {
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
				continue
			default:
				s.i = i
				s.syntax("invalid escape " + describeByte(e) + " in string")
				return nil
			}
			i += 2
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(s.b[i:])
			if r == utf8.RuneError && size == 1 {
				out = append(out, "\uFFFD"...)
			} else {
				out = append(out, s.b[i:i+size]...)
			}
			i += size
		}
	}
	s.failEOF()
	return nil
}

func (s *jsonScanner) hex4(i int) (rune, bool) {
	if i+4 > len(s.b) {
		s.failEOF()
		return 0, false
	}
	var r rune
	for j := i; j < i+4; j++ {
		c := s.b[j]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			s.i = j
			s.syntax("invalid \\u escape")
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// number reads a number token, checking the JSON grammar (which is stricter than
// strconv's: no leading '+', no leading zeros, no hex, no "Inf").
func (s *jsonScanner) number() []byte {
	start := s.i
	i := s.i
	b := s.b
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		s.failEOF()
		return nil
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		s.i = i
		s.syntax("invalid number")
		return nil
	}
	if i < len(b) && b[i] == '.' {
		i++
		if i >= len(b) {
			s.failEOF()
			return nil
		}
		if b[i] < '0' || b[i] > '9' {
			s.i = i
			s.syntax("invalid number: no digits after '.'")
			return nil
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) {
			s.failEOF()
			return nil
		}
		if b[i] < '0' || b[i] > '9' {
			s.i = i
			s.syntax("invalid number: no digits in exponent")
			return nil
		}
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	}
	s.i = i
	return b[start:i]
}

// float reads a finite number for field.
func (s *jsonScanner) float(field func() string) float64 {
	c := s.peek()
	if s.err != nil {
		return 0
	}
	at := s.i
	if c != '-' && (c < '0' || c > '9') {
		if c == '"' || c == 'n' || c == 't' || c == 'f' || c == '{' || c == '[' {
			s.fail(field(), at, "expected a finite number, got "+kind(c))
		} else {
			s.syntax("invalid value starting with " + describeByte(c))
		}
		return 0
	}
	tok := s.number()
	if s.err != nil {
		return 0
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		s.fail(field(), at, "not a finite number ("+string(tok)+")")
		return 0
	}
	return f
}

// integer reads an integral number in [lo, hi] for field.
func (s *jsonScanner) integer(field string, lo, hi int64) int64 {
	if !s.expectNumber(field) {
		return 0
	}
	at := s.i
	tok := s.number()
	if s.err != nil {
		return 0
	}
	v, ok := parseIntegral(tok)
	if !ok || v < lo || v > hi {
		s.fail(field, at, "expected an integer in ["+strconv.FormatInt(lo, 10)+", "+strconv.FormatInt(hi, 10)+"], got "+string(tok))
		return 0
	}
	return v
}

func (s *jsonScanner) expectNumber(field string) bool {
	c := s.peek()
	if s.err != nil {
		return false
	}
	if c != '-' && (c < '0' || c > '9') {
		s.fail(field, s.i, "expected a number, got "+kind(c))
		return false
	}
	return true
}

// parseIntegral parses a grammar-checked number token that must be an exact integer:
// "1764226800000" and "1.7642268e12" both qualify, "1.5" does not.
func parseIntegral(tok []byte) (int64, bool) {
	neg := len(tok) > 0 && tok[0] == '-'
	digits := tok
	if neg {
		digits = tok[1:]
	}
	var v uint64
	plain := len(digits) > 0 && len(digits) <= 19
	for _, c := range digits {
		if c < '0' || c > '9' {
			plain = false
			break
		}
		v = v*10 + uint64(c-'0')
	}
	if plain {
		if neg {
			if v > 1<<63 {
				return 0, false
			}
			return -int64(v), true
		}
		if v > math.MaxInt64 {
			return 0, false
		}
		return int64(v), true
	}
	f, err := strconv.ParseFloat(string(tok), 64)
	// Beyond 2^53 a float64 no longer names one integer.
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// boolean reads true or false for field.
func (s *jsonScanner) boolean(field string) bool {
	c := s.peek()
	if s.err != nil {
		return false
	}
	switch c {
	case 't':
		s.literal("true")
		return true
	case 'f':
		s.literal("false")
		return false
	}
	s.fail(field, s.i, "expected a boolean, got "+kind(c))
	return false
}

// stringValue reads a string or null (as "") for field, reusing old when equal.
func (s *jsonScanner) stringValue(field, old string) string {
	if s.null() || s.err != nil {
		return ""
	}
	if !s.expectKind(field, '"', "a string") {
		return ""
	}
	b := s.str()
	if s.err != nil {
		return ""
	}
	if string(b) == old {
		return old
	}
	return string(b)
}

// timestamp reads RFC 3339 or epoch milliseconds (null: 0) for field.
func (s *jsonScanner) timestamp(field string) int64 {
	c := s.peek()
	if s.err != nil {
		return 0
	}
	at := s.i
	switch {
	case c == 'n':
		s.literal("null")
		return 0
	case c == '"':
		b := s.str()
		if s.err != nil {
			return 0
		}
		ms, ok := parseRFC3339(b)
		if !ok {
			q := string(b)
			if len(q) > 64 {
				q = q[:64] + "…"
			}
			s.fail(field, at, strconv.Quote(q)+" is neither RFC 3339 nor epoch milliseconds")
			return 0
		}
		return ms
	case c == '-' || (c >= '0' && c <= '9'):
		tok := s.number()
		if s.err != nil {
			return 0
		}
		ms, ok := parseIntegral(tok)
		if ok && ms >= minTS && ms <= maxTS {
			return ms
		}
		if f, _ := strconv.ParseFloat(string(tok), 64); ok || f == math.Trunc(f) {
			s.fail(field, at, "epoch milliseconds "+string(tok)+" outside years 0000-9999")
		} else {
			s.fail(field, at, string(tok)+" is not an integral number of epoch milliseconds")
		}
		return 0
	}
	s.fail(field, at, "expected RFC 3339 string or epoch milliseconds, got "+kind(c))
	return 0
}

// doubleMap reads an object of finite numbers (null: empty) into m, which it clears.
func (s *jsonScanner) doubleMap(field string, m map[string]float64) map[string]float64 {
	var kc keyCache
	kc.saveDoubles(m)
	clear(m)
	if s.null() || s.err != nil {
		return m
	}
	if !s.expectKind(field, '{', "an object") {
		return m
	}
	s.beginObject()
	for n := 0; ; {
		k, ok := s.nextKey(&n)
		if !ok {
			return m
		}
		v := s.float(func() string { return fieldPath(field, k) })
		if s.err != nil {
			return m
		}
		if m == nil {
			m = make(map[string]float64, 8)
		}
		m[kc.key(k, plainString)] = v
	}
}

// stringMap reads an object of strings (null: empty) into m, which it clears.
func (s *jsonScanner) stringMap(field string, m map[string]string) map[string]string {
	var kc keyCache
	kc.saveStrings(m)
	clear(m)
	if s.null() || s.err != nil {
		return m
	}
	if !s.expectKind(field, '{', "an object") {
		return m
	}
	s.beginObject()
	for n := 0; ; {
		k, ok := s.nextKey(&n)
		if !ok {
			return m
		}
		if c := s.peek(); s.err != nil {
			return m
		} else if c != '"' {
			s.fail(fieldPath(field, k), s.i, "expected a string, got "+kind(c))
			return m
		}
		v := s.str()
		if s.err != nil {
			return m
		}
		if m == nil {
			m = make(map[string]string, 4)
		}
		key, val := kc.pair(k, v, plainString)
		m[key] = val
	}
}

// skip consumes any value, for fields we do not know (newer writers may add some).
func (s *jsonScanner) skip(depth int) {
	c := s.peek()
	if s.err != nil {
		return
	}
	if depth > maxDepth {
		s.syntax("nesting deeper than " + strconv.Itoa(maxDepth))
		return
	}
	switch c {
	case '"':
		s.str()
	case '{':
		s.beginObject()
		for n := 0; ; {
			if _, ok := s.nextKey(&n); !ok {
				return
			}
			s.skip(depth + 1)
			if s.err != nil {
				return
			}
		}
	case '[':
		s.i++
		for n := 0; ; n++ {
			c := s.peek()
			if s.err != nil {
				return
			}
			if c == ']' {
				s.i++
				return
			}
			if n > 0 {
				if c != ',' {
					s.syntax("expected ',' or ']' after array element, got " + describeByte(c))
					return
				}
				s.i++
			}
			s.skip(depth + 1)
			if s.err != nil {
				return
			}
		}
	case 't':
		s.literal("true")
	case 'f':
		s.literal("false")
	case 'n':
		s.literal("null")
	default:
		if c == '-' || (c >= '0' && c <= '9') {
			s.number()
			return
		}
		s.syntax("invalid value starting with " + describeByte(c))
	}
}

// end checks that only whitespace follows the top-level value.
func (s *jsonScanner) end() error {
	if s.err == nil {
		s.skipSpace()
		if s.i < len(s.b) {
			s.syntax("unexpected " + describeByte(s.b[s.i]) + " after the top-level object")
		}
	}
	if s.err != nil {
		return s.err
	}
	return nil
}

// begin positions the scanner at the top-level '{'.
func (s *jsonScanner) begin() bool {
	c := s.peek()
	if s.err != nil {
		return false
	}
	if c != '{' {
		s.syntax("expected '{' at the start of a message, got " + describeByte(c))
		return false
	}
	s.beginObject()
	return true
}

// JSON output.

// appendJSONString writes s quoted, escaping what JSON requires plus U+2028/U+2029 (which
// break JavaScript parsers), and replacing invalid UTF-8 bytes with U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				const hex = "0123456789abcdef"
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', byte('8'+r-'\u2028'))
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONFloat writes a finite float in the shortest form that reads back exactly;
// non-finite values, which JSON cannot express, are written as null.
func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(dst, "null"...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// appendJSONScore writes f, writing 0 for non-finite values: scores are finite by
// construction, and an output message must stay readable even if one is not.
func appendJSONScore(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		f = 0
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

func appendJSONKey(dst []byte, key string) []byte {
	dst = appendJSONString(dst, key)
	return append(dst, ':')
}

func appendJSONDoubleMap(dst []byte, m map[string]float64, appendFloat func([]byte, float64) []byte) []byte {
	var buf [16]string
	dst = append(dst, '{')
	for i, k := range sortedKeys(m, buf[:0]) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONKey(dst, k)
		dst = appendFloat(dst, m[k])
	}
	return append(dst, '}')
}

func appendJSONStringMap(dst []byte, m map[string]string) []byte {
	var buf [16]string
	dst = append(dst, '{')
	for i, k := range sortedKeys(m, buf[:0]) {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONKey(dst, k)
		dst = appendJSONString(dst, m[k])
	}
	return append(dst, '}')
}
