package main

import (
	"context"
	"flag"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/telemetry"
	"github.com/gonomaly/gonomaly/jobs"
)

// cmdAPI serves the HTTP API against a Kafka cluster; API replicas are stateless, so
// any number can run side by side.
func cmdAPI(ctx context.Context, args []string, env *environment) error {
	fs := flag.NewFlagSet("api", flag.ContinueOnError)
	var cf clusterFlags
	cf.register(fs, "Kafka brokers host:port,... (default 127.0.0.1:9092)")
	addr := fs.String("api-addr", "127.0.0.1:8080", "serve the HTTP API (/api/v1) here")
	metricsAddr := fs.String("metrics-addr", "", "serve /metrics, /healthz, /debug/pprof here")
	createTopics := fs.Bool("create-topics", true, "create missing topics at start")
	maxBody := fs.Int64("max-body-bytes", api.DefaultMaxBodyBytes, "largest request body (POST /datasets has its own limit)")
	maxDataset := fs.Int64("max-dataset-bytes", api.DefaultMaxDatasetBytes, "largest POST /datasets body")
	maxRows := fs.Int("max-rows", api.DefaultMaxRows, "most rows one POST /detect may score")
	detectTimeout := fs.Duration("detect-timeout", api.DefaultDetectTimeout, "work budget of one POST /detect; longer work gets 422 (submit a job instead)")
	var af accessFlags
	af.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return usageErr("--api-addr is required")
	}
	if *maxBody < 1 || *maxRows < 1 || *maxDataset < 1 || *detectTimeout <= 0 {
		return usageErr("--max-body-bytes, --max-dataset-bytes, --max-rows and --detect-timeout must be positive")
	}
	keys, scheds, err := af.load()
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		env.log.Warn("no API keys configured: anyone who reaches the API may submit jobs and read results (set GONOMALY_API_KEYS or --api-keys-file)")
	} else {
		env.log.Info("API keys loaded", "keys", len(keys))
	}

	reg := telemetry.NewRegistry()
	store, c, closeStore, err := openJobStore(ctx, &cf, env, "gonomaly-api", *createTopics, telemetry.KafkaMetrics(reg, telemetry.KafkaNamespace))
	if err != nil {
		return err
	}
	defer closeStore() // after the server: in-flight requests read the views to the end
	cl := store.Client
	env.log.Info("job statuses recovered", "jobs", store.Statuses.Len())

	srv, err := api.New(api.Config{
		Client: cl, Topics: api.Topics{Records: c.Topic("records"), Anomalies: c.Topic("anomalies")},
		NewConsumer: api.NewConsumerFunc(c.Brokers, kgo.ClientID("gonomaly-api-stream")),
		Jobs:        store,
		Registerer:  reg, Logger: env.log,
		Keys: keys, RateLimit: af.rateLimit, RateBurst: af.rateBurst,
		MaxBodyBytes: *maxBody, MaxDatasetBytes: *maxDataset, MaxRows: *maxRows, DetectTimeout: *detectTimeout,
	})
	if err != nil {
		return err
	}
	ln, err := api.Listen(*addr)
	if err != nil {
		return err
	}
	return untilDone(ctx, env.log, func(ctx context.Context) error {
		return withMetrics(ctx, env, *metricsAddr, reg, func(ctx context.Context) error {
			if len(scheds) == 0 {
				return srv.Serve(ctx, ln)
			}
			sched := &jobs.Scheduler{Store: store, Schedules: scheds, Group: app.SchedulerGroup(c.Prefix), Logger: env.log}
			schedCtx, stopSched := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); sched.Run(schedCtx) }()
			err := srv.Serve(ctx, ln)
			stopSched()
			<-done // it leaves the group before the store it submits through closes
			return err
		})
	})
}

// accessFlags are the API's keys, rate limit and schedules, which `api` and `run` both take.
type accessFlags struct {
	keysInline, keysFile, schedules string
	rateLimit                       float64
	rateBurst                       int
}

func (f *accessFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.keysInline, "api-keys", "", "API keys as name:role:secret,... (role read or submit); prefer the env GONOMALY_API_KEYS to keep secrets out of ps")
	fs.StringVar(&f.keysFile, "api-keys-file", "", "file of API keys, one \"name role secret\" a line (# comments); with neither, the API is open")
	fs.Float64Var(&f.rateLimit, "rate-limit", 0, "requests/s per API key (per client address without keys); 0: unlimited")
	fs.IntVar(&f.rateBurst, "rate-burst", 0, "burst of --rate-limit (0: one second's worth)")
	fs.StringVar(&f.schedules, "schedules", "", "YAML file of periodic jobs (cron); every replica may load it, one fires them")
}

// load checks the limits and reads the keys and the schedules file.
func (f *accessFlags) load() ([]api.Key, []jobs.Schedule, error) {
	if f.rateLimit < 0 || f.rateBurst < 0 {
		return nil, nil, usageErr("--rate-limit and --rate-burst must not be negative")
	}
	scheds, err := loadSchedules(f.schedules)
	if err != nil {
		return nil, nil, err
	}
	keys, err := loadAPIKeys(f.keysInline, f.keysFile)
	if err != nil {
		return nil, nil, err
	}
	return keys, scheds, nil
}

// loadAPIKeys reads the keys of --api-keys (GONOMALY_API_KEYS) and --api-keys-file;
// both may be given.
func loadAPIKeys(inline, path string) ([]api.Key, error) {
	keys, err := api.ParseKeys(inline)
	if err != nil {
		return nil, usageErr("--api-keys (GONOMALY_API_KEYS): %v", err)
	}
	if path != "" {
		fromFile, err := api.LoadKeys(path)
		if err != nil {
			return nil, usageErr("--api-keys-file: %v", err)
		}
		keys = append(keys, fromFile...)
	}
	if err := api.CheckKeys(keys); err != nil {
		return nil, usageErr("--api-keys and --api-keys-file together: %v", err)
	}
	return keys, nil
}

// openJobStore connects as clientID, creates the topic layout if asked, and opens the job
// store with its views caught up: what the API and a worker both start with. The client
// allows the sizes of models and of jobs with inline rows. closeStore releases both.
func openJobStore(ctx context.Context, cf *clusterFlags, env *environment, clientID string, createTopics bool, extra ...kgo.Opt) (*jobs.Store, cluster.Config, func(), error) {
	c, err := cf.config(env)
	if err != nil {
		return nil, c, nil, err
	}
	topics := jobs.TopicsFor(c)
	cl, c, err := cf.connect(ctx, env, append(append(api.ProducerOptions(topics), kgo.ClientID(clientID)), extra...)...)
	if err != nil {
		return nil, c, nil, err
	}
	if createTopics {
		if err := c.EnsureLayout(ctx, cl); err != nil {
			cl.Close()
			return nil, c, nil, err
		}
	}
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	store, err := jobs.Open(openCtx, cl, topics, api.NewConsumerFunc(c.Brokers, kgo.ClientID(clientID+"-views")))
	cancel()
	if err != nil {
		cl.Close()
		return nil, c, nil, err
	}
	return store, c, func() { store.Close(); cl.Close() }, nil
}
