package processors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/goleak"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/jobs"
	"github.com/gonomaly/gonomaly/processors"
)

// jobsFixture is a broker with the job topics, and an "API" store that submits jobs and
// watches their statuses through Kafka, as an API replica would.
type jobsFixture struct {
	brokers []string
	topics  jobs.Topics
	group   string
	api     *jobs.Store
	// readCommitted: the stores' views read jobs.status read_committed, as
	// api.NewConsumerFunc's do (exactly-once workers write statuses in transactions).
	readCommitted bool
}

func newJobsFixture(t *testing.T) *jobsFixture {
	t.Helper()
	return newJobsFixtureWith(t, false)
}

func newJobsFixtureWith(t *testing.T, readCommitted bool) *jobsFixture {
	t.Helper()
	// Registered first, so it runs last: after every worker, store and the broker
	// stopped, nothing the test started may be left running.
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
	brokers := testkit.Brokers(t)
	cfg := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cfg.EnsureLayout(ctx, testkit.Client(t, brokers)); err != nil {
		t.Fatal(err)
	}
	f := &jobsFixture{brokers: brokers, topics: jobs.TopicsFor(cfg), group: processors.WorkerGroup(cfg.Prefix), readCommitted: readCommitted}
	f.api = f.openStore(t)
	return f
}

func (f *jobsFixture) openStore(t *testing.T) *jobs.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := []kgo.Opt{kgo.SeedBrokers(f.brokers...), kgo.FetchMaxWait(100 * time.Millisecond)}
	if f.readCommitted {
		base = append(base, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	}
	newConsumer := func(opts ...kgo.Opt) (*kgo.Client, error) {
		return kgo.NewClient(append(slices.Clone(base), opts...)...)
	}
	s, err := jobs.Open(ctx, testkit.Client(t, f.brokers), f.topics, newConsumer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// runningWorker is a Worker running on its own store until stop.
type runningWorker struct {
	w     *processors.Worker
	store *jobs.Store
	reg   *prometheus.Registry
	stop  func()
}

func (f *jobsFixture) startWorker(t *testing.T, execs map[jobs.Type]jobs.Executor, edit func(*processors.WorkerConfig)) *runningWorker {
	t.Helper()
	store := f.openStore(t)
	reg := prometheus.NewRegistry()
	cfg := processors.WorkerConfig{
		Store: store, Executors: execs, ClientOpts: []kgo.Opt{kgo.SeedBrokers(f.brokers...)},
		Concurrency: 2, RetryBackoff: 50 * time.Millisecond, WatchInterval: 50 * time.Millisecond,
		ProgressInterval: 50 * time.Millisecond, Registerer: reg,
	}
	if edit != nil {
		edit(&cfg)
	}
	w, err := processors.NewWorker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	rw := &runningWorker{w: w, store: store, reg: reg}
	rw.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("worker %s: %v", w.ID(), err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("worker %s did not stop within 20s", w.ID())
			}
		})
	}
	t.Cleanup(rw.stop)
	return rw
}

func (f *jobsFixture) submit(t *testing.T, job jobs.Job) jobs.Status {
	t.Helper()
	if job.Input.Dataset == "" && job.Input.Rows == nil {
		job.Input.Rows = [][]float64{{1}, {2}, {3}}
	}
	if job.Algorithm == "" && job.Type == jobs.Detect {
		job.Algorithm = "ecod"
	}
	if err := jobs.Validate(job); err != nil {
		t.Fatal(err)
	}
	st, err := f.api.Submit(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// waitStatus polls the API store's view until cond holds.
func (f *jobsFixture) waitStatus(t *testing.T, id string, within time.Duration, what string, cond func(jobs.Status) bool) jobs.Status {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st, _ := f.api.Statuses.Get(id)
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: not %s within %s; status %+v", id, what, within, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *jobsFixture) waitEnd(t *testing.T, id string, within time.Duration) jobs.Status {
	t.Helper()
	return f.waitStatus(t, id, within, "ended", func(st jobs.Status) bool { return st.State.Terminal() })
}

// committed sums the group's committed offsets on a queue topic.
func (f *jobsFixture) committed(t *testing.T, topic string) int64 {
	t.Helper()
	adm := kadm.NewClient(testkit.Client(t, f.brokers))
	offs, err := adm.FetchOffsets(context.Background(), f.group)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) {
		if o.Topic == topic && o.At > 0 {
			sum += o.At
		}
	})
	return sum
}

func (f *jobsFixture) waitCommitted(t *testing.T, topic string, want int64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := f.committed(t, topic)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("committed offsets of %s sum to %d, want %d", topic, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// executions counts executor runs per job id.
type executions struct {
	mu    sync.Mutex
	runs  map[string]int
	ended map[string]int // runs that returned nil
}

func newExecutions() *executions {
	return &executions{runs: map[string]int{}, ended: map[string]int{}}
}

func (e *executions) start(id string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runs[id]++
	return e.runs[id]
}

func (e *executions) succeed(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ended[id]++
}

func (e *executions) counts(id string) (runs, succeeded int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[id], e.ended[id]
}

// sleeper runs for the job's rows × step, reporting progress after each row; "fail"
// columns make it fail: Columns[0] = "transient-N" fails the first N attempts
// transiently, "permanent" always.
func sleeper(ex *executions, step time.Duration) jobs.Executor {
	return func(ctx context.Context, run jobs.Run) (jobs.Summary, error) {
		n := ex.start(run.Job.ID)
		if cols := run.Job.Input.Columns; len(cols) > 0 {
			var k int
			if _, err := fmt.Sscanf(cols[0], "transient-%d", &k); err == nil && n <= k {
				return jobs.Summary{}, jobs.Transient(fmt.Errorf("broker away (attempt %d)", run.Attempt))
			}
			if cols[0] == "permanent" {
				return jobs.Summary{}, errors.New("column x is not numeric")
			}
		}
		rows := len(run.Job.Input.Rows)
		for i := range rows {
			select {
			case <-ctx.Done():
				return jobs.Summary{}, ctx.Err()
			case <-time.After(step):
			}
			run.Progress(float64(i+1)/float64(rows), fmt.Sprintf("row %d of %d", i+1, rows))
		}
		ex.succeed(run.Job.ID)
		return jobs.Summary{Rows: rows, Columns: len(run.Job.Input.Rows[0])}, nil
	}
}

func rowsOf(n int) [][]float64 {
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = []float64{float64(i)}
	}
	return rows
}

func TestWorkerRunsAJobToSuccessAndCommitsIt(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	w := f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 100*time.Millisecond)}, nil)
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(8)}})

	running := f.waitStatus(t, st.ID, 20*time.Second, "running with progress", func(s jobs.Status) bool {
		return s.State == jobs.Running && s.Progress > 0 && s.Progress < 1
	})
	if running.Worker != w.w.ID() || running.Attempt != 1 || running.StartedAt.IsZero() || !strings.HasPrefix(running.Message, "row ") {
		t.Errorf("running status %+v", running)
	}
	end := f.waitEnd(t, st.ID, 20*time.Second)
	if end.State != jobs.Succeeded || end.Progress != 1 || end.Result == nil || end.Result.Rows != 8 || end.Result.Columns != 1 || end.Error != nil {
		t.Fatalf("end status %+v", end)
	}
	if end.FinishedAt.Before(end.StartedAt) || end.Job.Input.InlineRows != 8 {
		t.Errorf("timings or job of %+v", end)
	}
	f.waitCommitted(t, f.topics.Detect, 1, 10*time.Second)
	if runs, ok := ex.counts(st.ID); runs != 1 || ok != 1 {
		t.Errorf("runs %d, succeeded %d", runs, ok)
	}
	if got := metricValue(t, w.reg, "gonomaly_worker_jobs_finished_total", "type", "detect", "state", "succeeded"); got != 1 {
		t.Errorf("finished{succeeded} = %v", got)
	}
	if got := metricValue(t, w.reg, "gonomaly_worker_jobs_running", "type", "detect"); got != 0 {
		t.Errorf("running = %v after the job", got)
	}
}

// metricValue reads one labelled series of a registered counter, gauge (or a
// histogram's count) through the registry, 0 when absent.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, fam := range families {
		if fam.GetName() != name {
			continue
		}
	series:
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue series
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
		}
	}
	return 0
}

func TestWorkerRetriesTransientFailuresThenSucceeds(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	w := f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, time.Millisecond)}, nil)
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: [][]float64{{1}}, Columns: []string{"transient-2"}}})
	end := f.waitEnd(t, st.ID, 20*time.Second)
	if end.State != jobs.Succeeded || end.Attempt != 3 || end.Error != nil {
		t.Fatalf("end status %+v: want succeeded on attempt 3", end)
	}
	if runs, _ := ex.counts(st.ID); runs != 3 {
		t.Errorf("runs %d, want 3", runs)
	}
	if got := metricValue(t, w.reg, "gonomaly_worker_job_retries_total", "type", "detect"); got != 2 {
		t.Errorf("retries = %v, want 2", got)
	}

	// More transient failures than attempts: failed, marked transient, after max_attempts.
	st = f.submit(t, jobs.Job{Type: jobs.Detect, MaxAttempts: 2, Input: jobs.Input{Rows: [][]float64{{1}}, Columns: []string{"transient-5"}}})
	end = f.waitEnd(t, st.ID, 20*time.Second)
	if end.State != jobs.Failed || end.Attempt != 2 || end.Error == nil || !end.Error.Transient || !strings.Contains(end.Error.Message, "attempt 2 of 2 failed: broker away") {
		t.Fatalf("end status %+v, error %+v", end, end.Error)
	}
	f.waitCommitted(t, f.topics.Detect, 2, 10*time.Second)
}

func TestWorkerDoesNotRetryPermanentFailures(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, time.Millisecond)}, nil)
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: [][]float64{{1}}, Columns: []string{"permanent"}}})
	end := f.waitEnd(t, st.ID, 20*time.Second)
	if end.State != jobs.Failed || end.Attempt != 1 || end.Error == nil || end.Error.Transient || end.Error.Message != "column x is not numeric" {
		t.Fatalf("end status %+v, error %+v", end, end.Error)
	}
	if runs, _ := ex.counts(st.ID); runs != 1 {
		t.Errorf("runs %d, want 1", runs)
	}
	f.waitCommitted(t, f.topics.Detect, 1, 10*time.Second)
}

func TestWorkerRecoversAPanickingExecutor(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	calls := atomic.Int32{}
	panicky := func(ctx context.Context, run jobs.Run) (jobs.Summary, error) {
		if calls.Add(1) == 1 {
			panic("index out of range")
		}
		return sleeper(ex, time.Millisecond)(ctx, run)
	}
	f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: panicky}, nil)
	bad := f.submit(t, jobs.Job{Type: jobs.Detect})
	if end := f.waitEnd(t, bad.ID, 20*time.Second); end.State != jobs.Failed || !strings.Contains(end.Error.Message, "panicked: index out of range") {
		t.Fatalf("end status %+v", end)
	}
	good := f.submit(t, jobs.Job{Type: jobs.Detect})
	if end := f.waitEnd(t, good.ID, 20*time.Second); end.State != jobs.Succeeded {
		t.Fatalf("the worker did not survive the panic: %+v", end)
	}
}

func TestWorkerCancelsARunningJobWithinASecond(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	// The production watch interval: the test measures what users get.
	f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 100*time.Millisecond)}, func(c *processors.WorkerConfig) {
		c.WatchInterval = processors.DefaultWatchInterval
	})
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(600)}}) // 60 s
	f.waitStatus(t, st.ID, 20*time.Second, "running", func(s jobs.Status) bool { return s.State == jobs.Running && s.Progress > 0 })

	asked := time.Now()
	got, err := f.api.Cancel(context.Background(), st.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != jobs.Running || !got.CancelRequested {
		t.Fatalf("right after the cancel request: %+v", got)
	}
	end := f.waitEnd(t, st.ID, 5*time.Second)
	took := time.Since(asked)
	t.Logf("cancelled %s after the request", took.Round(time.Millisecond))
	if end.State != jobs.Cancelled || end.FinishedAt.IsZero() || !end.CancelRequested {
		t.Fatalf("end status %+v", end)
	}
	if took > time.Second {
		t.Errorf("cancel took %s, want ≤ 1s", took)
	}
	if _, ok := ex.counts(st.ID); ok != 0 {
		t.Errorf("the cancelled job ran to completion")
	}
	f.waitCommitted(t, f.topics.Detect, 1, 10*time.Second)
}

func TestWorkerFailsAJobThatTimesOut(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 100*time.Millisecond)}, nil)
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Timeout: jobs.Duration(300 * time.Millisecond), Input: jobs.Input{Rows: rowsOf(100)}})
	end := f.waitEnd(t, st.ID, 20*time.Second)
	if end.State != jobs.Failed || end.Error == nil || !strings.Contains(end.Error.Message, "timed out after 300ms") || end.Attempt != 1 {
		t.Fatalf("end status %+v, error %+v", end, end.Error)
	}
	if d := end.FinishedAt.Sub(end.StartedAt); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("ran for %s, want about 300ms", d)
	}
	f.waitCommitted(t, f.topics.Detect, 1, 10*time.Second)
}

func TestWorkerSkipsAJobCancelledWhileQueued(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	// Cancelled before any worker runs: the worker starts afterwards.
	st := f.submit(t, jobs.Job{Type: jobs.Detect})
	if got, err := f.api.Cancel(context.Background(), st.ID); err != nil || got.State != jobs.Cancelled {
		t.Fatalf("cancel of a queued job: %+v, %v", got, err)
	}
	after := f.submit(t, jobs.Job{Type: jobs.Detect})
	w := f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, time.Millisecond)}, nil)
	if end := f.waitEnd(t, after.ID, 20*time.Second); end.State != jobs.Succeeded {
		t.Fatalf("the job after: %+v", end)
	}
	f.waitCommitted(t, f.topics.Detect, 2, 10*time.Second)
	if runs, _ := ex.counts(st.ID); runs != 0 {
		t.Fatalf("the cancelled job ran %d times", runs)
	}
	if end, _ := f.api.Statuses.Get(st.ID); end.State != jobs.Cancelled || end.Message != "cancelled before it started" {
		t.Fatalf("the cancelled job's status changed: %+v", end)
	}
	if got := metricValue(t, w.reg, "gonomaly_worker_jobs_skipped_total", "reason", "cancelled"); got != 1 {
		t.Errorf("skipped{cancelled} = %v", got)
	}
}

func TestWorkerSlotsBoundConcurrentJobs(t *testing.T) {
	f := newJobsFixture(t)
	var now, peak atomic.Int32
	ex := newExecutions()
	inner := sleeper(ex, 50*time.Millisecond)
	counting := func(ctx context.Context, run jobs.Run) (jobs.Summary, error) {
		n := now.Add(1)
		defer now.Add(-1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		return inner(ctx, run)
	}
	f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: counting}, func(c *processors.WorkerConfig) { c.Concurrency = 3 })
	var ids []string
	for range 9 {
		ids = append(ids, f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(4)}}).ID)
	}
	for _, id := range ids {
		if end := f.waitEnd(t, id, 30*time.Second); end.State != jobs.Succeeded {
			t.Fatalf("job %s: %+v", id, end)
		}
	}
	if p := peak.Load(); p != 3 {
		t.Errorf("at most %d jobs ran at once, want 3", p)
	}
	f.waitCommitted(t, f.topics.Detect, 9, 10*time.Second)
}

func TestTwoWorkersShareTheJobs(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	execs := map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 20*time.Millisecond)}
	one := f.startWorker(t, execs, func(c *processors.WorkerConfig) { c.Concurrency = 1 })
	two := f.startWorker(t, execs, func(c *processors.WorkerConfig) { c.Concurrency = 1 })
	waitGroupMembers(t, f, 2)
	var ids []string
	for range 12 {
		ids = append(ids, f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(5)}}).ID)
	}
	by := map[string]int{}
	for _, id := range ids {
		end := f.waitEnd(t, id, 30*time.Second)
		if end.State != jobs.Succeeded {
			t.Fatalf("job %s: %+v", id, end)
		}
		by[end.Worker]++
		if runs, _ := ex.counts(id); runs != 1 {
			t.Errorf("job %s ran %d times", id, runs)
		}
	}
	t.Logf("jobs per worker: %v", by)
	if by[one.w.ID()] == 0 || by[two.w.ID()] == 0 || by[one.w.ID()]+by[two.w.ID()] != 12 {
		t.Fatalf("jobs per worker %v: want both workers to run some", by)
	}
	f.waitCommitted(t, f.topics.Detect, 12, 10*time.Second)
}

func waitGroupMembers(t *testing.T, f *jobsFixture, n int) {
	t.Helper()
	adm := kadm.NewClient(testkit.Client(t, f.brokers))
	deadline := time.Now().Add(30 * time.Second)
	for {
		described, err := adm.DescribeGroups(context.Background(), f.group)
		if err == nil {
			g := described[f.group]
			assigned := 0
			g.AssignedPartitions().Each(func(string, int32) { assigned++ })
			if g.State == "Stable" && len(g.Members) == n && assigned == 2 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s did not settle with %d members: %+v, %v", f.group, n, described, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A worker stopped mid-job records no outcome and commits nothing; another worker of
// the group runs the job again from the uncommitted offset, and it completes once.
func TestAStoppedWorkersJobIsFinishedByAnotherOnce(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	execs := map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 50*time.Millisecond)}
	first := f.startWorker(t, execs, nil)
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(40)}}) // 2 s
	f.waitStatus(t, st.ID, 20*time.Second, "running on the first worker", func(s jobs.Status) bool {
		return s.State == jobs.Running && s.Worker == first.w.ID() && s.Progress > 0
	})
	first.stop()
	if got := f.committed(t, f.topics.Detect); got != 0 {
		t.Fatalf("the stopped worker committed %d", got)
	}
	back := f.waitStatus(t, st.ID, 5*time.Second, "back in the queue", func(s jobs.Status) bool { return s.State == jobs.Queued })
	if back.Attempt != 0 || !strings.Contains(back.Message, "back in the queue") {
		t.Errorf("released status %+v", back)
	}

	second := f.startWorker(t, execs, nil)
	end := f.waitEnd(t, st.ID, 30*time.Second)
	if end.State != jobs.Succeeded || end.Worker != second.w.ID() || end.Attempt != 1 {
		t.Fatalf("end status %+v", end)
	}
	f.waitCommitted(t, f.topics.Detect, 1, 10*time.Second)
	if runs, ok := ex.counts(st.ID); runs != 2 || ok != 1 {
		t.Fatalf("runs %d, completed %d: want 2 runs, 1 completion", runs, ok)
	}
}

// A worker that dies without a word (its status says running, it is no longer in the
// group) loses the job to the next worker, which counts the lost attempt.
func TestADeadWorkersJobIsTakenOver(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	// What a worker killed mid-job leaves behind: a running status, nothing committed.
	die := func(job jobs.Job, worker string, cancelRequested bool) string {
		st := f.submit(t, job)
		st.State, st.Worker, st.Attempt, st.StartedAt = jobs.Running, worker, 1, time.Now().UTC()
		st.CancelRequested = cancelRequested
		if err := f.api.PublishStatus(context.Background(), st); err != nil {
			t.Fatal(err)
		}
		return st.ID
	}
	retried := die(jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(2)}}, "killed-worker-1", false)
	// Its last allowed attempt lost: the job fails instead of killing worker after worker.
	poison := die(jobs.Job{Type: jobs.Detect, MaxAttempts: 1}, "killed-worker-2", false)
	// Cancelled while it ran on the worker that died: it is not run again.
	unwanted := die(jobs.Job{Type: jobs.Detect}, "killed-worker-3", true)

	w := f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, time.Millisecond)}, nil)
	end := f.waitEnd(t, retried, 30*time.Second)
	if end.State != jobs.Succeeded || end.Worker != w.w.ID() || end.Attempt != 2 {
		t.Fatalf("end status %+v", end)
	}
	end = f.waitEnd(t, poison, 30*time.Second)
	if end.State != jobs.Failed || end.Error == nil || !strings.Contains(end.Error.Message, "worker killed-worker-2 stopped during attempt 1 of 1") {
		t.Fatalf("end status %+v", end)
	}
	if runs, _ := ex.counts(poison); runs != 0 {
		t.Fatalf("ran %d times", runs)
	}
	end = f.waitEnd(t, unwanted, 30*time.Second)
	if end.State != jobs.Cancelled || end.Message != "cancelled before it ran again" {
		t.Fatalf("end status %+v", end)
	}
	if runs, _ := ex.counts(unwanted); runs != 0 {
		t.Fatalf("the cancelled job ran %d times", runs)
	}
	f.waitCommitted(t, f.topics.Detect, 3, 10*time.Second)
}

// While its worker is alive, a running job is awaited, not run twice, by a worker that
// gets its partition.
func TestAJobRunningOnALiveWorkerIsAwaited(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	execs := map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, time.Millisecond)}
	other := f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Train: sleeper(ex, time.Millisecond)}, nil) // a live member
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(2)}})
	running, _ := f.api.Statuses.Get(st.ID)
	running.State, running.Worker, running.Attempt = jobs.Running, other.w.ID(), 1
	if err := f.api.PublishStatus(context.Background(), running); err != nil {
		t.Fatal(err)
	}
	f.startWorker(t, execs, nil)
	time.Sleep(1500 * time.Millisecond)
	if runs, _ := ex.counts(st.ID); runs != 0 {
		t.Fatalf("the job ran while its worker is alive")
	}
	if got := f.committed(t, f.topics.Detect); got != 0 {
		t.Fatalf("committed %d before the job ended", got)
	}
	// The other worker records the end: the awaiting worker commits without running it.
	running.State, running.Result = jobs.Succeeded, &jobs.Summary{Rows: 2}
	if err := f.api.PublishStatus(context.Background(), running); err != nil {
		t.Fatal(err)
	}
	f.waitCommitted(t, f.topics.Detect, 1, 10*time.Second)
	if runs, _ := ex.counts(st.ID); runs != 0 {
		t.Fatalf("the job ran %d times after it ended elsewhere", runs)
	}
}

func TestNewWorkerChecksItsConfig(t *testing.T) {
	store := &jobs.Store{Topics: jobs.TopicsFor(cluster.Config{})}
	exec := func(context.Context, jobs.Run) (jobs.Summary, error) { return jobs.Summary{}, nil }
	for name, cfg := range map[string]processors.WorkerConfig{
		"no store":       {Executors: map[jobs.Type]jobs.Executor{jobs.Detect: exec}},
		"no executors":   {Store: store},
		"no executor":    {Store: store, Types: []jobs.Type{jobs.Train}, Executors: map[jobs.Type]jobs.Executor{jobs.Detect: exec}},
		"unknown type":   {Store: store, Types: []jobs.Type{"sort"}, Executors: map[jobs.Type]jobs.Executor{"sort": exec}},
		"duplicate regs": {Store: store, Executors: map[jobs.Type]jobs.Executor{jobs.Detect: exec}, Registerer: dupRegistry()},
	} {
		if _, err := processors.NewWorker(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	w, err := processors.NewWorker(processors.WorkerConfig{Store: store, Executors: map[jobs.Type]jobs.Executor{jobs.Detect: exec}})
	if err != nil || w.Group() != "gonomaly.workers" || w.ID() == "" {
		t.Fatalf("defaults: %v, group %q, id %q", err, w.Group(), w.ID())
	}
}

func dupRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gonomaly_worker_jobs_started_total", Help: "x"}, []string{"type"}))
	return reg
}

// Queue records that can never run (not a job, a job on the wrong queue, an invalid
// job) fail with a reason and are committed; the worker goes on.
func TestWorkerFailsJobsThatCannotRun(t *testing.T) {
	f := newJobsFixture(t)
	ex := newExecutions()
	ctx := context.Background()
	put := func(id string, value []byte) {
		t.Helper()
		st := jobs.Status{ID: id, Type: jobs.Detect, State: jobs.Queued, SubmittedAt: time.Now().UTC()}
		if err := f.api.PublishStatus(ctx, st); err != nil {
			t.Fatal(err)
		}
		if err := f.api.Client.ProduceSync(ctx, &kgo.Record{Topic: f.topics.Detect, Key: []byte(id), Value: value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	put("job_garbage", []byte("not a job"))
	put("job_misfiled", []byte(`{"id":"job_misfiled","type":"ensemble","detectors":[{"algorithm":"hbos"}],"input":{"rows":[[1]]}}`))
	put("job_invalid", []byte(`{"id":"job_invalid","type":"detect","algorithm":"magic","input":{"rows":[[1]]}}`))
	good := f.submit(t, jobs.Job{Type: jobs.Detect})
	f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, time.Millisecond)}, nil)

	for id, want := range map[string]string{
		"job_garbage":  "cannot be decoded",
		"job_misfiled": `a "ensemble" job on the detect queue`,
		"job_invalid":  `invalid job: algorithm: unknown detector "magic"`,
	} {
		end := f.waitEnd(t, id, 20*time.Second)
		if end.State != jobs.Failed || end.Error == nil || !strings.Contains(end.Error.Message, want) {
			t.Errorf("%s: %+v, error %+v; want failed with %q", id, end, end.Error, want)
		}
	}
	if end := f.waitEnd(t, good.ID, 20*time.Second); end.State != jobs.Succeeded {
		t.Fatalf("the good job: %+v", end)
	}
	f.waitCommitted(t, f.topics.Detect, 4, 10*time.Second)
	if runs, _ := ex.counts("job_misfiled"); runs != 0 {
		t.Errorf("the misfiled job ran")
	}
}

// statusRecords reads every record of jobs.status up to its end, transaction markers
// included, with the given isolation level.
func (f *jobsFixture) statusRecords(t *testing.T, level kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ends, err := kadm.NewClient(testkit.Client(t, f.brokers)).ListEndOffsets(ctx, f.topics.Status)
	if err != nil {
		t.Fatal(err)
	}
	cl := testkit.Client(t, f.brokers, kgo.ConsumeTopics(f.topics.Status), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(level), kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond))
	next := map[int32]int64{}
	behind := func() bool {
		b := false
		ends.Each(func(o kadm.ListedOffset) { b = b || next[o.Partition] < o.Offset })
		return b
	}
	var recs []*kgo.Record
	for behind() {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("jobs.status not read to its end: at %v, end %v", next, ends)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			recs = append(recs, r)
			next[r.Partition] = r.Offset + 1
		})
	}
	return recs
}

// terminalRecords are the records of jobs.status that end job id.
func terminalRecords(t *testing.T, recs []*kgo.Record, id string) []*kgo.Record {
	t.Helper()
	var out []*kgo.Record
	for _, r := range recs {
		if r.Attrs.IsControl() || string(r.Key) != id {
			continue
		}
		var st jobs.Status
		if err := json.Unmarshal(r.Value, &st); err != nil {
			t.Fatal(err)
		}
		if st.State.Terminal() {
			out = append(out, r)
		}
	}
	return out
}

func exactlyOnce(c *processors.WorkerConfig) { c.ExactlyOnce = true }

// An exactly-once worker writes each job's terminal status in the transaction that
// commits the job's offset: the status records are transactional (the running ones
// are not), a read_committed view sees them, and the offsets move with them.
func TestExactlyOnceWorkerEndsJobsInTransactions(t *testing.T) {
	f := newJobsFixtureWith(t, true)
	ex := newExecutions()
	w := f.startWorker(t, map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 10*time.Millisecond)}, exactlyOnce)
	var ids []string
	for range 4 {
		ids = append(ids, f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(3)}}).ID)
	}
	for _, id := range ids {
		end := f.waitEnd(t, id, 20*time.Second)
		if end.State != jobs.Succeeded || end.Worker != w.w.ID() || end.Attempt != 1 || end.Result == nil || end.Result.Rows != 3 {
			t.Fatalf("end status %+v", end)
		}
		if runs, ok := ex.counts(id); runs != 1 || ok != 1 {
			t.Errorf("job %s: runs %d, succeeded %d", id, runs, ok)
		}
	}
	f.waitCommitted(t, f.topics.Detect, 4, 10*time.Second)
	t.Logf("transactions: %v committed, %v aborted, %v failed",
		metricValue(t, w.reg, "gonomaly_worker_transactions_total", "result", "committed"),
		metricValue(t, w.reg, "gonomaly_worker_transactions_total", "result", "aborted"),
		metricValue(t, w.reg, "gonomaly_worker_transactions_total", "result", "failed"))

	recs := f.statusRecords(t, kgo.ReadUncommitted())
	markers := 0
	for _, r := range recs {
		if r.Attrs.IsControl() {
			markers++
			continue
		}
		var st jobs.Status
		if err := json.Unmarshal(r.Value, &st); err != nil {
			t.Fatal(err)
		}
		if st.State.Terminal() != r.Attrs.IsTransactional() {
			t.Errorf("job %s: a %s status, transactional %v", st.ID, st.State, r.Attrs.IsTransactional())
		}
	}
	if markers < 4 {
		t.Errorf("%d transaction markers on jobs.status, want at least 4", markers)
	}
	committed := f.statusRecords(t, kgo.ReadCommitted())
	for _, id := range ids {
		if n := len(terminalRecords(t, committed, id)); n != 1 {
			t.Errorf("job %s: %d terminal statuses read committed, want 1", id, n)
		}
	}
}

// An exactly-once worker killed mid-job commits nothing and writes no outcome;
// another takes the job over (its worker left the group), counts the lost attempt,
// and ends it once.
func TestExactlyOnceKilledWorkersJobIsFinishedOnceByAnother(t *testing.T) {
	f := newJobsFixtureWith(t, true)
	ex := newExecutions()
	execs := map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 25*time.Millisecond)}
	first := f.startWorker(t, execs, exactlyOnce)
	st := f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(40)}}) // 1 s
	f.waitStatus(t, st.ID, 20*time.Second, "running on the first worker", func(s jobs.Status) bool {
		return s.State == jobs.Running && s.Worker == first.w.ID() && s.Progress > 0
	})
	processors.KillWorker(first.w)
	first.stop()
	if got := f.committed(t, f.topics.Detect); got != 0 {
		t.Fatalf("the killed worker committed %d", got)
	}
	if now, _ := f.api.Statuses.Get(st.ID); now.State != jobs.Running {
		t.Fatalf("the killed worker wrote %+v", now)
	}

	second := f.startWorker(t, execs, exactlyOnce)
	end := f.waitEnd(t, st.ID, 30*time.Second)
	if end.State != jobs.Succeeded || end.Worker != second.w.ID() || end.Attempt != 2 {
		t.Fatalf("end status %+v", end)
	}
	f.waitCommitted(t, f.topics.Detect, 1, 10*time.Second)
	if runs, ok := ex.counts(st.ID); runs != 2 || ok != 1 {
		t.Fatalf("runs %d, completed %d: want 2 runs, 1 completion", runs, ok)
	}
	if n := len(terminalRecords(t, f.statusRecords(t, kgo.ReadCommitted()), st.ID)); n != 1 {
		t.Fatalf("%d terminal statuses, want 1", n)
	}
}

// Two exactly-once workers, the second joining while jobs run: the rebalance aborts a
// transaction or two (their statuses are written without one), yet every job runs
// once, ends once, and every offset is committed.
func TestExactlyOnceWorkersShareTheJobsAcrossARebalance(t *testing.T) {
	f := newJobsFixtureWith(t, true)
	ex := newExecutions()
	execs := map[jobs.Type]jobs.Executor{jobs.Detect: sleeper(ex, 20*time.Millisecond)}
	one := f.startWorker(t, execs, func(c *processors.WorkerConfig) { c.ExactlyOnce, c.Concurrency = true, 1 })
	var ids []string
	for range 10 {
		ids = append(ids, f.submit(t, jobs.Job{Type: jobs.Detect, Input: jobs.Input{Rows: rowsOf(5)}}).ID)
	}
	f.waitEnd(t, ids[0], 20*time.Second)
	two := f.startWorker(t, execs, func(c *processors.WorkerConfig) { c.ExactlyOnce, c.Concurrency = true, 1 })
	by := map[string]int{}
	for _, id := range ids {
		end := f.waitEnd(t, id, 30*time.Second)
		if end.State != jobs.Succeeded {
			t.Fatalf("job %s: %+v", id, end)
		}
		by[end.Worker]++
		if runs, _ := ex.counts(id); runs != 1 {
			t.Errorf("job %s ran %d times", id, runs)
		}
	}
	f.waitCommitted(t, f.topics.Detect, 10, 15*time.Second)
	committed := f.statusRecords(t, kgo.ReadCommitted())
	for _, id := range ids {
		if n := len(terminalRecords(t, committed, id)); n != 1 {
			t.Errorf("job %s: %d terminal statuses, want 1", id, n)
		}
	}
	t.Logf("jobs per worker: %v; transactions one: %v committed, %v aborted; two: %v committed, %v aborted", by,
		metricValue(t, one.reg, "gonomaly_worker_transactions_total", "result", "committed"),
		metricValue(t, one.reg, "gonomaly_worker_transactions_total", "result", "aborted"),
		metricValue(t, two.reg, "gonomaly_worker_transactions_total", "result", "committed"),
		metricValue(t, two.reg, "gonomaly_worker_transactions_total", "result", "aborted"))
}
