package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/schemas"
)

// ndjsonTypes are the media types POST /records reads as one record per line.
var ndjsonTypes = map[string]bool{
	"application/x-ndjson": true,
	"application/ndjson":   true,
	"application/jsonl":    true,
}

type recordsResponse struct {
	Accepted int `json:"accepted"`
}

// postRecords validates every record, then publishes them all to the records topic keyed
// by series and answers once the broker has acknowledged each one. A bad record rejects
// the whole request before anything is published.
func (s *Server) postRecords(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	ct := c.Request().Header.Get(echo.HeaderContentType)
	mt := "application/json"
	if ct != "" {
		if mt, _, err = mime.ParseMediaType(ct); err != nil {
			return problem(http.StatusUnsupportedMediaType, TypeBlank, "", "Content-Type %q: %v", ct, err)
		}
	}
	var recs []*kgo.Record
	var p *Problem
	switch {
	case mt == "application/json":
		recs, p = decodeRecordArray(body, s.cfg.Topics.Records)
	case ndjsonTypes[mt]:
		recs, p = decodeRecordLines(body, s.cfg.Topics.Records)
	default:
		return problem(http.StatusUnsupportedMediaType, TypeBlank, "", "Content-Type %s: want application/json (an array of records) or application/x-ndjson (one record a line)", mt)
	}
	if p != nil {
		return p
	}
	if len(recs) == 0 {
		return badRequest("", "no records (want at least one)")
	}
	if s.cfg.Client == nil {
		return problem(http.StatusServiceUnavailable, TypeUnavailable, "", "ingest is not configured on this server (no Kafka client)")
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.ProduceTimeout)
	defer cancel()
	results := s.cfg.Client.ProduceSync(ctx, recs...)
	failed := 0
	var first error
	for _, r := range results {
		if r.Err != nil {
			if first == nil {
				first = r.Err
			}
			failed++
		}
	}
	if failed > 0 {
		p := problem(http.StatusServiceUnavailable, TypeUnavailable, "",
			"%d of %d records were not acknowledged by %s: %v; the others were published, so a retry may duplicate them", failed, len(recs), s.cfg.Topics.Records, first)
		p.cause = first
		return p
	}
	return c.JSON(http.StatusAccepted, recordsResponse{Accepted: len(recs)})
}

// recordDecoder reads the JSON form of DESIGN.md's Record.
var recordDecoder = schemas.RecordDecoder{Format: schemas.FormatJSON}

// toKafka validates one decoded record and encodes it in the canonical JSON form.
func toKafka(topic string, rec *schemas.Record) (*kgo.Record, error) {
	if rec.Series == "" {
		return nil, &schemas.DecodeError{Field: "series", Offset: -1, Msg: "missing (records sent over HTTP are keyed by their series)"}
	}
	return &kgo.Record{Topic: topic, Key: []byte(rec.Series), Value: schemas.AppendRecordJSON(nil, rec)}, nil
}

// decodeRecordArray reads a JSON array of records.
func decodeRecordArray(body []byte, topic string) ([]*kgo.Record, *Problem) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, problem(http.StatusBadRequest, TypeInvalidJSON, "", "empty body: want a JSON array of records")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	tok, err := dec.Token()
	if err != nil {
		return nil, jsonProblem(err, 0)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return nil, problem(http.StatusBadRequest, TypeInvalidJSON, "", "want a JSON array of records, got %s (send NDJSON with Content-Type application/x-ndjson)", describeToken(tok))
	}
	var out []*kgo.Record
	var rec schemas.Record
	for i := 0; dec.More(); i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			p := jsonProblem(err, 0)
			p.Index = &i
			return nil, p
		}
		start := dec.InputOffset() - int64(len(raw))
		kr, err := decodeOne(raw, topic, &rec)
		if err != nil {
			p := recordProblem(fmt.Sprintf("record %d", i), err, start)
			p.Index = &i
			return nil, p
		}
		out = append(out, kr)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, jsonProblem(err, 0)
	}
	if _, err := dec.Token(); err != io.EOF {
		off := dec.InputOffset()
		return nil, withOffset(problem(http.StatusBadRequest, TypeInvalidJSON, "", "unexpected data after the array at byte %d", off), off)
	}
	return out, nil
}

// decodeRecordLines reads NDJSON: one record a line, blank lines skipped.
func decodeRecordLines(body []byte, topic string) ([]*kgo.Record, *Problem) {
	body = bytes.TrimPrefix(body, []byte("\ufeff"))
	var out []*kgo.Record
	var rec schemas.Record
	var start int64
	for line := 1; len(body) > 0; line++ {
		text, rest, _ := bytes.Cut(body, []byte("\n"))
		body = rest
		lineStart := start
		start += int64(len(text)) + 1
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		kr, err := decodeOne(bytes.TrimSuffix(text, []byte("\r")), topic, &rec)
		if err != nil {
			p := recordProblem(fmt.Sprintf("line %d", line), err, lineStart)
			p.Line = line
			return nil, p
		}
		out = append(out, kr)
	}
	return out, nil
}

func decodeOne(b []byte, topic string, rec *schemas.Record) (*kgo.Record, error) {
	if err := recordDecoder.Decode(b, rec); err != nil {
		return nil, err
	}
	return toKafka(topic, rec)
}

// recordProblem describes a bad record at where ("record 3", "line 4"); base is the
// record's offset in the body.
func recordProblem(where string, err error, base int64) *Problem {
	var de *schemas.DecodeError
	if !errors.As(err, &de) {
		return problem(http.StatusBadRequest, TypeInvalidRecord, "", "%s: %v", where, err)
	}
	field := de.Field
	if field == "json" {
		field = "" // malformed, not a field of the record
	}
	msg := de.Msg
	if de.Field != "" {
		msg = de.Field + ": " + msg
	}
	p := problem(http.StatusBadRequest, TypeInvalidRecord, field, "%s: %s", where, msg)
	if de.Offset >= 0 {
		off := base + int64(de.Offset)
		p.Detail += fmt.Sprintf(" (byte %d of the body)", off)
		p.Offset = &off
	}
	return p
}
