package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/autoscale"
	"github.com/gonomaly/gonomaly/internal/broker"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/internal/telemetry"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/processors"
	"github.com/gonomaly/gonomaly/producers"
	"github.com/gonomaly/gonomaly/sinks"
)

// clusterFlags are the flags of every command that talks to Kafka.
type clusterFlags struct {
	brokers     string
	prefix      string
	partitions  int
	replication int
	retention   time.Duration
}

func (f *clusterFlags) register(fs *flag.FlagSet, brokersHelp string) {
	fs.StringVar(&f.brokers, "brokers", "", brokersHelp)
	fs.StringVar(&f.prefix, "topic-prefix", "gonomaly.", "prefix of every topic name")
	fs.IntVar(&f.partitions, "partitions", 8, "partitions of every topic on a record's path")
	fs.IntVar(&f.replication, "replication", -1, "replication factor of created topics (-1: broker default)")
	fs.DurationVar(&f.retention, "retention", 0, "retention of records, features, scores, results, anomalies, dlq (0: broker default)")
}

func (f *clusterFlags) config(env *environment) (cluster.Config, error) {
	if f.partitions < 1 || f.partitions > 10_000 {
		return cluster.Config{}, usageErr("--partitions %d: must be 1..10000", f.partitions)
	}
	if f.replication == 0 || f.replication < -1 || f.replication > 32767 {
		return cluster.Config{}, usageErr("--replication %d: must be -1 or 1..32767", f.replication)
	}
	return cluster.Config{
		Brokers:     cluster.ParseBrokers(f.brokers),
		Prefix:      f.prefix,
		Partitions:  int32(f.partitions),
		Replication: int16(f.replication),
		Retention:   f.retention,
		Logger:      env.log,
	}.WithDefaults(), nil
}

// connect requires --brokers and checks the cluster answers.
func (f *clusterFlags) connect(ctx context.Context, env *environment, opts ...kgo.Opt) (*kgo.Client, cluster.Config, error) {
	c, err := f.config(env)
	if err != nil {
		return nil, c, err
	}
	if len(c.Brokers) == 0 {
		c.Brokers = []string{"127.0.0.1:9092"}
	}
	cl, err := cluster.Connect(ctx, c, app.ConnectTimeout, opts...)
	return cl, c, err
}

// loadSchedules reads a --schedules file; empty path: none.
func loadSchedules(path string) ([]jobs.Schedule, error) {
	if path == "" {
		return nil, nil
	}
	return jobs.LoadSchedules(path)
}

func loadSpec(path string) (*spec.Spec, error) {
	if path == "" {
		return spec.Default(), nil
	}
	return spec.Load(path)
}

func cmdRun(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,...; empty starts the embedded broker")
	listen := fs.String("broker-listen", "127.0.0.1:0", "embedded broker address (without --brokers)")
	dataDir := fs.String("data-dir", "", "embedded broker data directory (empty: in memory)")
	specPath := fs.String("spec", "", "pipeline spec YAML (empty: the built-in default)")
	metricsAddr := fs.String("metrics-addr", "127.0.0.1:9464", "serve /metrics, /healthz, /debug/pprof here (empty: off)")
	apiAddr := fs.String("api-addr", "127.0.0.1:8080", "serve the HTTP API (/api/v1) here (empty: off)")
	demo := fs.Bool("demo", false, "publish a synthetic stream with injected anomalies")
	demoRate := fs.Float64("demo-rate", 2000, "records/s of the demo stream")
	demoSeries := fs.Int("demo-series", 20, "series in the demo stream")
	seed := fs.Uint64("seed", 1, "seed of the demo stream")
	quiet := fs.Bool("quiet", false, "do not print anomaly events on stdout")
	workers := fs.Int("workers", runtime.NumCPU(), "jobs run at once by the in-process job worker")
	var af accessFlags
	af.register(fs)
	exactlyOnce := fs.Bool("exactly-once", false, "run the stages (and run's job worker) in Kafka transactions: no lost and no doubled outputs (needs a broker with transactions)")
	var sinkURIs stringList
	fs.Var(&sinkURIs, "sink", "extra sink of anomaly events (jsonl:PATH); repeatable")
	var asf autoscaleFlags
	asf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c, err := cf.config(env)
	if err != nil {
		return err
	}
	s, err := loadSpec(*specPath)
	if err != nil {
		return err
	}
	if *workers < 1 {
		return usageErr("--workers %d: must be at least 1", *workers)
	}
	autoscaleCfg, err := asf.config(c.Partitions)
	if err != nil {
		return err
	}
	keys, scheds, err := af.load()
	if err != nil {
		return err
	}
	cfg := app.RunConfig{
		Cluster: c, BrokerListen: *listen, BrokerDataDir: *dataDir, Spec: s,
		SinkURIs: sinkURIs, MetricsAddr: *metricsAddr, APIAddr: *apiAddr, Logger: env.log,
		Workers: *workers, Schedules: scheds, APIKeys: keys, RateLimit: af.rateLimit, RateBurst: af.rateBurst,
		ExactlyOnce: *exactlyOnce, Autoscale: autoscaleCfg,
	}
	if !*quiet {
		cfg.Print = env.stdout
	}
	if *demo {
		cfg.Demo = &producers.SyntheticConfig{Series: *demoSeries, Seed: *seed, Start: time.Now().Add(-24 * time.Hour)}
		cfg.DemoRate = *demoRate
	}
	return untilDone(ctx, env.log, func(ctx context.Context) error { return app.Run(ctx, cfg) })
}

// autoscaleFlags are `run --autoscale`'s: KEDA's ScaledObject settings for the members
// one process runs per stage (docs/scaling.md, "Local autoscaling").
type autoscaleFlags struct {
	on         bool
	interval   time.Duration
	cooldown   time.Duration
	min, max   int
	thresholds string
	activation string
}

func (f *autoscaleFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.on, "autoscale", false, "run as many members of each stage's consumer group as its lag asks for (KEDA's formula)")
	fs.DurationVar(&f.interval, "autoscale-interval", autoscale.DefaultInterval, "how often the stages' lag is read (KEDA pollingInterval)")
	fs.DurationVar(&f.cooldown, "autoscale-cooldown", autoscale.DefaultCooldown, "scale down only after the lag has asked for fewer members this long")
	fs.IntVar(&f.min, "autoscale-min", 1, "members per stage at least (0: an idle stage stops all)")
	fs.IntVar(&f.max, "autoscale-max", 0, "members per stage at most (0: the partition count, which also caps it)")
	fs.StringVar(&f.thresholds, "autoscale-lag-threshold", "preprocess=10000,detect=5000,ensemble=10000", "lag one member should carry, STAGE=N,... (KEDA lagThreshold)")
	fs.StringVar(&f.activation, "autoscale-activation", "", "lag at or below which a stage is idle, STAGE=N,... (default 0; matters with --autoscale-min 0)")
}

// config is the autoscaling to run, nil without --autoscale.
func (f *autoscaleFlags) config(partitions int32) (*app.AutoscaleConfig, error) {
	if !f.on {
		return nil, nil
	}
	switch {
	case f.interval <= 0:
		return nil, usageErr("--autoscale-interval %s: must be positive", f.interval)
	case f.cooldown <= 0:
		return nil, usageErr("--autoscale-cooldown %s: must be positive", f.cooldown)
	case f.min < 0 || f.min > int(partitions):
		return nil, usageErr("--autoscale-min %d: must be 0..%d (the partitions)", f.min, partitions)
	case f.max < 0 || (f.max > 0 && f.max < max(f.min, 1)):
		return nil, usageErr("--autoscale-max %d: must be 0 (the partitions) or at least --autoscale-min and 1", f.max)
	}
	thresholds, err := stageValues("--autoscale-lag-threshold", f.thresholds, 1)
	if err != nil {
		return nil, err
	}
	activation, err := stageValues("--autoscale-activation", f.activation, 0)
	if err != nil {
		return nil, err
	}
	return &app.AutoscaleConfig{Interval: f.interval, Cooldown: f.cooldown, Min: f.min, Max: f.max,
		LagThresholds: thresholds, ActivationLagThresholds: activation}, nil
}

// stageValues parses STAGE=N,... into a map; every N is at least least.
func stageValues(flagName, v string, least int64) (map[string]int64, error) {
	out := map[string]int64{}
	for _, part := range splitList(v) {
		stage, num, ok := strings.Cut(part, "=")
		stage = strings.TrimSpace(stage)
		if !ok || !slices.Contains(app.StageNames, stage) {
			return nil, usageErr("%s %q: want STAGE=N with STAGE one of %s", flagName, part, strings.Join(app.StageNames, ", "))
		}
		n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil || n < least {
			return nil, usageErr("%s %q: %s must be a whole number of at least %d", flagName, part, stage, least)
		}
		out[stage] = n
	}
	return out, nil
}

func cmdBroker(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("broker", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:9092", "address to listen on")
	dataDir := fs.String("data-dir", "", "persist topics, offsets and groups here (empty: in memory)")
	partitions := fs.Int("partitions", 8, "default partitions of auto-created topics")
	syncWrites := fs.Bool("sync-writes", false, "fsync every produced batch")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	b, err := broker.Start(broker.Config{Listen: *listen, DataDir: *dataDir, Partitions: *partitions, SyncWrites: *syncWrites, Logger: env.log})
	if err != nil {
		return err
	}
	env.log.Info("broker listening", "addr", b.Addr(), "data_dir", *dataDir)
	// A parent process that asked for port 0 reads the address from this line.
	fmt.Fprintf(env.stdout, "listening on %s\n", b.Addr())
	<-ctx.Done()
	b.Close()
	env.log.Info("broker stopped")
	return nil
}

func cmdProcess(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("process", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,... (default 127.0.0.1:9092)")
	stages := fs.String("stage", "preprocess,detect,ensemble", "stages to run: preprocess, detect, ensemble (comma-separated)")
	specPath := fs.String("spec", "", "pipeline spec YAML (empty: the built-in default)")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz, /debug/pprof here")
	createTopics := fs.Bool("create-topics", true, "create missing topics at start")
	exactlyOnce := fs.Bool("exactly-once", false, "run the stages in Kafka transactions: no lost and no doubled outputs (needs a broker with transactions)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	s, err := loadSpec(*specPath)
	if err != nil {
		return err
	}
	names := splitList(*stages)
	for _, n := range names {
		// Built once here so that a bad stage name or spec fails before connecting.
		if _, err := app.BuildStage(n, s, processors.PipelineTopics(cf.prefix, s), nil, processors.DetectModels(processors.NoModels)); err != nil {
			return usageErr("--stage: %v", err)
		}
	}
	cl, c, err := cf.connect(ctx, env)
	if err != nil {
		return err
	}
	if *createTopics {
		err = c.EnsureLayout(ctx, cl)
	}
	cl.Close()
	if err != nil {
		return err
	}
	reg := telemetry.NewRegistry()
	return untilDone(ctx, env.log, func(ctx context.Context) error {
		return withMetrics(ctx, env, *metricsAddr, reg, func(ctx context.Context) error {
			return app.RunStages(ctx, app.StagesConfig{Cluster: c, Spec: s, Stages: names, Registry: reg, Logger: env.log, ExactlyOnce: *exactlyOnce})
		})
	})
}

func cmdSink(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("sink", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,... (default 127.0.0.1:9092)")
	from := fs.String("from", "anomalies", "topic to read (relative to the prefix unless it has a dot)")
	to := fs.String("to", "stdout", "sink: stdout, jsonl:PATH, csv:PATH or an http(s):// webhook, with options (docs/sinks.md)")
	group := fs.String("group", "", "consumer group (default <prefix>sink.<from>)")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz, /debug/pprof here")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	sink, err := sinks.Open(*to)
	if err != nil {
		return usageErr("--to: %v", err)
	}
	defer sink.Close()
	cl, c, err := cf.connect(ctx, env)
	if err != nil {
		return err
	}
	cl.Close()
	topic := *from
	if !strings.Contains(topic, ".") {
		topic = c.Prefix + topic
	}
	if *group == "" {
		*group = c.Prefix + "sink." + strings.TrimPrefix(topic, c.Prefix)
	}
	reg := telemetry.NewRegistry()
	// The group's lag, for dashboards and KEDA; unregistered after the metrics server stops.
	closeLag, err := app.RegisterLag(reg, c, "-sink-lag", map[string][]string{*group: {topic}})
	if err != nil {
		return err
	}
	defer closeLag()
	return untilDone(ctx, env.log, func(ctx context.Context) error {
		return withMetrics(ctx, env, *metricsAddr, reg, func(ctx context.Context) error {
			return sinks.Run(ctx, sink, sinks.RunnerConfig{
				Topic: topic, Group: *group, Events: strings.HasSuffix(topic, "anomalies"), DLQTopic: c.Prefix + "dlq",
				ClientOpts: []kgo.Opt{kgo.SeedBrokers(c.Brokers...)}, Logger: env.log, Registry: reg,
			})
		})
	})
}

func cmdTopics(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("topics", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,... (default 127.0.0.1:9092)")
	all := fs.Bool("all", false, "list every topic, not only those with the prefix")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cl, c, err := cf.connect(ctx, env)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	details, err := adm.ListTopics(ctx)
	if err != nil {
		return err
	}
	ends, err := adm.ListEndOffsets(ctx, details.Names()...)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tEND OFFSETS (sum)\tPER PARTITION")
	for _, name := range details.Sorted() {
		if !*all && !strings.HasPrefix(name.Topic, c.Prefix) {
			continue
		}
		var sum int64
		var per []string
		for _, p := range name.Partitions.Sorted() {
			o, _ := ends.Lookup(name.Topic, p.Partition)
			sum += o.Offset
			per = append(per, fmt.Sprintf("%d:%d", p.Partition, o.Offset))
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", name.Topic, len(name.Partitions), sum, strings.Join(per, " "))
	}
	return tw.Flush()
}

func cmdLag(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("lag", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,... (default 127.0.0.1:9092)")
	group := fs.String("group", "", "consumer group (e.g. gonomaly.default.detect)")
	topic := fs.String("topic", "", "topic the group reads, when it has committed nothing yet")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *group == "" {
		return usageErr("--group is required (groups are <prefix><pipeline>.<stage>, e.g. gonomaly.default.detect)")
	}
	cl, _, err := cf.connect(ctx, env)
	if err != nil {
		return err
	}
	defer cl.Close()
	var topics []string
	if *topic != "" {
		topics = append(topics, *topic)
	}
	lags, err := cluster.GroupLag(ctx, cl, *group, topics...)
	if err != nil {
		return err
	}
	return printLag(env.stdout, *group, lags)
}

func printLag(w io.Writer, group string, lags []cluster.PartitionLag) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tCOMMITTED\tEND\tLAG")
	var total int64
	for _, l := range lags {
		committed := fmt.Sprint(l.Committed)
		if l.Committed < 0 {
			committed = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\n", l.Topic, l.Partition, committed, l.End, l.Lag)
		total += l.Lag
	}
	fmt.Fprintf(tw, "TOTAL (%s)\t\t\t\t%d\n", group, total)
	return tw.Flush()
}

// withMetrics serves the metrics endpoint beside fn when addr is set.
func withMetrics(ctx context.Context, env *environment, addr string, reg *prometheus.Registry, fn func(context.Context) error) error {
	if addr == "" {
		return fn(ctx)
	}
	srv, err := telemetry.Listen(addr, reg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go srv.Serve(ctx, env.log)
	srv.SetReady(true)
	return fn(ctx)
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
