package processors

import (
	"strings"

	"github.com/gonomaly/gonomaly/internal/spec"
)

// Topics are the full topic names a pipeline's stages read and write.
type Topics struct {
	Records, Features, Scores, Results, Anomalies, DLQ string
}

// PipelineTopics resolves a spec's topic names against the prefix: a name with a dot in
// it is taken as given, others get the prefix.
func PipelineTopics(prefix string, s *spec.Spec) Topics {
	full := func(name string) string {
		if strings.Contains(name, ".") {
			return name
		}
		return prefix + name
	}
	return Topics{
		Records:   full(s.Input.Topic),
		Features:  prefix + "features",
		Scores:    prefix + "scores",
		Results:   full(s.Output.Results),
		Anomalies: full(s.Output.Anomalies),
		DLQ:       prefix + "dlq",
	}
}
