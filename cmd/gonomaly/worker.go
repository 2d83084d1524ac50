package main

import (
	"context"
	"flag"
	"runtime"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/telemetry"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/processors"
)

// cmdWorker runs job workers: one member of the workers' consumer group reading the
// given queues, with --concurrency jobs at a time. Any number run side by side; KEDA
// scales them on the group's lag.
func cmdWorker(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,... (default 127.0.0.1:9092)")
	queues := fs.String("queues", "detect,ensemble,preprocess,train", "job queues to run (comma-separated): detect, ensemble, preprocess, train")
	concurrency := fs.Int("concurrency", runtime.NumCPU(), "jobs run at once")
	id := fs.String("worker-id", "", "this worker's name in job statuses (default host-pid-random)")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz, /debug/pprof here")
	createTopics := fs.Bool("create-topics", true, "create missing topics at start")
	exactlyOnce := fs.Bool("exactly-once", false, "end each job in a Kafka transaction: its terminal status and its offset commit are written together (needs a broker with transactions); the transactional id derives from --worker-id")
	sessionTimeout := fs.Duration("session-timeout", 45*time.Second, "how long the group waits for a worker that stopped heartbeating (killed, partitioned) before its jobs go to another; brokers allow 6s (group.min.session.timeout.ms) to 30m")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var types []jobs.Type
	for _, q := range splitList(*queues) {
		t, err := jobs.ParseType(q)
		if err != nil {
			return usageErr("--queues: %v", err)
		}
		if !slices.Contains(types, t) {
			types = append(types, t)
		}
	}
	if len(types) == 0 {
		return usageErr("--queues: name at least one of detect, ensemble, preprocess, train")
	}
	if *sessionTimeout < time.Second {
		return usageErr("--session-timeout %s: must be at least 1s", *sessionTimeout)
	}
	if *concurrency < 1 || *concurrency > 1024 {
		return usageErr("--concurrency %d: must be 1..1024", *concurrency)
	}

	reg := telemetry.NewRegistry()
	store, c, closeStore, err := openJobStore(ctx, &cf, env, "gonomaly-worker", *createTopics)
	if err != nil {
		return err
	}
	defer closeStore()
	queueTopics := make([]string, len(types))
	for i, t := range types {
		queueTopics[i] = jobs.TopicsFor(c).Queue(t)
	}
	unregisterLag, err := app.RegisterLag(reg, c, "-worker-lag", map[string][]string{processors.WorkerGroup(c.Prefix): queueTopics})
	if err != nil {
		return err
	}
	defer unregisterLag()
	w, err := processors.NewWorker(processors.WorkerConfig{
		Store: store, Types: types, Executors: processors.JobExecutors(),
		Group: processors.WorkerGroup(c.Prefix), ClientOpts: []kgo.Opt{
			kgo.SeedBrokers(c.Brokers...),
			kgo.SessionTimeout(*sessionTimeout), kgo.HeartbeatInterval(*sessionTimeout / 3),
			telemetry.KafkaMetrics(reg, telemetry.KafkaNamespace),
		},
		Concurrency: *concurrency, ID: *id, ExactlyOnce: *exactlyOnce, Registerer: reg, Logger: env.log,
	})
	if err != nil {
		return err
	}
	return untilDone(ctx, env.log, func(ctx context.Context) error {
		return withMetrics(ctx, env, *metricsAddr, reg, w.Run)
	})
}
