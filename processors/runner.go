// Package processors holds the pipeline's stages (preprocess, detect, ensemble) and the
// consume-transform-produce runner they share: one consumer group per stage, one
// goroutine per assigned partition, per-key order kept. By default offsets are committed
// only after every output of a record is acknowledged by the broker (at-least-once);
// with RunnerConfig.ExactlyOnce outputs and offsets commit together in Kafka
// transactions.
package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/dlq"
)

// Processor turns one input record of one partition into zero or more outputs. It is
// used by a single goroutine and owns that partition's state.
type Processor interface {
	// Process handles rec and passes each output to emit, in order. A *BadInputError
	// sends rec to the dead-letter topic; any other error stops the stage.
	Process(rec *kgo.Record, emit func(*kgo.Record)) error
}

// Stage is a pipeline stage: a consumer group with per-partition processors.
type Stage interface {
	Name() string
	InputTopics() []string
	// NewProcessor builds the state of one newly assigned partition.
	NewProcessor(topic string, partition int32) (Processor, error)
}

// BadInputError marks a record that can never be processed: it goes to the DLQ.
type BadInputError struct {
	Reason string // short, metric-label friendly: decode, invalid, oversize, missing
	Err    error
}

func (e *BadInputError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *BadInputError) Unwrap() error { return e.Err }

// BadInput wraps err as a BadInputError with a reason.
func BadInput(reason string, err error) error { return &BadInputError{Reason: reason, Err: err} }

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Group          string
	DLQTopic       string
	ClientOpts     []kgo.Opt // seed brokers and anything shared; group options are added here
	MaxPollRecords int       // per poll; default 10,000
	InFlight       int       // batches per partition awaiting acks; default 8
	Logger         *slog.Logger
	Metrics        *StageMetrics

	// ExactlyOnce reads, transforms and writes in Kafka transactions: a stage's outputs
	// (DLQ records included) and its consumed offsets commit together or not at all, and
	// inputs are read with read_committed. The state of Stateful processors is
	// checkpointed to StateTopic in the same transactions and restored (checkpoint, then
	// the records after it re-processed with outputs suppressed) when a partition is
	// assigned and after an aborted transaction, so that scores equal an uninterrupted
	// run's.
	ExactlyOnce bool
	// StateTopic is the compacted changelog of the partitions' state (exactly-once
	// mode); default "state.<group>". Created, with as many partitions as the input
	// topic, when missing.
	StateTopic string
	// StateInterval is how often a partition's state is checkpointed (at the end of the
	// first transaction after it is due); default 5 s. Longer: less changelog traffic,
	// more records to re-process on restore. Negative: no checkpoints, state restarts
	// cold on a new owner and after an abort (scores may then differ from an
	// uninterrupted run).
	StateInterval time.Duration
	StateMetrics  *StateMetrics
	// TransactionalID prefixes the runner's transactional id (prefix + group). It must
	// differ between live processes and should stay the same when a process restarts,
	// so that the new incarnation fences the old one and aborts its open transaction at
	// once. Default "gonomaly-<hostname>-<pid>-" (stable per pod on Kubernetes, where
	// the process is pid 1).
	TransactionalID string
	// CommitInterval is how long a transaction collects outputs before it commits;
	// default 100 ms. Longer: more throughput, more latency for read_committed readers.
	CommitInterval time.Duration
	// TransactionTimeout is after how long the broker aborts a transaction of a process
	// that died without a successor using its transactional id; default 10 s.
	TransactionTimeout time.Duration
	// SessionTimeout is how long the group waits for a member that stopped
	// heartbeating (a killed process) before its partitions move; default, in
	// exactly-once mode, TransactionTimeout: the new owner waits that long for the
	// killed owner's open transaction anyway, so a longer session (the client's default
	// is 45 s) only holds the partitions back for longer. Zero without exactly-once: the
	// client's default.
	SessionTimeout time.Duration
	// MaxAborts is how many transactions in a row may abort on produce errors before
	// the stage fails; default 10.
	MaxAborts int
}

// Runner runs one Stage as a consumer group.
type Runner struct {
	stage   Stage
	cfg     RunnerConfig
	log     *slog.Logger
	metrics *StageMetrics
	badLog  *rateLimitedLog

	cl      *kgo.Client
	mu      sync.Mutex
	workers map[topicPartition]*partitionWorker

	fatalOnce sync.Once
	fatalErr  error
	fatal     chan struct{}

	txnMu     sync.Mutex
	txnErr    error // first produce error of the open transaction
	committed atomic.Int64
	aborted   atomic.Int64
	// produceErr is txnProduced as a func value made once: a method value allocates
	// on every use, and this is the promise of every output.
	produceErr func(*kgo.Record, error)

	state *stateStore // exactly-once with checkpoints: where they go

	abortsInRow int // transactions aborted in a row when the session was last rebuilt
}

type topicPartition struct {
	topic     string
	partition int32
}

// NewRunner creates a runner; Run starts it.
func NewRunner(stage Stage, cfg RunnerConfig) *Runner {
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 10_000
	}
	if cfg.InFlight <= 0 {
		cfg.InFlight = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewStageMetrics(nil, stage.Name())
	}
	if cfg.TransactionalID == "" {
		host, _ := os.Hostname()
		cfg.TransactionalID = fmt.Sprintf("gonomaly-%s-%d-", host, os.Getpid())
	}
	if cfg.CommitInterval <= 0 {
		cfg.CommitInterval = 100 * time.Millisecond
	}
	if cfg.TransactionTimeout <= 0 {
		cfg.TransactionTimeout = 10 * time.Second
	}
	if cfg.MaxAborts <= 0 {
		cfg.MaxAborts = 10
	}
	if cfg.SessionTimeout <= 0 && cfg.ExactlyOnce {
		cfg.SessionTimeout = cfg.TransactionTimeout
	}
	if cfg.StateTopic == "" {
		cfg.StateTopic = "state." + cfg.Group
	}
	if cfg.StateInterval == 0 {
		cfg.StateInterval = 5 * time.Second
	}
	if cfg.StateMetrics == nil {
		cfg.StateMetrics = NewStateMetrics(nil, stage.Name())
	}
	log := cfg.Logger.With("stage", stage.Name(), "group", cfg.Group)
	r := &Runner{
		stage:   stage,
		cfg:     cfg,
		log:     log,
		metrics: cfg.Metrics,
		badLog:  newRateLimitedLog(log, 5, time.Second),
		workers: map[topicPartition]*partitionWorker{},
		fatal:   make(chan struct{}),
	}
	r.produceErr = r.txnProduced
	return r
}

// Transactions reports how many transactions committed and aborted (exactly-once mode).
func (r *Runner) Transactions() (committed, aborted int64) {
	return r.committed.Load(), r.aborted.Load()
}

// Run consumes until ctx is cancelled (then it finishes in-flight records, commits and
// leaves the group, returning nil) or a fatal error occurs.
func (r *Runner) Run(ctx context.Context) error {
	opts := append([]kgo.Opt{}, r.cfg.ClientOpts...)
	opts = append(opts,
		kgo.ConsumerGroup(r.cfg.Group),
		kgo.ConsumeTopics(r.stage.InputTopics()...),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.revoked),
		kgo.OnPartitionsLost(r.lost),
		// Outputs of one partition must stay in order across retries.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.FetchMaxWait(100*time.Millisecond),
		// Free without transactions (the stable offset is the end), and correct when the
		// stage upstream writes transactionally: aborted outputs are never read.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	)
	if r.cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(r.cfg.SessionTimeout))
	}
	var err error
	if r.cfg.ExactlyOnce && r.cfg.StateInterval > 0 {
		// Before the group is joined: assignment restores from the state topic.
		if err := r.openState(ctx); err != nil {
			return fmt.Errorf("%s: state topic: %w", r.stage.Name(), err)
		}
		defer r.state.cl.Close()
		opts = append(opts, kgo.RecordPartitioner(statePartitioner{r.state.topic, kgo.StickyKeyPartitioner(nil)}))
	}
	if r.cfg.ExactlyOnce {
		opts = append(opts,
			kgo.TransactionalID(r.cfg.TransactionalID+r.cfg.Group),
			kgo.TransactionTimeout(r.cfg.TransactionTimeout),
			// Offsets of a transaction still open are not handed out (KIP-447): a new
			// owner waits for them instead of re-reading. Always on in franz-go; named
			// here for the reader.
			kgo.RequireStableFetchOffsets(),
		)
		return r.runTransactional(ctx, opts)
	}
	opts = append(opts, kgo.AutoCommitMarks(), kgo.AutoCommitInterval(time.Second))
	r.cl, err = kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("%s: kafka client: %w", r.stage.Name(), err)
	}
	cl := r.cl
	r.log.Info("stage started", "topics", r.stage.InputTopics(), "exactly_once", false)

	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	go func() {
		select {
		case <-r.fatal:
			stopPolling()
		case <-pollCtx.Done():
		}
	}()

	for {
		fetches := cl.PollRecords(pollCtx, r.cfg.MaxPollRecords)
		if fetches.IsClientClosed() || pollCtx.Err() != nil {
			break
		}
		r.logFetchErrors(fetches)
		r.dispatch(fetches, nil)
		cl.AllowRebalance()
	}

	// Shutdown: finish what was dispatched, then commit, then leave the group.
	r.stopWorkers(nil, true)
	closeCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cl.CommitMarkedOffsets(closeCtx); err != nil {
		r.log.Warn("final commit failed", "err", err)
	}
	cl.CloseAllowingRebalance()
	r.log.Info("stage stopped")
	return r.fatalErr
}

// runTransactional runs the exactly-once stage. A session whose producer was fenced
// by the broker rather than by a successor (kfake bumps the epoch of every transactional
// id with an open transaction when it recovers from a crash; Kafka does when it aborts a
// transaction that outlived its timeout) is rebuilt with the same transactional id: the
// group is left, so every owned partition is assigned and restored again from its
// checkpoint and committed offset, as after an abort. Nothing of the fenced transaction
// is visible, so its records are processed again.
func (r *Runner) runTransactional(ctx context.Context, opts []kgo.Opt) error {
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	go func() {
		select {
		case <-r.fatal:
			stopPolling()
		case <-pollCtx.Done():
		}
	}()
	for rebuilds := 0; ; rebuilds++ {
		sess, err := kgo.NewGroupTransactSession(opts...)
		if err != nil {
			return fmt.Errorf("%s: kafka client: %w", r.stage.Name(), err)
		}
		r.cl = sess.Client()
		if rebuilds == 0 {
			r.log.Info("stage started", "topics", r.stage.InputTopics(), "exactly_once", true, "state_topic", r.stateTopicName())
		}
		// Initialising the producer id fences a previous incarnation with the same
		// transactional id and aborts its open transaction, whose pending offsets would
		// otherwise hold up our first offset fetch until the transaction times out.
		if _, _, err := r.cl.ProducerID(pollCtx); err != nil && pollCtx.Err() == nil {
			r.fail(fmt.Errorf("init transactional producer: %w", err))
		}
		fenced := r.consumeTransactional(pollCtx, sess)
		r.stopWorkers(nil, true) // idle: the last transaction has ended
		sess.CloseAllowingRebalance()
		if fenced == nil || pollCtx.Err() != nil {
			break
		}
		r.txnMu.Lock()
		r.txnErr = nil
		r.txnMu.Unlock()
		r.log.Warn("transaction ended with an error the session cannot go on from; rebuilding the session with the same transactional id and restoring the partitions",
			"err", fenced, "rebuilds", rebuilds+1)
		select {
		case <-time.After(time.Second):
		case <-pollCtx.Done():
		}
		if pollCtx.Err() != nil {
			break
		}
	}
	r.log.Info("stage stopped")
	return r.fatalErr
}

// recoverableEnd reports whether a failed End leaves a client that cannot go on but a
// new session with the same transactional id can: the producer's epoch is no longer
// current (fenced by the broker), or End did not finish within its deadline (a broker
// that restarted under it: the group session was being rebuilt). The new session's
// producer id initialisation completes or aborts whatever the old one left open, and
// the partitions are restored from what is committed, so either outcome is consistent.
func recoverableEnd(err error) bool {
	return errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) ||
		errors.Is(err, kerr.InvalidProducerIDMapping) || errors.Is(err, context.DeadlineExceeded)
}

func (r *Runner) logFetchErrors(fetches kgo.Fetches) {
	fetches.EachError(func(topic string, p int32, err error) {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return // a poll bounded by the transaction's deadline
		}
		r.badLog.Warn("fetch error", "topic", topic, "partition", p, "err", err) // kgo retries; a dead topic would flood
	})
}

// dispatch hands each partition's records to its worker. In a transaction, txn counts
// the batches so that the transaction ends only once every one has been processed.
func (r *Runner) dispatch(fetches kgo.Fetches, txn *sync.WaitGroup) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fetches.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 {
			return
		}
		w := r.workers[topicPartition{p.Topic, p.Partition}]
		if w == nil {
			if txn != nil {
				// The session would commit these offsets unprocessed: abort instead.
				r.txnProduced(nil, fmt.Errorf("records of unassigned partition %s/%d", p.Topic, p.Partition))
			}
			return // revoked between fetch and dispatch: the next owner reads them
		}
		b := batch{recs: p.Records, txn: txn}
		if txn != nil {
			txn.Add(1)
		}
		select {
		case w.in <- b: // blocks when the worker is behind: back-pressure
		case <-r.fatal:
			b.finish()
		}
	})
}

// consumeTransactional is the exactly-once loop. Records polled since Begin are
// dispatched to the partition workers, whose outputs join the open transaction; every
// CommitInterval the loop waits until the workers have processed what they were given
// and ends the transaction, which flushes the outputs and commits the polled offsets
// with them (GroupTransactSession.End).
//
// Rebalances: BlockRebalanceOnPoll keeps the group from rebalancing (and the revoke and
// lost callbacks from running) from the first poll of a transaction until AllowRebalance,
// which is called only between transactions, so a revoked partition's in-flight
// transaction has always ended before it moves. The session still aborts the first
// transaction after a revocation (it cannot tell that none was open); its records are
// re-read from the committed offsets, so nothing is doubled.
//
// It returns the error of a transaction the broker fenced when that is recoverable with a
// new session (see runTransactional), nil otherwise.
func (r *Runner) consumeTransactional(ctx context.Context, sess *kgo.GroupTransactSession) (fenced error) {
	var (
		inTxn    bool
		deadline time.Time
		pending  sync.WaitGroup
		aborts   = r.abortsInRow // fences that rebuilt the session count too
	)
	for {
		pollCtx, cancel := ctx, context.CancelFunc(func() {})
		if inTxn {
			pollCtx, cancel = context.WithDeadline(ctx, deadline)
		}
		fetches := sess.PollRecords(pollCtx, r.cfg.MaxPollRecords)
		cancel()
		stopping := fetches.IsClientClosed() || ctx.Err() != nil
		if !stopping {
			r.logFetchErrors(fetches)
			if fetches.NumRecords() > 0 && !inTxn {
				if err := sess.Begin(); err != nil {
					r.fail(fmt.Errorf("begin transaction: %w", err))
					return nil
				}
				inTxn, deadline = true, time.Now().Add(r.cfg.CommitInterval)
			}
			if inTxn {
				r.dispatch(fetches, &pending)
			}
		}
		if inTxn && (stopping || !time.Now().Before(deadline) || r.txnFailed()) {
			pending.Wait() // no worker produces while the transaction ends
			var ckpts []*partitionWorker
			if r.state != nil && !r.txnFailed() {
				ckpts = r.checkpoint(stopping)
			}
			committed, reason, err := r.endTxn(sess)
			inTxn = false
			if err == nil && r.state != nil {
				r.txnEnded(ctx, committed, ckpts)
			}
			switch {
			case err != nil && recoverableEnd(err) && !stopping && aborts+1 < r.cfg.MaxAborts && !r.failing():
				// Counted as an abort: a fence that keeps coming back (a live process
				// with the same transactional id) still stops the stage.
				r.abortsInRow = aborts + 1
				return err
			case err != nil:
				r.fail(fmt.Errorf("end transaction: %w", err))
				return nil
			case committed:
				aborts = 0
			case reason == nil:
				// The session aborted (a rebalance since Begin) and rewound to the
				// committed offsets: the records are processed again.
				r.log.Info("transaction aborted after a rebalance; its records will be processed again")
			default:
				// Nothing of the transaction is visible and the session has rewound to
				// the committed offsets: the records are processed again, after a pause
				// that gives a struggling broker room.
				aborts++
				r.badLog.Warn("transaction aborted; its records will be processed again", "reason", reason, "in_a_row", aborts)
				if aborts >= r.cfg.MaxAborts {
					r.fail(fmt.Errorf("%d transactions in a row aborted, last: %w", aborts, reason))
					return nil
				}
				if !stopping {
					backoff := min(50*time.Millisecond<<min(aborts, 6), 2*time.Second)
					select {
					case <-time.After(backoff):
					case <-ctx.Done():
					}
				}
			}
		}
		if !inTxn {
			sess.AllowRebalance()
		}
		if stopping {
			return nil
		}
	}
}

func (r *Runner) failing() bool {
	select {
	case <-r.fatal:
		return true
	default:
		return false
	}
}

// endTxn commits the open transaction unless an output failed or the stage is failing.
// reason says why it aborted when the runner asked for the abort; nil when the session
// chose to abort (a rebalance since Begin).
func (r *Runner) endTxn(sess *kgo.GroupTransactSession) (committed bool, reason, err error) {
	// Flush first, so that every output's error has reached txnProduced before commit or
	// abort is decided: a failure found by End's own flush would fail the commit, and
	// the stage with it, instead of aborting.
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), r.cfg.TransactionTimeout)
	r.cl.Flush(flushCtx)
	cancelFlush()
	r.txnMu.Lock()
	reason, r.txnErr = r.txnErr, nil
	r.txnMu.Unlock()
	select {
	case <-r.fatal:
		reason = errors.New("stage failing")
	default:
	}
	try := kgo.TryCommit
	if reason != nil {
		try = kgo.TryAbort
	}
	// Not the run's context: an End cut short leaves the client in an unknown state.
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.TransactionTimeout+10*time.Second)
	defer cancel()
	committed, err = sess.End(ctx, try)
	if committed {
		r.committed.Add(1)
	} else {
		r.aborted.Add(1)
	}
	return committed, reason, err
}

// txnProduced is the promise of outputs produced in a transaction: the first failure
// dooms the transaction.
func (r *Runner) txnProduced(rec *kgo.Record, err error) {
	if err == nil {
		return
	}
	if rec != nil {
		err = fmt.Errorf("produce to %s: %w", rec.Topic, err)
	}
	r.txnMu.Lock()
	if r.txnErr == nil {
		r.txnErr = err
	}
	r.txnMu.Unlock()
}

func (r *Runner) txnFailed() bool {
	r.txnMu.Lock()
	defer r.txnMu.Unlock()
	return r.txnErr != nil
}

func (r *Runner) fail(err error) {
	r.fatalOnce.Do(func() {
		r.fatalErr = fmt.Errorf("%s: %w", r.stage.Name(), err)
		r.log.Error("stage failed", "err", err)
		close(r.fatal)
	})
}

func (r *Runner) assigned(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	if r.state != nil {
		r.assignedStateful(ctx, cl, assigned)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for topic, parts := range assigned {
		for _, p := range parts {
			tp := topicPartition{topic, p}
			if r.workers[tp] != nil {
				continue
			}
			proc, err := r.stage.NewProcessor(topic, p)
			if err != nil {
				r.fail(fmt.Errorf("partition %s/%d: %w", topic, p, err))
				return
			}
			w := newPartitionWorker(r, tp, proc)
			r.workers[tp] = w
			go w.run()
		}
		r.log.Debug("partitions assigned", "topic", topic, "partitions", parts)
	}
	r.metrics.Partitions.Set(float64(len(r.workers)))
}

// revoked finishes the in-flight records of revoked partitions and commits them before
// the partitions move, so the next owner starts where we stopped.
func (r *Runner) revoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	r.stopWorkers(revoked, true)
	if r.cfg.ExactlyOnce {
		return // no transaction is open while a rebalance may run: nothing to commit
	}
	if err := cl.CommitMarkedOffsets(ctx); err != nil {
		r.log.Warn("commit on revoke failed", "err", err)
	}
}

// lost partitions belong to someone else already: stop without committing.
func (r *Runner) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	r.stopWorkers(lost, false)
}

// stopWorkers stops the workers of the given partitions (all when nil). With finish they
// drain what was dispatched to them; without, they drop it.
func (r *Runner) stopWorkers(which map[string][]int32, finish bool) {
	r.mu.Lock()
	var stopping []*partitionWorker
	for tp, w := range r.workers {
		if which != nil && !containsPartition(which[tp.topic], tp.partition) {
			continue
		}
		stopping = append(stopping, w)
		delete(r.workers, tp)
	}
	r.metrics.Partitions.Set(float64(len(r.workers)))
	r.mu.Unlock()
	for _, w := range stopping {
		w.stop(finish)
	}
}

func containsPartition(ps []int32, p int32) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// partitionWorker processes one partition's records in order. Outputs are produced
// asynchronously; an acker goroutine marks a batch for commit once all its outputs are
// acknowledged, in batch order, so processing of the next batch overlaps the acks.
type partitionWorker struct {
	r     *Runner
	tp    topicPartition
	proc  Processor
	in    chan batch
	acks  chan *pendingBatch // nil in exactly-once mode: the transaction acknowledges
	abort atomic.Bool
	done  chan struct{}

	// Exactly-once with checkpoints. The worker sets next; the runner reads and sets
	// the rest between transactions, when the worker is idle.
	stateful       Stateful // proc, when its state can be checkpointed
	next           int64    // offset after the last record folded into the state; -1: none yet
	base           int64    // next as of the last committed transaction: what an abort rewinds to
	ckptNext       int64    // next of the latest committed checkpoint; -1: none
	ckptSent       int64    // next of the checkpoint written in the open transaction
	ckptChunk      int      // chunks of the latest committed checkpoint (tombstones for the rest)
	ckptSentChunks int
	ckptAt         time.Time // when the latest checkpoint was written (or the state restored)
}

// batch is one poll's records of a partition. In exactly-once mode txn counts the
// batches of the open transaction still being processed.
type batch struct {
	recs []*kgo.Record
	txn  *sync.WaitGroup
}

func (b batch) finish() {
	if b.txn != nil {
		b.txn.Done()
	}
}

type pendingBatch struct {
	wg   sync.WaitGroup
	last *kgo.Record
}

func newPartitionWorker(r *Runner, tp topicPartition, proc Processor) *partitionWorker {
	w := &partitionWorker{
		r:    r,
		tp:   tp,
		proc: proc,
		in:   make(chan batch, 1),
		done: make(chan struct{}),
		next: -1, base: -1, ckptNext: -1, ckptSent: -1,
	}
	if !r.cfg.ExactlyOnce {
		w.acks = make(chan *pendingBatch, r.cfg.InFlight)
	}
	return w
}

func (w *partitionWorker) stop(finish bool) {
	if !finish {
		w.abort.Store(true)
	}
	close(w.in)
	<-w.done
}

func (w *partitionWorker) run() {
	ackerDone := make(chan struct{})
	if w.acks != nil {
		go w.ack(ackerDone)
	} else {
		close(ackerDone)
	}
	defer func() {
		if w.acks != nil {
			close(w.acks)
		}
		<-ackerDone
		if c, ok := w.proc.(interface{ Close() }); ok {
			c.Close()
		}
		close(w.done)
	}()
	// After an abort the remaining batches are drained unprocessed, so that a blocked
	// dispatcher (and a transaction waiting for its batches) can move on.
	for b := range w.in {
		if !w.abort.Load() {
			w.processBatch(b.recs)
		}
		b.finish()
	}
}

func (w *partitionWorker) processBatch(recs []*kgo.Record) {
	m := w.r.metrics
	if w.stateful != nil && w.next >= 0 && recs[0].Offset < w.next {
		// The state already holds these records: folding them again would double them.
		w.r.fail(fmt.Errorf("partition %s/%d: offset %d delivered again, the state is at %d", w.tp.topic, w.tp.partition, recs[0].Offset, w.next))
		w.abort.Store(true)
		return
	}
	var pb *pendingBatch
	if w.acks != nil {
		pb = &pendingBatch{last: recs[len(recs)-1]}
	}
	start := time.Now()
	emitted := 0
	for _, rec := range recs {
		err := w.process(rec, pb, &emitted)
		if err == nil {
			continue
		}
		var bad *BadInputError
		if errors.As(err, &bad) {
			w.deadLetter(rec, bad, pb)
			continue
		}
		w.r.fail(fmt.Errorf("partition %s/%d offset %d: %w", rec.Topic, rec.Partition, rec.Offset, err))
		w.abort.Store(true)
		break
	}
	if w.acks == nil {
		w.next = recs[len(recs)-1].Offset + 1
	}
	m.RecordsIn.Add(float64(len(recs)))
	m.RecordsOut.Add(float64(emitted))
	m.BatchSeconds.Observe(time.Since(start).Seconds())
	if pb != nil && !w.abort.Load() {
		w.acks <- pb
	}
}

// process runs the processor with panics turned into errors: a poison record must not
// take the stage down.
func (w *partitionWorker) process(rec *kgo.Record, pb *pendingBatch, emitted *int) (err error) {
	defer func() {
		if p := recover(); p != nil {
			w.r.metrics.Panics.Inc()
			err = BadInput("panic", fmt.Errorf("processor panicked: %v", p))
		}
	}()
	return w.proc.Process(rec, func(out *kgo.Record) {
		*emitted++
		w.produce(out, pb)
	})
}

// produce sends out; with pb (at-least-once) the batch is marked for commit once every
// output is acknowledged, without (exactly-once) the transaction's End flushes it.
func (w *partitionWorker) produce(out *kgo.Record, pb *pendingBatch) {
	if pb == nil {
		w.r.cl.Produce(context.Background(), out, w.r.produceErr)
		return
	}
	pb.wg.Add(1)
	w.r.cl.Produce(context.Background(), out, func(r *kgo.Record, err error) {
		if err != nil {
			w.r.fail(fmt.Errorf("produce to %s: %w", r.Topic, err))
		}
		pb.wg.Done()
	})
}

func (w *partitionWorker) deadLetter(rec *kgo.Record, bad *BadInputError, pb *pendingBatch) {
	w.r.metrics.DeadLettered.WithLabelValues(bad.Reason).Inc()
	w.r.badLog.Warn("record sent to dead-letter topic", "topic", rec.Topic, "partition", rec.Partition, "offset", rec.Offset, "err", bad.Error())
	w.produce(dlq.Record(w.r.cfg.DLQTopic, w.r.stage.Name(), bad.Reason, rec, bad), pb)
}

// ack marks batches for commit in order once their outputs are acknowledged.
func (w *partitionWorker) ack(done chan struct{}) {
	defer close(done)
	for pb := range w.acks {
		pb.wg.Wait()
		if w.abort.Load() {
			continue
		}
		select {
		case <-w.r.fatal: // an output failed somewhere: commit nothing more
			continue
		default:
		}
		w.r.cl.MarkCommitRecords(pb.last)
	}
}
