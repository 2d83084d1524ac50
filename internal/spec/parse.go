package spec

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

const (
	// MaxSize bounds a spec file. Real specs are a few KiB; the bound keeps a spec sent
	// over the API, or a wrong path, from costing much memory.
	MaxSize = 1 << 20
	// maxValues bounds the YAML values walked, so aliases cannot multiply the work.
	maxValues = 100_000
)

// Load reads and parses a spec file; error messages name the file by path.
func Load(path string) (*Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("spec: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates a spec. Fields the file leaves out take their values from
// the default spec; detector parameters are resolved against the detector registry, so
// the result has every parameter set. On failure the error is an *Error listing every
// problem as FILE:LINE: PATH: message; filename is used only in those messages.
func Parse(data []byte, filename string) (*Spec, error) {
	base, err := defaultSpec()
	if err != nil {
		return nil, fmt.Errorf("spec: the built-in default spec is invalid: %w", err)
	}
	return parse(data, filename, base.Clone())
}

// parse lays the file over base, which it may change.
func parse(data []byte, filename string, base *Spec) (*Spec, error) {
	if len(data) > MaxSize {
		return nil, newError([]FieldError{{File: filename, Msg: fmt.Sprintf("spec is larger than %d bytes", MaxSize)}})
	}
	root, fe := parseYAML(data, filename)
	if fe != nil {
		return nil, newError([]FieldError{*fe})
	}
	d := &decoder{
		file:   filename,
		lines:  map[string]int{},
		failed: map[string]bool{},
		budget: maxValues,
	}
	d.spec(root, base)
	if d.budget <= 0 {
		// The walk stopped part way: validating half a spec would only add noise.
		return nil, newError(d.errs)
	}
	resolved := validate(base, d.report, func(path string) bool { _, ok := d.lines[path]; return ok })
	if len(d.errs) > 0 {
		return nil, newError(d.errs)
	}
	for i, p := range resolved {
		base.Detectors[i].Params = p
	}
	return base, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML reads exactly one YAML document into a node tree. Its errors carry a line:
// yaml.v3 leaves the line out when it is the first one, and reports parser (as opposed
// to scanner) errors with 0-based lines, which parseYAML corrects.
func parseYAML(data []byte, filename string) (root *yaml.Node, fe *FieldError) {
	defer func() {
		// yaml.v3 turns its own failures into errors; anything else is a bug in it, and a
		// spec from the API must not take the process down with it.
		if r := recover(); r != nil {
			root, fe = nil, &FieldError{File: filename, Line: 1, Msg: fmt.Sprintf("invalid YAML: parser failed: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	switch err := dec.Decode(&doc); {
	case errors.Is(err, io.EOF):
		return nil, &FieldError{File: filename, Line: 1, Msg: "spec is empty"}
	case err != nil:
		return nil, syntaxError(err, data, filename)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err, data, filename)
	default:
		return nil, &FieldError{File: filename, Line: max(next.Line, 1), Msg: "a spec is one YAML document; found a second one"}
	}
	if len(doc.Content) == 0 {
		return nil, &FieldError{File: filename, Line: 1, Msg: "spec is empty"}
	}
	root = doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, &FieldError{File: filename, Line: 1, Msg: "spec is empty"}
	}
	return root, nil
}

// parserProblems are the messages of yaml.v3's parser, whose lines are 0-based; the
// scanner's messages already come with 1-based lines.
var parserProblems = []string{
	"did not find expected",
	"found duplicate %",
	"found incompatible YAML document",
	"found undefined tag handle",
}

func syntaxError(err error, data []byte, filename string) *FieldError {
	msg := err.Error()
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	for _, p := range parserProblems {
		if strings.HasPrefix(msg, p) {
			line++
			break
		}
	}
	if name, ok := strings.CutPrefix(msg, "unknown anchor '"); ok {
		name = strings.TrimSuffix(name, "' referenced")
		if i := bytes.Index(data, []byte("*"+name)); i >= 0 {
			line = bytes.Count(data[:i], []byte("\n")) + 1
		}
	}
	line = max(line, 1)
	if msg == "found character that cannot start any token" || strings.Contains(msg, "tab character") {
		// yaml.v3 puts some tab errors on the line before the tab.
		for _, l := range []int{line, line + 1} {
			if tabIndented(data, l) {
				line, msg = l, "found a tab character in indentation; YAML indents with spaces"
				break
			}
		}
	}
	return &FieldError{File: filename, Line: line, Msg: "invalid YAML: " + msg}
}

// tabIndented tells whether the 1-based line starts with whitespace holding a tab: the
// usual cause of yaml.v3's cryptic "cannot start any token".
func tabIndented(data []byte, line int) bool {
	lines := bytes.Split(data, []byte("\n"))
	if line > len(lines) {
		return false
	}
	l := lines[line-1]
	indent := l[:len(l)-len(bytes.TrimLeft(l, " \t"))]
	return bytes.IndexByte(indent, '\t') >= 0
}

// decoder walks the node tree into a Spec. It checks structure and types only; value
// rules live in validate, which works on the Spec and borrows the decoder's line numbers.
type decoder struct {
	file   string
	errs   []FieldError
	lines  map[string]int  // path → line of its value, for validate's messages
	failed map[string]bool // paths already reported, so validate does not repeat them
	budget int             // values left to walk
}

// report adds a validation problem at path, unless decoding already reported it or
// one of its parents.
func (d *decoder) report(path, msg string) {
	for p := path; ; {
		if d.failed[p] {
			return
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	d.errs = append(d.errs, FieldError{File: d.file, Line: d.lineOf(path), Path: path, Msg: msg})
}

// lineOf finds the line of path, or of its nearest parent in the file: a field left out
// is reported where its parent is.
func (d *decoder) lineOf(path string) int {
	for p := path; ; {
		if l, ok := d.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return 0
		}
		p = p[:i]
	}
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	d.failed[path] = true
	d.errs = append(d.errs, FieldError{File: d.file, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// visit follows aliases and charges the walk budget; false means stop walking.
func (d *decoder) visit(n *yaml.Node) (*yaml.Node, bool) {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	d.budget--
	if d.budget == 0 {
		d.errs = append(d.errs, FieldError{File: d.file, Line: n.Line, Msg: fmt.Sprintf("spec has more than %d values", maxValues)})
	}
	return n, d.budget > 0
}

type field struct {
	name   string
	decode func(v *yaml.Node, path string)
}

// fields walks a mapping with known keys. A null value leaves its field as it was, so
// `key:` with nothing after it means the default.
func (d *decoder) fields(n *yaml.Node, path string, fields []field) {
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.name
	}
	d.entries(n, path, func(k *yaml.Node, key string, v *yaml.Node, p string) {
		for _, f := range fields {
			if f.name == key {
				if !isNull(v) {
					f.decode(v, p)
				}
				return
			}
		}
		d.fail(k, p, "unknown field (known: %s)", strings.Join(known, ", "))
	})
}

// entries walks a mapping, rejecting duplicate, merge and non-scalar keys, and calls fn
// for every other entry with the value's path.
func (d *decoder) entries(n *yaml.Node, path string, fn func(k *yaml.Node, key string, v *yaml.Node, p string)) {
	if n.Kind != yaml.MappingNode || n.ShortTag() != "!!map" {
		d.fail(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, ok := d.visit(n.Content[i])
		if !ok {
			return
		}
		v, ok := d.visit(n.Content[i+1])
		if !ok {
			return
		}
		// Later rules point at the value as written, which for an alias is the alias.
		line := n.Content[i+1].Line
		if k.Kind != yaml.ScalarNode {
			d.fail(k, path, "expected a field name, got %s", describe(k))
			continue
		}
		p := join(path, k.Value)
		if k.ShortTag() == "!!merge" {
			d.fail(k, p, "merge keys are not supported")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.fail(k, p, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		d.lines[p] = line
		fn(k, k.Value, v, p)
	}
}

// items walks a sequence; what names the expected value in the type error.
func (d *decoder) items(n *yaml.Node, path, what string, fn func(i int, v *yaml.Node, p string)) {
	if n.Kind != yaml.SequenceNode || n.ShortTag() != "!!seq" {
		d.fail(n, path, "expected %s, got %s", what, describe(n))
		return
	}
	for i, orig := range n.Content {
		v, ok := d.visit(orig)
		if !ok {
			return
		}
		p := path + "[" + strconv.Itoa(i) + "]"
		d.lines[p] = orig.Line
		fn(i, v, p)
	}
}

// str accepts any plain scalar: a topic or feature may well be named 2024 or true.
// yaml.v3 writes the string "<<" unquoted and then reads it back as a merge tag.
func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "expected a string, got %s", describe(n))
		return "", false
	}
	switch n.ShortTag() {
	case "!!str", "!!int", "!!float", "!!bool", "!!timestamp", "!!merge":
		return n.Value, true
	}
	d.fail(n, path, "expected a string, got %s", describe(n))
	return "", false
}

// number accepts YAML ints and floats; a quoted number is a string and is refused, as
// it usually means the author meant something else.
func (d *decoder) number(n *yaml.Node, path string) (float64, bool) {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int", "!!float":
			var f float64
			if err := n.Decode(&f); err == nil {
				return f, true
			}
		}
	}
	d.fail(n, path, "expected a number, got %s", describe(n))
	return 0, false
}

// maxWhole is the largest magnitude a whole number field takes; far beyond every bound
// validate applies, and exact in a float64.
const maxWhole = 1 << 53

// whole accepts whole numbers, written as ints or as floats such as 1e3.
func (d *decoder) whole(n *yaml.Node, path string) (int64, bool) {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		var i int64
		if err := n.Decode(&i); err == nil && i >= -maxWhole && i <= maxWhole {
			return i, true
		}
		d.fail(n, path, "number %s is out of range", describe(n))
		return 0, false
	}
	f, ok := d.number(n, path)
	switch {
	case !ok:
		return 0, false
	case math.IsInf(f, 0) || f != math.Trunc(f): // NaN != NaN, so it lands here too
		d.fail(n, path, "expected a whole number, got %s", describe(n))
		return 0, false
	case math.Abs(f) > maxWhole:
		d.fail(n, path, "number %s is out of range", describe(n))
		return 0, false
	}
	return int64(f), true
}

func (d *decoder) setStr(dst *string) func(*yaml.Node, string) {
	return func(v *yaml.Node, p string) {
		if s, ok := d.str(v, p); ok {
			*dst = s
		}
	}
}

func (d *decoder) setInt(dst *int) func(*yaml.Node, string) {
	return func(v *yaml.Node, p string) {
		if i, ok := d.whole(v, p); ok {
			*dst = int(i)
		}
	}
}

func (d *decoder) setFloat(dst *float64) func(*yaml.Node, string) {
	return func(v *yaml.Node, p string) {
		if f, ok := d.number(v, p); ok {
			*dst = f
		}
	}
}

// spec lays the document over s.
func (d *decoder) spec(root *yaml.Node, s *Spec) {
	root, ok := d.visit(root)
	if !ok {
		return
	}
	if root.Kind != yaml.MappingNode {
		// Said without a path: the spec as a whole has the wrong shape.
		d.errs = append(d.errs, FieldError{File: d.file, Line: root.Line, Msg: "expected a mapping of pipeline fields, got " + describe(root)})
		d.failed[""] = true
		return
	}
	d.fields(root, "", []field{
		{"name", d.setStr(&s.Name)},
		{"input", func(v *yaml.Node, p string) {
			d.fields(v, p, []field{
				{"topic", d.setStr(&s.Input.Topic)},
				{"format", d.setStr(&s.Input.Format)},
				{"max_bytes", d.setInt(&s.Input.MaxBytes)},
				{"schema_ids", func(v *yaml.Node, p string) { s.Input.SchemaIDs = d.schemaIDs(v, p) }},
			})
		}},
		{"features", func(v *yaml.Node, p string) { s.Features = d.features(v, p, s.Features) }},
		{"preprocess", func(v *yaml.Node, p string) {
			d.fields(v, p, []field{
				{"missing", d.setStr(&s.Preprocess.Missing)},
				{"scaling", d.setStr(&s.Preprocess.Scaling)},
				{"window", d.setInt(&s.Preprocess.Window)},
			})
		}},
		{"detectors", func(v *yaml.Node, p string) { s.Detectors = d.detectors(v, p, s.Detectors) }},
		{"ensemble", func(v *yaml.Node, p string) {
			d.fields(v, p, []field{
				{"method", d.setStr(&s.Ensemble.Method)},
				{"calibration", d.setStr(&s.Ensemble.Calibration)},
				{"calibration_window", d.setInt(&s.Ensemble.CalibrationWindow)},
				{"threshold", d.setFloat(&s.Ensemble.Threshold)},
				{"warmup", d.setInt(&s.Ensemble.Warmup)},
				{"likelihood", func(v *yaml.Node, p string) {
					d.fields(v, p, []field{
						{"short", d.setInt(&s.Ensemble.Likelihood.Short)},
						{"long", d.setInt(&s.Ensemble.Likelihood.Long)},
					})
				}},
				{"suppress", d.setInt(&s.Ensemble.Suppress)},
			})
		}},
		{"output", func(v *yaml.Node, p string) {
			d.fields(v, p, []field{
				{"format", d.setStr(&s.Output.Format)},
				{"results", d.setStr(&s.Output.Results)},
				{"anomalies", d.setStr(&s.Output.Anomalies)},
			})
		}},
	})
}

// schemaIDs keeps ids as uint32, the width of the id in the Confluent framing.
func (d *decoder) schemaIDs(n *yaml.Node, path string) []uint32 {
	ids := []uint32{}
	d.items(n, path, "a list of schema ids", func(_ int, v *yaml.Node, p string) {
		id, ok := d.whole(v, p)
		if !ok {
			return
		}
		if id < 1 || id > math.MaxUint32 {
			d.fail(v, p, "must be between 1 and %d, got %s", uint32(math.MaxUint32), v.Value)
			return
		}
		ids = append(ids, uint32(id))
	})
	return ids
}

// features reads a list of names, or `all`. The list keeps empty names so that
// validate can point at them; all, like an empty list, becomes nil.
func (d *decoder) features(n *yaml.Node, path string, old []string) []string {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && n.Value == "all" {
		return nil
	}
	var names []string
	ok := true
	d.items(n, path, "a list of feature names or all", func(_ int, v *yaml.Node, p string) {
		s, good := d.str(v, p)
		ok = ok && good
		names = append(names, s)
	})
	if d.failed[path] || !ok {
		return old
	}
	return names
}

// detectors replaces the default list as a whole: merging lists by position would
// surprise more than it helps. Items that fail to decode stay in the list, zero, so
// that the indices in later messages match the file.
func (d *decoder) detectors(n *yaml.Node, path string, old []Detector) []Detector {
	out := []Detector{}
	d.items(n, path, "a list of detectors", func(_ int, v *yaml.Node, p string) {
		det := Detector{Weight: 1}
		named := false
		d.fields(v, p, []field{
			{"name", func(v *yaml.Node, p string) { det.Name, named = d.str(v, p) }},
			{"algorithm", d.setStr(&det.Algorithm)},
			{"model", func(v *yaml.Node, p string) {
				if m, ok := d.str(v, p); ok {
					det.Model = m
				} else {
					// A model was meant instead of an algorithm: asking for one would only add noise.
					d.failed[strings.TrimSuffix(p, "model")+"algorithm"] = true
				}
			}},
			{"params", func(v *yaml.Node, p string) { det.Params = d.params(v, p) }},
			{"weight", d.setFloat(&det.Weight)},
		})
		if !named {
			det.Name = cmp.Or(det.Algorithm, det.Model)
		}
		out = append(out, det)
	})
	if d.failed[path] {
		return old
	}
	return out
}

// params keeps the given parameters only; validate resolves them against the registry.
func (d *decoder) params(n *yaml.Node, path string) map[string]float64 {
	out := map[string]float64{}
	d.entries(n, path, func(_ *yaml.Node, key string, v *yaml.Node, p string) {
		if isNull(v) {
			return
		}
		if f, ok := d.number(v, p); ok {
			out[key] = f
		}
	})
	return out
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// describe names a value in a type error: strings quoted, other scalars as written,
// collections by kind.
func describe(n *yaml.Node) string {
	tag := n.ShortTag()
	switch n.Kind {
	case yaml.MappingNode:
		if tag != "!!map" {
			return "a mapping tagged " + tag
		}
		return "a mapping"
	case yaml.SequenceNode:
		if tag != "!!seq" {
			return "a list tagged " + tag
		}
		return "a list"
	case yaml.ScalarNode:
		switch tag {
		case "!!str":
			return quote(n.Value)
		case "!!null":
			return "null"
		case "!!int", "!!float", "!!bool", "!!timestamp":
			if q := quote(n.Value); q[1:len(q)-1] == n.Value {
				return n.Value
			}
			return quote(n.Value)
		}
		return tag + " " + quote(n.Value)
	}
	return "nothing"
}
