package processors

import "github.com/gonomaly/gonomaly/internal/spec"

// Topics are the full topic names a pipeline's stages read and write.
type Topics struct {
	Records, Features, Scores, Results, Anomalies, DLQ string
}

// PipelineTopics resolves a spec's topic names against the prefix (Spec.Topic: a name
// with a dot in it is taken as given, others get the prefix).
func PipelineTopics(prefix string, s *spec.Spec) Topics {
	return Topics{
		Records:   s.Topic(prefix, s.Input.Topic),
		Features:  prefix + "features",
		Scores:    prefix + "scores",
		Results:   s.Topic(prefix, s.Output.Results),
		Anomalies: s.Topic(prefix, s.Output.Anomalies),
		DLQ:       prefix + "dlq",
	}
}
