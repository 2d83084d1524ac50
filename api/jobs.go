package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/jobs"
)

// syncTimeout bounds how long a request waits for this replica's views to catch up
// with a write made through another replica (a job, dataset or model it names).
const syncTimeout = 2 * time.Second

// jobStore is the job system, or the 503 of a server without one.
func (s *Server) jobStore() (*jobs.Store, *Problem) {
	if s.cfg.Jobs == nil {
		return nil, problem(http.StatusServiceUnavailable, TypeBlank, "", "the job system is not configured on this server (no Kafka job store)")
	}
	return s.cfg.Jobs, nil
}

// submitJob is POST /jobs: decode strictly, validate, check that the dataset or model
// it names exists, and queue it; 202 once Kafka has acknowledged the job and its
// queued status.
func (s *Server) submitJob(c echo.Context) error {
	store, p := s.jobStore()
	if p != nil {
		return p
	}
	body, err := readBody(c)
	if err != nil {
		return err
	}
	job, p := decodeJobRequest(body)
	if p != nil {
		return p
	}
	if err := jobs.Validate(job); err != nil {
		return validationProblem(err)
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.ProduceTimeout)
	defer cancel()
	if p := checkJobReferences(ctx, store, job); p != nil {
		return p
	}
	job.SubmittedBy = KeyName(c)
	st, err := store.Submit(ctx, job)
	if errors.Is(err, jobs.ErrJobTooLarge) {
		return problem(http.StatusRequestEntityTooLarge, TypeTooLarge, "input.rows", "%v", err)
	}
	if err != nil {
		p := problem(http.StatusServiceUnavailable, TypeBlank, "", "the job was not queued: Kafka did not acknowledge it (%v); retry", err)
		p.cause = err
		return p
	}
	c.Response().Header().Set(echo.HeaderLocation, Prefix+"/jobs/"+st.ID)
	return c.JSON(http.StatusAccepted, publicStatus(st))
}

func validationProblem(err error) *Problem {
	var fe *jobs.FieldError
	if errors.As(err, &fe) {
		return badRequest(fe.Field, "%s", fe.Error())
	}
	return badRequest("", "%v", err)
}

// checkJobReferences answers 404 for a dataset or model the job names that does not
// exist. A miss syncs the view once: the dataset may have been uploaded through
// another replica a moment ago.
func checkJobReferences(ctx context.Context, store *jobs.Store, job jobs.Job) *Problem {
	if id := job.Input.Dataset; id != "" {
		_, ok := store.Datasets.Get(id)
		if !ok && syncView(ctx, store.Datasets.Sync) {
			_, ok = store.Datasets.Get(id)
		}
		if !ok {
			return problem(http.StatusNotFound, TypeInvalidRequest, "input.dataset", "input.dataset: no dataset %q (POST /api/v1/datasets uploads one)", id)
		}
	}
	if job.Type == jobs.Detect && job.Model != "" {
		ref, err := jobs.ParseModelRef(job.Model) // Validate has checked it
		if err != nil {
			return badRequest("model", "model: %v", err)
		}
		_, err = store.Models.Find(ref)
		if errors.Is(err, jobs.ErrNotFound) && syncView(ctx, store.Models.Sync) {
			_, err = store.Models.Find(ref)
		}
		if err != nil {
			return problem(http.StatusNotFound, TypeInvalidRequest, "model", "model: %v", err)
		}
	}
	return nil
}

// syncView runs a view's Sync within syncTimeout and reports whether it caught up.
func syncView(ctx context.Context, sync func(context.Context) error) bool {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	return sync(ctx) == nil
}

// publicStatus is a status as the API shows it: where the results lie in Kafka is the
// server's business (GET /jobs/{id}/results reads them).
func publicStatus(st jobs.Status) jobs.Status {
	if st.Result != nil && st.Result.Results != nil {
		r := *st.Result
		r.Results = nil
		st.Result = &r
	}
	return st
}

// lookupJob finds a job's status; a miss syncs the view once (the job may have been
// submitted through another replica a moment ago), but only for an id that could be
// one, so that random ids cost no Kafka round trip.
func lookupJob(ctx context.Context, store *jobs.Store, id string) (jobs.Status, *Problem) {
	st, ok := store.Statuses.Get(id)
	if !ok && looksLikeJobID(id) && syncView(ctx, store.Statuses.Sync) {
		st, ok = store.Statuses.Get(id)
	}
	if !ok {
		return st, problem(http.StatusNotFound, TypeBlank, "id", "no job %q", id)
	}
	return st, nil
}

// looksLikeJobID accepts what jobs.NewID("job") makes: "job_" and 26 base32 characters.
func looksLikeJobID(id string) bool {
	rest, ok := strings.CutPrefix(id, "job_")
	if !ok || len(rest) != 26 {
		return false
	}
	return strings.IndexFunc(rest, func(r rune) bool { return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'z') }) < 0
}

// getJob is GET /jobs/{id}.
func (s *Server) getJob(c echo.Context) error {
	store, p := s.jobStore()
	if p != nil {
		return p
	}
	st, p := lookupJob(c.Request().Context(), store, c.Param("id"))
	if p != nil {
		return p
	}
	return c.JSON(http.StatusOK, publicStatus(st))
}

// cancelJob is DELETE /jobs/{id}: a queued job is cancelled at once, a running one is
// asked to stop (202 either way, with the status after the request).
func (s *Server) cancelJob(c echo.Context) error {
	store, p := s.jobStore()
	if p != nil {
		return p
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.ProduceTimeout)
	defer cancel()
	id := c.Param("id")
	if _, p := lookupJob(ctx, store, id); p != nil {
		return p
	}
	st, err := store.Cancel(ctx, id)
	if errors.Is(err, jobs.ErrNotFound) { // deleted in between
		return problem(http.StatusNotFound, TypeBlank, "id", "no job %q", id)
	}
	if err != nil {
		p := problem(http.StatusServiceUnavailable, TypeBlank, "", "the cancel request was not recorded: Kafka did not acknowledge it (%v); retry", err)
		p.cause = err
		return p
	}
	return c.JSON(http.StatusAccepted, publicStatus(st))
}

// jobList is GET /jobs's answer.
type jobList struct {
	Jobs       []jobs.Status `json:"jobs"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

var listJobsParams = []string{"state", "type", "limit", "cursor"}

// listJobs is GET /jobs?state=&type=&limit=&cursor=, newest first.
func (s *Server) listJobs(c echo.Context) error {
	store, p := s.jobStore()
	if p != nil {
		return p
	}
	f, p := parseJobFilter(c.QueryParams())
	if p != nil {
		return p
	}
	list, next := store.Statuses.List(f)
	for i := range list {
		list[i] = publicStatus(list[i])
	}
	return c.JSON(http.StatusOK, jobList{Jobs: list, NextCursor: next})
}

func parseJobFilter(q url.Values) (jobs.Filter, *Problem) {
	var f jobs.Filter
	for _, name := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(listJobsParams, name) {
			return f, badRequest(name, "unknown query parameter %q (known: %s)", name, strings.Join(listJobsParams, ", "))
		}
		if len(q[name]) > 1 {
			return f, badRequest(name, "%s: given %d times; give it once", name, len(q[name]))
		}
	}
	if v := q.Get("state"); v != "" {
		st, err := jobs.ParseState(v)
		if err != nil {
			return f, badRequest("state", "state: %v", err)
		}
		f.State = st
	}
	if v := q.Get("type"); v != "" {
		t, err := jobs.ParseType(v)
		if err != nil {
			return f, badRequest("type", "type: %v", err)
		}
		f.Type = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > jobs.MaxPageSize {
			return f, badRequest("limit", "limit: %q is not a whole number from 1 to %d", v, jobs.MaxPageSize)
		}
		f.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		if !looksLikeJobID(v) {
			return f, badRequest("cursor", "cursor: %q is not a job id (pass the next_cursor of the previous page)", v)
		}
		f.After = v
	}
	return f, nil
}

// jobRequestFields are the members of a JobRequest (api/openapi.json); the id, times
// and submitter are the server's to set.
var jobRequestFields = []string{"type", "input", "algorithm", "params", "model", "detectors", "combiner", "scaling", "contamination", "seed", "timeout", "max_attempts"}

var (
	inputFields    = []string{"dataset", "rows", "columns", "records"}
	recordsFields  = []string{"series", "from", "to"}
	detectorFields = []string{"algorithm", "params", "weight"}
)

// decodeJobRequest decodes POST /jobs strictly: one JSON object, known members only,
// each of its type, every fault named by its path ("input.rows[3][1]",
// "detectors[1].params.trees"). Whether the values make a job is Validate's to say.
func decodeJobRequest(body []byte) (jobs.Job, *Problem) {
	var job jobs.Job
	if len(bytes.TrimSpace(body)) == 0 {
		return job, problem(http.StatusBadRequest, TypeInvalidJSON, "", "empty body: want a JSON object with type and input")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return job, jsonProblem(err, 0)
	}
	if _, err := dec.Token(); err != io.EOF {
		off := dec.InputOffset()
		return job, withOffset(problem(http.StatusBadRequest, TypeInvalidJSON, "", "unexpected data after the JSON object at byte %d", off), off)
	}
	top, p := jsonObject(tree, "", jobRequestFields)
	if p != nil {
		return job, p
	}
	var typ string
	if p := decodeString(top, "", "type", &typ); p != nil {
		return job, p
	}
	job.Type = jobs.Type(typ)
	if v := top["input"]; v != nil {
		if job.Input, p = decodeInput(v); p != nil {
			return job, p
		}
	}
	for _, f := range []struct {
		name string
		to   *string
	}{{"algorithm", &job.Algorithm}, {"model", &job.Model}, {"combiner", &job.Combiner}, {"scaling", &job.Scaling}} {
		if p := decodeString(top, "", f.name, f.to); p != nil {
			return job, p
		}
	}
	if job.Params, p = decodeParams(top["params"], "params"); p != nil {
		return job, p
	}
	if v := top["detectors"]; v != nil {
		if job.Detectors, p = decodeDetectors(v); p != nil {
			return job, p
		}
	}
	if v := top["contamination"]; v != nil {
		if job.Contamination, p = jsonFloat(v, "contamination"); p != nil {
			return job, p
		}
	}
	if v := top["seed"]; v != nil {
		n, ok := v.(json.Number)
		seed, err := strconv.ParseUint(string(n), 10, 64)
		if !ok || err != nil {
			return job, problem(http.StatusBadRequest, TypeInvalidJSON, "seed", "seed: want a whole number from 0 to %d, got %s", uint64(math.MaxUint64), describeJSON(v))
		}
		job.Seed = seed
	}
	if v := top["max_attempts"]; v != nil {
		n, ok := v.(json.Number)
		k, err := strconv.Atoi(string(n))
		if !ok || err != nil {
			return job, problem(http.StatusBadRequest, TypeInvalidJSON, "max_attempts", "max_attempts: want a whole number from 1 to 10, got %s", describeJSON(v))
		}
		job.MaxAttempts = k
	}
	if v := top["timeout"]; v != nil {
		s, ok := v.(string)
		if !ok {
			return job, problem(http.StatusBadRequest, TypeInvalidJSON, "timeout", "timeout: want a duration string such as \"90s\" or \"1h\", got %s", describeJSON(v))
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return job, badRequest("timeout", "timeout: %q: want a number with a unit such as \"90s\" or \"1h\"", s)
		}
		job.Timeout = jobs.Duration(d)
	}
	return job, nil
}

func decodeInput(v any) (jobs.Input, *Problem) {
	var in jobs.Input
	obj, p := jsonObject(v, "input", inputFields)
	if p != nil {
		return in, p
	}
	if p := decodeString(obj, "input.", "dataset", &in.Dataset); p != nil {
		return in, p
	}
	if rows := obj["rows"]; rows != nil {
		if in.Rows, p = decodeRows(rows, "input.rows"); p != nil {
			return in, p
		}
	}
	if cols := obj["columns"]; cols != nil {
		if in.Columns, p = decodeStrings(cols, "input.columns"); p != nil {
			return in, p
		}
	}
	if rec := obj["records"]; rec != nil {
		r, p := jsonObject(rec, "input.records", recordsFields)
		if p != nil {
			return in, p
		}
		in.Records = &jobs.RecordRange{}
		if s := r["series"]; s != nil {
			if in.Records.Series, p = decodeStrings(s, "input.records.series"); p != nil {
				return in, p
			}
		}
		for _, f := range []struct {
			name string
			to   *time.Time
		}{{"from", &in.Records.From}, {"to", &in.Records.To}} {
			if p := decodeTime(r, "input.records.", f.name, f.to); p != nil {
				return in, p
			}
		}
	}
	return in, nil
}

// decodeRows reads an array of rows of numbers; the row count is bounded so that a
// huge request is refused before it is copied.
func decodeRows(v any, field string) ([][]float64, *Problem) {
	arr, ok := v.([]any)
	if !ok {
		return nil, problem(http.StatusBadRequest, TypeInvalidJSON, field, "%s: want an array of rows, got %s", field, describeJSON(v))
	}
	if len(arr) > jobs.MaxInlineRows {
		return nil, problem(http.StatusRequestEntityTooLarge, TypeTooLarge, field, "%s: %d rows is more than %d: upload the rows as a dataset (POST /api/v1/datasets) and name it in input.dataset", field, len(arr), jobs.MaxInlineRows)
	}
	rows := make([][]float64, len(arr))
	for i, r := range arr {
		rowField := field + "[" + strconv.Itoa(i) + "]"
		cells, ok := r.([]any)
		if !ok {
			return nil, problem(http.StatusBadRequest, TypeInvalidJSON, rowField, "%s: want an array of numbers, got %s", rowField, describeJSON(r))
		}
		row := make([]float64, len(cells))
		for k, cell := range cells {
			x, p := jsonFloat(cell, rowField+"["+strconv.Itoa(k)+"]")
			if p != nil {
				return nil, p
			}
			row[k] = x
		}
		rows[i] = row
	}
	return rows, nil
}

func decodeDetectors(v any) ([]jobs.DetectorSpec, *Problem) {
	arr, ok := v.([]any)
	if !ok {
		return nil, problem(http.StatusBadRequest, TypeInvalidJSON, "detectors", "detectors: want an array of {\"algorithm\": ...} objects, got %s", describeJSON(v))
	}
	if len(arr) > jobs.MaxEnsembleDetectors { // before decoding each: the count is wrong anyway
		return nil, badRequest("detectors", "detectors: %d detectors is more than %d", len(arr), jobs.MaxEnsembleDetectors)
	}
	specs := make([]jobs.DetectorSpec, len(arr))
	for i, d := range arr {
		path := "detectors[" + strconv.Itoa(i) + "]"
		obj, p := jsonObject(d, path, detectorFields)
		if p != nil {
			return nil, p
		}
		if p := decodeString(obj, path+".", "algorithm", &specs[i].Algorithm); p != nil {
			return nil, p
		}
		if specs[i].Params, p = decodeParams(obj["params"], path+".params"); p != nil {
			return nil, p
		}
		if w := obj["weight"]; w != nil {
			if specs[i].Weight, p = jsonFloat(w, path+".weight"); p != nil {
				return nil, p
			}
		}
	}
	return specs, nil
}

// decodeParams reads detector parameters: an object of numbers, each named on error.
func decodeParams(v any, field string) (detectors.Params, *Problem) {
	if v == nil {
		return nil, nil
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, problem(http.StatusBadRequest, TypeInvalidJSON, field, "%s: want an object of numbers such as {\"trees\": 100}, got %s", field, describeJSON(v))
	}
	params := make(detectors.Params, len(obj))
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		x, p := jsonFloat(obj[name], field+"."+name)
		if p != nil {
			return nil, p
		}
		params[name] = x
	}
	return params, nil
}

// jsonObject checks that v is a JSON object with known member names only.
func jsonObject(v any, path string, known []string) (map[string]any, *Problem) {
	obj, ok := v.(map[string]any)
	if !ok {
		if path == "" {
			return nil, problem(http.StatusBadRequest, TypeInvalidJSON, "", "want a JSON object, got %s", describeJSON(v))
		}
		return nil, problem(http.StatusBadRequest, TypeInvalidJSON, path, "%s: want an object, got %s", path, describeJSON(v))
	}
	for _, name := range slices.Sorted(maps.Keys(obj)) {
		if !slices.Contains(known, name) {
			field := name
			if path != "" {
				field = path + "." + name
			}
			return nil, badRequest(field, "unknown field %q (known: %s)", field, strings.Join(known, ", "))
		}
	}
	return obj, nil
}

// decodeString reads an optional string member; null is absent.
func decodeString(obj map[string]any, prefix, name string, to *string) *Problem {
	v := obj[name]
	if v == nil {
		return nil
	}
	s, ok := v.(string)
	if !ok {
		return problem(http.StatusBadRequest, TypeInvalidJSON, prefix+name, "%s%s: want a string, got %s", prefix, name, describeJSON(v))
	}
	*to = s
	return nil
}

func decodeStrings(v any, field string) ([]string, *Problem) {
	arr, ok := v.([]any)
	if !ok {
		return nil, problem(http.StatusBadRequest, TypeInvalidJSON, field, "%s: want an array of strings, got %s", field, describeJSON(v))
	}
	out := make([]string, len(arr))
	for i, e := range arr {
		s, ok := e.(string)
		if !ok {
			f := field + "[" + strconv.Itoa(i) + "]"
			return nil, problem(http.StatusBadRequest, TypeInvalidJSON, f, "%s: want a string, got %s", f, describeJSON(e))
		}
		out[i] = s
	}
	return out, nil
}

func decodeTime(obj map[string]any, prefix, name string, to *time.Time) *Problem {
	var s string
	if p := decodeString(obj, prefix, name, &s); p != nil || s == "" {
		return p
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return badRequest(prefix+name, "%s%s: %q is not an RFC 3339 time such as 2026-11-27T07:00:00Z", prefix, name, s)
	}
	*to = t
	return nil
}

// jsonFloat reads a finite number.
func jsonFloat(v any, field string) (float64, *Problem) {
	n, ok := v.(json.Number)
	if !ok {
		return 0, problem(http.StatusBadRequest, TypeInvalidJSON, field, "%s: want a number, got %s", field, describeJSON(v))
	}
	x, err := n.Float64()
	if err != nil || math.IsInf(x, 0) || math.IsNaN(x) {
		return 0, badRequest(field, "%s: %s is not a finite number", field, n)
	}
	return x, nil
}

// describeJSON names a decoded JSON value's kind for "want X, got Y" messages.
func describeJSON(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "the number " + string(v)
	}
	return fmt.Sprintf("%T", v)
}
