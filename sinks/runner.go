package sinks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/dlq"
	"github.com/gonomaly/gonomaly/schemas"
)

// RunnerConfig configures a sink runner.
type RunnerConfig struct {
	Topic      string
	Group      string
	ClientOpts []kgo.Opt
	// Events writes Avro values in the AnomalyEvent JSON form (without is_anomaly).
	Events bool
	// DLQTopic receives undecodable values and events the sink rejects for good, with
	// the reason in headers; empty: they are logged and skipped.
	DLQTopic string
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Written, if set, is called with each batch once it is durable and committed
	// (dead-lettered records included).
	Written func(recs []*kgo.Record)
	// MaxPollRecords bounds a batch (default 10,000). The runner polls again only once
	// the batch is delivered and committed, so a slow target holds at most this many
	// events (plus what the client has prefetched) in memory.
	MaxPollRecords int
	// ShutdownGrace is how long a batch being delivered when ctx is cancelled may still
	// finish and be committed (default 10 s); negative: stop at once, leaving the batch
	// uncommitted to be delivered again by the next run.
	ShutdownGrace time.Duration
}

// metrics are one runner's instruments, labelled by topic, consumer group and sink kind:
// the group keeps two sinks of one kind on one topic (two --sink jsonl:… in a process)
// apart.
type metrics struct {
	written, failed, retried prometheus.Counter
	latency                  prometheus.Observer
}

// newMetrics is for a sink used outside a consumer group (its group label is empty).
func newMetrics(reg prometheus.Registerer, topic, kind string) *metrics {
	return newGroupMetrics(reg, topic, "", kind)
}

func newGroupMetrics(reg prometheus.Registerer, topic, group, kind string) *metrics {
	labels := prometheus.Labels{"topic": topic, "group": group, "sink": kind}
	written := prometheus.NewCounter(prometheus.CounterOpts{Name: "gonomaly_sink_written_total",
		Help: "Records written and made durable by the sink.", ConstLabels: labels})
	failed := prometheus.NewCounter(prometheus.CounterOpts{Name: "gonomaly_sink_failed_total",
		Help: "Records the sink could not write for good (undecodable or rejected by the target), sent to the dead-letter topic.", ConstLabels: labels})
	retried := prometheus.NewCounter(prometheus.CounterOpts{Name: "gonomaly_sink_retried_total",
		Help: "Requests the sink retried after a transient failure of its target.", ConstLabels: labels})
	latency := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gonomaly_sink_write_seconds",
		Help: "Time to write a batch and make it durable, retries included.", ConstLabels: labels,
		Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)})
	if reg != nil {
		reg.MustRegister(written, failed, retried, latency)
	}
	return &metrics{written: written, failed: failed, retried: retried, latency: latency}
}

// instrumented sinks count their own retries.
type instrumented interface{ instrument(*metrics) }

// configurable sinks are told whether they receive anomaly events or results (a
// database picks its table by it) and where to log what they retry.
type configurable interface {
	configure(events bool, log *slog.Logger)
}

func kindOf(s Sink) string {
	if k, ok := s.(interface{ kind() string }); ok {
		return k.kind()
	}
	return "custom"
}

// Run consumes cfg.Topic into sink until ctx is cancelled. Each polled batch is written,
// made durable, and only then committed: a crash replays at most the uncommitted batch.
// Events the sink rejects for good are dead-lettered and committed with the batch.
func Run(ctx context.Context, sink Sink, cfg RunnerConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 10_000
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	m := newGroupMetrics(cfg.Registry, cfg.Topic, cfg.Group, kindOf(sink))
	if in, ok := sink.(instrumented); ok {
		in.instrument(m)
	}
	if c, ok := sink.(configurable); ok {
		c.configure(cfg.Events, log)
	}
	opts := append([]kgo.Opt{}, cfg.ClientOpts...)
	opts = append(opts,
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(cfg.Topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), // exactly-once stages: never an aborted event
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("sink: kafka client: %w", err)
	}
	defer cl.Close()
	var (
		line    []byte
		res     schemas.Result
		written []*kgo.Record // records handed to the sink since the last delivery
		dead    []*kgo.Record // dead-letter copies for this batch
	)
	for {
		fetches := cl.PollRecords(ctx, cfg.MaxPollRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			return nil
		}
		fetches.EachError(func(t string, p int32, err error) {
			log.Warn("sink fetch error", "topic", t, "partition", p, "err", err)
		})
		recs := fetches.Records()
		if len(recs) == 0 {
			continue
		}
		start := time.Now()
		written, dead = written[:0], dead[:0]
		for _, r := range recs {
			line, err = toJSON(line[:0], r.Value, &res, cfg.Events)
			if err != nil {
				log.Warn("sink: undecodable value", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
				dead = append(dead, dlq.Record(cfg.DLQTopic, "sink", "decode", r, err))
				continue
			}
			if err := sink.Write(line); err != nil {
				var rej *RejectedError
				if !errors.As(err, &rej) {
					return fmt.Errorf("sink write: %w", err)
				}
				dead = append(dead, dlq.Record(cfg.DLQTopic, "sink", "rejected", r, rej.Err))
				continue
			}
			written = append(written, r)
		}
		// Past ctx's cancellation the batch gets ShutdownGrace to finish: a clean stop
		// delivers and commits what it already holds.
		dctx, stop := graceContext(ctx, cfg.ShutdownGrace)
		rejected, err := deliver(dctx, sink)
		if err != nil {
			stop()
			if ctx.Err() != nil {
				log.Warn("sink stopped before its batch was delivered; the next run delivers it again", "records", len(recs), "err", err)
				return nil
			}
			return fmt.Errorf("sink deliver: %w", err)
		}
		for _, rj := range rejected {
			r := written[rj.Index]
			log.Warn("sink: target rejected event", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", rj.Err)
			dead = append(dead, dlq.Record(cfg.DLQTopic, "sink", "rejected", r, rj.Err))
		}
		if len(dead) > 0 {
			if cfg.DLQTopic == "" {
				log.Error("sink: no dead-letter topic; dropping records", "records", len(dead))
			} else if err := cl.ProduceSync(dctx, dead...).FirstErr(); err != nil {
				stop()
				return fmt.Errorf("sink: dead-letter: %w", err)
			}
		}
		stop()
		m.latency.Observe(time.Since(start).Seconds())
		commitCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		err = cl.CommitRecords(commitCtx, recs...)
		cancel()
		if err != nil {
			return fmt.Errorf("sink commit: %w", err)
		}
		m.written.Add(float64(len(written) - len(rejected)))
		m.failed.Add(float64(len(dead)))
		if cfg.Written != nil {
			cfg.Written(recs)
		}
	}
}

func deliver(ctx context.Context, sink Sink) ([]Rejection, error) {
	if d, ok := sink.(Deliverer); ok {
		return d.Deliver(ctx)
	}
	return nil, sink.Sync()
}

// graceContext returns a context that ends grace after ctx does (at once if grace is
// negative); stop releases it.
func graceContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	if grace < 0 {
		return context.WithCancel(ctx)
	}
	gctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stopAfter := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return gctx, func() { stopAfter(); cancel() }
}

// toJSON passes JSON values through and turns Avro results and events into their JSON
// form, so a sink always writes readable lines whatever the pipeline's output format.
func toJSON(dst, value []byte, res *schemas.Result, events bool) ([]byte, error) {
	if len(value) > 0 && value[0] == '{' {
		return append(dst, value...), nil
	}
	if err := schemas.DecodeResult(value, res); err != nil {
		return dst, err
	}
	if events {
		return schemas.AppendAnomalyEventJSON(dst, res), nil
	}
	return schemas.AppendResultJSON(dst, res), nil
}
