package schemas

import (
	"math"
	"strconv"
)

// AppendResultJSON appends r's JSON form (an AnomalyEvent plus is_anomaly), with keys in
// the documented order and map keys sorted. Non-finite numbers are written as 0.
func AppendResultJSON(dst []byte, r *Result) []byte {
	dst = appendEventJSON(dst, r)
	dst = append(dst, `,"is_anomaly":`...)
	if r.IsAnomaly {
		dst = append(dst, "true}"...)
	} else {
		dst = append(dst, "false}"...)
	}
	return dst
}

// AppendAnomalyEventJSON appends r's AnomalyEvent JSON form: the Result without is_anomaly.
func AppendAnomalyEventJSON(dst []byte, r *Result) []byte {
	return append(appendEventJSON(dst, r), '}')
}

// appendEventJSON writes the AnomalyEvent fields, leaving the object open.
func appendEventJSON(dst []byte, r *Result) []byte {
	dst = append(dst, `{"event_id":`...)
	dst = appendJSONString(dst, r.EventID)
	dst = append(dst, `,"series":`...)
	dst = appendJSONString(dst, r.Series)
	dst = append(dst, `,"ts":"`...)
	dst = appendTime(dst, r.TS)
	dst = append(dst, `","score":`...)
	dst = appendJSONScore(dst, r.Score)
	dst = append(dst, `,"threshold":`...)
	dst = appendJSONScore(dst, r.Threshold)
	dst = append(dst, `,"severity":`...)
	dst = appendJSONString(dst, r.Severity)
	dst = append(dst, `,"detectors":`...)
	dst = appendJSONDoubleMap(dst, r.Detectors, appendJSONScore)
	dst = append(dst, `,"contributions":`...)
	dst = appendJSONDoubleMap(dst, r.Contributions, appendJSONScore)
	dst = append(dst, `,"values":`...)
	dst = appendJSONDoubleMap(dst, r.Values, appendJSONScore)
	dst = append(dst, `,"source":{"topic":`...)
	dst = appendJSONString(dst, r.Source.Topic)
	dst = append(dst, `,"partition":`...)
	dst = strconv.AppendInt(dst, int64(r.Source.Partition), 10)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendInt(dst, r.Source.Offset, 10)
	dst = append(dst, `},"pipeline":`...)
	dst = appendJSONString(dst, r.Pipeline)
	dst = append(dst, `,"model_version":`...)
	dst = appendJSONString(dst, r.ModelVersion)
	dst = append(dst, `,"detected_at":"`...)
	dst = appendTime(dst, r.DetectedAt)
	return append(dst, '"')
}

// AppendResultAvro appends r in Avro single-object encoding with the Result schema.
func AppendResultAvro(dst []byte, r *Result) []byte {
	dst = append(dst, soeHeaders[schemaResult][:]...)
	dst = appendEventBody(dst, r)
	return appendBool(dst, r.IsAnomaly)
}

// AppendAnomalyEventAvro appends r in Avro single-object encoding with the AnomalyEvent
// schema (no is_anomaly).
func AppendAnomalyEventAvro(dst []byte, r *Result) []byte {
	dst = append(dst, soeHeaders[schemaAnomalyEvent][:]...)
	return appendEventBody(dst, r)
}

func appendEventBody(dst []byte, r *Result) []byte {
	dst = appendString(dst, r.EventID)
	dst = appendString(dst, r.Series)
	dst = appendLong(dst, r.TS)
	dst = appendDouble(dst, r.Score)
	dst = appendDouble(dst, r.Threshold)
	dst = appendString(dst, r.Severity)
	dst = appendDoubleMap(dst, r.Detectors)
	dst = appendDoubleMap(dst, r.Contributions)
	dst = appendDoubleMap(dst, r.Values)
	dst = appendSource(dst, &r.Source)
	dst = appendString(dst, r.Pipeline)
	dst = appendString(dst, r.ModelVersion)
	return appendLong(dst, r.DetectedAt)
}

// DecodeResult decodes a Result or an AnomalyEvent, in JSON or Avro single-object
// encoding, into r (reusing its maps). An AnomalyEvent, which has no is_anomaly, decodes
// with IsAnomaly true: it is on the anomalies topic because it is one. Numbers must be
// finite. On error r holds a partial value.
func DecodeResult(b []byte, r *Result) error {
	if len(b) > 0 && b[0] == soeMagic0 {
		id, body, err := soeBody(b)
		if err != nil {
			return err
		}
		if id != schemaResult && id != schemaAnomalyEvent {
			return wrongSchema(id, allSchemas[schemaResult].Name+" or "+allSchemas[schemaAnomalyEvent].Name)
		}
		return decodeResultAvro(body, r, id == schemaResult)
	}
	return decodeResultJSON(b, r)
}

func decodeResultAvro(body []byte, r *Result, hasIsAnomaly bool) error {
	a := avroReader{b: body, field: "event_id"}
	r.EventID = a.str(r.EventID)
	a.field = "series"
	r.Series = a.str(r.Series)
	a.field = "ts"
	r.TS = a.timestamp()
	a.field = "score"
	r.Score = a.double()
	a.field = "threshold"
	r.Threshold = a.double()
	a.field = "severity"
	r.Severity = a.str(r.Severity)
	a.field = "detectors"
	r.Detectors = a.doubleMap(r.Detectors)
	a.field = "contributions"
	r.Contributions = a.doubleMap(r.Contributions)
	a.field = "values"
	r.Values = a.doubleMap(r.Values)
	a.source(&r.Source)
	a.field = "pipeline"
	r.Pipeline = a.str(r.Pipeline)
	a.field = "model_version"
	r.ModelVersion = a.str(r.ModelVersion)
	a.field = "detected_at"
	r.DetectedAt = a.timestamp()
	r.IsAnomaly = true
	if hasIsAnomaly {
		a.field = "is_anomaly"
		r.IsAnomaly = a.boolean()
	}
	if err := a.end(); err != nil {
		return err
	}
	// JSON cannot carry non-finite numbers, so they are refused here too: a Result read
	// from either format can be written to either.
	if err := finite("score", r.Score); err != nil {
		return err
	}
	if err := finite("threshold", r.Threshold); err != nil {
		return err
	}
	for _, m := range [...]struct {
		field string
		m     map[string]float64
	}{{"detectors", r.Detectors}, {"contributions", r.Contributions}, {"values", r.Values}} {
		for k, v := range m.m {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return finite(fieldPath(m.field, []byte(k)), v)
			}
		}
	}
	return nil
}

func finite(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return &DecodeError{Field: field, Offset: -1, Msg: "not a finite number (" + strconv.FormatFloat(v, 'g', -1, 64) + ")"}
	}
	return nil
}

func decodeResultJSON(b []byte, r *Result) error {
	old := *r
	*r = Result{
		Detectors:     r.Detectors,
		Contributions: r.Contributions,
		Values:        r.Values,
		IsAnomaly:     true, // absent in an AnomalyEvent
	}
	// Maps are cleared when their field is read (see doubleMap), or below if absent.
	var seen struct{ detectors, contributions, values bool }
	s := jsonScanner{b: b}
	if !s.begin() {
		return s.err
	}
	for n := 0; ; {
		k, ok := s.nextKey(&n)
		if !ok {
			break
		}
		switch string(k) {
		case "event_id":
			r.EventID = s.stringValue("event_id", old.EventID)
		case "series":
			r.Series = s.stringValue("series", old.Series)
		case "ts":
			r.TS = s.timestamp("ts")
		case "score":
			r.Score = s.float(func() string { return "score" })
		case "threshold":
			r.Threshold = s.float(func() string { return "threshold" })
		case "severity":
			r.Severity = s.stringValue("severity", old.Severity)
		case "detectors":
			seen.detectors = true
			r.Detectors = s.doubleMap("detectors", r.Detectors)
		case "contributions":
			seen.contributions = true
			r.Contributions = s.doubleMap("contributions", r.Contributions)
		case "values":
			seen.values = true
			r.Values = s.doubleMap("values", r.Values)
		case "source":
			s.source(&r.Source, old.Source.Topic)
		case "pipeline":
			r.Pipeline = s.stringValue("pipeline", old.Pipeline)
		case "model_version":
			r.ModelVersion = s.stringValue("model_version", old.ModelVersion)
		case "detected_at":
			r.DetectedAt = s.timestamp("detected_at")
		case "is_anomaly":
			r.IsAnomaly = s.boolean("is_anomaly")
		default:
			s.skip(0)
		}
		if s.err != nil {
			return s.err
		}
	}
	if !seen.detectors {
		clear(r.Detectors)
	}
	if !seen.contributions {
		clear(r.Contributions)
	}
	if !seen.values {
		clear(r.Values)
	}
	return s.end()
}

// source reads {"topic", "partition", "offset"} (null: zero).
func (s *jsonScanner) source(src *Source, oldTopic string) {
	if s.null() || s.err != nil {
		return
	}
	if !s.expectKind("source", '{', "an object") {
		return
	}
	s.beginObject()
	for n := 0; ; {
		k, ok := s.nextKey(&n)
		if !ok {
			return
		}
		switch string(k) {
		case "topic":
			src.Topic = s.stringValue("source.topic", oldTopic)
		case "partition":
			src.Partition = int32(s.integer("source.partition", math.MinInt32, math.MaxInt32))
		case "offset":
			src.Offset = s.integer("source.offset", math.MinInt64, math.MaxInt64)
		default:
			s.skip(1)
		}
		if s.err != nil {
			return
		}
	}
}
