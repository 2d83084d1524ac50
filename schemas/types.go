// Package schemas holds gonomaly's message types, their Avro schemas (schemas/*.avsc,
// embedded in the binary) and the codecs that turn them into bytes and back: JSON, Avro
// single-object encoding and the Confluent wire format.
package schemas

// Source is the position of the input record a message derives from. It travels with
// the record through every stage so results can be traced back and event ids derived.
type Source struct {
	Topic     string
	Partition int32
	Offset    int64
}

// Record is one observation of one series: the pipeline's input.
type Record struct {
	Series string             // empty: the Kafka key is used
	TS     int64              // Unix milliseconds; 0: the Kafka timestamp is used
	Values map[string]float64 // finite numbers only
	Tags   map[string]string
}

// Features is a validated, preprocessed record: the output of the preprocess stage.
// Names are sorted; Scaled and Raw are aligned with them.
type Features struct {
	Series   string
	TS       int64
	Names    []string
	Scaled   []float64 // per-series robust-scaled values fed to detectors
	Raw      []float64 // the original values, after missing-value filling
	Tags     map[string]string
	Source   Source
	Pipeline string
}

// Scores is Features plus each detector's raw (uncalibrated) score: the output of the
// detect stage.
type Scores struct {
	Series        string
	TS            int64
	Names         []string
	Raw           []float64
	Tags          map[string]string
	Source        Source
	Pipeline      string
	ModelVersion  string
	Detectors     map[string]float64 // detector name → raw score
	Contributions map[string]float64 // feature name → share of the anomaly, sums to 1 when present
}

// Result is the ensemble's verdict on one input record. Every input record yields exactly
// one Result on the results topic; those with IsAnomaly also go to the anomalies topic as
// an AnomalyEvent (the same fields without is_anomaly).
type Result struct {
	EventID       string
	Series        string
	TS            int64 // Unix milliseconds
	Score         float64
	Threshold     float64
	Severity      string             // "none", "warning" or "critical"
	Detectors     map[string]float64 // detector name → calibrated score in [0,1]
	Contributions map[string]float64
	Values        map[string]float64
	Source        Source
	Pipeline      string
	ModelVersion  string
	DetectedAt    int64 // Unix milliseconds
	IsAnomaly     bool
}
