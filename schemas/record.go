package schemas

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
)

// RecordDecoder decodes input records in one format or, with FormatAuto, in whichever of
// JSON, Avro single-object and Confluent a message is. It holds no state between calls, so
// one decoder may be shared by goroutines.
type RecordDecoder struct {
	Format Format
	// SchemaIDs are the schema registry ids accepted in the Confluent wire format; they
	// must name schemas that are byte-compatible with the Record schema (RecordSchema).
	// Any other id is an error, as is every id when SchemaIDs is empty.
	SchemaIDs map[uint32]bool
}

// Decode decodes b into r, reusing r's maps. On error r holds a partial record, and the
// error is a *DecodeError naming the field at fault.
//
// Every decoded record has a non-empty Values map of finite numbers and a TS between
// the years 0000 and 9999 (0 meaning none).
func (d RecordDecoder) Decode(b []byte, r *Record) error {
	switch d.Format {
	case FormatJSON:
		return decodeRecordJSON(b, r)
	case FormatAvro:
		return decodeRecordSOE(b, r)
	case FormatConfluent:
		return d.decodeRecordConfluent(b, r)
	case FormatAuto:
	default:
		return &DecodeError{Offset: -1, Msg: "unsupported format " + d.Format.String()}
	}
	if len(b) == 0 {
		return &DecodeError{Offset: -1, Msg: "empty message"}
	}
	switch b[0] {
	case soeMagic0:
		return decodeRecordSOE(b, r)
	case 0:
		return d.decodeRecordConfluent(b, r)
	}
	i := 0
	for i < len(b)-1 && isSpace(b[i]) {
		i++
	}
	if b[i] == '{' {
		return decodeRecordJSON(b, r)
	}
	return &DecodeError{Offset: -1, Msg: fmt.Sprintf("unrecognised format: byte 0x%02x at offset %d is none of '{' (JSON), 0xc3 (Avro single-object), 0x00 (Confluent)", b[i], i)}
}

func decodeRecordJSON(b []byte, r *Record) error {
	series := r.Series
	r.Series, r.TS = "", 0
	s := jsonScanner{b: b}
	if !s.begin() {
		return s.err
	}
	// The maps are cleared when their field is read, so that their keys can be reused,
	// and at the end if it was absent.
	valuesAt, tagsSeen := -1, false
	for n := 0; ; {
		k, ok := s.nextKey(&n)
		if !ok {
			break
		}
		switch string(k) {
		case "series":
			r.Series = s.stringValue("series", series)
		case "ts":
			r.TS = s.timestamp("ts")
		case "values":
			valuesAt = s.i
			r.Values = s.doubleMap("values", r.Values)
		case "tags":
			tagsSeen = true
			r.Tags = s.stringMap("tags", r.Tags)
		default:
			s.skip(0)
		}
		if s.err != nil {
			return s.err
		}
	}
	if err := s.end(); err != nil {
		return err
	}
	if !tagsSeen {
		clear(r.Tags)
	}
	if valuesAt < 0 {
		clear(r.Values)
	}
	if len(r.Values) == 0 {
		if valuesAt < 0 {
			return &DecodeError{Field: "values", Offset: len(b), Msg: "missing"}
		}
		s.i = valuesAt
		s.skipSpace()
		return &DecodeError{Field: "values", Offset: s.i, Msg: "must not be empty"}
	}
	return nil
}

func decodeRecordSOE(b []byte, r *Record) error {
	id, body, err := soeBody(b)
	if err != nil {
		return err
	}
	if id != schemaRecord {
		return wrongSchema(id, allSchemas[schemaRecord].Name)
	}
	return decodeRecordAvro(body, r)
}

func (d RecordDecoder) decodeRecordConfluent(b []byte, r *Record) error {
	if len(b) < confluentHeaderLen {
		return &DecodeError{Field: "confluent", Offset: -1, Msg: "header truncated (" + strconv.Itoa(len(b)) + " bytes)"}
	}
	if b[0] != 0 {
		return &DecodeError{Field: "confluent", Offset: -1, Msg: fmt.Sprintf("bad magic byte 0x%02x (want 0x00)", b[0])}
	}
	id := binary.BigEndian.Uint32(b[1:])
	if !d.SchemaIDs[id] {
		return &DecodeError{Offset: -1, Msg: "unknown schema id " + strconv.FormatUint(uint64(id), 10)}
	}
	return decodeRecordAvro(b[confluentHeaderLen:], r)
}

func decodeRecordAvro(body []byte, r *Record) error {
	series := r.Series
	r.Series, r.TS = "", 0
	a := avroReader{b: body, field: "series"}
	if a.unionIndex(2) == 1 {
		r.Series = a.str(series)
	}
	a.field = "ts"
	if a.unionIndex(2) == 1 {
		r.TS = a.timestamp()
	}
	a.field = "values"
	r.Values = a.doubleMap(r.Values)
	a.field = "tags"
	r.Tags = a.stringMap(r.Tags)
	if err := a.end(); err != nil {
		return err
	}
	if len(r.Values) == 0 {
		return &DecodeError{Field: "values", Offset: -1, Msg: "must not be empty"}
	}
	for k, v := range r.Values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return &DecodeError{Field: fieldPath("values", []byte(k)), Offset: -1, Msg: "not a finite number (" + strconv.FormatFloat(v, 'g', -1, 64) + ")"}
		}
	}
	return nil
}

// AppendRecordJSON appends r's JSON form. ts is written as RFC 3339 UTC with
// milliseconds and left out when 0, series when empty, tags when there are none.
// Non-finite values are written as null, which decoders reject: JSON cannot carry them.
func AppendRecordJSON(dst []byte, r *Record) []byte {
	dst = append(dst, '{')
	if r.Series != "" {
		dst = append(dst, `"series":`...)
		dst = appendJSONString(dst, r.Series)
		dst = append(dst, ',')
	}
	if r.TS != 0 {
		dst = append(dst, `"ts":"`...)
		dst = appendTime(dst, r.TS)
		dst = append(dst, `",`...)
	}
	dst = append(dst, `"values":`...)
	dst = appendJSONDoubleMap(dst, r.Values, appendJSONFloat)
	if len(r.Tags) > 0 {
		dst = append(dst, `,"tags":`...)
		dst = appendJSONStringMap(dst, r.Tags)
	}
	return append(dst, '}')
}

// AppendRecordAvro appends r in Avro single-object encoding with the Record schema.
func AppendRecordAvro(dst []byte, r *Record) []byte {
	dst = append(dst, soeHeaders[schemaRecord][:]...)
	return appendRecordBody(dst, r)
}

// AppendRecordConfluent appends r in the Confluent wire format under schema registry id.
func AppendRecordConfluent(dst []byte, id uint32, r *Record) []byte {
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, id)
	return appendRecordBody(dst, r)
}

func appendRecordBody(dst []byte, r *Record) []byte {
	if r.Series == "" {
		dst = append(dst, 0) // union branch 0: null
	} else {
		dst = append(dst, 2) // union branch 1 (zigzag)
		dst = appendString(dst, r.Series)
	}
	if r.TS == 0 {
		dst = append(dst, 0)
	} else {
		dst = append(dst, 2)
		dst = appendLong(dst, r.TS)
	}
	dst = appendDoubleMap(dst, r.Values)
	return appendStringMap(dst, r.Tags)
}
