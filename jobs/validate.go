package jobs

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gonomaly/gonomaly/detectors"
)

// FieldError is a job that cannot run, with the path of the member at fault
// ("input.rows[3][1]", "detectors[1].params.trees") so that the API can name it.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Scalings lists the column scalings of preprocess jobs.
var Scalings = []string{"standard", "robust", "minmax"}

// MaxEnsembleDetectors bounds an ensemble job's members: the combiners allocate nothing
// up to this many scores.
const MaxEnsembleDetectors = 32

// maxNameLen bounds model names, dataset ids, series and column names.
const maxNameLen = 128

// DecodeJob reads a job from its queue topic: the value is the Job, under its ID as
// the key (Submit writes both).
func DecodeJob(key, value []byte) (Job, error) {
	var job Job
	if err := json.Unmarshal(value, &job); err != nil {
		return Job{}, fmt.Errorf("not a job: %w", err)
	}
	if job.ID == "" || job.ID != string(key) {
		return Job{}, fmt.Errorf("job id %q under key %q", job.ID, key)
	}
	return job, nil
}

// Validate checks that a job can run before it is queued, so that a bad request is
// refused at once instead of failing on a worker later: the type is known, the input
// is exactly one of a dataset, inline rows or a record range, the fields of the type
// are there (and no fields of other types), algorithms are registered and their
// parameters within range. The first fault is returned as a *FieldError. Whether a
// named dataset or model exists is the caller's to check: it needs the views.
func Validate(j Job) error {
	if j.Type == "" {
		return fieldErr("type", "missing (known: %s)", typeNames())
	}
	if _, err := ParseType(string(j.Type)); err != nil {
		return fieldErr("type", "%v", err)
	}
	if err := validateInput(j.Input); err != nil {
		return err
	}
	if err := validateTypeFields(j); err != nil {
		return err
	}
	if c := j.Contamination; c != 0 && !(c > 0 && c <= 0.5) { // written so that NaN fails
		return fieldErr("contamination", "%v is out of range (0, 0.5] (default %v)", c, DefaultContamination)
	}
	if j.MaxAttempts < 0 || j.MaxAttempts > 10 {
		return fieldErr("max_attempts", "%d is out of range [1, 10] (0 takes the default %d)", j.MaxAttempts, DefaultMaxAttempts)
	}
	if j.Timeout < 0 {
		return fieldErr("timeout", "%s is negative", time.Duration(j.Timeout))
	}
	return nil
}

func typeNames() string {
	names := make([]string, len(Types))
	for i, t := range Types {
		names[i] = string(t)
	}
	return strings.Join(names, ", ")
}

func validateInput(in Input) error {
	var given []string
	if in.Dataset != "" {
		given = append(given, "input.dataset")
	}
	if len(in.Rows) > 0 {
		given = append(given, "input.rows")
	}
	if in.Records != nil {
		given = append(given, "input.records")
	}
	switch {
	case len(given) == 0 && in.Rows != nil:
		return fieldErr("input.rows", "empty: want at least one row")
	case len(given) == 0:
		return fieldErr("input", "missing: give exactly one of input.dataset, input.rows or input.records")
	case len(given) > 1:
		return fieldErr("input", "give exactly one of input.dataset, input.rows or input.records, not %s", strings.Join(given, " and "))
	}
	if in.InlineRows != 0 {
		return fieldErr("input.inline_rows", "is set by the server in statuses; send input.rows instead")
	}
	width := 0
	switch {
	case in.Dataset != "":
		if err := checkName("input.dataset", in.Dataset); err != nil {
			return err
		}
	case len(in.Rows) > 0:
		w, err := validateRows(in.Rows)
		if err != nil {
			return err
		}
		width = w
	default:
		if err := validateRecordRange(*in.Records); err != nil {
			return err
		}
	}
	return validateColumns(in.Columns, width)
}

func validateRows(rows [][]float64) (int, error) {
	if len(rows) > MaxInlineRows {
		return 0, fieldErr("input.rows", "%d rows is more than %d: upload the rows as a dataset (POST /datasets) instead", len(rows), MaxInlineRows)
	}
	width := len(rows[0])
	for i, row := range rows {
		field := "input.rows[" + strconv.Itoa(i) + "]"
		if len(row) == 0 {
			return 0, fieldErr(field, "empty row")
		}
		if len(row) != width {
			return 0, fieldErr(field, "has %d values, want %d (the width of input.rows[0])", len(row), width)
		}
		for k, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return 0, fieldErr(field+"["+strconv.Itoa(k)+"]", "%v is not a finite number", v)
			}
		}
	}
	return width, nil
}

func validateRecordRange(r RecordRange) error {
	if len(r.Series) == 0 {
		return fieldErr("input.records.series", "empty: want at least one series")
	}
	for i, s := range r.Series {
		if err := checkText("input.records.series["+strconv.Itoa(i)+"]", s); err != nil {
			return err
		}
	}
	if r.From.IsZero() {
		return fieldErr("input.records.from", "missing: want an RFC 3339 time")
	}
	if r.To.IsZero() {
		return fieldErr("input.records.to", "missing: want an RFC 3339 time")
	}
	if !r.From.Before(r.To) {
		return fieldErr("input.records.to", "%s is not after input.records.from %s", r.To.Format(time.RFC3339Nano), r.From.Format(time.RFC3339Nano))
	}
	return nil
}

// validateColumns checks column names; width > 0 (inline rows) also fixes their count.
func validateColumns(cols []string, width int) error {
	if width > 0 && len(cols) > 0 && len(cols) != width {
		return fieldErr("input.columns", "names %d columns, but the rows have %d values", len(cols), width)
	}
	seen := make(map[string]int, len(cols))
	for i, c := range cols {
		field := "input.columns[" + strconv.Itoa(i) + "]"
		if err := checkText(field, c); err != nil {
			return err
		}
		if j, dup := seen[c]; dup {
			return fieldErr(field, "%q is also input.columns[%d]", c, j)
		}
		seen[c] = i
	}
	return nil
}

// checkText accepts a non-empty name of at most maxNameLen bytes without control
// characters: series and column names are free text otherwise.
func checkText(field, s string) error {
	if s == "" {
		return fieldErr(field, "empty")
	}
	if len(s) > maxNameLen {
		return fieldErr(field, "longer than %d bytes", maxNameLen)
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }); i >= 0 {
		return fieldErr(field, "%q has a control character at byte %d", s, i)
	}
	return nil
}

// checkName accepts a safe name, [A-Za-z0-9._-]{1,128}: dataset ids go into Kafka keys
// and URLs. (Model names have their own, shorter rule: CheckModelName.)
func checkName(field, s string) error {
	if s == "" {
		return fieldErr(field, "empty")
	}
	if len(s) > maxNameLen {
		return fieldErr(field, "longer than %d characters", maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fieldErr(field, "%q: character %q at %d is not allowed (use letters, digits, '.', '_' and '-')", s, c, i)
		}
	}
	return nil
}

// validateTypeFields checks the fields each type needs, and refuses those of other
// types: a field that would be ignored is a mistake the user wants to hear about.
func validateTypeFields(j Job) error {
	unused := func(field, what string) error {
		return fieldErr(field, "not used by %s jobs (%s)", j.Type, what)
	}
	if j.Type != Ensemble {
		if len(j.Detectors) > 0 {
			return unused("detectors", "only ensemble jobs have detectors")
		}
		if j.Combiner != "" {
			return unused("combiner", "only ensemble jobs combine detectors")
		}
	}
	if j.Type != Preprocess && j.Scaling != "" {
		return unused("scaling", "only preprocess jobs scale columns")
	}
	switch j.Type {
	case Detect:
		switch {
		case j.Algorithm != "" && j.Model != "":
			return fieldErr("model", "give either algorithm (fit a detector) or model (score with a trained one), not both")
		case j.Model != "":
			if len(j.Params) > 0 {
				return fieldErr("params", "a trained model has its parameters; params go with algorithm")
			}
			if _, err := ParseModelRef(j.Model); err != nil {
				return fieldErr("model", "%v", err)
			}
			return nil
		case j.Algorithm == "":
			return fieldErr("algorithm", "missing: give algorithm (%s) or model", strings.Join(detectorNames(), ", "))
		}
		return validateDetector("", j.Algorithm, j.Params)
	case Train:
		if j.Algorithm == "" {
			return fieldErr("algorithm", "missing: the detector to train (%s)", strings.Join(detectorNames(), ", "))
		}
		if err := validateDetector("", j.Algorithm, j.Params); err != nil {
			return err
		}
		if j.Model == "" {
			return fieldErr("model", "missing: the name to publish the trained model under")
		}
		if strings.Contains(j.Model, "@") {
			return fieldErr("model", "%q: a train job publishes a new version; give the name without @version", j.Model)
		}
		if err := CheckModelName(j.Model); err != nil {
			return fieldErr("model", "%v", err)
		}
		return nil
	case Ensemble:
		if j.Algorithm != "" || len(j.Params) > 0 {
			return unused("algorithm", "give each detector's algorithm and params in detectors")
		}
		if j.Model != "" {
			return unused("model", "ensembles fit their detectors")
		}
		if len(j.Detectors) == 0 {
			return fieldErr("detectors", "missing: want at least one {\"algorithm\": ...}")
		}
		if len(j.Detectors) > MaxEnsembleDetectors {
			return fieldErr("detectors", "%d detectors is more than %d", len(j.Detectors), MaxEnsembleDetectors)
		}
		for i, d := range j.Detectors {
			prefix := "detectors[" + strconv.Itoa(i) + "]."
			if d.Algorithm == "" {
				return fieldErr(prefix+"algorithm", "missing (known: %s)", strings.Join(detectorNames(), ", "))
			}
			if err := validateDetector(prefix, d.Algorithm, d.Params); err != nil {
				return err
			}
			if !(d.Weight >= 0) || math.IsInf(d.Weight, 0) { // NaN fails too
				return fieldErr(prefix+"weight", "%v: want a finite number ≥ 0 (0 counts as 1)", d.Weight)
			}
		}
		if j.Combiner != "" && !slices.Contains(detectors.CombineMethods(), j.Combiner) {
			return fieldErr("combiner", "unknown combiner %q (known: %s)", j.Combiner, strings.Join(detectors.CombineMethods(), ", "))
		}
	case Preprocess:
		if j.Algorithm != "" || len(j.Params) > 0 {
			return unused("algorithm", "preprocess jobs scale columns, they fit no detector")
		}
		if j.Model != "" {
			return unused("model", "preprocess jobs fit no model")
		}
		if j.Scaling == "" {
			return fieldErr("scaling", "missing (known: %s)", strings.Join(Scalings, ", "))
		}
		if !slices.Contains(Scalings, j.Scaling) {
			return fieldErr("scaling", "unknown scaling %q (known: %s)", j.Scaling, strings.Join(Scalings, ", "))
		}
	}
	return nil
}

// validateDetector checks an algorithm and its parameters one at a time, so the error
// names the parameter at fault, then builds the detector once: some parameters are
// only wrong together (zscore's min_samples above its window).
func validateDetector(prefix, algorithm string, params detectors.Params) error {
	info, err := detectors.Lookup(algorithm)
	if err != nil {
		return fieldErr(prefix+"algorithm", "%v", err)
	}
	for _, name := range slices.Sorted(maps.Keys(params)) {
		if _, err := info.Resolve(detectors.Params{name: params[name]}); err != nil {
			return fieldErr(prefix+"params."+name, "%v", err)
		}
	}
	resolved, err := info.Resolve(params)
	if err != nil {
		return fieldErr(prefix+"params", "%v", err)
	}
	switch {
	case info.NewBatch != nil:
		_, err = info.NewBatch(resolved, 0)
	case info.NewStreaming != nil:
		_, err = info.NewStreaming(resolved, 0)
	default:
		err = errors.New("the detector cannot be built")
	}
	if err != nil {
		return fieldErr(prefix+"params", "%v", err)
	}
	return nil
}

func detectorNames() []string {
	list := detectors.List()
	names := make([]string, len(list))
	for i, d := range list {
		names[i] = d.Name
	}
	return names
}
