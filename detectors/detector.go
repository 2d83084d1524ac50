// Package detectors holds gonomaly's anomaly-detection algorithms: pure Go and gonum,
// no Kafka and no HTTP. Numbers go in, scores come out. Every detector registers itself
// (name, kind, parameters with defaults and ranges) so that pipeline specs, the API and
// the eval commands share one catalogue.
package detectors

// Streaming is a detector that scores an observation and then learns from it.
//
// One instance serves one Kafka partition and is used by one goroutine. Series-scoped
// detectors (zscore, ewma) keep small per-series state inside; partition-scoped ones
// (hst) keep one model per feature dimension. The length of x is fixed for a series and
// may differ between series. Higher scores are more anomalous; the scale is the
// detector's own, and the ensemble calibrates it to [0,1].
type Streaming interface {
	// ScoreLearn returns the anomaly score of x in series, then learns x. When contrib is
	// non-nil (len(contrib) == len(x)) it receives each feature's share of the score,
	// summing to 1, or all zeros when the detector cannot attribute it. While warming up
	// (too little history to judge) it returns NaN, so calibration and the ensemble can
	// leave it out instead of mistaking "no judgement" for "normal".
	ScoreLearn(series string, x []float64, contrib []float64) float64
}
