package perf

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/broker"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/jobs"
)

// apiEnv is an embedded broker with the job system's topics, a job store and the HTTP
// API serving on loopback, all in this process.
type apiEnv struct {
	cluster cluster.Config
	store   *jobs.Store
	base    string // http://127.0.0.1:port (routes under api.Prefix)
	closers []func()
}

func (e *apiEnv) Close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
}

// openStore opens a job store with its own producing client, as a separate API or
// worker process would have.
func openStore(ctx context.Context, c cluster.Config, clientID string) (*jobs.Store, func(), error) {
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

func startAPI(ctx context.Context, log *slog.Logger) (_ *apiEnv, err error) {
	e := &apiEnv{}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 8})
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, b.Close)
	e.cluster = cluster.Config{Brokers: []string{b.Addr()}, Partitions: 8, Prefix: fmt.Sprintf("perfapi%d.", runSeq.Add(1)), Logger: log}.WithDefaults()
	adm, err := cluster.Connect(ctx, e.cluster, app.ConnectTimeout)
	if err != nil {
		return nil, err
	}
	err = e.cluster.EnsureLayout(ctx, adm)
	adm.Close()
	if err != nil {
		return nil, err
	}
	store, closeStore, err := openStore(ctx, e.cluster, "perf-api")
	if err != nil {
		return nil, err
	}
	e.closers = append(e.closers, closeStore)
	e.store = store
	srv, err := api.New(api.Config{Client: store.Client, Topics: api.Topics{Records: e.cluster.Topic("records")}, Jobs: store, Logger: log})
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
	e.closers = append(e.closers, func() { stop(); <-served })
	e.base = "http://" + ln.Addr().String()
	return e, nil
}

// detectJobs builds n small detect jobs, each rows×cols of seeded normal values with a
// few outliers, rotating through fast batch algorithms, as JSON bodies of POST /jobs.
func detectJobs(n, rows, cols int, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 11))
	algos := []struct {
		name   string
		params map[string]float64
	}{{"iforest", map[string]float64{"trees": 50}}, {"hbos", nil}, {"ecod", nil}, {"knn", map[string]float64{"n_neighbors": 5}}}
	out := make([][]byte, n)
	for i := range out {
		data := make([][]float64, rows)
		for r := range data {
			data[r] = make([]float64, cols)
			for c := range data[r] {
				data[r][c] = float64(int(rng.NormFloat64()*1000)) / 100
				if rng.IntN(50) == 0 {
					data[r][c] += 8
				}
			}
		}
		a := algos[i%len(algos)]
		job := map[string]any{"type": "detect", "algorithm": a.name, "input": map[string]any{"rows": data}, "seed": i, "contamination": 0.05}
		if a.params != nil {
			job["params"] = a.params
		}
		out[i], _ = json.Marshal(job) // numbers, strings and maps only
	}
	return out
}

// httpClient keeps enough idle connections per host for the concurrency the types use.
func httpClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = conns
	tr.MaxIdleConns = conns
	return &http.Client{Transport: tr, Timeout: time.Minute}
}
