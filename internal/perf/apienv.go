package perf

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/gonomaly/gonomaly/internal/bench"
	"github.com/gonomaly/gonomaly/internal/cluster"
)

// startAPI starts an embedded broker with the job system's topics, a job store and the
// HTTP API serving on loopback, all in this process.
func startAPI(ctx context.Context, log *slog.Logger) (*bench.APIEnv, error) {
	return bench.StartAPI(ctx, bench.APIEnvConfig{
		Cluster:  cluster.Config{Partitions: 8, Prefix: fmt.Sprintf("perfapi%d.", runSeq.Add(1)), Logger: log},
		ClientID: "perf-api",
	})
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
