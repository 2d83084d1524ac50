package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/gonomaly/gonomaly/jobs"
)

// Limits of the dataset and results routes.
const (
	maxDatasetNameLen     = 256
	DefaultResultsLimit   = 1000
	MaxResultsLimit       = 100_000
	viewSyncTimeout       = 5 * time.Second // how long a miss waits for the view to catch up
	datasetContentTypeMsg = "send text/csv or application/x-ndjson, or name the format with ?format=csv|ndjson"
)

// datasetJSON is a dataset as the API shows it: where its chunks lie is internal.
type datasetJSON struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Format    string    `json:"format"`
	Rows      int       `json:"rows"`
	Columns   []string  `json:"columns"`
	Labels    bool      `json:"labels,omitempty"`
	Hash      string    `json:"hash"`
	Bytes     int64     `json:"bytes"`
	CreatedAt time.Time `json:"created_at"`
	Source    string    `json:"source,omitempty"`
}

func publicDataset(d jobs.Dataset) datasetJSON {
	return datasetJSON{
		ID: d.ID, Name: d.Name, Format: d.Format, Rows: d.Rows, Columns: d.Columns, Labels: d.Labels,
		Hash: d.Hash, Bytes: d.Bytes, CreatedAt: d.CreatedAt, Source: d.Source,
	}
}

// uploadDataset streams the body into the datasets topic (jobs.Store.UploadDataset):
// the body is parsed and stored as it arrives, never held whole, up to MaxDatasetBytes.
func (s *Server) uploadDataset(c echo.Context) error {
	format, p := datasetFormat(c)
	if p != nil {
		return p
	}
	name := c.QueryParam("name")
	if err := checkDatasetName(name); err != nil {
		return badRequest("name", "name: %v", err)
	}
	if s.cfg.Jobs == nil {
		return jobStoreMissing()
	}
	body := &bodyReader{r: c.Request().Body}
	d, err := s.cfg.Jobs.UploadDataset(c.Request().Context(), body, format, name)
	if err != nil {
		return s.uploadProblem(c, err, body.err)
	}
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/datasets/"+d.ID)
	return c.JSON(http.StatusCreated, publicDataset(d))
}

// datasetFormat takes the upload's format from ?format= or else from Content-Type.
func datasetFormat(c echo.Context) (string, *Problem) {
	if q := c.QueryParam("format"); q != "" {
		switch q {
		case jobs.FormatCSV, jobs.FormatNDJSON:
			return q, nil
		}
		return "", badRequest("format", "format %q: want csv or ndjson", q)
	}
	ct := c.Request().Header.Get(echo.HeaderContentType)
	if ct == "" {
		return "", problem(http.StatusUnsupportedMediaType, TypeBlank, "", "no Content-Type: %s", datasetContentTypeMsg)
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return "", problem(http.StatusUnsupportedMediaType, TypeBlank, "", "Content-Type %q: %v; %s", ct, err, datasetContentTypeMsg)
	}
	switch {
	case mt == "text/csv":
		return jobs.FormatCSV, nil
	case ndjsonTypes[mt]:
		return jobs.FormatNDJSON, nil
	}
	return "", problem(http.StatusUnsupportedMediaType, TypeBlank, "", "Content-Type %s is not a dataset format: %s", mt, datasetContentTypeMsg)
}

func checkDatasetName(name string) error {
	if len(name) > maxDatasetNameLen {
		return fmt.Errorf("%d bytes, more than %d", len(name), maxDatasetNameLen)
	}
	if !utf8.ValidString(name) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("control character %q", r)
		}
	}
	return nil
}

// bodyReader remembers the first error reading the request body, so that a failed
// upload can tell the client's fault (a body over the limit, a broken connection) from
// the broker's.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

func (s *Server) uploadProblem(c echo.Context, err, bodyErr error) *Problem {
	var tooBig *http.MaxBytesError
	var bad *jobs.DatasetError
	switch {
	case errors.As(bodyErr, &tooBig):
		return s.datasetTooLarge()
	case bodyErr != nil:
		return badRequest("", "reading the request body: %v", bodyErr)
	case errors.As(err, &bad):
		p := badRequest(bad.Column, "%s", bad.Error())
		p.Line = bad.Line
		return p
	case c.Request().Context().Err() != nil:
		// The client went away: nobody reads this answer, and it is not the broker's fault.
		return badRequest("", "the upload was interrupted: %v", c.Request().Context().Err())
	}
	p := problem(http.StatusServiceUnavailable, TypeUnavailable, "", "the dataset was not stored: %v", err)
	p.Title = "Dataset not stored"
	p.cause = err
	return p
}

func (s *Server) datasetTooLarge() *Problem {
	return problem(http.StatusRequestEntityTooLarge, TypeBlank, "", "the dataset is over the limit of %d bytes", s.cfg.MaxDatasetBytes)
}

func jobStoreMissing() *Problem {
	return problem(http.StatusServiceUnavailable, TypeUnavailable, "", "the job system is not configured on this server")
}

func (s *Server) getDataset(c echo.Context) error {
	st := s.cfg.Jobs
	if st == nil {
		return jobStoreMissing()
	}
	id := c.Param("id")
	d, ok := st.Datasets.Get(id)
	if !ok {
		// Another replica may have stored it a moment ago: catch up before saying no.
		if p := s.syncView(c.Request().Context(), st.Datasets.Sync); p != nil {
			return p
		}
		if d, ok = st.Datasets.Get(id); !ok {
			return problem(http.StatusNotFound, TypeBlank, "id", "no dataset %q", id)
		}
	}
	return c.JSON(http.StatusOK, publicDataset(d))
}

// syncView waits for a view to hold everything its topic held, within viewSyncTimeout.
func (s *Server) syncView(ctx context.Context, sync func(context.Context) error) *Problem {
	ctx, cancel := context.WithTimeout(ctx, viewSyncTimeout)
	defer cancel()
	if err := sync(ctx); err != nil {
		p := problem(http.StatusServiceUnavailable, TypeUnavailable, "", "cannot read the job system's state from Kafka: %v", err)
		p.Title = "Job system unavailable"
		p.cause = err
		return p
	}
	return nil
}

// resultsPage is one page of GET /jobs/{id}/results.
type resultsPage struct {
	Job        string           `json:"job"`
	Total      int              `json:"total"`
	Offset     int              `json:"offset"`
	NextOffset *int             `json:"next_offset,omitempty"`
	Rows       []jobs.ResultRow `json:"rows"`
}

// jobResults pages through a succeeded job's per-row results, as JSON or NDJSON.
func (s *Server) jobResults(c echo.Context) error {
	offset, p := resultsIntParam(c, "offset", 0, 0, math.MaxInt32)
	if p != nil {
		return p
	}
	limit, p := resultsIntParam(c, "limit", DefaultResultsLimit, 1, MaxResultsLimit)
	if p != nil {
		return p
	}
	ndjson, p := resultsFormat(c)
	if p != nil {
		return p
	}
	st := s.cfg.Jobs
	if st == nil {
		return jobStoreMissing()
	}
	id := c.Param("id")
	status, ok := st.Statuses.Get(id)
	if !ok {
		if p := s.syncView(c.Request().Context(), st.Statuses.Sync); p != nil {
			return p
		}
		if status, ok = st.Statuses.Get(id); !ok {
			return problem(http.StatusNotFound, TypeBlank, "id", "no job %q", id)
		}
	}
	if status.State != jobs.Succeeded {
		return problem(http.StatusConflict, TypeBlank, "", "job %s is %s: its results are there once it has succeeded", id, status.State)
	}
	if status.Result == nil || status.Result.Results == nil {
		return problem(http.StatusConflict, TypeBlank, "", "job %s (%s) succeeded without per-row results", id, status.Type)
	}
	loc := *status.Result.Results
	rows, err := st.ReadResults(c.Request().Context(), loc, offset, limit)
	if err != nil {
		p := problem(http.StatusServiceUnavailable, TypeUnavailable, "", "cannot read the results of job %s: %v", id, err)
		p.Title = "Results unavailable"
		p.cause = err
		return p
	}
	for i := range rows {
		rows[i].Score = jsonScore(rows[i].Score)
	}
	if ndjson {
		return writeResultLines(c, rows)
	}
	page := resultsPage{Job: id, Total: loc.Rows, Offset: offset, Rows: rows}
	if next := offset + len(rows); next < loc.Rows {
		page.NextOffset = &next
	}
	return c.JSON(http.StatusOK, page)
}

// jsonScore makes a score JSON can carry: an infinite score (some detectors give one to
// a point unlike any other) becomes the largest finite number, which ranks the same.
func jsonScore(v float64) float64 {
	switch {
	case math.IsInf(v, 1):
		return math.MaxFloat64
	case math.IsInf(v, -1):
		return -math.MaxFloat64
	}
	return v
}

func writeResultLines(c echo.Context, rows []jobs.ResultRow) error {
	resp := c.Response()
	resp.Header().Set(echo.HeaderContentType, "application/x-ndjson")
	resp.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(resp) // one value a line
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return nil // the client went away; the status is already sent
		}
	}
	return nil
}

// resultsIntParam reads an optional integer query parameter in [lo, hi].
func resultsIntParam(c echo.Context, name string, def, lo, hi int) (int, *Problem) {
	q := c.QueryParam(name)
	if q == "" {
		return def, nil
	}
	v, err := strconv.Atoi(q)
	if err != nil || v < lo || v > hi {
		return 0, badRequest(name, "%s %q: want a whole number from %d to %d", name, q, lo, hi)
	}
	return v, nil
}

// resultsFormat picks NDJSON by ?format=ndjson, or by an Accept header that names an
// NDJSON type before application/json.
func resultsFormat(c echo.Context) (ndjson bool, p *Problem) {
	switch q := c.QueryParam("format"); q {
	case "json":
		return false, nil
	case "ndjson":
		return true, nil
	case "":
	default:
		return false, badRequest("format", "format %q: want json or ndjson", q)
	}
	for _, part := range strings.Split(c.Request().Header.Get(echo.HeaderAccept), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		if ndjsonTypes[mt] {
			return true, nil
		}
		if mt == "application/json" {
			return false, nil
		}
	}
	return false, nil
}
