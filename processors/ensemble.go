package processors

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/schemas"
)

// Ensemble calibrates each detector's score to [0,1], combines them, post-processes the
// combined score per series (anomaly likelihood, suppression of repeats), applies the
// threshold and writes every Result to results and the anomalies to anomalies.
type Ensemble struct {
	spec      *spec.Spec
	input     string
	results   string
	anomalies string
	avro      bool
	combine   func(scores, weights []float64) float64
	weights   []float64
	now       func() time.Time
	reg       prometheus.Registerer
	metrics   *ensembleMetrics
}

// EnsembleOption configures the ensemble stage.
type EnsembleOption func(*Ensemble)

// EnsembleRegisterer registers the stage's end-to-end latency and anomaly counts with
// reg (default: counted but not exported).
func EnsembleRegisterer(reg prometheus.Registerer) EnsembleOption {
	return func(e *Ensemble) { e.reg = reg }
}

// NewEnsemble builds the ensemble stage.
func NewEnsemble(s *spec.Spec, topics Topics, opts ...EnsembleOption) (*Ensemble, error) {
	combine, err := detectors.NewCombiner(s.Ensemble.Method)
	if err != nil {
		return nil, fmt.Errorf("ensemble.method: %w", err)
	}
	if _, err := detectors.NewCalibrator(s.Ensemble.Calibration, s.Ensemble.CalibrationWindow); err != nil {
		return nil, fmt.Errorf("ensemble.calibration: %w", err)
	}
	if _, err := newSeriesPost(s.Ensemble); err != nil {
		return nil, err
	}
	e := &Ensemble{
		spec:      s,
		input:     topics.Scores,
		results:   topics.Results,
		anomalies: topics.Anomalies,
		avro:      s.Output.Format == "avro",
		combine:   combine,
		now:       time.Now,
	}
	for _, d := range s.Detectors {
		e.weights = append(e.weights, d.Weight)
	}
	for _, o := range opts {
		o(e)
	}
	e.metrics = newEnsembleMetrics(e.reg, s.Name)
	return e, nil
}

// ensembleMetrics are the pipeline's outcome metrics, observed once per record by the
// ensemble stage, where a record's journey ends. Children are bound at construction so
// the per-record cost is a few atomic adds (BenchmarkEnsembleMetrics).
type ensembleMetrics struct {
	latency  prometheus.Observer
	warning  prometheus.Counter
	critical prometheus.Counter
}

// latencyBuckets span a pipeline keeping up (milliseconds) to one replaying a backlog
// (minutes).
var latencyBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

func newEnsembleMetrics(reg prometheus.Registerer, pipeline string) *ensembleMetrics {
	// The pipeline is a constant label, so that several pipelines can share a registry.
	labels := prometheus.Labels{"pipeline": pipeline}
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:        "gonomaly_record_latency_seconds",
		Help:        "Time from a record's Kafka timestamp (when it was produced to the records topic) to its result leaving the ensemble stage.",
		ConstLabels: labels, Buckets: latencyBuckets,
	})
	anomalies := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name:        "gonomaly_anomalies_total",
		Help:        "Anomalies found, by severity (warning, critical).",
		ConstLabels: labels,
	}, []string{"severity"})
	if reg != nil {
		latency = registerOrExisting(reg, latency)
		anomalies = registerOrExisting(reg, anomalies)
	}
	return &ensembleMetrics{
		latency:  latency,
		warning:  anomalies.WithLabelValues("warning"),
		critical: anomalies.WithLabelValues("critical"),
	}
}

// observe records one result: now is when it was made, produced the Kafka timestamp of
// its input, which every stage carries forward from the record's: when it was produced
// to the records topic (unless its producer set another). The event time in the
// payload is not used: it is the data's own clock (a replay of last year, a demo
// stream running ahead of real time), not the pipeline's.
func (m *ensembleMetrics) observe(now, produced time.Time, severity string) {
	// A timestamp in the future (clock skew between producer and us) counts as 0.
	m.latency.Observe(max(0, now.Sub(produced).Seconds()))
	switch severity {
	case "critical":
		m.critical.Inc()
	case "warning":
		m.warning.Inc()
	}
}

func (e *Ensemble) Name() string          { return "ensemble" }
func (e *Ensemble) InputTopics() []string { return []string{e.input} }

func (e *Ensemble) NewProcessor(string, int32) (Processor, error) {
	p := &ensembler{stage: e, series: map[string]*seriesPost{}}
	for range e.spec.Detectors {
		c, err := detectors.NewCalibrator(e.spec.Ensemble.Calibration, e.spec.Ensemble.CalibrationWindow)
		if err != nil {
			return nil, err
		}
		p.calibrators = append(p.calibrators, c)
	}
	p.calibrated = make([]float64, len(e.spec.Detectors))
	return p, nil
}

type ensembler struct {
	stage       *Ensemble
	calibrators []detectors.Calibrator
	calibrated  []float64
	series      map[string]*seriesPost
	in          schemas.Scores
}

// seriesPost is one series' state in the ensemble: its record count for the warm-up and
// the post-processors of its combined score (nil when the spec turns them off).
type seriesPost struct {
	seen       int
	likelihood *detectors.AnomalyLikelihood
	peaks      *detectors.PeakFilter
}

func newSeriesPost(e spec.Ensemble) (*seriesPost, error) {
	sp := &seriesPost{}
	if e.Suppress < 0 {
		return nil, fmt.Errorf("ensemble.suppress: %d is negative", e.Suppress)
	}
	var err error
	if e.Likelihood.Short != 0 {
		if sp.likelihood, err = detectors.NewAnomalyLikelihood(e.Likelihood.Short, e.Likelihood.Long); err != nil {
			return nil, fmt.Errorf("ensemble.likelihood: %w", err)
		}
	}
	if e.Suppress > 0 {
		if sp.peaks, err = detectors.NewPeakFilter(e.Suppress); err != nil {
			return nil, fmt.Errorf("ensemble.suppress: %w", err)
		}
	}
	return sp, nil
}

func (p *ensembler) Process(rec *kgo.Record, emit func(*kgo.Record)) error {
	e := p.stage
	s := &p.in
	if err := schemas.DecodeScores(rec.Value, s); err != nil {
		return BadInput("decode", err)
	}
	now := e.now()
	res := schemas.Result{
		EventID:       EventID(s.Pipeline, s.Source),
		Series:        s.Series,
		TS:            s.TS,
		Threshold:     e.spec.Ensemble.Threshold,
		Detectors:     make(map[string]float64, len(e.spec.Detectors)),
		Contributions: s.Contributions,
		Values:        make(map[string]float64, len(s.Names)),
		Source:        s.Source,
		Pipeline:      s.Pipeline,
		ModelVersion:  s.ModelVersion,
		DetectedAt:    now.UnixMilli(),
	}
	for i, d := range e.spec.Detectors {
		raw, ok := s.Detectors[d.Name]
		if !ok {
			return BadInput("invalid", fmt.Errorf("detectors.%s: missing score (the detect stage runs a different spec?)", d.Name))
		}
		c := p.calibrators[i].Calibrate(raw)
		p.calibrated[i] = c
		if c == c { // NaN: the detector is warming up and has no verdict to show
			res.Detectors[d.Name] = c
		}
	}
	for i, n := range s.Names {
		res.Values[n] = s.Raw[i]
	}
	res.Score = e.combine(p.calibrated, e.weights)
	if res.Score != res.Score {
		res.Score = 0 // every detector still warming up
	}
	sp := p.series[s.Series]
	if sp == nil {
		var err error
		if sp, err = newSeriesPost(e.spec.Ensemble); err != nil {
			return err // NewEnsemble built one from the same spec: cannot happen
		}
		p.series[s.Series] = sp
	}
	// Likelihood first, so suppression compares what is reported.
	if sp.likelihood != nil {
		res.Score = sp.likelihood.Update(res.Score)
	}
	if sp.peaks != nil {
		res.Score = sp.peaks.Filter(res.Score)
	}
	n := sp.seen
	if n < e.spec.Ensemble.Warmup {
		sp.seen++
	}
	res.IsAnomaly = n >= e.spec.Ensemble.Warmup && res.Score >= res.Threshold
	res.Severity = Severity(res.Score, res.Threshold, res.IsAnomaly)

	var value []byte
	if e.avro {
		value = schemas.AppendResultAvro(make([]byte, 0, 256), &res)
	} else {
		value = schemas.AppendResultJSON(make([]byte, 0, 384), &res)
	}
	emit(&kgo.Record{Topic: e.results, Key: rec.Key, Value: value, Timestamp: rec.Timestamp})
	if res.IsAnomaly {
		if e.avro {
			value = schemas.AppendAnomalyEventAvro(make([]byte, 0, 256), &res)
		} else {
			value = schemas.AppendAnomalyEventJSON(make([]byte, 0, 384), &res)
		}
		emit(&kgo.Record{Topic: e.anomalies, Key: rec.Key, Value: value, Timestamp: rec.Timestamp})
	}
	e.metrics.observe(now, rec.Timestamp, res.Severity)
	return nil
}

// Severity grades an anomaly: critical in the upper half of the range above the
// threshold, warning below that, none for normal records.
func Severity(score, threshold float64, anomaly bool) string {
	switch {
	case !anomaly:
		return "none"
	case score >= threshold+(1-threshold)/2:
		return "critical"
	default:
		return "warning"
	}
}

// EventID is derived from the source position and the pipeline, so a replay after a
// crash gives the same id and consumers can drop duplicates without exactly-once.
func EventID(pipeline string, src schemas.Source) string {
	h := fnv.New128a()
	h.Write([]byte(pipeline))
	h.Write([]byte{0})
	h.Write([]byte(src.Topic))
	var buf [12]byte
	binary.BigEndian.PutUint32(buf[:4], uint32(src.Partition))
	binary.BigEndian.PutUint64(buf[4:], uint64(src.Offset))
	h.Write(buf[:])
	return hex.EncodeToString(h.Sum(nil))
}
