package processors

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"time"

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
}

// NewEnsemble builds the ensemble stage.
func NewEnsemble(s *spec.Spec, topics Topics) (*Ensemble, error) {
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
	return e, nil
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
		DetectedAt:    e.now().UnixMilli(),
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
