package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gonomaly/gonomaly/jobs"
)

// WorkerGroup is the consumer group of the job workers of a topic prefix. All queues
// share one group: a worker's slots serve every queue it reads, so one client pauses
// and resumes them together, and workers started with different --queues still share
// the group (a queue's partitions go only to members that read it). KEDA scales a
// worker deployment on this group's lag on that deployment's queue topics.
func WorkerGroup(prefix string) string { return prefix + "workers" }

// WorkerConfig configures a Worker. Zero durations take the defaults.
type WorkerConfig struct {
	Store *jobs.Store
	// Types are the queues to consume; empty: every type that has an executor.
	Types     []jobs.Type
	Executors map[jobs.Type]jobs.Executor
	// Group is the consumer group; empty: WorkerGroup of the queue topics' prefix.
	Group string
	// ClientOpts are the consumer's seed brokers and anything shared; the group options
	// are added here.
	ClientOpts []kgo.Opt
	// Concurrency is how many jobs run at once; default runtime.NumCPU().
	Concurrency int
	// ID names this worker in statuses and is its consumer's client id, by which other
	// workers see whether it is still a group member; default host-pid-random.
	ID string

	RetryBackoff    time.Duration // before the second attempt of a transient failure; doubles each time; default 1s
	MaxRetryBackoff time.Duration // default 1m
	// WatchInterval is how often a running job's status is checked for a cancel
	// request; default 200ms.
	WatchInterval time.Duration
	// ProgressInterval is the least time between two progress statuses of a job;
	// default 250ms (at most 4 a second).
	ProgressInterval time.Duration
	// RepairInterval is how often Store.Repair runs; default 30s.
	RepairInterval time.Duration

	// ExactlyOnce ends each job in a Kafka transaction: its terminal status and the
	// offset commit it allows are written together or not at all (docs/exactly-once.md,
	// "Job workers"). The broker must support transactions, and the Store's views should
	// read committed (api.NewConsumerFunc does).
	ExactlyOnce bool
	// TransactionalID is the worker's transactional id in exactly-once mode; default
	// "gonomaly-" + Group + "-" + ID, unique per worker process with the default ID. A
	// worker that starts with the transactional id of another fences it: that one's
	// transactions fail and it stops (Run returns an error). A stable ID (a
	// StatefulSet's pod name) lets a restarted worker abort at once what its killed
	// predecessor left open.
	TransactionalID string
	// TransactionTimeout is after how long the broker aborts a transaction of a worker
	// that died inside it; until then read_committed readers of that jobs.status
	// partition are held back. Default 10s.
	TransactionTimeout time.Duration

	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Defaults of WorkerConfig.
const (
	DefaultRetryBackoff     = time.Second
	DefaultMaxRetryBackoff  = time.Minute
	DefaultWatchInterval    = 200 * time.Millisecond
	DefaultProgressInterval = 250 * time.Millisecond
	DefaultRepairInterval   = 30 * time.Second
	DefaultWorkerTxnTimeout = 10 * time.Second
)

// Worker runs jobs from the queue topics as a member of the workers' consumer group.
//
// A fetched job takes one of Concurrency slots; while every slot is busy the worker
// stops fetching, so the rest of its partitions' jobs wait in Kafka (the lag KEDA
// scales on). A job's offset is committed once its outcome (succeeded, failed or
// cancelled) is recorded in jobs.status, and only contiguously per partition: a job
// that finished early does not commit over one still running before it. A worker that
// dies leaves its jobs uncommitted, and the next owner of the partition runs them
// again; a job whose status is already terminal is never run again, so none completes
// twice.
//
// A rebalance does not stop running jobs: the new owner of a partition that finds a
// job running on a worker that is still a group member waits for its outcome instead
// of running it too, and takes it over only if that worker leaves the group.
//
// With ExactlyOnce, a job's terminal status and the commit of the offsets it completes
// are written in one transaction (see completeTxn).
type Worker struct {
	cfg     WorkerConfig
	store   *jobs.Store
	log     *slog.Logger
	badLog  *rateLimitedLog
	metrics *workerMetrics
	topics  []string
	typeOf  map[string]jobs.Type

	slots chan struct{} // a token per running job

	cl      *kgo.Client
	adm     *kadm.Client
	ctx     context.Context // Run's: cancelled at shutdown
	stop    context.CancelCauseFunc
	running sync.WaitGroup // the goroutines of fetched jobs

	// Exactly-once mode: the consumer's session, and txnMu, held by a transaction and by
	// a poll (the session is not to poll while a transaction begins or ends).
	sess   *kgo.GroupTransactSession
	txnMu  sync.Mutex
	killed atomic.Bool // test hook: the worker died, it writes nothing more

	mu     sync.Mutex
	parts  map[topicPartition]*partitionQueue // owned partitions
	active map[string]*activeJob              // jobs running or awaited here, by ID

	members struct {
		sync.Mutex
		at  time.Time
		ids map[string]bool
	}
}

// partitionQueue is an owned partition's fetched, uncommitted jobs, in offset order.
type partitionQueue struct {
	pending []*position
}

// position is one job record of a partition; done once its outcome is recorded.
type position struct {
	part *partitionQueue
	tp   topicPartition
	rec  *kgo.Record
	done bool
}

// activeJob is a job this worker runs or awaits. The same job can be fetched again
// (its partition revoked and reassigned while it ran): its records complete together.
type activeJob struct {
	id        string
	positions []*position
}

// NewWorker checks the configuration and registers the metrics; Run starts it.
func NewWorker(cfg WorkerConfig) (*Worker, error) {
	if cfg.Store == nil {
		return nil, errors.New("worker: no job store")
	}
	if len(cfg.Types) == 0 {
		for _, t := range jobs.Types {
			if cfg.Executors[t] != nil {
				cfg.Types = append(cfg.Types, t)
			}
		}
	}
	if len(cfg.Types) == 0 {
		return nil, errors.New("worker: no queues to consume (no executors)")
	}
	w := &Worker{cfg: cfg, store: cfg.Store, typeOf: map[string]jobs.Type{}}
	for _, t := range cfg.Types {
		if cfg.Executors[t] == nil {
			return nil, fmt.Errorf("worker: no executor for %s jobs", t)
		}
		topic := cfg.Store.Topics.Queue(t)
		if topic == "" {
			return nil, fmt.Errorf("worker: unknown job type %q", t)
		}
		if _, dup := w.typeOf[topic]; !dup {
			w.topics = append(w.topics, topic)
		}
		w.typeOf[topic] = t
	}
	if w.cfg.Group == "" {
		w.cfg.Group = WorkerGroup(strings.TrimSuffix(cfg.Store.Topics.Detect, "jobs.detect"))
	}
	if w.cfg.Concurrency <= 0 {
		w.cfg.Concurrency = runtime.NumCPU()
	}
	if w.cfg.ID == "" {
		w.cfg.ID = defaultWorkerID()
	}
	setDefault(&w.cfg.RetryBackoff, DefaultRetryBackoff)
	setDefault(&w.cfg.MaxRetryBackoff, DefaultMaxRetryBackoff)
	setDefault(&w.cfg.WatchInterval, DefaultWatchInterval)
	setDefault(&w.cfg.ProgressInterval, DefaultProgressInterval)
	setDefault(&w.cfg.RepairInterval, DefaultRepairInterval)
	setDefault(&w.cfg.TransactionTimeout, DefaultWorkerTxnTimeout)
	if w.cfg.ExactlyOnce && w.cfg.TransactionalID == "" {
		w.cfg.TransactionalID = "gonomaly-" + w.cfg.Group + "-" + w.cfg.ID
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w.log = log.With("worker", w.cfg.ID)
	w.badLog = newRateLimitedLog(w.log, 5, time.Second)
	m, err := newWorkerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	w.metrics = m
	w.slots = make(chan struct{}, w.cfg.Concurrency)
	return w, nil
}

func setDefault(d *time.Duration, def time.Duration) {
	if *d <= 0 {
		*d = def
	}
}

func defaultWorkerID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "worker"
	}
	random := jobs.NewID("w")[len("w_")+16:] // an id's last 10 characters are random
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + random
}

// ID is the worker's name in job statuses.
func (w *Worker) ID() string { return w.cfg.ID }

// Group is the consumer group the worker joins.
func (w *Worker) Group() string { return w.cfg.Group }

// pollWait bounds one poll, so that slots reserved for it return now and then to jobs
// taken over from a departed worker.
const pollWait = 500 * time.Millisecond

// Run consumes the queues until ctx is cancelled (a Worker runs once). Then it stops
// fetching, stops the running jobs without recording an outcome (they go back to the
// queue for the next owner of their partition), commits what finished, and leaves the
// group.
//
// In exactly-once mode it also returns an error when a transaction cannot begin (its
// producer was fenced by another process with the same transactional id).
func (w *Worker) Run(ctx context.Context) error {
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	ctx, w.ctx, w.stop = runCtx, runCtx, stop
	w.parts, w.active = map[topicPartition]*partitionQueue{}, map[string]*activeJob{}
	opts := append(slices.Clone(w.cfg.ClientOpts),
		kgo.ClientID(w.cfg.ID),
		kgo.ConsumerGroup(w.cfg.Group),
		kgo.ConsumeTopics(w.topics...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.BlockRebalanceOnPoll(),
		kgo.AutoCommitMarks(),
		kgo.OnPartitionsAssigned(w.assigned),
		kgo.OnPartitionsRevoked(w.revoked),
		kgo.OnPartitionsLost(w.lost),
		kgo.FetchMaxWait(pollWait),
	)
	var cl *kgo.Client
	if w.cfg.ExactlyOnce {
		// The session wraps the revoke and lost callbacks: after a revocation (or a lost
		// partition) its next transaction aborts; it calls them only for the first
		// revocation between two transactions (see assigned).
		sess, err := kgo.NewGroupTransactSession(append(opts,
			kgo.TransactionalID(w.cfg.TransactionalID),
			kgo.TransactionTimeout(w.cfg.TransactionTimeout),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.RequireStableFetchOffsets(),
		)...)
		if err != nil {
			return fmt.Errorf("worker: kafka transactional session: %w", err)
		}
		w.sess, cl = sess, sess.Client()
	} else {
		var err error
		if cl, err = kgo.NewClient(append(opts, kgo.AutoCommitInterval(time.Second))...); err != nil {
			return fmt.Errorf("worker: kafka client: %w", err)
		}
	}
	w.cl, w.adm = cl, kadm.NewClient(cl)
	w.log.Info("worker started", "group", w.cfg.Group, "queues", w.topics, "concurrency", w.cfg.Concurrency, "exactly_once", w.cfg.ExactlyOnce)

	repairDone := make(chan struct{})
	go w.repairLoop(ctx, repairDone)

	for ctx.Err() == nil {
		n := w.reserveSlots(ctx)
		if n == 0 {
			break
		}
		fetches := w.poll(ctx, n)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			w.releaseSlots(n)
			cl.AllowRebalance()
			break
		}
		fetches.EachError(func(topic string, p int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				w.badLog.Warn("fetch error", "topic", topic, "partition", p, "err", err) // kgo retries
			}
		})
		used := w.dispatch(fetches.Records())
		w.releaseSlots(n - used)
		cl.AllowRebalance()
	}

	// Shutdown: the jobs' contexts derive from ctx, so they are stopping already.
	w.running.Wait()
	<-repairDone
	if w.killed.Load() {
		return nil
	}
	if w.sess == nil { // exactly-once: every commit was in a job's transaction
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if err := cl.CommitMarkedOffsets(closeCtx); err != nil {
			w.log.Warn("final commit failed", "err", err)
		}
	}
	cl.CloseAllowingRebalance()
	if err := context.Cause(ctx); errors.Is(err, errTxnFailed) {
		w.log.Error("worker stopped", "err", err)
		return err
	}
	w.log.Info("worker stopped")
	return nil
}

// poll fetches up to n jobs, for at most pollWait. In exactly-once mode no
// transaction begins or ends meanwhile.
func (w *Worker) poll(ctx context.Context, n int) kgo.Fetches {
	pollCtx, cancel := context.WithTimeout(ctx, pollWait)
	defer cancel()
	if w.sess != nil {
		w.txnMu.Lock()
		defer w.txnMu.Unlock()
	}
	return w.cl.PollRecords(pollCtx, n)
}

// errTxnFailed stops an exactly-once worker whose transactions cannot begin.
var errTxnFailed = errors.New("worker: transactions failed")

// kill stops the worker as a crash would (a test hook): its client leaves the group,
// its jobs stop, and nothing more is written, neither a job's return to the queue nor
// an outcome or an offset.
func (w *Worker) kill() {
	w.killed.Store(true)
	w.cl.CloseAllowingRebalance()
	w.stop(errors.New("killed"))
}

// reserveSlots takes every free slot, waiting for one when none is free, and returns
// how many it took (0 at shutdown). While it waits, fetching is paused.
func (w *Worker) reserveSlots(ctx context.Context) int {
	n := 0
	for n < cap(w.slots) && w.tryAcquire() {
		n++
	}
	if n > 0 {
		return n
	}
	w.cl.PauseFetchTopics(w.topics...)
	defer w.cl.ResumeFetchTopics(w.topics...)
	select {
	case w.slots <- struct{}{}:
		return 1
	case <-ctx.Done():
		return 0
	}
}

func (w *Worker) tryAcquire() bool {
	select {
	case w.slots <- struct{}{}:
		return true
	default:
		return false
	}
}

func (w *Worker) releaseSlots(n int) {
	for range n {
		<-w.slots
	}
}

// acquireSlot waits for a slot for a job taken over after it was awaited.
func (w *Worker) acquireSlot() bool {
	select {
	case w.slots <- struct{}{}:
		return true
	case <-w.ctx.Done():
		return false
	}
}

func (w *Worker) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for topic, parts := range assigned {
		for _, p := range parts {
			// A fresh queue even if one is left: in exactly-once mode the session
			// calls revoked only for the first revocation between two transactions,
			// so a partition revoked and assigned again may not have been forgotten.
			w.parts[topicPartition{topic, p}] = &partitionQueue{}
		}
		w.log.Debug("partitions assigned", "topic", topic, "partitions", parts)
	}
	w.metrics.partitions.Set(float64(len(w.parts)))
}

// revoked commits what finished on the revoked partitions before they move. Their
// running jobs keep running: the new owner awaits their outcome (see Worker).
func (w *Worker) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	w.forget(revoked)
	if w.cfg.ExactlyOnce || w.killed.Load() { // nothing is marked outside a transaction
		return
	}
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		w.log.Warn("commit on revoke failed", "err", err)
	}
}

// lost partitions belong to someone else already: nothing of theirs is committed.
func (w *Worker) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	w.forget(lost)
}

func (w *Worker) forget(which map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for topic, parts := range which {
		for _, p := range parts {
			delete(w.parts, topicPartition{topic, p})
		}
		w.log.Debug("partitions revoked", "topic", topic, "partitions", parts)
	}
	w.metrics.partitions.Set(float64(len(w.parts)))
}

// dispatch starts a goroutine per fetched job, each holding one of the slots reserved
// for the poll, and returns how many slots went to jobs.
func (w *Worker) dispatch(recs []*kgo.Record) int {
	used := 0
	var finished []*activeJob
	w.mu.Lock()
	for _, rec := range recs {
		tp := topicPartition{rec.Topic, rec.Partition}
		part := w.parts[tp]
		if part == nil { // revoked since the fetch: the next owner reads it
			continue
		}
		pos := &position{part: part, tp: tp, rec: rec}
		part.pending = append(part.pending, pos)
		job, err := jobs.DecodeJob(rec.Key, rec.Value)
		if err != nil {
			// Nothing can ever run it: record that and move past it.
			w.badLog.Warn("undecodable job skipped", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", err)
			w.metrics.skipped.WithLabelValues("undecodable").Inc()
			aj := &activeJob{id: string(rec.Key), positions: []*position{pos}}
			finished = append(finished, aj)
			continue
		}
		if aj := w.active[job.ID]; aj != nil {
			aj.positions = append(aj.positions, pos)
			continue
		}
		aj := &activeJob{id: job.ID, positions: []*position{pos}}
		w.active[job.ID] = aj
		used++
		w.running.Add(1)
		go w.handle(aj, job, w.typeOf[rec.Topic])
	}
	w.mu.Unlock()
	for _, aj := range finished {
		w.failUndecodable(aj)
	}
	return used
}

// failUndecodable records the failure of a job whose queue record cannot be read, if
// its status says it is waiting, and commits past it.
func (w *Worker) failUndecodable(aj *activeJob) {
	w.running.Add(1)
	go func() {
		defer w.running.Done()
		if st, ok := w.store.Statuses.Get(aj.id); ok && !st.State.Terminal() {
			st.State, st.FinishedAt = jobs.Failed, time.Now().UTC()
			st.Error = &jobs.Error{Message: "the job's queue record cannot be decoded"}
			if w.sess != nil && w.completeTxn(aj, &st, true) {
				return
			}
			if err := w.store.PublishStatus(w.ctx, st); err != nil {
				return // uncommitted: the next owner tries again
			}
		}
		w.complete(aj)
	}()
}

// complete marks a job's records done and commits every partition's done prefix.
func (w *Worker) complete(aj *activeJob) {
	if w.sess != nil {
		w.completeTxn(aj, nil, true)
		return
	}
	marks := w.settle(aj, true)
	if len(marks) == 0 || w.killed.Load() {
		return
	}
	w.cl.MarkCommitRecords(marks...)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 10*time.Second)
	defer cancel()
	if err := w.cl.CommitMarkedOffsets(ctx); err != nil {
		w.log.Warn("commit failed; it is retried within a second", "err", err) // AutoCommitMarks
	}
}

// settle marks a job's records done and returns, per partition it still owns, the
// last record of the done prefix it can commit now. forget ends the job here; until
// then a record of it fetched again joins it (and a later settle).
func (w *Worker) settle(aj *activeJob, forget bool) []*kgo.Record {
	w.mu.Lock()
	defer w.mu.Unlock()
	if forget && w.active[aj.id] == aj {
		delete(w.active, aj.id)
	}
	var marks []*kgo.Record
	for _, pos := range aj.positions {
		if pos.done {
			continue
		}
		pos.done = true
		if w.parts[pos.tp] != pos.part { // revoked: not ours to commit
			continue
		}
		var last *kgo.Record
		for len(pos.part.pending) > 0 && pos.part.pending[0].done {
			// A transaction that aborted rewinds the consumer to the committed
			// offsets, so the queue can hold a record twice: commit the highest.
			if rec := pos.part.pending[0].rec; last == nil || rec.Offset > last.Offset {
				last = rec
			}
			pos.part.pending = pos.part.pending[1:]
		}
		if last != nil {
			marks = append(marks, last)
		}
	}
	return marks
}

// completeTxn is complete in exactly-once mode: in one transaction, it writes the
// job's terminal status st (if not nil) and commits every partition's done prefix. It
// reports whether st was written. When the transaction aborts (a rebalance since the
// previous one, or a failed write), the session rewinds to the committed offsets: the
// job's record is fetched again if the partition is still ours, and skipped then as
// ended (if its status was written after all, see record), which commits it.
func (w *Worker) completeTxn(aj *activeJob, st *jobs.Status, forget bool) (written bool) {
	marks := w.settle(aj, forget)
	if (st == nil && len(marks) == 0) || w.killed.Load() {
		return false
	}
	w.txnMu.Lock()
	defer w.txnMu.Unlock()
	if w.ctx.Err() != nil && st == nil {
		return false // stopping: the next owner commits it
	}
	if err := w.sess.Begin(); err != nil {
		w.log.Error("transaction cannot begin; stopping the worker", "err", err)
		w.stop(fmt.Errorf("%w: %w", errTxnFailed, err))
		return false
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), w.cfg.TransactionTimeout+10*time.Second)
	defer cancel()
	try := kgo.TryCommit
	if st != nil {
		st.UpdatedAt = time.Now().UTC()
		rec, err := w.store.StatusRecord(*st)
		if err == nil {
			err = w.sess.ProduceSync(ctx, rec).FirstErr()
		}
		if err != nil {
			w.log.Warn("job status not written in its transaction; aborting it", "job", st.ID, "err", err)
			try = kgo.TryAbort
		}
	}
	w.cl.MarkCommitRecords(marks...)
	// The session commits every polled offset; the worker only what it marked: the done
	// prefixes. Marked partitions are a subset of the polled ones.
	marked := w.cl.MarkedOffsets()
	onlyMarked := func(req *kmsg.TxnOffsetCommitRequest) error {
		topics := req.Topics[:0]
		for _, t := range req.Topics {
			parts := t.Partitions[:0]
			for _, p := range t.Partitions {
				if o, ok := marked[t.Topic][p.Partition]; ok {
					p.Offset, p.LeaderEpoch = o.Offset, o.Epoch
					parts = append(parts, p)
				}
			}
			if t.Partitions = parts; len(parts) > 0 {
				topics = append(topics, t)
			}
		}
		req.Topics = topics
		return nil
	}
	committed, err := w.sess.End(kgo.PreTxnCommitFnContext(ctx, onlyMarked), try)
	switch {
	case err != nil:
		w.log.Warn("transaction failed", "err", err)
		w.metrics.txns.WithLabelValues("failed").Inc()
	case !committed:
		w.log.Info("transaction aborted (a rebalance since the previous one, or a failed write)")
		w.metrics.txns.WithLabelValues("aborted").Inc()
	default:
		w.metrics.txns.WithLabelValues("committed").Inc()
	}
	if committed && st != nil {
		w.store.Statuses.Apply(*st)
	}
	return committed && st != nil
}

// abandon forgets a job without committing it: the worker is stopping.
func (w *Worker) abandon(aj *activeJob) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.active[aj.id] == aj {
		delete(w.active, aj.id)
	}
}

// Errors that say why a job's context ended.
var (
	errCancelRequested = errors.New("cancel requested")
	errTakenOver       = errors.New("taken over by another worker")
	errTimedOut        = errors.New("timed out")
)

// handle decides what to do with a fetched job and does it; it starts holding a slot.
func (w *Worker) handle(aj *activeJob, job jobs.Job, typ jobs.Type) {
	defer w.running.Done()
	holding := true
	defer func() {
		if holding {
			<-w.slots
		}
	}()
	log := w.log.With("job", job.ID, "type", typ)

	// Read every status written so far: a job cancelled while queued, or finished by a
	// worker that died before committing, must not run.
	syncCtx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	if err := w.store.Statuses.Sync(syncCtx); err != nil && w.ctx.Err() == nil {
		log.Warn("job statuses not caught up; deciding on what is known", "err", err)
	}
	cancel()
	if w.ctx.Err() != nil {
		w.abandon(aj)
		return
	}
	st, known := w.store.Statuses.Get(job.ID)
	switch {
	case known && st.State.Terminal():
		log.Info("job skipped: already "+string(st.State), "state", st.State)
		w.metrics.skipped.WithLabelValues(string(st.State)).Inc()
		w.complete(aj)
		return
	case known && st.State == jobs.Running && st.Worker != "" && st.Worker != w.cfg.ID && w.isMember(st.Worker):
		<-w.slots
		holding = false
		log.Info("job runs on another worker; awaiting its outcome", "on", st.Worker)
		switch w.await(job.ID, st.Worker) {
		case awaitEnded:
			w.complete(aj)
			return
		case awaitStopping:
			w.abandon(aj)
			return
		}
		if !w.acquireSlot() {
			w.abandon(aj)
			return
		}
		holding = true
		log.Info("taking the job over: its worker left the group", "from", st.Worker)
	}
	if w.run(aj, job, typ, log) {
		w.complete(aj)
	} else {
		w.abandon(aj)
	}
}

type awaitOutcome int

const (
	awaitEnded    awaitOutcome = iota // the job ended on the other worker
	awaitTakeOver                     // that worker left the group or gave the job back
	awaitStopping                     // this worker is stopping
)

// await waits for a job running on another worker to end or to be left to us.
func (w *Worker) await(id, other string) awaitOutcome {
	tick := time.NewTicker(max(w.cfg.WatchInterval, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-w.ctx.Done():
			return awaitStopping
		case <-tick.C:
		}
		st, _ := w.store.Statuses.Get(id)
		switch {
		case st.State.Terminal():
			return awaitEnded
		case st.State != jobs.Running || st.Worker != other || !w.isMember(other):
			return awaitTakeOver
		}
	}
}

// isMember reports whether a worker is a member of the group now (by its client id);
// the membership is looked up at most once a second. When it cannot be looked up, the
// worker is assumed alive: waiting longer is safe, running a job twice is not.
func (w *Worker) isMember(id string) bool {
	w.members.Lock()
	defer w.members.Unlock()
	if time.Since(w.members.at) > time.Second || w.members.ids == nil {
		ctx, cancel := context.WithTimeout(w.ctx, 5*time.Second)
		described, err := w.adm.DescribeGroups(ctx, w.cfg.Group)
		cancel()
		g, ok := described[w.cfg.Group]
		if err != nil || !ok || g.Err != nil {
			return true
		}
		ids := map[string]bool{}
		for _, m := range g.Members {
			ids[m.ClientID] = true
		}
		w.members.ids, w.members.at = ids, time.Now()
	}
	return w.members.ids[id]
}

// jobRun is one job running on this worker: the status it writes (the worker is the
// only writer of a running job's state; the API only adds cancel requests, which the
// views keep) and the context its attempts run under.
type jobRun struct {
	w   *Worker
	aj  *activeJob
	job jobs.Job
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	st       jobs.Status
	attempt  int
	progress struct {
		fraction float64
		message  string
		changed  bool
	}
}

// run runs a job's attempts on this worker and records the outcome. It returns false
// when the worker stopped first (then only the job's return to the queue is recorded,
// and the job stays uncommitted) or another worker took the job over.
func (w *Worker) run(aj *activeJob, job jobs.Job, queue jobs.Type, log *slog.Logger) bool {
	start := time.Now()
	typ := string(queue)
	w.metrics.started.WithLabelValues(typ).Inc()
	w.metrics.running.WithLabelValues(typ).Inc()
	defer w.metrics.running.WithLabelValues(typ).Dec()

	r := &jobRun{w: w, aj: aj, job: job, log: log}
	r.ctx, r.cancel = context.WithCancelCause(w.ctx)
	r.st = w.current(job)
	prev := r.st
	r.attempt = prev.Attempt + 1
	watchDone := make(chan struct{})
	go r.watch(watchDone)
	stopWatching := sync.OnceFunc(func() {
		r.cancel(nil)
		<-watchDone
	})
	defer stopWatching()

	maxAttempts := cmpOr(job.MaxAttempts, jobs.DefaultMaxAttempts)
	timeout := cmpOr(time.Duration(job.Timeout), jobs.DefaultTimeout)
	finish := func(state jobs.State, jerr *jobs.Error, summary *jobs.Summary, msg string) bool {
		stopWatching()
		state = w.record(r, state, jerr, summary, msg)
		w.metrics.finished.WithLabelValues(typ, string(state)).Inc()
		w.metrics.duration.WithLabelValues(typ, string(state)).Observe(time.Since(start).Seconds())
		log.Info("job finished", "state", state, "attempt", r.attempt, "seconds", time.Since(start).Seconds(), "message", msg)
		return true
	}
	stopped := func() bool {
		stopWatching()
		if errors.Is(context.Cause(r.ctx), errTakenOver) {
			log.Warn("job taken over by another worker; stopped here without an outcome")
			return false
		}
		return w.release(r)
	}

	if job.Type != queue {
		return finish(jobs.Failed, &jobs.Error{Message: fmt.Sprintf("a %q job on the %s queue", job.Type, queue)}, nil, "")
	}
	if err := jobs.Validate(job); err != nil {
		return finish(jobs.Failed, &jobs.Error{Message: "invalid job: " + err.Error()}, nil, "")
	}
	if prev.CancelRequested { // asked while it ran on a worker that stopped
		return finish(jobs.Cancelled, nil, nil, "cancelled before it ran again")
	}
	if prev.State == jobs.Running && r.attempt > maxAttempts {
		// Its last attempt was running on a worker that died: the job may be what
		// kills workers.
		return finish(jobs.Failed, &jobs.Error{Message: fmt.Sprintf("worker %s stopped during attempt %d of %d", prev.Worker, prev.Attempt, maxAttempts), Transient: true}, nil, "")
	}

	backoff := w.cfg.RetryBackoff
	startedAt := time.Now().UTC()
	for {
		log.Info("job started", "attempt", r.attempt, "of", maxAttempts)
		r.mu.Lock()
		r.progress.changed = false
		r.mu.Unlock()
		r.publish(func(st *jobs.Status) {
			st.State, st.Attempt, st.Worker, st.StartedAt = jobs.Running, r.attempt, w.cfg.ID, startedAt
			st.Progress, st.FinishedAt, st.Result = 0, time.Time{}, nil
			st.Message = fmt.Sprintf("attempt %d of %d on %s", r.attempt, maxAttempts, w.cfg.ID)
		})
		summary, err := w.attempt(r, timeout)
		cause := context.Cause(r.ctx)
		switch {
		case err == nil:
			return finish(jobs.Succeeded, nil, &summary, fmt.Sprintf("done in %s", time.Since(start).Round(time.Millisecond)))
		case w.ctx.Err() != nil, errors.Is(cause, errTakenOver):
			return stopped()
		case errors.Is(cause, errCancelRequested):
			return finish(jobs.Cancelled, nil, nil, "cancelled while running")
		case errors.Is(err, errTimedOut):
			return finish(jobs.Failed, &jobs.Error{Message: fmt.Sprintf("timed out after %s (attempt %d of %d)", timeout, r.attempt, maxAttempts)}, nil, "")
		case !jobs.IsTransient(err):
			return finish(jobs.Failed, &jobs.Error{Message: err.Error()}, nil, "")
		case r.attempt >= maxAttempts:
			return finish(jobs.Failed, &jobs.Error{Message: fmt.Sprintf("attempt %d of %d failed: %v", r.attempt, maxAttempts, err), Transient: true}, nil, "")
		}
		wait := backoff
		backoff = min(2*backoff, w.cfg.MaxRetryBackoff)
		log.Warn("job attempt failed; retrying", "attempt", r.attempt, "of", maxAttempts, "in", wait, "err", err)
		w.metrics.retries.WithLabelValues(typ).Inc()
		r.publish(func(st *jobs.Status) {
			st.Error = &jobs.Error{Message: err.Error(), Transient: true}
			st.Message = fmt.Sprintf("attempt %d of %d failed; retrying in %s", r.attempt, maxAttempts, wait)
		})
		select {
		case <-time.After(wait):
		case <-r.ctx.Done():
		}
		cause = context.Cause(r.ctx)
		switch {
		case w.ctx.Err() != nil, errors.Is(cause, errTakenOver):
			return stopped()
		case r.ctx.Err() != nil:
			return finish(jobs.Cancelled, nil, nil, "cancelled while waiting to retry")
		}
		r.mu.Lock()
		r.attempt++
		r.mu.Unlock()
	}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// attempt runs the executor once, with the job's timeout, turning a panic into a
// failure: a bad job must not take the worker down.
func (w *Worker) attempt(r *jobRun, timeout time.Duration) (summary jobs.Summary, err error) {
	ctx, cancel := context.WithTimeoutCause(r.ctx, timeout, errTimedOut)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			w.metrics.panics.Inc()
			r.log.Error("job executor panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("the %s executor panicked: %v", r.job.Type, p)
		}
		if err != nil && errors.Is(context.Cause(ctx), errTimedOut) {
			err = fmt.Errorf("%w: %w", errTimedOut, err)
		}
	}()
	return w.cfg.Executors[r.job.Type](ctx, jobs.Run{Job: r.job, Store: w.store, Attempt: r.attempt, Progress: r.report})
}

// report is the executor's Progress: it keeps the latest, and the watcher publishes it.
func (r *jobRun) report(fraction float64, message string) {
	if math.IsNaN(fraction) {
		fraction = 0
	}
	fraction = min(max(fraction, 0), 1)
	r.mu.Lock()
	r.progress.fraction, r.progress.message, r.progress.changed = fraction, message, true
	r.mu.Unlock()
}

// watch stops the job when its status shows a cancel request, an end recorded
// elsewhere, or a later attempt on another worker, and publishes its progress at most
// every ProgressInterval, until the job's context ends.
func (r *jobRun) watch(done chan struct{}) {
	defer close(done)
	w := r.w
	tick := time.NewTicker(w.cfg.WatchInterval)
	defer tick.Stop()
	var lastPublish time.Time
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-tick.C:
		}
		r.mu.Lock()
		attempt := r.attempt
		r.mu.Unlock()
		if st, ok := w.store.Statuses.Get(r.job.ID); ok {
			switch {
			case st.CancelRequested || st.State.Terminal():
				r.cancel(errCancelRequested)
				return
			// The view may briefly show an older record than this worker's own latest
			// write; only a later attempt elsewhere means a takeover.
			case st.State == jobs.Running && st.Worker != w.cfg.ID && st.Attempt > attempt:
				r.cancel(errTakenOver)
				return
			}
		}
		if time.Since(lastPublish) < w.cfg.ProgressInterval {
			continue
		}
		r.mu.Lock()
		changed, fraction, message := r.progress.changed, r.progress.fraction, r.progress.message
		r.progress.changed = false
		r.mu.Unlock()
		if changed {
			lastPublish = time.Now()
			r.publish(func(st *jobs.Status) { st.Progress, st.Message = fraction, message })
		}
	}
}

// publish applies edit to the job's status and writes it, keeping a cancel request
// the view holds. A failure is logged, not returned: a running status informs, and
// the outcome is written by record, which retries.
func (r *jobRun) publish(edit func(*jobs.Status)) {
	r.mu.Lock()
	edit(&r.st)
	st := r.st
	r.mu.Unlock()
	if v, ok := r.w.store.Statuses.Get(st.ID); ok {
		if v.State.Terminal() {
			return // ended elsewhere: the watcher stops the job
		}
		st.CancelRequested = st.CancelRequested || v.CancelRequested
	}
	if err := r.w.store.PublishStatus(r.ctx, st); err != nil && r.ctx.Err() == nil {
		r.log.Warn("job status not published", "err", err)
	}
}

// current is a job's status as the view holds it, or as Submit would have written it.
func (w *Worker) current(job jobs.Job) jobs.Status {
	if st, ok := w.store.Statuses.Get(job.ID); ok {
		return st
	}
	return jobs.Status{ID: job.ID, Type: job.Type, State: jobs.Queued, SubmittedAt: job.SubmittedAt, Job: job.WithoutRows()}
}

// record writes a job's outcome, retrying until the broker takes it, and returns the
// state recorded; the job's offset is committed after. If the job already ended
// elsewhere (cancelled while queued, as this worker took it), that end is written
// again instead, so the topic's latest record agrees with every view.
//
// In exactly-once mode the first write is in a transaction that also commits the job's
// offset (completeTxn). If that transaction does not commit, the status is written as
// in the default mode, and the offset is left to a later transaction or to the
// partition's next owner, which skips the ended job.
func (w *Worker) record(r *jobRun, state jobs.State, jerr *jobs.Error, summary *jobs.Summary, msg string) jobs.State {
	backoff := w.cfg.RetryBackoff
	txn := w.sess != nil
	for {
		if w.killed.Load() {
			return state
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 30*time.Second)
		err := w.store.Statuses.Sync(ctx)
		var st jobs.Status
		if err == nil {
			if v, ok := w.store.Statuses.Get(r.job.ID); ok && v.State.Terminal() {
				st = v
			} else {
				r.mu.Lock()
				st = r.st
				r.mu.Unlock()
				st.State, st.Error, st.Result, st.FinishedAt, st.Message = state, jerr, summary, time.Now().UTC(), msg
				if state == jobs.Succeeded {
					st.Progress = 1
				}
				st.CancelRequested = st.CancelRequested || v.CancelRequested
			}
			if txn {
				txn = false
				// The job stays active here (handle ends it): a record of it fetched
				// again meanwhile joins it instead of running it again.
				if w.completeTxn(r.aj, &st, false) || w.killed.Load() {
					cancel()
					return st.State
				}
			}
			err = w.store.PublishStatus(ctx, st)
		}
		cancel()
		if err == nil {
			return st.State
		}
		if w.ctx.Err() != nil {
			r.log.Error("job outcome not recorded before shutdown; the next worker runs the job again", "state", state, "err", err)
			return state
		}
		r.log.Warn("job outcome not recorded; retrying", "in", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-w.ctx.Done():
		}
		backoff = min(2*backoff, w.cfg.MaxRetryBackoff)
	}
}

// release gives a job back to the queue at shutdown: its status says so (without
// counting the interrupted attempt), and its offset stays uncommitted, so the next
// owner of the partition runs it. If even that cannot be written, the next owner finds
// it running on a worker that left the group and takes it over.
func (w *Worker) release(r *jobRun) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), 5*time.Second)
	defer cancel()
	r.mu.Lock()
	attempt := r.attempt
	st := r.st
	r.mu.Unlock()
	st.State, st.Worker, st.Attempt, st.Progress = jobs.Queued, "", attempt-1, 0
	st.Message = fmt.Sprintf("back in the queue: worker %s stopped during attempt %d", w.cfg.ID, attempt)
	v, _ := w.store.Statuses.Get(st.ID)
	if !v.State.Terminal() && !w.killed.Load() {
		st.CancelRequested = st.CancelRequested || v.CancelRequested
		if err := w.store.PublishStatus(ctx, st); err != nil {
			r.log.Warn("job not marked as back in the queue", "err", err)
		}
	}
	w.metrics.released.WithLabelValues(string(r.job.Type)).Inc()
	r.log.Info("job returned to the queue: the worker is stopping", "attempt", attempt)
	return false
}

// repairLoop runs Store.Repair now and then (see jobs.StatusView).
func (w *Worker) repairLoop(ctx context.Context, done chan struct{}) {
	defer close(done)
	tick := time.NewTicker(w.cfg.RepairInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n, err := w.store.Repair(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("repairing job statuses", "err", err)
		} else if n > 0 {
			w.log.Info("job statuses repaired", "count", n)
		}
	}
}

// workerMetrics are the job workers' Prometheus metrics.
type workerMetrics struct {
	started    *prometheus.CounterVec
	finished   *prometheus.CounterVec
	retries    *prometheus.CounterVec
	released   *prometheus.CounterVec
	skipped    *prometheus.CounterVec
	running    *prometheus.GaugeVec
	duration   *prometheus.HistogramVec
	panics     prometheus.Counter
	partitions prometheus.Gauge
	txns       *prometheus.CounterVec
}

func newWorkerMetrics(reg prometheus.Registerer) (*workerMetrics, error) {
	m := &workerMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_worker_jobs_started_total", Help: "Jobs this worker started running, by type."}, []string{"type"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_worker_jobs_finished_total", Help: "Jobs this worker finished, by type and outcome (succeeded, failed, cancelled)."}, []string{"type", "state"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_worker_job_retries_total", Help: "Attempts that failed transiently and were retried, by job type."}, []string{"type"}),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_worker_jobs_released_total", Help: "Running jobs given back to the queue because the worker stopped, by type."}, []string{"type"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_worker_jobs_skipped_total", Help: "Fetched jobs not run: already ended (by state) or undecodable."}, []string{"reason"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gonomaly_worker_jobs_running", Help: "Jobs running on this worker, by type."}, []string{"type"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gonomaly_worker_job_duration_seconds", Help: "Time from a job's start on this worker to its outcome, by type and outcome.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 10)}, []string{"type", "state"}), // 10 ms to 43 min
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gonomaly_worker_executor_panics_total", Help: "Job executor panics recovered (each failed its job)."}),
		partitions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gonomaly_worker_assigned_partitions", Help: "Queue partitions assigned to this worker."}),
		txns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gonomaly_worker_transactions_total", Help: "Exactly-once mode: transactions that ended jobs, by result (committed, aborted, failed)."}, []string{"result"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.started, m.finished, m.retries, m.released, m.skipped, m.running, m.duration, m.panics, m.partitions, m.txns} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("worker: registering metrics: %w", err)
		}
	}
	return m, nil
}
