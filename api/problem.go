package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// ProblemContentType is the media type of every error response (RFC 9457).
const ProblemContentType = "application/problem+json"

// Problem types. Plain HTTP errors (unknown route, wrong method, body too large) use
// about:blank, whose title is the status phrase; the others say what kind of input was
// wrong so that a client can branch on them without parsing detail.
const (
	TypeBlank          = "about:blank"
	TypeInvalidJSON    = "urn:gonomaly:problem:invalid-json"    // malformed JSON or a wrong JSON type
	TypeInvalidRequest = "urn:gonomaly:problem:invalid-request" // well-formed, but a field is missing or wrong
	TypeInvalidRecord  = "urn:gonomaly:problem:invalid-record"  // one record of an ingest request is invalid
	TypeTooLarge       = "urn:gonomaly:problem:too-large"       // over a configured limit
	TypeUnavailable    = "urn:gonomaly:problem:unavailable"     // Kafka did not take the records
	TypeInternal       = "urn:gonomaly:problem:internal"        // a bug: logged with its cause
)

// Problem is an RFC 9457 problem detail, the body of every error response. Field, Index,
// Line and Offset locate the fault in the request when it has a place.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Field is the path of the request member at fault, e.g. "rows[3][1]", "params.trees"
	// or, for a record, "values.cpu".
	Field string `json:"field,omitempty"`
	// Index is the 0-based position of the bad record in a JSON array.
	Index *int `json:"index,omitempty"`
	// Line is the 1-based line of the bad record in NDJSON.
	Line int `json:"line,omitempty"`
	// Offset is the byte offset of the fault in the body, where known.
	Offset *int64 `json:"offset,omitempty"`

	cause error // logged for 5xx, never sent
}

func (p *Problem) Error() string {
	if p.Field != "" {
		return fmt.Sprintf("%d %s: %s", p.Status, p.Field, p.Detail)
	}
	return fmt.Sprintf("%d %s", p.Status, p.Detail)
}

func problem(status int, typ, field, format string, args ...any) *Problem {
	title := http.StatusText(status)
	switch typ {
	case TypeInvalidJSON:
		title = "Malformed JSON"
	case TypeInvalidRequest:
		title = "Invalid request"
	case TypeInvalidRecord:
		title = "Invalid record"
	case TypeTooLarge:
		title = "Request over a limit"
	case TypeUnavailable:
		title = "Records not published"
	case TypeInternal:
		title = "Internal error"
	}
	return &Problem{Type: typ, Title: title, Status: status, Field: field, Detail: fmt.Sprintf(format, args...)}
}

func badRequest(field, format string, args ...any) *Problem {
	return problem(http.StatusBadRequest, TypeInvalidRequest, field, format, args...)
}

func withOffset(p *Problem, off int64) *Problem {
	p.Offset = &off
	return p
}

// jsonProblem turns an encoding/json error on the request body into a 400 that names
// the field or the byte offset; base is the offset of the decoded bytes in the body.
func jsonProblem(err error, base int64) *Problem {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return withOffset(problem(http.StatusBadRequest, TypeInvalidJSON, "", "invalid JSON at byte %d: %s", base+se.Offset, strings.TrimPrefix(se.Error(), "json: ")), base+se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return withOffset(problem(http.StatusBadRequest, TypeInvalidJSON, "", "want a JSON object, got a JSON %s", te.Value), base+te.Offset)
		}
		return withOffset(problem(http.StatusBadRequest, TypeInvalidJSON, field, "%s: want %s, got a JSON %s", field, goTypeName(te.Type.String()), te.Value), base+te.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return problem(http.StatusBadRequest, TypeInvalidJSON, "", "unexpected end of JSON input")
	}
	msg := strings.TrimPrefix(err.Error(), "json: ")
	if name, ok := strings.CutPrefix(msg, "unknown field "); ok {
		field := strings.Trim(name, `"`)
		return problem(http.StatusBadRequest, TypeInvalidRequest, field, "unknown field %s", name)
	}
	return problem(http.StatusBadRequest, TypeInvalidJSON, "", "%s", msg)
}

// goTypeName says in JSON terms what a Go type accepts.
func goTypeName(t string) string {
	switch {
	case strings.HasPrefix(t, "uint"):
		return "a non-negative whole number"
	case strings.HasPrefix(t, "int"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "string":
		return "a string"
	case t == "bool":
		return "a boolean"
	case strings.HasPrefix(t, "map"), strings.HasPrefix(t, "struct"), strings.HasPrefix(t, "api."):
		return "an object"
	case strings.HasPrefix(t, "[]"):
		return "an array"
	}
	return t
}

// handleError is the server's one error handler: every error a handler, the router or a
// middleware returns becomes an application/problem+json response here.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	p := s.toProblem(err, c)
	if p.Status >= 500 {
		s.log.Error("API request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "status", p.Status, "error", p.cause)
	}
	c.Response().Header().Set(echo.HeaderContentType, ProblemContentType)
	if c.Request().Method == http.MethodHead {
		c.Response().WriteHeader(p.Status)
		return
	}
	body, mErr := json.Marshal(p)
	if mErr != nil { // unreachable: every member is a string or an integer
		body = []byte(`{"type":"` + TypeInternal + `","title":"Internal error","status":500}`)
	}
	c.Response().WriteHeader(p.Status)
	c.Response().Write(append(body, '\n'))
}

func (s *Server) toProblem(err error, c echo.Context) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return s.bodyTooLarge()
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		req := c.Request()
		switch he.Code {
		case http.StatusNotFound:
			return problem(he.Code, TypeBlank, "", "no route %s %s (the API is under /api/v1; /openapi.json lists the routes)", req.Method, req.URL.Path)
		case http.StatusMethodNotAllowed:
			allow := c.Response().Header().Get(echo.HeaderAllow)
			return problem(he.Code, TypeBlank, "", "method %s is not allowed on %s (allowed: %s)", req.Method, req.URL.Path, allow)
		case http.StatusRequestEntityTooLarge:
			return s.bodyTooLarge()
		}
		if he.Code >= 400 && he.Code < 500 {
			return problem(he.Code, TypeBlank, "", "%v", he.Message)
		}
	}
	p = problem(http.StatusInternalServerError, TypeInternal, "", "internal error; it has been logged")
	p.cause = err
	return p
}

func (s *Server) bodyTooLarge() *Problem {
	return problem(http.StatusRequestEntityTooLarge, TypeBlank, "", "the request body is over the limit of %d bytes", s.cfg.MaxBodyBytes)
}
