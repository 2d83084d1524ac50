package spec

import (
	_ "embed"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/gonomaly/gonomaly/detectors"
)

// Values of the enumerated fields, for the stages that act on them.
const (
	FormatAuto      = "auto"      // input: detect JSON, Avro single-object or Confluent framing per record
	FormatJSON      = "json"      // input and output
	FormatAvro      = "avro"      // input: single-object encoding; output: Avro binary
	FormatConfluent = "confluent" // input: magic byte 0 and a 4-byte schema id

	MissingPrevious = "previous"
	MissingZero     = "zero"
	MissingReject   = "reject"

	ScalingRobust = "robust"
	ScalingNone   = "none"

	// The ensemble names are the detectors package's, so that a spec that validates
	// also builds.
	MethodMean         = detectors.CombineMean
	MethodMax          = detectors.CombineMax
	MethodWeightedMean = detectors.CombineWeightedMean

	CalibrationECDF     = detectors.CalibrationECDF
	CalibrationGaussian = detectors.CalibrationGaussian
	CalibrationPOT      = detectors.CalibrationPOT
)

// DefaultYAML is the built-in spec. Default parses it, and partial spec files are laid
// over it, so this file is the one place the defaults are written down.
//
//go:embed default.yaml
var DefaultYAML string

// defaultSpec parses DefaultYAML once, over an empty spec, so that nothing but the file
// supplies the defaults.
var defaultSpec = sync.OnceValues(func() (*Spec, error) {
	return parse([]byte(DefaultYAML), "default.yaml", &Spec{})
})

// Default returns a fresh copy of the built-in spec that `gonomaly run` uses when none
// is given. It panics if the built-in spec does not validate, which means a detector it
// names is not registered: a build mistake, not a runtime condition.
func Default() *Spec {
	s, err := defaultSpec()
	if err != nil {
		panic("spec: the built-in default spec is invalid:\n" + err.Error())
	}
	return s.Clone()
}

// Clone returns a deep copy, so callers may change it without touching the original.
func (s *Spec) Clone() *Spec {
	c := *s
	c.Features = slices.Clone(s.Features)
	c.Input.SchemaIDs = slices.Clone(s.Input.SchemaIDs)
	c.Detectors = slices.Clone(s.Detectors)
	for i := range c.Detectors {
		c.Detectors[i].Params = maps.Clone(c.Detectors[i].Params)
	}
	return &c
}

// Topic returns the full name of a topic named in the spec: a name with a dot is already
// full (e.g. "acme.sensors"); any other name is relative to the topic prefix.
func (s *Spec) Topic(prefix, name string) string {
	if strings.Contains(name, ".") {
		return name
	}
	return prefix + name
}
