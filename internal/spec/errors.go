package spec

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxErrors caps the problems one Error reports: past a screenful, more lines only hide
// the first mistake, which usually causes the rest.
const MaxErrors = 20

// FieldError is one problem in a spec, located by line and field path so that an editor
// or a problem+json response can point at it.
type FieldError struct {
	File string // as given to Parse; empty for specs built in code
	Line int    // 1-based; 0 when the value came from the defaults or from code
	Path string // e.g. detectors[1].params.window; empty for the file as a whole
	Msg  string
}

// Error formats as FILE:LINE: PATH: message, leaving out the parts it does not have.
func (e FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Error is every problem found in one spec, in line order, at most MaxErrors of them.
type Error struct {
	Errors  []FieldError
	Omitted int // problems found beyond MaxErrors
}

// Error puts one problem on each line.
func (e *Error) Error() string {
	lines := make([]string, 0, len(e.Errors)+1)
	for _, fe := range e.Errors {
		lines = append(lines, fe.Error())
	}
	if e.Omitted > 0 {
		lines = append(lines, fmt.Sprintf("... and %d more errors", e.Omitted))
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find the individual FieldErrors.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		out[i] = fe
	}
	return out
}

// newError sorts problems by line (those without a line last, since they come from
// defaults and are least likely to be the user's first mistake) and caps them.
// It returns nil when there are none, so callers can return its result directly.
func newError(errs []FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	key := func(fe FieldError) int {
		if fe.Line <= 0 {
			return int(^uint(0) >> 1)
		}
		return fe.Line
	}
	errs = slices.Clone(errs)
	slices.SortStableFunc(errs, func(a, b FieldError) int { return cmp.Compare(key(a), key(b)) })
	e := &Error{Errors: errs}
	if len(errs) > MaxErrors {
		e.Errors, e.Omitted = errs[:MaxErrors:MaxErrors], len(errs)-MaxErrors
	}
	return e
}
