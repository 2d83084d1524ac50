package perf

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/api"
	"github.com/gonomaly/gonomaly/internal/bench"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/processors"
)

// queueResult is one worker count's run.
type queueResult struct {
	Workers                  int
	Jobs                     int
	JobsPerSec, SubmitPerSec float64
	Latency, Wait, Exec      Dist
	// Alone is the latency of jobs submitted one at a time, each after the previous
	// finished: the queue's own latency, without a backlog.
	Alone       Dist
	CPUPerJobUs float64
	latencies   []float64
}

func runQueue(ctx context.Context, r *run) error {
	nJobs, nAlone, rows := 1000, 30, 100
	if r.cfg.Short {
		nJobs, nAlone = 40, 5
	}
	var results []queueResult
	for _, n := range []int{1, 2, 4} {
		r.progress("%s, %d jobs one at a time, then %d at once", plural(n, "worker"), nAlone, nJobs)
		res, err := queueRun(ctx, r, n, nAlone, nJobs, rows)
		if err != nil {
			return fmt.Errorf("%s: %w", plural(n, "worker"), err)
		}
		results = append(results, res)
	}
	b := &r.sec.Body
	fmt.Fprintf(b, "An embedded broker, the HTTP API and N job workers in this process (each worker its own job store, Kafka "+
		"clients and member of the workers' group, running one job at a time: N workers are N single-slot `gonomaly worker` "+
		"processes). Detect jobs have %d rows × 3 columns each, rotating iforest with 50 trees, hbos, ecod and knn. First %d "+
		"jobs are submitted over HTTP one at a time, each once the previous finished (**alone**: the queue's latency without a "+
		"backlog); then %d are submitted by 8 concurrent clients as fast as the API takes them, while the workers run them "+
		"(**burst**). Throughput is jobs ÷ (last finish − first submission) in the burst; latency is finish − submission, in "+
		"the burst mostly time queued behind earlier jobs; queue wait is start − submission; run is finish − start (the job "+
		"itself plus its status writes); all from the jobs' `submitted_at`, `started_at` and `finished_at`. CPU per job is "+
		"this whole process's CPU time (broker, API, workers, submitters) in the burst, divided by its jobs.\n", rows, nAlone, nJobs)
	t := newTable("workers", "jobs/s", "vs 1 worker", "jobs/s per worker", "CPU per job", "alone: latency p50", "alone: p99", "burst: latency p50", "p90", "p99", "queue wait p50", "run p50", "run p99", "submitted/s")
	var xs, ys, ideal []float64
	var hists []histSeries
	base := results[0].JobsPerSec
	for _, q := range results {
		t.add(fmt.Sprint(q.Workers), num(q.JobsPerSec), fmt.Sprintf("%.2f×", q.JobsPerSec/base), num(q.JobsPerSec/float64(q.Workers)), usText(q.CPUPerJobUs), ms(q.Alone.P50), ms(q.Alone.P99),
			ms(q.Latency.P50), ms(q.Latency.P90), ms(q.Latency.P99), ms(q.Wait.P50), ms(q.Exec.P50), ms(q.Exec.P99), num(q.SubmitPerSec))
		xs, ys, ideal = append(xs, float64(q.Workers)), append(ys, q.JobsPerSec), append(ideal, base*float64(q.Workers))
		hists = append(hists, histSeries{Name: plural(q.Workers, "worker"), Values: q.latencies})
		r.sec.Summary = append(r.sec.Summary, Row{TypeQueue, "jobs/s, " + plural(q.Workers, "worker"),
			fmt.Sprintf("%s (latency alone p50 %s; in the burst p99 %s)", num(q.JobsPerSec), ms(q.Alone.P50), ms(q.Latency.P99))})
	}
	t.write(b)
	r.plot("queue_throughput.png", func(path string) error {
		return linePlot(path, "Job throughput by workers (one job at a time each)", "workers (log scale)", "jobs/s",
			[]xySeries{{Name: "measured", X: xs, Y: ys}, {Name: "linear from 1 worker", X: xs, Y: ideal, Dashed: true}}, true, false)
	})
	r.plot("queue_latency.png", func(path string) error {
		return latencyHistogram(path, "Job latency, submission to completion, in a burst of jobs", "jobs", hists)
	})
	return nil
}

func queueRun(ctx context.Context, r *run, workers, nAlone, nJobs, rows int) (queueResult, error) {
	env, err := startAPI(ctx, r.log)
	if err != nil {
		return queueResult{}, err
	}
	defer env.Close()
	c := env.Kafka.Cluster
	runCtx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }() // workers stop before their stores and the broker close
	errc := make(chan error, workers)
	for i := range workers {
		store, closeStore, err := bench.OpenStore(ctx, c, fmt.Sprintf("perf-worker-%d", i))
		if err != nil {
			return queueResult{}, err
		}
		env.Defer(closeStore)
		w, err := processors.NewWorker(processors.WorkerConfig{
			Store: store, Types: []jobs.Type{jobs.Detect}, Executors: processors.JobExecutors(),
			Group: processors.WorkerGroup(c.Prefix), ClientOpts: []kgo.Opt{kgo.SeedBrokers(c.Brokers...)},
			Concurrency: 1, ID: fmt.Sprintf("perf-worker-%d", i), Logger: r.log,
		})
		if err != nil {
			return queueResult{}, err
		}
		wg.Go(func() {
			if err := w.Run(runCtx); err != nil && runCtx.Err() == nil {
				errc <- err
			}
		})
	}
	readyCtx, readyCancel := context.WithTimeout(ctx, 2*time.Minute)
	err = waitAssigned(readyCtx, kadm.NewClient(env.Kafka.Admin), int(c.Partitions), errc, processors.WorkerGroup(c.Prefix))
	readyCancel()
	if err != nil {
		return queueResult{}, err
	}

	client := httpClient(8)
	var alone []float64
	for i, body := range detectJobs(nAlone, rows, 3, 1000+uint64(workers)) {
		id, err := submitJob(ctx, client, env.Base+api.Prefix+"/jobs", "", body)
		if err != nil {
			return queueResult{}, err
		}
		sts, err := waitJobs(ctx, env.Store, []string{id}, errc)
		if err != nil {
			return queueResult{}, fmt.Errorf("job %d of %d submitted alone: %w", i+1, nAlone, err)
		}
		alone = append(alone, msBetween(sts[0].SubmittedAt, sts[0].FinishedAt))
	}

	bodies := detectJobs(nJobs, rows, 3, uint64(workers))
	ids := make([]string, nJobs)
	submitStart, cpuStart := time.Now(), bench.ProcessCPU()
	if err := parallel(ctx, 8, nJobs, func(i int) error {
		id, err := submitJob(ctx, client, env.Base+api.Prefix+"/jobs", "", bodies[i])
		ids[i] = id
		return err
	}); err != nil {
		return queueResult{}, err
	}
	submitted := time.Since(submitStart)

	statuses, err := waitJobs(ctx, env.Store, ids, errc)
	if err != nil {
		return queueResult{}, err
	}
	cpu := bench.ProcessCPU() - cpuStart
	res := queueResult{Workers: workers, Jobs: nJobs, SubmitPerSec: float64(nJobs) / submitted.Seconds(),
		CPUPerJobUs: float64(cpu.Microseconds()) / float64(nJobs), Alone: Summarize(alone)}
	var first, last time.Time
	var lat, wait, exec []float64
	for _, st := range statuses {
		if first.IsZero() || st.SubmittedAt.Before(first) {
			first = st.SubmittedAt
		}
		if st.FinishedAt.After(last) {
			last = st.FinishedAt
		}
		lat = append(lat, msBetween(st.SubmittedAt, st.FinishedAt))
		wait = append(wait, msBetween(st.SubmittedAt, st.StartedAt))
		exec = append(exec, msBetween(st.StartedAt, st.FinishedAt))
	}
	res.JobsPerSec = float64(nJobs) / last.Sub(first).Seconds()
	res.latencies = append([]float64(nil), lat...)
	res.Latency, res.Wait, res.Exec = Summarize(lat), Summarize(wait), Summarize(exec)
	return res, nil
}

// waitJobs waits until every job is terminal in the store's view (which the API's
// answers come from) and checks that each succeeded.
func waitJobs(ctx context.Context, store *jobs.Store, ids []string, errc chan error) ([]jobs.Status, error) {
	deadline := time.Now().Add(10 * time.Minute)
	var statuses []jobs.Status
	for {
		statuses = statuses[:0]
		for _, id := range ids {
			if st, ok := store.Statuses.Get(id); ok && st.State.Terminal() {
				statuses = append(statuses, st)
			}
		}
		if len(statuses) == len(ids) {
			break
		}
		// The timestamps in the statuses measure latency, so polling only has to be
		// frequent enough not to stretch the run.
		select {
		case err := <-errc:
			return nil, fmt.Errorf("worker: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d jobs finished after 10 minutes", len(statuses), len(ids))
		}
	}
	for _, st := range statuses {
		if st.State != jobs.Succeeded {
			msg := string(st.State)
			if st.Error != nil {
				msg += ": " + st.Error.Message
			}
			return nil, fmt.Errorf("job %s %s", st.ID, msg)
		}
	}
	return statuses, nil
}

func msBetween(a, b time.Time) float64 { return float64(b.Sub(a).Microseconds()) / 1000 }

// parallel runs fn(0..n-1) on k goroutines; the first error stops the rest.
func parallel(ctx context.Context, k, n int, fn func(i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range k {
		wg.Go(func() {
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first == nil {
		first = ctx.Err()
		if errors.Is(first, context.Canceled) {
			first = nil
		}
	}
	return first
}

// submitJob posts a job and returns its id from the 202 answer.
func submitJob(ctx context.Context, client *http.Client, url, key string, body []byte) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("submit: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("submit: %s: %s", resp.Status, bytes.TrimSpace(data[:min(len(data), 300)]))
	}
	id := bench.StatusID(data)
	if id == "" {
		return "", fmt.Errorf("submit: no job id in %s", bytes.TrimSpace(data[:min(len(data), 300)]))
	}
	return id, nil
}
