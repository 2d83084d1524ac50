package bench

import (
	"context"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/broker"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/jobs"
)

// Kafka is a benchmark's Kafka: the configured brokers, or a broker embedded in this
// process when none are, with the cluster's topics created and an admin client
// connected.
type Kafka struct {
	// Cluster is the configuration given to StartKafka, with defaults and (embedded)
	// the broker's address.
	Cluster cluster.Config
	Admin   *kgo.Client
	broker  *broker.Broker
}

// StartKafka starts an embedded broker with c.Partitions partitions unless c names
// brokers, connects an admin client and ensures c's layout.
func StartKafka(ctx context.Context, c cluster.Config) (*Kafka, error) {
	k := &Kafka{Cluster: c.WithDefaults()}
	if len(k.Cluster.Brokers) == 0 {
		b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: int(k.Cluster.Partitions)})
		if err != nil {
			return nil, err
		}
		k.broker = b
		k.Cluster.Brokers = []string{b.Addr()}
	}
	adm, err := cluster.Connect(ctx, k.Cluster, app.ConnectTimeout)
	if err != nil {
		k.Close()
		return nil, err
	}
	k.Admin = adm
	if err := k.Cluster.EnsureLayout(ctx, adm); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// Close closes the admin client, then the embedded broker if there is one.
func (k *Kafka) Close() {
	if k.Admin != nil {
		k.Admin.Close()
	}
	if k.broker != nil {
		k.broker.Close()
	}
}

// OpenStore opens a job store with its own producing client, as a separate API or
// worker process would have; the func closes both.
func OpenStore(ctx context.Context, c cluster.Config, clientID string) (*jobs.Store, func(), error) {
	topics := jobs.TopicsFor(c)
	cl, err := kgo.NewClient(append(api.ProducerOptions(topics), kgo.SeedBrokers(c.Brokers...), kgo.ClientID(clientID))...)
	if err != nil {
		return nil, nil, err
	}
	openCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	store, err := jobs.Open(openCtx, cl, topics, api.NewConsumerFunc(c.Brokers, kgo.ClientID(clientID+"-views")))
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return store, func() { store.Close(); cl.Close() }, nil
}

// APIEnvConfig says what StartAPI starts.
type APIEnvConfig struct {
	// Cluster is the Kafka to use (see StartKafka): with no brokers, an embedded one.
	Cluster cluster.Config
	// ClientID names the job store's Kafka clients.
	ClientID string
	// Keys, if any, are the API keys the server requires.
	Keys []api.Key
}

// APIEnv is the job system's topics, a job store and the HTTP API serving on loopback,
// all in this process (with the broker too unless given brokers). Submitted jobs stay
// queued unless workers are started against Kafka.Cluster.
type APIEnv struct {
	Kafka *Kafka
	Store *jobs.Store
	// Base is http://127.0.0.1:port; the routes are under api.Prefix.
	Base    string
	closers []func()
}

// Defer adds fn to what Close runs; Close runs the last added first.
func (e *APIEnv) Defer(fn func()) { e.closers = append(e.closers, fn) }

// Close stops everything StartAPI started and everything Defer added, in reverse order.
func (e *APIEnv) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// StartAPI starts Kafka as StartKafka does, a job store and the API server on
// 127.0.0.1; the server runs until Close, not until ctx ends.
func StartAPI(ctx context.Context, cfg APIEnvConfig) (_ *APIEnv, err error) {
	e := &APIEnv{}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.Kafka, err = StartKafka(ctx, cfg.Cluster); err != nil {
		return nil, err
	}
	e.Defer(e.Kafka.Close)
	c := e.Kafka.Cluster
	store, closeStore, err := OpenStore(ctx, c, cfg.ClientID)
	if err != nil {
		return nil, err
	}
	e.Defer(closeStore)
	e.Store = store
	srv, err := api.New(api.Config{Client: store.Client, Topics: api.Topics{Records: c.Topic("records")}, Jobs: store, Keys: cfg.Keys, Logger: c.Logger})
	if err != nil {
		return nil, err
	}
	ln, err := api.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	serveCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln) }()
	e.Defer(func() { stop(); <-served })
	e.Base = "http://" + ln.Addr().String()
	return e, nil
}
