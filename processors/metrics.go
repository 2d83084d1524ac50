package processors

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// StageMetrics are one stage's Prometheus metrics. Counters are bumped once per batch,
// not per record, to keep their cost off the hot path.
type StageMetrics struct {
	RecordsIn    prometheus.Counter
	RecordsOut   prometheus.Counter
	DeadLettered *prometheus.CounterVec
	Panics       prometheus.Counter
	BatchSeconds prometheus.Observer
	Partitions   prometheus.Gauge
}

// NewStageMetrics registers a stage's metrics with reg (nil: unregistered, for tests).
func NewStageMetrics(reg prometheus.Registerer, stage string) *StageMetrics {
	labels := prometheus.Labels{"stage": stage}
	m := &StageMetrics{
		RecordsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gonomaly_stage_records_in_total", Help: "Records consumed by the stage.", ConstLabels: labels}),
		RecordsOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gonomaly_stage_records_out_total", Help: "Records produced by the stage (DLQ excluded).", ConstLabels: labels}),
		DeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_stage_dlq_total", Help: "Records sent to the dead-letter topic, by reason.", ConstLabels: labels}, []string{"reason"}),
		Panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gonomaly_stage_panics_total", Help: "Processor panics recovered at the handler boundary.", ConstLabels: labels}),
		Partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gonomaly_stage_assigned_partitions", Help: "Partitions currently assigned to this process.", ConstLabels: labels}),
	}
	batch := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "gonomaly_stage_batch_seconds", Help: "Time to process one polled batch of a partition.", ConstLabels: labels,
		Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10)})
	m.BatchSeconds = batch
	if reg != nil {
		reg.MustRegister(m.RecordsIn, m.RecordsOut, m.DeadLettered, m.Panics, m.Partitions, batch)
	}
	return m
}

// rateLimitedLog logs at most n messages per period and reports how many it dropped, so
// a flood of bad input cannot flood the logs.
type rateLimitedLog struct {
	log     *slog.Logger
	n       int
	period  time.Duration
	mu      sync.Mutex
	start   time.Time
	count   int
	dropped int
}

func newRateLimitedLog(log *slog.Logger, n int, period time.Duration) *rateLimitedLog {
	return &rateLimitedLog{log: log, n: n, period: period}
}

func (l *rateLimitedLog) Warn(msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.start) >= l.period {
		if l.dropped > 0 {
			l.log.Warn("log messages suppressed", "count", l.dropped, "period", l.period)
		}
		l.start, l.count, l.dropped = now, 0, 0
	}
	ok := l.count < l.n
	if ok {
		l.count++
	} else {
		l.dropped++
	}
	l.mu.Unlock()
	if ok {
		l.log.Warn(msg, args...)
	}
}

// scoreBuckets are the upper bounds of gonomaly_detector_score. The detect stage emits
// raw scores, whose scale is each detector's own (the ensemble calibrates them): hst
// and xstream give [0,1], where the resolution matters near 1; ewma, zscore and
// seasonal give z-scores, typically 0–3 and 5–10 or more for an outlier; rrcf gives a
// displacement of up to tree_size. One layout serves them all, so that the series of
// different detectors share their le values.
var scoreBuckets = [...]float64{0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1, 2, 3, 5, 10, 30, 100, 1000}

// scoreMetrics is gonomaly_detector_score{pipeline, detector}: the distribution of each
// detector's raw scores. Issue 6 allows metrics 50 ns a record, and the ensemble's take
// about 27 ns of it, while a prometheus.Histogram costs about 20 ns an observation
// (three atomic adds), 60 ns for the default spec's three detectors. So each partition
// counts into a shard of its own under one mutex a record, whatever the number of
// detectors, uncontended but for scrapes, and the collector sums the shards when
// scraped (BenchmarkRecordMetrics).
type scoreMetrics struct {
	desc *prometheus.Desc

	mu      sync.Mutex               // guards live and retired
	live    map[*scoreShard]struct{} // shards of open processors
	retired map[string]*scoreCounts  // by detector: counts of closed processors
	order   []string                 // detectors in the order first seen
}

// scoreCounts is one detector's histogram: per bucket (the last is +Inf), not
// cumulative, and the sum of the scores.
type scoreCounts struct {
	buckets [len(scoreBuckets) + 1]uint64
	sum     float64
}

func (c *scoreCounts) add(o *scoreCounts) {
	for i, n := range o.buckets {
		c.buckets[i] += n
	}
	c.sum += o.sum
}

func newScoreMetrics(reg prometheus.Registerer, pipeline string, detectors []string) *scoreMetrics {
	// Opts only name it: the collector builds the histograms (deploy/validate finds the
	// names the code registers by their Name: field).
	opts := prometheus.HistogramOpts{
		Name:        "gonomaly_detector_score",
		Help:        "Raw scores of the detect stage's detectors, each on its own scale (before the ensemble calibrates them); records scored NaN (warming up, no model version) are not observed.",
		ConstLabels: prometheus.Labels{"pipeline": pipeline},
	}
	m := &scoreMetrics{
		desc:    prometheus.NewDesc(opts.Name, opts.Help, []string{"detector"}, opts.ConstLabels),
		live:    map[*scoreShard]struct{}{},
		retired: map[string]*scoreCounts{},
	}
	if reg != nil {
		// One collector per pipeline in a registry: another detect stage of the same
		// pipeline (a rebuilt stage, a test's second one) shares the first one's.
		m = registerOrExisting(reg, m)
	}
	m.mu.Lock()
	m.known(detectors) // exported from the start, so that rate() works
	m.mu.Unlock()
	return m
}

// known makes sure every detector has its series; m.mu is held.
func (m *scoreMetrics) known(detectors []string) {
	for _, d := range detectors {
		if m.retired[d] == nil {
			m.retire(d, &scoreCounts{})
		}
	}
}

// retire adds c to the counts of closed processors; m.mu is held.
func (m *scoreMetrics) retire(detector string, c *scoreCounts) {
	r := m.retired[detector]
	if r == nil {
		r = &scoreCounts{}
		m.retired[detector] = r
		m.order = append(m.order, detector)
	}
	r.add(c)
}

// shard is a new partition's histograms of detectors, in the order its scores come.
func (m *scoreMetrics) shard(detectors []string) *scoreShard {
	s := &scoreShard{m: m, detectors: detectors, counts: make([]scoreCounts, len(detectors))}
	m.mu.Lock()
	m.live[s] = struct{}{}
	m.known(detectors)
	m.mu.Unlock()
	return s
}

// Describe implements prometheus.Collector.
func (m *scoreMetrics) Describe(ch chan<- *prometheus.Desc) { ch <- m.desc }

// Collect implements prometheus.Collector.
func (m *scoreMetrics) Collect(ch chan<- prometheus.Metric) {
	m.mu.Lock()
	totals := make(map[string]*scoreCounts, len(m.order))
	for d, c := range m.retired {
		t := *c
		totals[d] = &t
	}
	for s := range m.live {
		s.mu.Lock()
		for i, d := range s.detectors {
			totals[d].add(&s.counts[i])
		}
		s.mu.Unlock()
	}
	order := slices.Clone(m.order)
	m.mu.Unlock()
	for _, d := range order {
		c := totals[d]
		cumulative := make(map[float64]uint64, len(scoreBuckets))
		var n uint64
		for i, le := range scoreBuckets {
			n += c.buckets[i]
			cumulative[le] = n
		}
		n += c.buckets[len(scoreBuckets)]
		ch <- prometheus.MustNewConstHistogram(m.desc, n, c.sum, cumulative, d)
	}
}

// scoreShard is one partition's score histograms, written by the partition's goroutine.
type scoreShard struct {
	m         *scoreMetrics
	detectors []string
	mu        sync.Mutex // held for a record's observations and by a scrape
	counts    []scoreCounts
	closed    bool
}

// observe counts one record's scores, one per detector of the shard. NaN (and ±Inf)
// is no verdict: not observed, it would make the sum NaN for good.
func (s *scoreShard) observe(scores []float64) {
	s.mu.Lock()
	for i, v := range scores {
		if v-v != 0 {
			continue
		}
		// Binary search: as fast as a linear one on real scores, whatever their scale.
		lo, hi := 0, len(scoreBuckets)
		for lo < hi {
			mid := int(uint(lo+hi) >> 1)
			if v > scoreBuckets[mid] {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		c := &s.counts[i]
		c.buckets[lo]++
		c.sum += v
	}
	s.mu.Unlock()
}

// close hands the shard's counts to the collector for good: the partition has moved or
// the stage has stopped, and the counts must not go down.
func (s *scoreShard) close() {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	delete(m.live, s)
	for i, d := range s.detectors {
		m.retire(d, &s.counts[i])
	}
}
