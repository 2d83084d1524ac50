package telemetry

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
)

// LagCollector exports the consumer lag of consumer groups, computed with
// cluster.GroupLag when Prometheus scrapes: records a read_committed consumer still has
// to read, per partition and summed per group. This is the number KEDA scales on and
// the seed's queue length.
//
// Computing lag asks the brokers for committed and end offsets (and reads batch headers
// of lagging partitions), so results are cached for a few seconds and concurrent
// scrapes share one computation. A group whose lag cannot be computed is left out of
// that scrape and counted in gonomaly_consumer_lag_errors_total; it never fails the
// scrape.
type LagCollector struct {
	cl      *kgo.Client
	groups  map[string][]string
	names   []string // groups in a stable order
	ttl     time.Duration
	timeout time.Duration
	now     func() time.Time

	records *prometheus.Desc
	sum     *prometheus.Desc
	errors  *prometheus.CounterVec

	mu     sync.Mutex // held for a whole refresh: concurrent scrapes wait and share it
	at     time.Time
	cached []prometheus.Metric
}

// LagOption configures a LagCollector.
type LagOption func(*LagCollector)

// LagCacheTTL is how long a computed lag is served before it is computed again;
// default 5 s (below Prometheus' usual 15 s interval, so every scrape sees fresh lag,
// while dashboards and several Prometheus replicas scraping at once share one).
func LagCacheTTL(d time.Duration) LagOption { return func(c *LagCollector) { c.ttl = d } }

// LagTimeout bounds one computation of all groups' lag; default 5 s, below
// Prometheus' default scrape timeout of 10 s.
func LagTimeout(d time.Duration) LagOption { return func(c *LagCollector) { c.timeout = d } }

// NewLagCollector watches groups, a map from consumer group to the topics it reads (the
// topics count as fully lagging while the group has committed nothing). cl must be a
// plain client (no consumer or group options); the caller closes it after the metrics
// server stops. Register the collector with the process's registry.
func NewLagCollector(cl *kgo.Client, groups map[string][]string, opts ...LagOption) *LagCollector {
	c := &LagCollector{
		cl:      cl,
		groups:  make(map[string][]string, len(groups)),
		ttl:     5 * time.Second,
		timeout: 5 * time.Second,
		now:     time.Now,
		records: prometheus.NewDesc("gonomaly_consumer_lag_records",
			"Records a consumer group still has to read on a partition (transaction markers and aborted records excluded).",
			[]string{"group", "topic", "partition"}, nil),
		sum: prometheus.NewDesc("gonomaly_consumer_lag_sum",
			"Records a consumer group still has to read, summed over its partitions (what KEDA scales on).",
			[]string{"group"}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_consumer_lag_errors_total",
			Help: "Lag computations of a consumer group that failed (the group is left out of that scrape).",
		}, []string{"group"}),
	}
	for g, topics := range groups {
		c.groups[g] = slices.Clone(topics)
		c.names = append(c.names, g)
		c.errors.WithLabelValues(g) // exported as 0 from the start, so rate() works
	}
	slices.Sort(c.names)
	for _, o := range opts {
		o(c)
	}
	return c
}

// Describe implements prometheus.Collector. It describes nothing, which makes the
// collector unchecked: a process may register one per set of groups (its stages, its
// job workers) in one registry, as long as no group is watched twice.
func (c *LagCollector) Describe(chan<- *prometheus.Desc) {}

// Collect implements prometheus.Collector.
func (c *LagCollector) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.current() {
		ch <- m
	}
	c.errors.Collect(ch)
}

// current returns the cached metrics, refreshing them when older than the TTL.
func (c *LagCollector) current() []prometheus.Metric {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cached != nil && c.now().Sub(c.at) < c.ttl {
		return c.cached
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	// Groups in parallel: each is a few round trips, and a slow one should not use up
	// the others' share of the timeout.
	lags := make([][]cluster.PartitionLag, len(c.names))
	errs := make([]error, len(c.names))
	var wg sync.WaitGroup
	for i, g := range c.names {
		wg.Go(func() { lags[i], errs[i] = cluster.GroupLag(ctx, c.cl, g, c.groups[g]...) })
	}
	wg.Wait()
	metrics := []prometheus.Metric{}
	for i, g := range c.names {
		if errs[i] != nil {
			c.errors.WithLabelValues(g).Inc()
			continue
		}
		var total int64
		for _, pl := range lags[i] {
			total += pl.Lag
			metrics = append(metrics, prometheus.MustNewConstMetric(c.records, prometheus.GaugeValue,
				float64(pl.Lag), g, pl.Topic, fmt.Sprint(pl.Partition)))
		}
		metrics = append(metrics, prometheus.MustNewConstMetric(c.sum, prometheus.GaugeValue, float64(total), g))
	}
	c.cached, c.at = metrics, c.now()
	return metrics
}
