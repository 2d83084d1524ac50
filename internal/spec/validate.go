package spec

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gonomaly/gonomaly/detectors"
)

// Bounds of the numeric fields. The upper bounds are memory bounds: windows are kept per
// series (preprocess) or per detector and partition (calibration).
const (
	minMaxBytes         = 1 << 10
	maxMaxBytes         = 16 << 20
	minWindow           = 2
	maxPreprocessWindow = 100_000
	// A calibrator judges only once it holds CalibrationWarmup scores, and refuses a
	// shorter window.
	minCalibrationWindow = detectors.CalibrationWarmup
	maxCalibrationWindow = min(1_000_000, detectors.MaxCalibrationWindow)
	maxWarmup            = 1_000_000
	// The likelihood keeps Short scores per series and O(1) for Long; suppression keeps
	// Suppress scores per series.
	maxLikelihoodShort = detectors.MaxLikelihoodShort
	minLikelihoodLong  = 2
	maxLikelihoodLong  = min(1_000_000, detectors.MaxLikelihoodLong)
	maxSuppress        = detectors.MaxPeakWindow
	maxNameLen         = 64
	maxTopicLen        = 249 // Kafka's own limit
)

// Validate checks a spec built or changed in code against the rules Parse applies.
// Parse has already validated what it returns.
func (s *Spec) Validate() error {
	var errs []FieldError
	report := func(path, msg string) { errs = append(errs, FieldError{Path: path, Msg: msg}) }
	validate(s, report, func(string) bool { return false })
	return newError(errs)
}

// validate reports every broken rule by path and returns each detector's parameters
// resolved against the registry (nil for a detector with problems). inFile tells
// whether the spec file set a path, so that a clash between a value from the file and
// one from the defaults is reported where the user can fix it.
func validate(s *Spec, report func(path, msg string), inFile func(path string) bool) []detectors.Params {
	checkName(report, "name", s.Name)

	checkTopic(report, "input.topic", s.Input.Topic)
	checkEnum(report, "input.format", s.Input.Format, FormatAuto, FormatJSON, FormatAvro, FormatConfluent)
	if s.Input.MaxBytes < minMaxBytes || s.Input.MaxBytes > maxMaxBytes {
		report("input.max_bytes", fmt.Sprintf("must be between %d (1 KiB) and %d (16 MiB), got %d", minMaxBytes, maxMaxBytes, s.Input.MaxBytes))
	}
	if len(s.Input.SchemaIDs) == 0 {
		report("input.schema_ids", "must list at least one schema id")
	}
	ids := map[uint32]int{}
	for i, id := range s.Input.SchemaIDs {
		p := fmt.Sprintf("input.schema_ids[%d]", i)
		if id == 0 {
			report(p, fmt.Sprintf("must be between 1 and %d, got 0", uint32(math.MaxUint32)))
		} else if j, dup := ids[id]; dup {
			report(p, fmt.Sprintf("duplicate schema id %d (also input.schema_ids[%d])", id, j))
		} else {
			ids[id] = i
		}
	}

	features := map[string]int{}
	for i, f := range s.Features {
		p := fmt.Sprintf("features[%d]", i)
		if f == "" {
			report(p, "feature name is empty")
		} else if !utf8.ValidString(f) || strings.IndexFunc(f, unicode.IsControl) >= 0 {
			// Names come from record keys and end up in metric labels and logs, where a
			// newline or a NUL only does harm.
			report(p, fmt.Sprintf("feature name %s contains a control character or invalid UTF-8", quote(f)))
		} else if j, dup := features[f]; dup {
			report(p, fmt.Sprintf("duplicate feature %s (also features[%d])", quote(f), j))
		} else {
			features[f] = i
		}
	}

	checkEnum(report, "preprocess.missing", s.Preprocess.Missing, MissingPrevious, MissingZero, MissingReject)
	checkEnum(report, "preprocess.scaling", s.Preprocess.Scaling, ScalingRobust, ScalingNone)
	checkRange(report, "preprocess.window", s.Preprocess.Window, minWindow, maxPreprocessWindow)

	resolved := checkDetectors(report, s.Detectors)

	checkEnum(report, "ensemble.method", s.Ensemble.Method, detectors.CombineMethods()...)
	checkEnum(report, "ensemble.calibration", s.Ensemble.Calibration, CalibrationECDF, CalibrationGaussian, CalibrationPOT)
	checkRange(report, "ensemble.calibration_window", s.Ensemble.CalibrationWindow, minCalibrationWindow, maxCalibrationWindow)
	if t := s.Ensemble.Threshold; !(t > 0 && t <= 1) {
		report("ensemble.threshold", "must be greater than 0 and at most 1, got "+formatFloat(t))
	}
	checkRange(report, "ensemble.warmup", s.Ensemble.Warmup, 0, maxWarmup)
	checkRange(report, "ensemble.likelihood.short", s.Ensemble.Likelihood.Short, 0, maxLikelihoodShort)
	checkRange(report, "ensemble.likelihood.long", s.Ensemble.Likelihood.Long, minLikelihoodLong, maxLikelihoodLong)
	checkRange(report, "ensemble.suppress", s.Ensemble.Suppress, 0, maxSuppress)

	checkEnum(report, "output.format", s.Output.Format, FormatJSON, FormatAvro)
	checkTopic(report, "output.results", s.Output.Results)
	checkTopic(report, "output.anomalies", s.Output.Anomalies)

	// A stage writing to the topic it reads, or results and anomalies sharing a topic,
	// would loop or mix message types.
	topics := []struct{ path, name string }{
		{"input.topic", s.Input.Topic},
		{"output.results", s.Output.Results},
		{"output.anomalies", s.Output.Anomalies},
	}
	for i, t := range topics {
		for _, u := range topics[:i] {
			if t.name == u.name && t.name != "" {
				if !inFile(t.path) && inFile(u.path) {
					t, u = u, t
				}
				report(t.path, fmt.Sprintf("topic %s is also used by %s", quote(t.name), u.path))
				break
			}
		}
	}
	return resolved
}

func checkDetectors(report func(path, msg string), dets []Detector) []detectors.Params {
	if len(dets) == 0 {
		report("detectors", "at least one detector is required")
	}
	resolved := make([]detectors.Params, len(dets))
	names := map[string]int{}
	for i, d := range dets {
		p := fmt.Sprintf("detectors[%d]", i)
		known := false
		switch {
		case d.Model != "" && d.Algorithm != "":
			report(p+".model", "give either algorithm or model, not both (a trained model's algorithm was fixed by its train job)")
		case d.Model != "":
			known = true
			checkName(report, p+".model", d.Model)
			if len(d.Params) > 0 {
				report(p+".params", "a trained model's parameters were fixed by its train job; params go with algorithm")
			}
		case d.Algorithm == "":
			report(p+".algorithm", "required (known: "+knownDetectors()+"), or model: the name of a trained model")
		default:
			if info, err := detectors.Lookup(d.Algorithm); err != nil {
				report(p+".algorithm", err.Error())
			} else {
				known = true
				resolved[i] = resolveParams(report, p+".params", info, d.Params)
			}
		}

		// A name taken from an unknown algorithm would only repeat the algorithm's error.
		if known || d.Name != d.Algorithm {
			checkName(report, p+".name", d.Name)
		}
		if j, dup := names[d.Name]; dup && d.Name != "" {
			report(p+".name", fmt.Sprintf("duplicate detector name %s (also detectors[%d])", quote(d.Name), j))
		} else {
			names[d.Name] = i
		}

		switch {
		case math.IsInf(d.Weight, 0):
			report(p+".weight", "must be finite, got "+formatFloat(d.Weight))
		case !(d.Weight > 0):
			report(p+".weight", "must be greater than 0, got "+formatFloat(d.Weight))
		}
	}
	return resolved
}

// resolveParams resolves the parameters one at a time first, so that each problem is
// reported at its own parameter (Resolve alone stops at the first).
func resolveParams(report func(path, msg string), path string, info detectors.Info, given map[string]float64) detectors.Params {
	names := make([]string, 0, len(given))
	for n := range given {
		names = append(names, n)
	}
	slices.Sort(names)
	ok := true
	for _, n := range names {
		if _, err := info.Resolve(detectors.Params{n: given[n]}); err != nil {
			report(path+"."+n, err.Error())
			ok = false
		}
	}
	if !ok {
		return nil
	}
	p, err := info.Resolve(given)
	if err != nil {
		report(path, err.Error())
		return nil
	}
	return p
}

func knownDetectors() string {
	var names []string
	for _, info := range detectors.List() {
		names = append(names, info.Name)
	}
	return strings.Join(names, ", ")
}

func checkEnum(report func(path, msg string), path, v string, allowed ...string) {
	if !slices.Contains(allowed, v) {
		report(path, fmt.Sprintf("%s is not one of %s", quote(v), strings.Join(allowed, ", ")))
	}
}

func checkRange(report func(path, msg string), path string, v, lo, hi int) {
	if v < lo || v > hi {
		report(path, fmt.Sprintf("must be between %d and %d, got %d", lo, hi, v))
	}
}

// checkName keeps pipeline and detector names to characters that are safe in topic
// names, consumer group ids, metric labels and JSON keys, where they all end up.
func checkName(report func(path, msg string), path, name string) {
	if len(name) == 0 || len(name) > maxNameLen || !nameChars(name) {
		report(path, fmt.Sprintf("%s is not a valid name (1 to %d characters of a-z, A-Z, 0-9, '.', '_', '-')", quote(name), maxNameLen))
	}
}

func checkTopic(report func(path, msg string), path, name string) {
	if len(name) == 0 || len(name) > maxTopicLen || !nameChars(name) || name == "." || name == ".." {
		report(path, fmt.Sprintf("%s is not a valid Kafka topic name (1 to %d characters of a-z, A-Z, 0-9, '.', '_', '-'; not . or ..)", quote(name), maxTopicLen))
	}
}

func nameChars(s string) bool {
	for _, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// quote quotes a value for a message, shortened: a 10 KiB name helps no one.
func quote(s string) string {
	if utf8.RuneCountInString(s) > 64 {
		s = string([]rune(s)[:64]) + "…"
	}
	return strconv.Quote(s)
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
