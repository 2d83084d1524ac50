// Package spec reads and validates pipeline specs: the YAML file that says what a
// pipeline does (input, features, preprocessing, detectors, ensemble, outputs).
package spec

// Spec is one pipeline. Topic names are relative to the topic prefix (gonomaly. by
// default) unless they contain a dot.
type Spec struct {
	Name       string     `yaml:"name"`     // pipeline name carried in results; default "default"
	Input      Input      `yaml:"input"`    //
	Features   []string   `yaml:"features"` // feature names; empty means every value a record has
	Preprocess Preprocess `yaml:"preprocess"`
	Detectors  []Detector `yaml:"detectors"` // at least one
	Ensemble   Ensemble   `yaml:"ensemble"`
	Output     Output     `yaml:"output"`
}

// Input says where records come from and how they are encoded.
type Input struct {
	Topic     string   `yaml:"topic"`      // default "records"
	Format    string   `yaml:"format"`     // auto (default), json, avro, confluent
	MaxBytes  int      `yaml:"max_bytes"`  // larger records go to the DLQ; default 1 MiB
	SchemaIDs []uint32 `yaml:"schema_ids"` // Confluent schema ids that carry the Record schema; default [1]
}

// Preprocess says how records become features.
type Preprocess struct {
	Missing string `yaml:"missing"` // previous (default: last value of the series, else 0), zero, reject
	Scaling string `yaml:"scaling"` // robust (default: rolling median/MAD per series), none
	Window  int    `yaml:"window"`  // rolling window for robust scaling; default 128
}

// Detector is one detector instance of the pipeline.
type Detector struct {
	Name      string             `yaml:"name"`      // instance name in results; default the algorithm or model
	Algorithm string             `yaml:"algorithm"` // registry name: zscore, ewma, hst, ...; or Model
	Model     string             `yaml:"model"`     // a trained model instead, scored with its latest version
	Params    map[string]float64 `yaml:"params"`    // resolved against the registry: defaults filled
	Weight    float64            `yaml:"weight"`    // for weighted_mean; default 1
}

// Ensemble says how detector scores become one verdict.
type Ensemble struct {
	Method            string  `yaml:"method"`             // max (default), mean, median, weighted_mean, aom, vote
	Calibration       string  `yaml:"calibration"`        // pot (default), ecdf, gaussian
	CalibrationWindow int     `yaml:"calibration_window"` // scores remembered per detector and partition; default 2000
	Threshold         float64 `yaml:"threshold"`          // combined score at or above which a record is an anomaly; default 0.9995
	Warmup            int     `yaml:"warmup"`             // records per series before anomalies are reported; default 100
	// Likelihood, when Short > 0, replaces the combined score by its anomaly likelihood
	// per series (detectors.AnomalyLikelihood); default off.
	Likelihood Likelihood `yaml:"likelihood"`
	// Suppress caps a score that does not beat every one of the series' previous Suppress
	// scores (detectors.PeakFilter), so one anomaly is not reported again and again;
	// 0 turns it off; default 100.
	Suppress int `yaml:"suppress"`
}

// Likelihood configures the per-series anomaly likelihood of the combined score.
type Likelihood struct {
	Short int `yaml:"short"` // scores in the short-term mean; 0 (default) turns the likelihood off
	Long  int `yaml:"long"`  // memory, in records, of the distribution it is judged against; default 5000
}

// Output says where results go and how they are encoded.
type Output struct {
	Format    string `yaml:"format"`    // json (default) or avro
	Results   string `yaml:"results"`   // default "results"
	Anomalies string `yaml:"anomalies"` // default "anomalies"
}
