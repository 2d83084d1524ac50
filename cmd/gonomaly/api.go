package main

import (
	"context"
	"flag"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/telemetry"
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
	maxBody := fs.Int64("max-body-bytes", api.DefaultMaxBodyBytes, "largest request body")
	maxRows := fs.Int("max-rows", api.DefaultMaxRows, "most rows one POST /detect may score")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return usageErr("--api-addr is required")
	}
	if *maxBody < 1 || *maxRows < 1 {
		return usageErr("--max-body-bytes and --max-rows must be positive")
	}
	cl, c, err := cf.connect(ctx, env, kgo.ClientID("gonomaly-api"))
	if err != nil {
		return err
	}
	defer cl.Close()
	if *createTopics {
		if err := c.EnsureLayout(ctx, cl); err != nil {
			return err
		}
	}
	reg := telemetry.NewRegistry()
	srv, err := api.New(api.Config{
		Client: cl, Topics: api.Topics{Records: c.Topic("records"), Anomalies: c.Topic("anomalies")},
		NewConsumer: api.NewConsumerFunc(c.Brokers, kgo.ClientID("gonomaly-api-stream")),
		Registerer:  reg, Logger: env.log,
		MaxBodyBytes: *maxBody, MaxRows: *maxRows,
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
			return srv.Serve(ctx, ln)
		})
	})
}
