package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/jobs"
)

// detectorsResponse is GET /detectors: the registry as the pipeline spec sees it.
type detectorsResponse struct {
	Detectors []detectors.Info `json:"detectors"`
}

func (s *Server) listDetectors(c echo.Context) error {
	list := detectors.List() // sorted by name
	for i := range list {
		if list[i].Params == nil {
			list[i].Params = []detectors.Param{} // [] rather than null: every entry has the same shape
		}
	}
	return c.JSON(http.StatusOK, detectorsResponse{Detectors: list})
}

// detectRequest is POST /detect. Rows and Train are decoded by parseMatrix, which names
// the row and column at fault; params by parseParams, which names the parameter.
type detectRequest struct {
	// Model scores with a trained model ("name" for its latest version, or "name@3")
	// instead of fitting Algorithm; rows are in the model's column order.
	Model     string                     `json:"model"`
	Algorithm string                     `json:"algorithm"`
	Params    map[string]json.RawMessage `json:"params"`
	Rows      json.RawMessage            `json:"rows"`
	Train     json.RawMessage            `json:"train"`
	Seed      *uint64                    `json:"seed"`
}

// DefaultSeed seeds randomised detectors when a request gives no seed, so that the
// same request always gets the same scores.
const DefaultSeed = 1

type detectResponse struct {
	// Model and Threshold are set when a trained model scored the rows: scores at or
	// above its threshold are anomalous by its training contamination.
	Model     string           `json:"model,omitempty"`
	Threshold *float64         `json:"threshold,omitempty"`
	Algorithm string           `json:"algorithm"`
	Kind      detectors.Kind   `json:"kind"`
	Params    detectors.Params `json:"params"`
	Seed      uint64           `json:"seed"`
	Rows      int              `json:"rows"`
	Scores    []score          `json:"scores"`
}

// score is a detector score in JSON: NaN (a streaming detector warming up) is null, and
// ±Inf, which JSON cannot carry, is ±MaxFloat64.
type score float64

func (v score) MarshalJSON() ([]byte, error) {
	f := float64(v)
	switch {
	case math.IsNaN(f):
		return []byte("null"), nil
	case math.IsInf(f, 1):
		f = math.MaxFloat64
	case math.IsInf(f, -1):
		f = -math.MaxFloat64
	}
	return strconv.AppendFloat(nil, f, 'g', -1, 64), nil
}

// detect scores rows with one detector. A batch detector is fitted on train (default:
// the rows themselves) and scores every row. A streaming detector sees train, then rows,
// in order as one series, scoring each row before learning it.
func (s *Server) detect(c echo.Context) error {
	body, err := readBody(c)
	if err != nil {
		return err
	}
	req, p := decodeDetectRequest(body)
	if p != nil {
		return p
	}
	if req.Model != "" {
		return s.detectWithModel(c, req)
	}
	if req.Algorithm == "" {
		return badRequest("algorithm", "algorithm: missing (known: %s)", strings.Join(detectorNames(), ", "))
	}
	info, err := detectors.Lookup(req.Algorithm)
	if err != nil {
		return badRequest("algorithm", "algorithm: %v", err)
	}
	given, p := parseParams(req.Params)
	if p != nil {
		return p
	}
	params, p := resolveParams(info, given)
	if p != nil {
		return p
	}
	if isAbsent(req.Rows) {
		return badRequest("rows", "rows: missing (want an array of rows, each an array of numbers)")
	}
	rows, p := parseMatrix(req.Rows, "rows", s.cfg.MaxRows, 0, "")
	if p != nil {
		return p
	}
	train := rows
	if !isAbsent(req.Train) {
		if train, p = parseMatrix(req.Train, "train", s.cfg.MaxRows, rows.Cols, "the width of rows"); p != nil {
			return p
		}
	}
	seed := uint64(DefaultSeed)
	if req.Seed != nil {
		seed = *req.Seed
	}

	scores, p := s.scoreWithin(c, info.Name, rows.Rows, func(stop <-chan struct{}) ([]float64, *Problem) {
		return runDetector(info, params, seed, rows, train, trainField(req), !isAbsent(req.Train), stop)
	})
	if p != nil {
		return p
	}
	return c.JSON(http.StatusOK, detectResponse{
		Algorithm: info.Name, Kind: info.Kind, Params: params, Seed: seed, Rows: rows.Rows, Scores: jsonScores(scores),
	})
}

func jsonScores(scores []float64) []score {
	out := make([]score, len(scores))
	for i, v := range scores {
		out[i] = score(v)
	}
	return out
}

// detectWithModel scores rows with a trained model's version from the models topic. A
// streaming model starts every request from its trained state.
func (s *Server) detectWithModel(c echo.Context, req detectRequest) error {
	for _, f := range []struct {
		name  string
		given bool
	}{{"algorithm", req.Algorithm != ""}, {"params", req.Params != nil}, {"train", !isAbsent(req.Train)}, {"seed", req.Seed != nil}} {
		if f.given {
			return badRequest(f.name, "%s: not allowed with model: a trained model has its algorithm, parameters, training data and seed", f.name)
		}
	}
	store := s.cfg.Jobs
	if store == nil {
		return problem(http.StatusServiceUnavailable, TypeUnavailable, "model", "trained models are not available: this server has no job store")
	}
	ref, err := jobs.ParseModelRef(req.Model)
	if err != nil {
		return badRequest("model", "model: %v", err)
	}
	m, err := store.Models.Find(ref)
	if errors.Is(err, jobs.ErrNotFound) {
		// Perhaps trained a moment ago through another replica's worker.
		if serr := store.Models.Sync(c.Request().Context()); serr == nil {
			m, err = store.Models.Find(ref)
		}
	}
	if err != nil {
		return problem(http.StatusNotFound, TypeBlank, "model", "%v", err)
	}
	if isAbsent(req.Rows) {
		return badRequest("rows", "rows: missing (want an array of rows of the model's columns: %s)", strings.Join(m.Columns, ", "))
	}
	rows, p := parseMatrix(req.Rows, "rows", s.cfg.MaxRows, len(m.Columns), "the model's columns ("+strings.Join(m.Columns, ", ")+")")
	if p != nil {
		return p
	}
	batch, stream, err := m.Restore()
	if err != nil {
		p := problem(http.StatusInternalServerError, TypeInternal, "model", "model %s cannot be restored; it has been logged", ref)
		p.cause = err
		return p
	}
	name := jobs.ModelRef{Name: m.Name, Version: m.Version}.String()
	scores, p := s.scoreWithin(c, name, rows.Rows, func(stop <-chan struct{}) ([]float64, *Problem) {
		scores := make([]float64, rows.Rows)
		if batch != nil {
			if err := batch.Score(rows, scores); err != nil {
				return nil, badRequest("rows", "cannot score with %s: %v", name, err)
			}
			return scores, nil
		}
		for i := range rows.Rows {
			if i%256 == 0 && isClosed(stop) {
				return nil, nil
			}
			scores[i] = stream.ScoreLearn("api", rows.Row(i), nil)
		}
		return scores, nil
	})
	if p != nil {
		return p
	}
	info, _ := detectors.Lookup(m.Algorithm) // Restore found it
	threshold := m.Threshold
	return c.JSON(http.StatusOK, detectResponse{
		Model: name, Threshold: &threshold, Algorithm: m.Algorithm, Kind: info.Kind, Params: m.Params, Seed: m.Seed,
		Rows: rows.Rows, Scores: jsonScores(scores),
	})
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// scoreWithin runs the detector on a free core within the work budget (DetectTimeout,
// waiting included). Detectors cannot be interrupted, so a computation over the budget
// keeps its core until it ends: a burst of heavy requests cannot pile up more work than
// there are cores, and the client hears at the deadline that it should submit a job.
func (s *Server) scoreWithin(c echo.Context, name string, rows int, run func(stop <-chan struct{}) ([]float64, *Problem)) ([]float64, *Problem) {
	timer := time.NewTimer(s.cfg.DetectTimeout)
	defer timer.Stop()
	ctx := c.Request().Context()
	select {
	case s.detectSlots <- struct{}{}:
	case <-timer.C:
		c.Response().Header().Set("Retry-After", "1")
		return nil, problem(http.StatusServiceUnavailable, TypeUnavailable, "", "every core was busy scoring other requests for %s (the work budget of POST /detect); retry later", s.cfg.DetectTimeout)
	case <-ctx.Done():
		return nil, problem(http.StatusServiceUnavailable, TypeUnavailable, "", "the request ended while waiting for a free core")
	}
	type outcome struct {
		scores []float64
		p      *Problem
	}
	done := make(chan outcome, 1)
	stop := make(chan struct{}) // closed when nobody waits for the outcome any more
	go func() {
		defer func() { <-s.detectSlots }()
		// Off the handler's goroutine recoverPanics cannot catch a detector's panic.
		defer func() {
			if r := recover(); r != nil {
				s.metrics.panics.Inc()
				s.log.Error("detector panicked", "detector", name, "panic", r, "stack", string(debug.Stack()))
				p := problem(http.StatusInternalServerError, TypeInternal, "", "internal error; it has been logged")
				p.cause = fmt.Errorf("detector %s panicked: %v", name, r)
				done <- outcome{nil, p}
			}
		}()
		scores, p := run(stop)
		done <- outcome{scores, p}
	}()
	select {
	case o := <-done:
		return o.scores, o.p
	case <-timer.C:
		close(stop)
		return nil, problem(http.StatusUnprocessableEntity, TypeTooLarge, "", "scoring %d rows with %s did not finish within %s, the work budget of POST /detect; submit a job (POST /api/v1/jobs) for this much work", rows, name, s.cfg.DetectTimeout)
	case <-ctx.Done():
		close(stop)
		return nil, problem(http.StatusServiceUnavailable, TypeUnavailable, "", "the request ended before scoring finished")
	}
}

// runDetector scores rows with one detector. A streaming detector checks stop between
// rows; a batch one runs to the end.
func runDetector(info detectors.Info, params detectors.Params, seed uint64, rows, train detectors.Matrix,
	trainField string, trainGiven bool, stop <-chan struct{}) ([]float64, *Problem) {
	scores := make([]float64, rows.Rows)
	switch info.Kind {
	case detectors.KindBatch:
		det, err := info.NewBatch(params, seed)
		if err != nil {
			return nil, badRequest("params", "%v", err)
		}
		if err := det.Fit(train); err != nil {
			return nil, badRequest(trainField, "cannot fit %s: %v", info.Name, err)
		}
		if err := det.Score(rows, scores); err != nil {
			return nil, badRequest("rows", "cannot score with %s: %v", info.Name, err)
		}
	case detectors.KindStreaming:
		det, err := info.NewStreaming(params, seed)
		if err != nil {
			return nil, badRequest("params", "%v", err)
		}
		const series = "api"
		stopped := func(i int) bool {
			if i%256 != 0 {
				return false
			}
			select {
			case <-stop:
				return true
			default:
				return false
			}
		}
		if trainGiven {
			for i := range train.Rows {
				if stopped(i) {
					return nil, nil
				}
				det.ScoreLearn(series, train.Row(i), nil)
			}
		}
		for i := range rows.Rows {
			if stopped(i) {
				return nil, nil
			}
			scores[i] = det.ScoreLearn(series, rows.Row(i), nil)
		}
	default:
		p := problem(http.StatusInternalServerError, TypeInternal, "", "internal error; it has been logged")
		p.cause = fmt.Errorf("detector %s has unknown kind %q", info.Name, info.Kind)
		return nil, p
	}
	return scores, nil
}

func trainField(req detectRequest) string {
	if isAbsent(req.Train) {
		return "rows"
	}
	return "train"
}

func detectorNames() []string {
	var names []string
	for _, d := range detectors.List() {
		names = append(names, d.Name)
	}
	return names
}

func isAbsent(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// decodeDetectRequest decodes the body strictly: one JSON object, known fields only.
func decodeDetectRequest(body []byte) (detectRequest, *Problem) {
	var req detectRequest
	if len(bytes.TrimSpace(body)) == 0 {
		return req, problem(http.StatusBadRequest, TypeInvalidJSON, "", "empty body: want a JSON object with algorithm and rows")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, jsonProblem(err, 0)
	}
	if _, err := dec.Token(); err != io.EOF {
		off := dec.InputOffset()
		return req, withOffset(problem(http.StatusBadRequest, TypeInvalidJSON, "", "unexpected data after the JSON object at byte %d", off), off)
	}
	return req, nil
}

// parseParams reads each parameter as a number, naming the one that is not.
func parseParams(raw map[string]json.RawMessage) (detectors.Params, *Problem) {
	out := make(detectors.Params, len(raw))
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		field := "params." + name
		v, what := jsonNumber(raw[name])
		if what != "" {
			return nil, problem(http.StatusBadRequest, TypeInvalidJSON, field, "%s: want a number, got %s", field, what)
		}
		out[name] = v
	}
	return out, nil
}

// resolveParams checks the parameters one at a time, so that the problem can name the
// one at fault; the message is the registry's, with the range.
func resolveParams(info detectors.Info, given detectors.Params) (detectors.Params, *Problem) {
	for _, name := range slices.Sorted(maps.Keys(given)) {
		if _, err := info.Resolve(detectors.Params{name: given[name]}); err != nil {
			return nil, badRequest("params."+name, "%v", err)
		}
	}
	params, err := info.Resolve(given)
	if err != nil {
		return nil, badRequest("params", "%v", err)
	}
	return params, nil
}

// jsonNumber parses one JSON value as a finite number. Otherwise it describes what the
// value is ("null", "a string", "1e999, not a finite number").
func jsonNumber(raw []byte) (float64, string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, "nothing"
	}
	switch raw[0] {
	case '"':
		return 0, "a string"
	case 'n':
		return 0, "null"
	case 't', 'f':
		return 0, "a boolean"
	case '[':
		return 0, "an array"
	case '{':
		return 0, "an object"
	}
	v, err := strconv.ParseFloat(string(raw), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, string(raw) + ", not a finite number"
	}
	return v, ""
}

// parseMatrix decodes an array of rows of numbers into a Matrix, checking as it goes:
// at most maxRows rows, none empty, all as wide as the first (or as width when it is
// given, which widthOf explains), every value a finite number. raw is valid JSON: the
// request decoder has checked it.
func parseMatrix(raw json.RawMessage, field string, maxRows, width int, widthOf string) (detectors.Matrix, *Problem) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m detectors.Matrix
	tok, err := dec.Token()
	if err != nil {
		return m, jsonProblem(err, 0)
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return m, problem(http.StatusBadRequest, TypeInvalidJSON, field, "%s: want an array of rows, got %s", field, describeToken(tok))
	}
	cols := width
	for dec.More() {
		if m.Rows == maxRows {
			return m, problem(http.StatusRequestEntityTooLarge, TypeTooLarge, field, "%s: more than %d rows (the limit of one request; submit a job for more)", field, maxRows)
		}
		rowField := fmt.Sprintf("%s[%d]", field, m.Rows)
		if tok, err = dec.Token(); err != nil {
			return m, jsonProblem(err, 0)
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return m, problem(http.StatusBadRequest, TypeInvalidJSON, rowField, "%s: want an array of numbers, got %s", rowField, describeToken(tok))
		}
		n := 0
		for dec.More() {
			if tok, err = dec.Token(); err != nil {
				return m, jsonProblem(err, 0)
			}
			cell := fmt.Sprintf("%s[%d]", rowField, n)
			num, ok := tok.(json.Number)
			if !ok {
				return m, problem(http.StatusBadRequest, TypeInvalidJSON, cell, "%s: want a number, got %s", cell, describeToken(tok))
			}
			v, err := num.Float64()
			if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
				return m, badRequest(cell, "%s: %s is not a finite number", cell, num)
			}
			m.Data = append(m.Data, v)
			n++
		}
		if _, err = dec.Token(); err != nil { // the row's ']'
			return m, jsonProblem(err, 0)
		}
		switch {
		case n == 0:
			return m, badRequest(rowField, "%s: empty row (want at least one number)", rowField)
		case cols == 0:
			cols = n
		case n != cols:
			of := widthOf
			if of == "" {
				of = "the width of " + field + "[0]"
			}
			return m, badRequest(rowField, "%s: has %d values, want %d (%s)", rowField, n, cols, of)
		}
		m.Rows++
	}
	if m.Rows == 0 {
		return m, badRequest(field, "%s: empty (want at least one row)", field)
	}
	m.Cols = cols
	return m, nil
}

// describeToken names a JSON token for "want X, got Y" messages.
func describeToken(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '[':
			return "an array"
		case '{':
			return "an object"
		}
		return string(v)
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "a number (" + v.String() + ")"
	}
	return fmt.Sprintf("%v", tok)
}
