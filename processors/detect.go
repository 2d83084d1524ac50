package processors

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/detectors"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/internal/telemetry"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/schemas"
)

// Detect runs the spec's detectors over Features and writes each detector's raw score.
// Each partition owns its detectors; series-scoped ones keep per-series state inside.
//
// A spec entry may name a trained model (model: NAME) instead of an algorithm: each
// partition then scores with the model's latest version in the models topic and
// switches to a newer one as soon as it is published, without a restart.
type Detect struct {
	spec         *spec.Spec
	input        string
	output       string
	infos        []detectors.Info // zero for model entries
	modelVersion string

	models  ModelSource
	metrics *modelMetrics
	scores  *scoreMetrics
	log     *slog.Logger
}

// ModelSource is where the detect stage finds trained models: a *jobs.ModelView, kept
// up to date from the models topic (jobs.OpenModelView).
type ModelSource interface {
	// Latest returns a model's newest version.
	Latest(name string) (jobs.Model, bool)
	// Changed returns a channel closed when the next version of any model arrives.
	Changed() <-chan struct{}
}

// NoModels is a ModelSource that holds no model: specs that name models can be checked
// (their stages built) before there is a connection to the models topic.
var NoModels ModelSource = noModels{}

type noModels struct{}

func (noModels) Latest(string) (jobs.Model, bool) { return jobs.Model{}, false }
func (noModels) Changed() <-chan struct{}         { return nil }

// DetectOption configures the detect stage.
type DetectOption func(*Detect)

// DetectModels gives the stage the trained models its spec names; a spec that names one
// needs it.
func DetectModels(src ModelSource) DetectOption { return func(d *Detect) { d.models = src } }

// DetectRegisterer registers the stage's metrics with reg: the detectors' score
// histograms, and the model metrics (versions in use, switches, records a model could
// not score).
func DetectRegisterer(reg prometheus.Registerer) DetectOption {
	return func(d *Detect) {
		d.metrics = newModelMetrics(reg)
		d.scores = newScoreMetrics(reg, d.spec.Name, detectorNames(d.spec))
	}
}

func detectorNames(s *spec.Spec) []string {
	names := make([]string, len(s.Detectors))
	for i, ds := range s.Detectors {
		names[i] = ds.Name
	}
	return names
}

// DetectLogger logs model switches and models that cannot be restored.
func DetectLogger(log *slog.Logger) DetectOption { return func(d *Detect) { d.log = log } }

// NewDetect builds the detect stage; detector names and parameters were validated with
// the spec.
func NewDetect(s *spec.Spec, topics Topics, opts ...DetectOption) (*Detect, error) {
	d := &Detect{spec: s, input: topics.Features, output: topics.Scores, modelVersion: SpecVersion(s)}
	for _, o := range opts {
		o(d)
	}
	if d.metrics == nil {
		d.metrics = newModelMetrics(nil)
	}
	if d.scores == nil {
		d.scores = newScoreMetrics(nil, s.Name, detectorNames(s))
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.infos = make([]detectors.Info, len(s.Detectors))
	for i, ds := range s.Detectors {
		if ds.Model != "" {
			if d.models == nil {
				return nil, fmt.Errorf("detectors[%d]: names model %s, but this detect stage was given no view of the models topic", i, ds.Model)
			}
			continue
		}
		info, err := detectors.Lookup(ds.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("detectors[%d]: %w", i, err)
		}
		if info.NewStreaming == nil {
			return nil, fmt.Errorf("detectors[%d]: %s is a batch detector; the streaming pipeline needs a streaming one (or a model trained with it: model: NAME)", i, ds.Algorithm)
		}
		d.infos[i] = info
	}
	return d, nil
}

// SpecNamesModels reports whether a spec has model entries, whose detect stage needs
// a view of the models topic (DetectModels).
func SpecNamesModels(s *spec.Spec) bool {
	return slices.ContainsFunc(s.Detectors, func(d spec.Detector) bool { return d.Model != "" })
}

// SpecVersion names the detector configuration a result came from: a short hash of the
// detectors and their parameters, so results from different configurations differ.
func SpecVersion(s *spec.Spec) string {
	h := sha256.New()
	for _, d := range s.Detectors {
		fmt.Fprintf(h, "%s|%s|%v|%v", d.Name, d.Algorithm, sortedParams(d.Params), d.Weight)
		if d.Model != "" { // written only when set, so algorithm-only specs keep their version
			fmt.Fprintf(h, "|model=%s", d.Model)
		}
		h.Write([]byte{';'})
	}
	return "spec-" + hex.EncodeToString(h.Sum(nil)[:6])
}

func (d *Detect) Name() string          { return "detect" }
func (d *Detect) InputTopics() []string { return []string{d.input} }

func (d *Detect) NewProcessor(topic string, partition int32) (Processor, error) {
	n := len(d.spec.Detectors)
	p := &detector{stage: d, dets: make([]detectors.Streaming, n), timed: make([]detectors.TimeAware, n), scores: make([]float64, n)}
	for i, ds := range d.spec.Detectors {
		if ds.Model != "" {
			u := d.metrics.unscoredTotal
			p.models = append(p.models, &modelSlot{name: ds.Model, detector: ds.Name, index: i,
				noVersion: u.WithLabelValues(ds.Name, "no_version"), missing: u.WithLabelValues(ds.Name, "missing_feature"), failed: u.WithLabelValues(ds.Name, "error")})
			continue
		}
		params, err := d.infos[i].Resolve(ds.Params)
		if err != nil {
			return nil, err
		}
		// Seeded by pipeline, detector and partition: a partition's models are the same
		// whichever process owns it.
		seed := fnv.New64a()
		fmt.Fprintf(seed, "%s/%s/%d", d.spec.Name, ds.Name, partition)
		det, err := d.infos[i].NewStreaming(params, seed.Sum64())
		if err != nil {
			return nil, fmt.Errorf("detector %s: %w", ds.Name, err)
		}
		p.dets[i] = det
		p.timed[i], _ = det.(detectors.TimeAware) // seasonal detectors want the record's time
	}
	p.modelVersion = d.modelVersion
	// Last: a processor that fails to build never registers its shard.
	p.shard = d.scores.shard(detectorNames(d.spec))
	if len(p.models) > 0 {
		p.algorithms = len(p.models) < len(d.spec.Detectors)
		p.partition = fmt.Sprintf("%s/%d", topic, partition)
		p.loadModels()
	}
	return p, nil
}

type detector struct {
	stage   *Detect
	dets    []detectors.Streaming // per spec entry; nil for model entries
	timed   []detectors.TimeAware // per detector: non-nil when it takes timestamps
	in      schemas.Features
	contrib []float64
	sum     []float64
	scores  []float64   // per spec entry: the record's scores, observed together
	shard   *scoreShard // gonomaly_detector_score of this partition

	// Model entries: their slots, the channel that says a version arrived, and the
	// model_version the scores carry (the spec's, and each model's name@version).
	models       []*modelSlot
	changed      <-chan struct{}
	algorithms   bool // the spec has algorithm entries too
	partition    string
	modelVersion string
}

// modelSlot is one model entry of the spec in one partition: the version in use,
// restored from its snapshot, and how the current feature names map onto its columns.
type modelSlot struct {
	name      string // the model's
	detector  string // the entry's, as scores name it
	index     int    // the entry's among the spec's detectors
	ref       jobs.ModelRef
	det       *jobDetector // nil until a version exists
	cols      []string
	threshold float64

	picked  bool     // pick is computed for names
	names   []string // the feature names pick was computed for
	pick    []int    // per model column: its index among names, or -1
	x       []float64
	contrib []float64
	out     [1]float64

	noVersion, missing, failed prometheus.Counter // records scored NaN, by reason
}

func (p *detector) Process(rec *kgo.Record, emit func(*kgo.Record)) error {
	f := &p.in
	if err := schemas.DecodeFeatures(rec.Value, f); err != nil {
		return BadInput("decode", err)
	}
	n := len(f.Names)
	if n != len(f.Scaled) || n != len(f.Raw) {
		return BadInput("invalid", fmt.Errorf("features: %d names but %d scaled and %d raw values", n, len(f.Scaled), len(f.Raw)))
	}
	if p.changed != nil {
		select {
		case <-p.changed:
			p.loadModels()
		default:
		}
	}
	p.contrib = growZero(p.contrib, n)
	p.sum = growZero(p.sum, n)
	out := schemas.Scores{
		Series:       f.Series,
		TS:           f.TS,
		Names:        f.Names,
		Raw:          f.Raw,
		Tags:         f.Tags,
		Source:       f.Source,
		Pipeline:     f.Pipeline,
		ModelVersion: p.modelVersion,
		Detectors:    make(map[string]float64, len(p.dets)),
	}
	attributed := false
	for i, det := range p.dets {
		if det == nil {
			continue // a model entry
		}
		clear(p.contrib)
		var score float64
		if ta := p.timed[i]; ta != nil {
			score = ta.ScoreLearnAt(f.Series, f.TS, f.Scaled, p.contrib)
		} else {
			score = det.ScoreLearn(f.Series, f.Scaled, p.contrib)
		}
		out.Detectors[p.stage.spec.Detectors[i].Name] = score
		p.scores[i] = score
		for j, c := range p.contrib {
			if c != 0 {
				p.sum[j] += c
				attributed = true
			}
		}
	}
	for _, m := range p.models {
		score := p.scoreModel(m, f)
		out.Detectors[m.detector] = score
		p.scores[m.index] = score
		for k, c := range m.contrib {
			if c != 0 {
				p.sum[m.pick[k]] += c
				attributed = true
			}
		}
	}
	if attributed {
		total := 0.0
		for _, c := range p.sum {
			total += c
		}
		out.Contributions = make(map[string]float64, n)
		for j, name := range f.Names {
			out.Contributions[name] = p.sum[j] / total
		}
	}
	p.shard.observe(p.scores)
	value := schemas.AppendScores(make([]byte, 0, 128+32*n), &out)
	emit(&kgo.Record{Topic: p.stage.output, Key: rec.Key, Value: value, Timestamp: rec.Timestamp})
	return nil
}

// Close hands the partition's score counts to the stage's metrics: the runner closes a
// processor when its partition moves or the stage stops.
func (p *detector) Close() { p.shard.close() }

// scoreModel scores a record with a model entry's version in use. A model judges the
// raw values, as it saw them in training (datasets and record ranges hold raw values),
// taking its columns by name. Without a version yet, or when the record lacks one of
// the model's columns, the score is NaN: no verdict, as from a detector warming up.
func (p *detector) scoreModel(m *modelSlot, f *schemas.Features) float64 {
	clear(m.contrib)
	if m.det == nil {
		m.noVersion.Inc()
		return math.NaN()
	}
	if !m.picked || !slices.Equal(m.names, f.Names) {
		m.picked = true
		m.names = append(m.names[:0], f.Names...)
		for k, c := range m.cols {
			m.pick[k] = slices.Index(f.Names, c)
		}
	}
	for k, j := range m.pick {
		if j < 0 {
			m.missing.Inc()
			return math.NaN()
		}
		m.x[k] = f.Raw[j]
	}
	if m.det.stream != nil {
		return m.det.stream.ScoreLearn(f.Series, m.x, m.contrib)
	}
	if err := m.det.batch.Score(detectors.Matrix{Rows: 1, Cols: len(m.x), Data: m.x}, m.out[:]); err != nil {
		m.failed.Inc()
		return math.NaN()
	}
	// Attribution costs twice the score: only records the model itself finds anomalous
	// (at or above its training threshold) get it.
	if c, ok := m.det.batch.(detectors.Contributor); ok && m.out[0] >= m.threshold {
		if c.Contributions(m.x, m.contrib) != nil {
			clear(m.contrib)
		}
	}
	return m.out[0]
}

// loadModels switches every model entry to its model's latest version, restoring new
// ones from their snapshots. A version that cannot be restored is logged and skipped:
// the entry keeps the version it had.
func (p *detector) loadModels() {
	src, metrics := p.stage.models, p.stage.metrics
	p.changed = src.Changed() // first, so a version arriving during the load is not missed
	for _, m := range p.models {
		latest, ok := src.Latest(m.name)
		if !ok || (m.det != nil && latest.Version == m.ref.Version) {
			continue
		}
		ref := jobs.ModelRef{Name: latest.Name, Version: latest.Version}
		start := time.Now()
		det, err := restoreModel(latest)
		if err == nil && len(latest.Columns) == 0 {
			err = errors.New("it has no columns")
		}
		if err != nil {
			metrics.failed(m.detector)
			p.stage.log.Error("cannot use model version; keeping the one in use", "detector", m.detector, "model", ref.String(), "in_use", m.ref.String(), "partition", p.partition, "err", err)
			continue
		}
		if m.det != nil {
			metrics.switched(m.detector)
		}
		p.stage.log.Info("model version in use", "detector", m.detector, "model", ref.String(), "previous", m.ref.String(), "partition", p.partition, "restore_seconds", time.Since(start).Seconds())
		m.ref, m.det, m.cols, m.threshold = ref, det, latest.Columns, latest.Threshold
		m.picked = false
		m.pick = make([]int, len(m.cols))
		m.x = make([]float64, len(m.cols))
		m.contrib = make([]float64, len(m.cols))
		metrics.version(m.detector, ref.Version)
	}
	p.modelVersion = p.versionString()
}

// versionString is the model_version scores carry: the spec's version when it has
// algorithm entries, then each model entry's name@version in use, joined by '+'.
func (p *detector) versionString() string {
	var parts []string
	if p.algorithms {
		parts = append(parts, p.stage.modelVersion)
	}
	for _, m := range p.models {
		if m.det != nil {
			parts = append(parts, m.ref.String())
		}
	}
	if len(parts) == 0 {
		return p.stage.modelVersion
	}
	return strings.Join(parts, "+")
}

// modelMetrics are the detect stage's metrics about model entries, labelled by the
// entry's detector name.
type modelMetrics struct {
	unscoredTotal *prometheus.CounterVec
	switches      *prometheus.CounterVec
	failures      *prometheus.CounterVec
	versions      *prometheus.GaugeVec
}

func newModelMetrics(reg prometheus.Registerer) *modelMetrics {
	m := &modelMetrics{
		unscoredTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_detect_model_unscored_total",
			Help: "Records a model entry could not score (scored NaN), by reason: no_version yet, a missing_feature the model was trained on, a scoring error."},
			[]string{"detector", "reason"}),
		switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_detect_model_switches_total",
			Help: "Switches of a partition to a newer version of a trained model, without a restart."}, []string{"detector"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_detect_model_restore_failures_total",
			Help: "Model versions a partition could not restore from their snapshot (it kept the version in use)."}, []string{"detector"}),
		versions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gonomaly_detect_model_version",
			Help: "The version of a trained model most recently put in use by a partition."}, []string{"detector"}),
	}
	if reg != nil {
		m.unscoredTotal = registerOrExisting(reg, m.unscoredTotal)
		m.switches = registerOrExisting(reg, m.switches)
		m.failures = registerOrExisting(reg, m.failures)
		m.versions = registerOrExisting(reg, m.versions)
	}
	return m
}

// registerOrExisting is telemetry.RegisterOrExisting for metrics whose names this
// package owns: a clash is a programming error.
func registerOrExisting[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	c, err := telemetry.RegisterOrExisting(reg, c)
	if err != nil {
		panic(err)
	}
	return c
}

func (m *modelMetrics) switched(detector string) { m.switches.WithLabelValues(detector).Inc() }
func (m *modelMetrics) failed(detector string)   { m.failures.WithLabelValues(detector).Inc() }
func (m *modelMetrics) version(detector string, v int) {
	m.versions.WithLabelValues(detector).Set(float64(v))
}

func growZero(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	s = s[:n]
	clear(s)
	return s
}

func sortedParams(p map[string]float64) string {
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%v,", k, p[k])
	}
	return b.String()
}
