package schemas

import "strconv"

// Features and Scores travel only on internal topics, written and read by gonomaly, so
// they have one format: Avro single-object encoding.

// AppendFeatures appends f in Avro single-object encoding.
func AppendFeatures(dst []byte, f *Features) []byte {
	dst = append(dst, soeHeaders[schemaFeatures][:]...)
	dst = appendString(dst, f.Series)
	dst = appendLong(dst, f.TS)
	dst = appendStringArray(dst, f.Names)
	dst = appendDoubleArray(dst, f.Scaled)
	dst = appendDoubleArray(dst, f.Raw)
	dst = appendStringMap(dst, f.Tags)
	dst = appendSource(dst, &f.Source)
	return appendString(dst, f.Pipeline)
}

// DecodeFeatures decodes b into f, reusing f's slices, map and (when unchanged) strings.
// Names, Scaled and Raw are checked to have the same length, as the detectors index them
// together. On error f holds a partial value.
func DecodeFeatures(b []byte, f *Features) error {
	id, body, err := soeBody(b)
	if err != nil {
		return err
	}
	if id != schemaFeatures {
		return wrongSchema(id, allSchemas[schemaFeatures].Name)
	}
	a := avroReader{b: body, field: "series"}
	f.Series = a.str(f.Series)
	a.field = "ts"
	f.TS = a.timestamp()
	a.field = "names"
	f.Names = a.strings(f.Names)
	a.field = "scaled"
	f.Scaled = a.doubles(f.Scaled)
	a.field = "raw"
	f.Raw = a.doubles(f.Raw)
	a.field = "tags"
	f.Tags = a.stringMap(f.Tags)
	a.source(&f.Source)
	a.field = "pipeline"
	f.Pipeline = a.str(f.Pipeline)
	if err := a.end(); err != nil {
		return err
	}
	if len(f.Scaled) != len(f.Names) {
		return lengthMismatch("scaled", len(f.Scaled), len(f.Names))
	}
	if len(f.Raw) != len(f.Names) {
		return lengthMismatch("raw", len(f.Raw), len(f.Names))
	}
	return nil
}

func lengthMismatch(field string, n, names int) error {
	return &DecodeError{Field: field, Offset: -1, Msg: "has " + strconv.Itoa(n) + " items for " + strconv.Itoa(names) + " names"}
}

// AppendScores appends s in Avro single-object encoding.
func AppendScores(dst []byte, s *Scores) []byte {
	dst = append(dst, soeHeaders[schemaScores][:]...)
	dst = appendString(dst, s.Series)
	dst = appendLong(dst, s.TS)
	dst = appendStringArray(dst, s.Names)
	dst = appendDoubleArray(dst, s.Raw)
	dst = appendStringMap(dst, s.Tags)
	dst = appendSource(dst, &s.Source)
	dst = appendString(dst, s.Pipeline)
	dst = appendString(dst, s.ModelVersion)
	dst = appendDoubleMap(dst, s.Detectors)
	return appendDoubleMap(dst, s.Contributions)
}

// DecodeScores decodes b into s, reusing s's slices, maps and (when unchanged) strings.
// Raw is checked to be as long as Names. On error s holds a partial value.
func DecodeScores(b []byte, s *Scores) error {
	id, body, err := soeBody(b)
	if err != nil {
		return err
	}
	if id != schemaScores {
		return wrongSchema(id, allSchemas[schemaScores].Name)
	}
	a := avroReader{b: body, field: "series"}
	s.Series = a.str(s.Series)
	a.field = "ts"
	s.TS = a.timestamp()
	a.field = "names"
	s.Names = a.strings(s.Names)
	a.field = "raw"
	s.Raw = a.doubles(s.Raw)
	a.field = "tags"
	s.Tags = a.stringMap(s.Tags)
	a.source(&s.Source)
	a.field = "pipeline"
	s.Pipeline = a.str(s.Pipeline)
	a.field = "model_version"
	s.ModelVersion = a.str(s.ModelVersion)
	a.field = "detectors"
	s.Detectors = a.doubleMap(s.Detectors)
	a.field = "contributions"
	s.Contributions = a.doubleMap(s.Contributions)
	if err := a.end(); err != nil {
		return err
	}
	if len(s.Raw) != len(s.Names) {
		return lengthMismatch("raw", len(s.Raw), len(s.Names))
	}
	return nil
}
