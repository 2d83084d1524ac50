package sinks

import (
	"context"
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
	Events   bool
	DLQTopic string // undecodable values go here; empty: they are logged and skipped
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Written, if set, is called with each batch once it is durable and committed.
	Written func(recs []*kgo.Record)
}

// Run consumes cfg.Topic into sink until ctx is cancelled. Each polled batch is written,
// synced, and only then committed: a crash replays at most the unsynced batch.
func Run(ctx context.Context, sink Sink, cfg RunnerConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	written := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gonomaly_sink_written_total", Help: "Records written and synced by the sink.",
		ConstLabels: prometheus.Labels{"topic": cfg.Topic}})
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(written)
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
	var line []byte
	var res schemas.Result
	for {
		fetches := cl.PollRecords(ctx, 10_000)
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
		for _, r := range recs {
			line, err = toJSON(line[:0], r.Value, &res, cfg.Events)
			if err != nil {
				log.Warn("sink: undecodable value", "topic", r.Topic, "partition", r.Partition, "offset", r.Offset, "err", err)
				if cfg.DLQTopic != "" {
					if err := cl.ProduceSync(ctx, dlq.Record(cfg.DLQTopic, "sink", "decode", r, err)).FirstErr(); err != nil {
						return fmt.Errorf("sink: dead-letter: %w", err)
					}
				}
				continue
			}
			if err := sink.Write(line); err != nil {
				return fmt.Errorf("sink write: %w", err)
			}
		}
		if err := sink.Sync(); err != nil {
			return fmt.Errorf("sink sync: %w", err)
		}
		commitCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := cl.CommitRecords(commitCtx, recs...)
		cancel()
		if err != nil {
			return fmt.Errorf("sink commit: %w", err)
		}
		written.Add(float64(len(recs)))
		if cfg.Written != nil {
			cfg.Written(recs)
		}
	}
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
