package schemas

import (
	"fmt"
	"strconv"
	"strings"
)

// Format is a wire format for input records.
type Format int

const (
	// FormatAuto detects the format from the first bytes: '{' JSON, 0xC3 0x01 Avro
	// single-object, 0x00 Confluent.
	FormatAuto Format = iota
	FormatJSON
	// FormatAvro is Avro single-object encoding: 0xC3 0x01, 8-byte little-endian schema
	// fingerprint, body.
	FormatAvro
	// FormatConfluent is the Confluent wire format: 0x00, 4-byte big-endian schema id, body.
	FormatConfluent
)

var formatNames = [...]string{
	FormatAuto:      "auto",
	FormatJSON:      "json",
	FormatAvro:      "avro",
	FormatConfluent: "confluent",
}

// ParseFormat parses auto, json, avro or confluent (case-insensitive).
func ParseFormat(s string) (Format, error) {
	for f, name := range formatNames {
		if strings.EqualFold(s, name) {
			return Format(f), nil
		}
	}
	return 0, fmt.Errorf("unknown format %q (want auto, json, avro or confluent)", s)
}

func (f Format) String() string {
	if f >= 0 && int(f) < len(formatNames) {
		return formatNames[f]
	}
	return "Format(" + strconv.Itoa(int(f)) + ")"
}

// MarshalText makes Format usable in config files and with flag.TextVar.
func (f Format) MarshalText() ([]byte, error) {
	if f < 0 || int(f) >= len(formatNames) {
		return nil, fmt.Errorf("invalid format %d", int(f))
	}
	return []byte(formatNames[f]), nil
}

// UnmarshalText parses the names ParseFormat accepts.
func (f *Format) UnmarshalText(b []byte) error {
	v, err := ParseFormat(string(b))
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// DecodeError is a message that could not be decoded. It names the field at fault so that
// a DLQ entry tells the producer what to fix.
type DecodeError struct {
	Field  string // dotted path such as "values.cpu"; "json" or "avro" for malformed input; empty for framing errors
	Offset int    // byte offset in JSON input; -1 for binary formats
	Msg    string
}

func (e *DecodeError) Error() string {
	var b strings.Builder
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Offset >= 0 {
		b.WriteString(" at byte ")
		b.WriteString(strconv.Itoa(e.Offset))
	}
	return b.String()
}

// fieldPath joins a map field and a key for error messages, quoting keys that would be
// ambiguous or unreadable in a dotted path.
func fieldPath(parent string, key []byte) string {
	for _, c := range key {
		if c <= ' ' || c >= 0x7f || c == '.' || c == '"' || c == '[' || c == ']' || c == '\\' {
			return parent + "[" + strconv.Quote(string(key)) + "]"
		}
	}
	if len(key) == 0 {
		return parent + `[""]`
	}
	return parent + "." + string(key)
}
