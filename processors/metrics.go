package processors

import (
	"log/slog"
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
