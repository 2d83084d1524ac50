// Package client is a Go client of gonomaly's HTTP API (/api/v1): submit jobs and wait
// for them, list and cancel them, page through their results, upload datasets, read
// models, and score small batches synchronously. It is what `gonomaly jobs` uses.
//
// Every error the server answers is an application/problem+json document, returned as a
// *Problem:
//
//	st, err := c.Job(ctx, id)
//	var p *client.Problem
//	if errors.As(err, &p) && p.Status == http.StatusNotFound { … }
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/jobs"
)

// Client talks to one gonomaly API. It is safe for concurrent use.
type Client struct {
	base   string // scheme://host[:port][/path], without /api/v1
	apiKey string
	hc     *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithAPIKey sends key as `Authorization: Bearer <key>` on every request.
func WithAPIKey(key string) Option { return func(c *Client) { c.apiKey = key } }

// WithHTTPClient makes requests with hc instead of http.DefaultClient (for timeouts,
// TLS, proxies or a test server's client).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client of the API at baseURL, such as "http://127.0.0.1:8080" (a
// trailing /api/v1 is accepted too).
func New(baseURL string, opts ...Option) (*Client, error) {
	baseURL = strings.TrimSpace(baseURL)
	if !strings.Contains(baseURL, "://") {
		return nil, fmt.Errorf("API address %q: want http://host:port or https://host:port", baseURL)
	}
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("API address %q: %w", baseURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("API address %q: want http://host:port or https://host:port", baseURL)
	}
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), apiPrefix)
	c := &Client{base: strings.TrimSuffix(u.String(), "/"), hc: http.DefaultClient}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

const apiPrefix = "/api/v1"

// Problem is an error answered by the API: an RFC 9457 problem document. Field, Index,
// Line and Offset locate the fault in the request when it has a place.
type Problem struct {
	Status int    `json:"status"`
	Type   string `json:"type"`
	Title  string `json:"title"`
	Detail string `json:"detail,omitempty"`
	Field  string `json:"field,omitempty"`
	Index  *int   `json:"index,omitempty"`
	Line   int    `json:"line,omitempty"`
	Offset *int64 `json:"offset,omitempty"`
	// RetryAfter is the server's Retry-After (rate limited, or busy), when it sent one.
	RetryAfter time.Duration `json:"-"`
}

func (p *Problem) Error() string {
	msg := p.Detail
	if msg == "" {
		msg = p.Title
	}
	var where string
	switch {
	case p.Line > 0 && p.Field != "":
		where = fmt.Sprintf(" (line %d, %s)", p.Line, p.Field)
	case p.Line > 0:
		where = fmt.Sprintf(" (line %d)", p.Line)
	case p.Field != "" && !strings.Contains(msg, p.Field):
		where = " (" + p.Field + ")"
	}
	return fmt.Sprintf("%d %s: %s%s", p.Status, http.StatusText(p.Status), msg, where)
}

// IsStatus reports whether err is a Problem with the given HTTP status.
func IsStatus(err error, status int) bool {
	var p *Problem
	return errors.As(err, &p) && p.Status == status
}

// do sends one request and decodes a 2xx JSON answer into out (unless nil); any other
// answer becomes a *Problem.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body io.Reader, contentType string, out any) error {
	u := c.base + apiPrefix + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readProblem(resp)
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return nil
}

// readProblem turns an error answer into a *Problem. An answer that is not a problem
// document (a proxy's error page) keeps its status and the start of its body.
func readProblem(resp *http.Response) *Problem {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	p := &Problem{}
	if err := json.Unmarshal(body, p); err != nil || p.Status == 0 {
		text := strings.TrimSpace(string(body))
		if len(text) > 512 {
			text = text[:512] + "…"
		}
		p = &Problem{Type: "about:blank", Title: http.StatusText(resp.StatusCode), Detail: text}
	}
	p.Status = resp.StatusCode
	if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && secs >= 0 {
		p.RetryAfter = time.Duration(secs) * time.Second
	}
	return p
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("%s %s: encoding the request: %w", method, path, err)
	}
	return c.do(ctx, method, path, nil, bytes.NewReader(b), "application/json", out)
}

// jobRequest is the body of POST /jobs: a Job without what the server assigns (id,
// submission time and submitter).
type jobRequest struct {
	Type          jobs.Type           `json:"type"`
	Input         jobs.Input          `json:"input"`
	Algorithm     string              `json:"algorithm,omitempty"`
	Params        detectors.Params    `json:"params,omitempty"`
	Model         string              `json:"model,omitempty"`
	Detectors     []jobs.DetectorSpec `json:"detectors,omitempty"`
	Combiner      string              `json:"combiner,omitempty"`
	Scaling       string              `json:"scaling,omitempty"`
	Contamination float64             `json:"contamination,omitempty"`
	Seed          uint64              `json:"seed,omitempty"`
	Timeout       jobs.Duration       `json:"timeout,omitzero"`
	MaxAttempts   int                 `json:"max_attempts,omitempty"`
}

// SubmitJob queues a job and returns its queued status, with its id. ID, SubmittedAt,
// SubmittedBy and Schedule are the server's to set and are not sent.
func (c *Client) SubmitJob(ctx context.Context, job jobs.Job) (jobs.Status, error) {
	req := jobRequest{
		Type: job.Type, Input: job.Input, Algorithm: job.Algorithm, Params: job.Params, Model: job.Model,
		Detectors: job.Detectors, Combiner: job.Combiner, Scaling: job.Scaling, Contamination: job.Contamination,
		Seed: job.Seed, Timeout: job.Timeout, MaxAttempts: job.MaxAttempts,
	}
	req.Input.InlineRows = 0 // a status field, not a request one
	var st jobs.Status
	err := c.doJSON(ctx, http.MethodPost, "/jobs", req, &st)
	return st, err
}

// Job returns a job's latest status.
func (c *Client) Job(ctx context.Context, id string) (jobs.Status, error) {
	var st jobs.Status
	err := c.do(ctx, http.MethodGet, "/jobs/"+url.PathEscape(id), nil, nil, "", &st)
	return st, err
}

// CancelJob asks for a job to stop and returns its status after the request: cancelled
// at once when it was queued, cancel_requested while its worker stops it.
func (c *Client) CancelJob(ctx context.Context, id string) (jobs.Status, error) {
	var st jobs.Status
	err := c.do(ctx, http.MethodDelete, "/jobs/"+url.PathEscape(id), nil, nil, "", &st)
	return st, err
}

// JobPage is one page of ListJobs.
type JobPage struct {
	Jobs []jobs.Status `json:"jobs"`
	// NextCursor is the After of the next page; "" on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// ListJobs returns one page of jobs matching f, newest first; f.After is the cursor
// (the previous page's NextCursor) and f.Limit the page size (0: the server's default).
func (c *Client) ListJobs(ctx context.Context, f jobs.Filter) (JobPage, error) {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.Type != "" {
		q.Set("type", string(f.Type))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.After != "" {
		q.Set("cursor", f.After)
	}
	var page JobPage
	err := c.do(ctx, http.MethodGet, "/jobs", q, nil, "", &page)
	return page, err
}

// AllJobs iterates over every job matching f, newest first, fetching pages of f.Limit
// as it goes. An error ends the iteration after it is yielded.
func (c *Client) AllJobs(ctx context.Context, f jobs.Filter) iter.Seq2[jobs.Status, error] {
	return func(yield func(jobs.Status, error) bool) {
		for {
			page, err := c.ListJobs(ctx, f)
			if err != nil {
				yield(jobs.Status{}, err)
				return
			}
			for _, st := range page.Jobs {
				if !yield(st, nil) {
					return
				}
			}
			if page.NextCursor == "" || page.NextCursor == f.After {
				return
			}
			f.After = page.NextCursor
		}
	}
}

// DefaultPollEvery is how often Wait asks when not told.
const DefaultPollEvery = 500 * time.Millisecond

// Wait polls a job's status every pollEvery (0: DefaultPollEvery) until it is
// terminal (succeeded, failed or cancelled) and returns that status. A failed job is
// not an error of Wait: the status says why it failed.
func (c *Client) Wait(ctx context.Context, id string, pollEvery time.Duration) (jobs.Status, error) {
	if pollEvery <= 0 {
		pollEvery = DefaultPollEvery
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last jobs.Status
	gaveUp := func() (jobs.Status, error) {
		state := "not seen yet"
		if last.State != "" {
			state = "last " + string(last.State)
		}
		return last, fmt.Errorf("waiting for job %s (%s): %w", id, state, ctx.Err())
	}
	for {
		st, err := c.Job(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return gaveUp()
			}
			return st, err
		}
		if st.State.Terminal() {
			return st, nil
		}
		last = st
		select {
		case <-ctx.Done():
			return gaveUp()
		case <-tick.C:
		}
	}
}

// ResultsPage is one page of a job's per-row results.
type ResultsPage struct {
	Job    string `json:"job"`
	Total  int    `json:"total"`
	Offset int    `json:"offset"`
	// NextOffset is the offset of the next page; 0 on the last page.
	NextOffset int              `json:"next_offset,omitempty"`
	Rows       []jobs.ResultRow `json:"rows"`
}

// Results returns limit rows (0: the server's default) of a finished job's results,
// starting at row offset.
func (c *Client) Results(ctx context.Context, id string, offset, limit int) (ResultsPage, error) {
	q := url.Values{"offset": {strconv.Itoa(offset)}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var page ResultsPage
	err := c.do(ctx, http.MethodGet, "/jobs/"+url.PathEscape(id)+"/results", q, nil, "", &page)
	return page, err
}

// AllResults iterates over every result row of a finished job, in row order, fetching
// pageSize rows at a time (0: the server's default). An error ends the iteration after
// it is yielded.
func (c *Client) AllResults(ctx context.Context, id string, pageSize int) iter.Seq2[jobs.ResultRow, error] {
	return func(yield func(jobs.ResultRow, error) bool) {
		offset := 0
		for {
			page, err := c.Results(ctx, id, offset, pageSize)
			if err != nil {
				yield(jobs.ResultRow{}, err)
				return
			}
			for _, r := range page.Rows {
				if !yield(r, nil) {
					return
				}
			}
			if page.NextOffset <= offset || len(page.Rows) == 0 {
				return
			}
			offset = page.NextOffset
		}
	}
}

// Dataset formats for UploadDataset.
const (
	CSV    = "csv"
	NDJSON = "ndjson"
)

// UploadDataset streams a CSV (with a header row) or NDJSON body into a new dataset and
// returns its description; name is optional. The body is sent as it is read, never
// held whole.
func (c *Client) UploadDataset(ctx context.Context, body io.Reader, format, name string) (jobs.Dataset, error) {
	var ct string
	switch format {
	case CSV:
		ct = "text/csv"
	case NDJSON:
		ct = "application/x-ndjson"
	default:
		return jobs.Dataset{}, fmt.Errorf("dataset format %q: want csv or ndjson", format)
	}
	q := url.Values{"format": {format}}
	if name != "" {
		q.Set("name", name)
	}
	var d jobs.Dataset
	err := c.do(ctx, http.MethodPost, "/datasets", q, body, ct, &d)
	return d, err
}

// Dataset describes an uploaded dataset.
func (c *Client) Dataset(ctx context.Context, id string) (jobs.Dataset, error) {
	var d jobs.Dataset
	err := c.do(ctx, http.MethodGet, "/datasets/"+url.PathEscape(id), nil, nil, "", &d)
	return d, err
}

// Models returns every trained model's latest version, sorted by name.
func (c *Client) Models(ctx context.Context) ([]jobs.Model, error) {
	var out struct {
		Models []jobs.Model `json:"models"`
	}
	err := c.do(ctx, http.MethodGet, "/models", nil, nil, "", &out)
	return out.Models, err
}

// Model returns a model's versions, newest first.
func (c *Client) Model(ctx context.Context, name string) ([]jobs.Model, error) {
	var out struct {
		Versions []jobs.Model `json:"versions"`
	}
	err := c.do(ctx, http.MethodGet, "/models/"+url.PathEscape(name), nil, nil, "", &out)
	return out.Versions, err
}

// Detectors lists the algorithms with their parameters, defaults and ranges.
func (c *Client) Detectors(ctx context.Context) ([]detectors.Info, error) {
	var out struct {
		Detectors []detectors.Info `json:"detectors"`
	}
	err := c.do(ctx, http.MethodGet, "/detectors", nil, nil, "", &out)
	return out.Detectors, err
}

// DetectRequest is a small batch to score synchronously (POST /detect).
type DetectRequest struct {
	// Model scores with a trained model ("name" or "name@3") instead of Algorithm; then
	// only Rows may be given, in the model's column order.
	Model     string           `json:"model,omitempty"`
	Algorithm string           `json:"algorithm,omitempty"`
	Params    detectors.Params `json:"params,omitempty"`
	Rows      [][]float64      `json:"rows"`
	// Train, when given, fits a batch detector (or warms a streaming one) instead of Rows.
	Train [][]float64 `json:"train,omitempty"`
	// Seed seeds randomised detectors; nil takes the server's default (1).
	Seed *uint64 `json:"seed,omitempty"`
}

// DetectResponse is one score per row, higher is more anomalous. A streaming detector's
// warm-up scores are NaN.
type DetectResponse struct {
	// Model ("name@version") and Threshold are set when a trained model scored the rows.
	Model     string           `json:"model,omitempty"`
	Threshold float64          `json:"threshold,omitempty"`
	Algorithm string           `json:"algorithm"`
	Kind      detectors.Kind   `json:"kind"`
	Params    detectors.Params `json:"params"`
	Seed      uint64           `json:"seed"`
	Rows      int              `json:"rows"`
	Scores    []float64        `json:"-"`
}

// Detect scores rows with one detector.
func (c *Client) Detect(ctx context.Context, req DetectRequest) (DetectResponse, error) {
	var out struct {
		DetectResponse
		Scores []*float64 `json:"scores"` // null while a streaming detector warms up
	}
	if err := c.doJSON(ctx, http.MethodPost, "/detect", req, &out); err != nil {
		return DetectResponse{}, err
	}
	resp := out.DetectResponse
	resp.Scores = make([]float64, len(out.Scores))
	for i, s := range out.Scores {
		if s == nil {
			resp.Scores[i] = math.NaN()
		} else {
			resp.Scores[i] = *s
		}
	}
	return resp, nil
}
