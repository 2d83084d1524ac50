// Package app wires gonomaly's parts into the processes the commands run: the pipeline
// stages of `process`, and the all-in-one `run` (embedded broker, stages, printer, demo
// producer, metrics). Tests build exactly what main builds through it.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
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

// StageNames are the pipeline's stages in data-flow order.
var StageNames = []string{"preprocess", "detect", "ensemble"}

// ConnectTimeout bounds how long a process waits for an unreachable cluster.
const ConnectTimeout = 10 * time.Second

// GroupName is a stage's consumer group: one per pipeline and stage.
func GroupName(prefix, pipeline, stage string) string {
	return prefix + pipeline + "." + stage
}

// BuildStage builds one named stage of a pipeline; the ensemble registers its outcome
// metrics with reg (nil: not exported); detect takes the options (a model view for
// specs that name trained models, metrics, logger).
func BuildStage(name string, s *spec.Spec, topics processors.Topics, reg prometheus.Registerer, detect ...processors.DetectOption) (processors.Stage, error) {
	switch name {
	case "preprocess":
		return processors.NewPreprocess(s, topics)
	case "detect":
		return processors.NewDetect(s, topics, detect...)
	case "ensemble":
		return processors.NewEnsemble(s, topics, processors.EnsembleRegisterer(reg))
	default:
		return nil, fmt.Errorf("unknown stage %q (stages: preprocess, detect, ensemble)", name)
	}
}

// StagesConfig says which stages of which pipeline to run against which cluster.
type StagesConfig struct {
	Cluster  cluster.Config
	Spec     *spec.Spec
	Stages   []string // default: all
	Registry prometheus.Registerer
	Logger   *slog.Logger
	// ExactlyOnce runs the stages in Kafka transactions (processors.RunnerConfig).
	ExactlyOnce bool
	// Autoscale sizes each stage's group on its lag; nil: one member per stage.
	Autoscale *AutoscaleConfig
}

// RunStages runs the stages until ctx is cancelled or one fails; a failure stops the
// others and is returned. Each stage is a consumer group with one member, or with
// Autoscale as many as its lag asks for, all sharing the stage (its models view and
// metrics).
func RunStages(ctx context.Context, cfg StagesConfig) error {
	c := cfg.Cluster.WithDefaults()
	names := cfg.Stages
	if len(names) == 0 {
		names = StageNames
	}
	topics := processors.PipelineTopics(c.Prefix, cfg.Spec)
	detectOpts := []processors.DetectOption{processors.DetectRegisterer(cfg.Registry), processors.DetectLogger(c.Logger)}
	if slices.Contains(names, "detect") && processors.SpecNamesModels(cfg.Spec) {
		// The spec scores with trained models: follow the models topic for new versions.
		models, err := jobs.OpenModelView(ctx, api.NewConsumerFunc(c.Brokers, kgo.ClientID(c.ClientID+"-detect-models")), jobs.TopicsFor(c).Models)
		if err != nil {
			return err
		}
		defer models.Close()
		detectOpts = append(detectOpts, processors.DetectModels(models))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		failOnce sync.Once
		failed   error
	)
	fail := func(err error) {
		failOnce.Do(func() { failed = err })
		cancel()
	}
	var pools []*memberPool
	var groups []autoscale.Group
	lagGroups := map[string][]string{}
	for _, name := range names {
		st, err := BuildStage(name, cfg.Spec, topics, cfg.Registry, detectOpts...)
		if err != nil {
			return err
		}
		group := GroupName(c.Prefix, cfg.Spec.Name, name)
		lagGroups[group] = st.InputTopics()
		// Registered once per stage and shared by its members: one set of series per
		// stage, whatever the number of members.
		stageMetrics := processors.NewStageMetrics(cfg.Registry, name)
		stateMetrics := processors.NewStateMetrics(cfg.Registry, name)
		kafkaMetrics := telemetry.KafkaMetrics(cfg.Registry, telemetry.KafkaNamespace)
		pool := &memberPool{ctx: ctx, fail: fail, newRunner: func(slot int) *processors.Runner {
			clientID, log := c.ClientID+"-"+name, c.Logger
			if slot > 0 {
				clientID += "-" + strconv.Itoa(slot)
			}
			if cfg.Autoscale != nil {
				log = log.With("member", slot)
			}
			return processors.NewRunner(st, processors.RunnerConfig{
				Group:           group,
				DLQTopic:        topics.DLQ,
				ClientOpts:      []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.ClientID(clientID), kafkaMetrics},
				Logger:          log,
				Metrics:         memberMetrics(stageMetrics),
				ExactlyOnce:     cfg.ExactlyOnce,
				StateTopic:      c.Topic("state." + group), // as cluster.Layout names it; created if missing
				StateMetrics:    stateMetrics,
				TransactionalID: memberTransactionalID(slot),
			})
		}}
		pools = append(pools, pool)
		if cfg.Autoscale != nil {
			groups = append(groups, autoscale.Group{Stage: name, Group: group, Topics: st.InputTopics(),
				Policy: cfg.Autoscale.policy(name), Scale: pool.scale})
		}
	}
	if cfg.Registry != nil {
		unregister, err := RegisterLag(cfg.Registry, c, "-stages-lag", lagGroups)
		if err != nil {
			return err
		}
		defer unregister()
	}
	if cfg.Autoscale == nil {
		for _, p := range pools {
			if p.scale(ctx, 1) != nil {
				break // the run has ended already
			}
		}
		<-ctx.Done()
	} else if err := runAutoscale(ctx, c, cfg, groups); err != nil {
		fail(err)
	}
	cancel()
	for _, p := range pools {
		p.wait()
	}
	return failed
}

// runAutoscale sizes the stages' groups until ctx ends, reading their lag through a
// client of its own.
func runAutoscale(ctx context.Context, c cluster.Config, cfg StagesConfig, groups []autoscale.Group) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID+"-autoscale"))
	if err != nil {
		return err
	}
	defer cl.Close()
	a := cfg.Autoscale
	return autoscale.Run(ctx, autoscale.Config{
		Interval: a.Interval, Cooldown: a.Cooldown, Lag: autoscale.KafkaLag(cl),
		Registerer: cfg.Registry, Logger: c.Logger, OnPoll: a.OnPoll,
	}, groups...)
}

// RegisterLag exports the consumer lag of groups (group → topics it reads) with reg,
// through a client of its own; the returned func unregisters it and closes the client.
func RegisterLag(reg prometheus.Registerer, c cluster.Config, clientSuffix string, groups map[string][]string) (func(), error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID+clientSuffix))
	if err != nil {
		return nil, err
	}
	lag := telemetry.NewLagCollector(cl, groups)
	if err := reg.Register(lag); err != nil {
		cl.Close()
		return nil, err
	}
	return func() { reg.Unregister(lag); cl.Close() }, nil
}

// runAll runs fns concurrently; the first error cancels the rest.
func runAll(ctx context.Context, fns ...func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(ctx); err != nil && !errors.Is(err, context.Canceled) {
				once.Do(func() { first = err })
				cancel()
			}
		}()
	}
	wg.Wait()
	return first
}

// RunConfig configures the all-in-one process.
type RunConfig struct {
	Cluster       cluster.Config // Brokers empty: start the embedded broker
	BrokerListen  string         // embedded broker address; default 127.0.0.1:0
	BrokerDataDir string
	Spec          *spec.Spec
	Print         io.Writer // anomaly events as JSON lines; nil: not printed
	SinkURIs      []string  // extra sinks of the anomalies topic
	MetricsAddr   string    // empty: no metrics server
	APIAddr       string    // the HTTP API, with job workers behind it; empty: neither
	// Workers is how many jobs run at once in this process; default the core count.
	Workers int
	// Schedules are periodic jobs this process fires (with the API).
	Schedules []jobs.Schedule
	// APIKeys, RateLimit and RateBurst guard the API as in api.Config; no keys: open.
	APIKeys   []api.Key
	RateLimit float64
	RateBurst int
	Demo      *producers.SyntheticConfig
	DemoRate  float64
	// ExactlyOnce runs the stages in Kafka transactions, and the job worker ends its
	// jobs in transactions; the sinks read committed records either way.
	ExactlyOnce bool
	// Autoscale sizes each stage's group on its lag (--autoscale); nil: one member each.
	Autoscale *AutoscaleConfig
	Registry  *prometheus.Registry
	Logger    *slog.Logger
	// Started, if set, is told the broker address once the pipeline is up.
	Started func(brokers []string)
}

// Run runs broker (unless external), topics, stages, printer, sinks, demo producer and
// metrics until ctx is cancelled. Shutdown drains the stages before the broker stops.
func Run(ctx context.Context, cfg RunConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registry
	if reg == nil {
		reg = telemetry.NewRegistry()
	}
	c := cfg.Cluster
	c.Logger = log
	c = c.WithDefaults()

	if len(c.Brokers) == 0 {
		listen := cfg.BrokerListen
		if listen == "" {
			listen = "127.0.0.1:0"
		}
		b, err := broker.Start(broker.Config{Listen: listen, DataDir: cfg.BrokerDataDir, Partitions: int(c.Partitions), Logger: log})
		if err != nil {
			return err
		}
		defer b.Close() // last: after every client below has finished
		c.Brokers = []string{b.Addr()}
		log.Info("embedded broker started", "addr", b.Addr(), "data_dir", cfg.BrokerDataDir)
	}

	admCl, err := cluster.Connect(ctx, c, ConnectTimeout)
	if err != nil {
		return err
	}
	defer admCl.Close()
	var stateGroups []string // exactly-once stages checkpoint their state
	if cfg.ExactlyOnce {
		for _, name := range StageNames {
			stateGroups = append(stateGroups, GroupName(c.Prefix, cfg.Spec.Name, name))
		}
	}
	if err := c.EnsureLayout(ctx, admCl, stateGroups...); err != nil {
		return err
	}
	topics := processors.PipelineTopics(c.Prefix, cfg.Spec)

	var fns []func(context.Context) error
	var metrics *telemetry.Server
	if cfg.MetricsAddr != "" {
		metrics, err = telemetry.Listen(cfg.MetricsAddr, reg)
		if err != nil {
			return err
		}
		fns = append(fns, func(ctx context.Context) error { return metrics.Serve(ctx, log) })
	}
	if cfg.APIAddr != "" {
		jobFns, closeJobs, err := startJobs(ctx, cfg, c, topics, reg, log)
		if err != nil {
			return err
		}
		defer closeJobs() // after runAll: in-flight requests and jobs finish first
		fns = append(fns, jobFns...)
	}
	fns = append(fns, func(ctx context.Context) error {
		return RunStages(ctx, StagesConfig{Cluster: c, Spec: cfg.Spec, Registry: reg, Logger: log, ExactlyOnce: cfg.ExactlyOnce, Autoscale: cfg.Autoscale})
	})
	sinkTargets := slices.Clone(cfg.SinkURIs)
	var openSinks []sinks.Sink
	defer func() {
		for _, s := range openSinks {
			s.Close()
		}
	}()
	if cfg.Print != nil {
		openSinks = append(openSinks, sinks.NewWriter(cfg.Print))
		sinkTargets = append([]string{"print"}, sinkTargets...)
	}
	for _, uri := range cfg.SinkURIs {
		s, err := sinks.Open(uri)
		if err != nil {
			return err
		}
		openSinks = append(openSinks, s)
	}
	sinkGroups := map[string][]string{}
	for i, s := range openSinks {
		group := GroupName(c.Prefix, cfg.Spec.Name, fmt.Sprintf("sink-%d", i))
		sinkGroups[group] = []string{topics.Anomalies}
		fns = append(fns, func(ctx context.Context) error {
			return sinks.Run(ctx, s, sinks.RunnerConfig{
				Topic: topics.Anomalies, Group: group, Events: true, DLQTopic: topics.DLQ,
				// read_committed: never deliver an aborted transaction's events.
				ClientOpts: []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.FetchIsolationLevel(kgo.ReadCommitted())}, Logger: log.With("sink", sinkTargets[i]),
				Registry: reg, // the group label keeps two sinks of one kind apart
			})
		})
	}
	if len(sinkGroups) > 0 {
		unregister, err := RegisterLag(reg, c, "-sinks-lag", sinkGroups)
		if err != nil {
			return err
		}
		defer unregister()
	}
	if cfg.Demo != nil {
		fns = append(fns, func(ctx context.Context) error {
			return runDemo(ctx, c, topics.Records, *cfg.Demo, cfg.DemoRate, log)
		})
	}
	if metrics != nil {
		metrics.SetReady(true)
	}
	if cfg.Started != nil {
		cfg.Started(c.Brokers)
	}
	log.Info("pipeline running", "pipeline", cfg.Spec.Name, "brokers", c.Brokers, "input", topics.Records, "anomalies", topics.Anomalies)
	return runAll(ctx, fns...)
}

// startJobs opens the job system (the views of jobs.status, datasets and models), binds
// the API's address (so a busy port fails the start) and returns the run functions of
// the API, a job worker and the scheduler, and the closer of what they share.
func startJobs(ctx context.Context, cfg RunConfig, c cluster.Config, topics processors.Topics, reg prometheus.Registerer, log *slog.Logger) ([]func(context.Context) error, func(), error) {
	jobTopics := jobs.TopicsFor(c)
	cl, err := kgo.NewClient(append(api.ProducerOptions(jobTopics), kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID+"-api"),
		telemetry.KafkaMetrics(reg, telemetry.KafkaNamespace))...)
	if err != nil {
		return nil, nil, err
	}
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	store, err := jobs.Open(openCtx, cl, jobTopics, api.NewConsumerFunc(c.Brokers, kgo.ClientID(c.ClientID+"-jobs-views")))
	cancel()
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	unregisterLag, err := RegisterLag(reg, c, "-workers-lag", map[string][]string{
		processors.WorkerGroup(c.Prefix): {jobTopics.Detect, jobTopics.Ensemble, jobTopics.Preprocess, jobTopics.Train}})
	if err != nil {
		store.Close()
		cl.Close()
		return nil, nil, err
	}
	closeAll := func() { unregisterLag(); store.Close(); cl.Close() }
	srv, err := api.New(api.Config{
		Client: cl, Topics: api.Topics{Records: topics.Records, Anomalies: topics.Anomalies}, Jobs: store,
		Registerer: reg, Logger: log, Keys: cfg.APIKeys, RateLimit: cfg.RateLimit, RateBurst: cfg.RateBurst,
		NewConsumer: api.NewConsumerFunc(c.Brokers, kgo.ClientID(c.ClientID+"-api-stream")),
	})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	worker, err := processors.NewWorker(processors.WorkerConfig{
		Store: store, Executors: processors.JobExecutors(), Group: processors.WorkerGroup(c.Prefix),
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID + "-worker"),
			telemetry.KafkaMetrics(reg, telemetry.KafkaNamespace)},
		Concurrency: cfg.Workers, ExactlyOnce: cfg.ExactlyOnce, Registerer: reg, Logger: log,
	})
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	ln, err := api.Listen(cfg.APIAddr)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	fns := []func(context.Context) error{
		func(ctx context.Context) error { return srv.Serve(ctx, ln) },
		worker.Run,
	}
	if len(cfg.Schedules) > 0 {
		sched := &jobs.Scheduler{Store: store, Schedules: cfg.Schedules, Group: SchedulerGroup(c.Prefix), Logger: log}
		fns = append(fns, sched.Run)
	}
	return fns, closeAll, nil
}

// SchedulerGroup is the consumer group whose one member fires the periodic jobs.
func SchedulerGroup(prefix string) string { return prefix + "scheduler" }

// runDemo publishes synthetic records with injected anomalies until ctx ends.
func runDemo(ctx context.Context, c cluster.Config, topic string, gen producers.SyntheticConfig, rate float64, log *slog.Logger) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID+"-demo"))
	if err != nil {
		return err
	}
	defer cl.Close()
	pub, err := producers.NewPublisher(cl, topic, producers.PublisherOptions{Rate: rate})
	if err != nil {
		return err
	}
	stats, err := pub.Run(ctx, producers.NewSynthetic(gen))
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		err = nil
	}
	log.Info("demo producer stopped", "sent", stats.Sent, "errors", stats.Errors)
	return err
}
