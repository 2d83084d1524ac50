// Package processors holds the pipeline's stages (preprocess, detect, ensemble) and the
// consume-transform-produce runner they share: one consumer group per stage, one
// goroutine per assigned partition, per-key order kept, offsets committed only after
// every output of a record is acknowledged by the broker (at-least-once).
package processors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

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
	log := cfg.Logger.With("stage", stage.Name(), "group", cfg.Group)
	return &Runner{
		stage:   stage,
		cfg:     cfg,
		log:     log,
		metrics: cfg.Metrics,
		badLog:  newRateLimitedLog(log, 5, time.Second),
		workers: map[topicPartition]*partitionWorker{},
		fatal:   make(chan struct{}),
	}
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
		kgo.AutoCommitMarks(),
		kgo.AutoCommitInterval(time.Second),
		kgo.OnPartitionsAssigned(r.assigned),
		kgo.OnPartitionsRevoked(r.revoked),
		kgo.OnPartitionsLost(r.lost),
		// Outputs of one partition must stay in order across retries.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerLinger(0),
		kgo.ProducerBatchMaxBytes(1<<20),
		kgo.FetchMaxWait(100*time.Millisecond),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("%s: kafka client: %w", r.stage.Name(), err)
	}
	r.cl = cl
	r.log.Info("stage started", "topics", r.stage.InputTopics())

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
		fetches.EachError(func(topic string, p int32, err error) {
			r.badLog.Warn("fetch error", "topic", topic, "partition", p, "err", err) // kgo retries; a dead topic would flood
		})
		r.mu.Lock()
		fetches.EachPartition(func(p kgo.FetchTopicPartition) {
			if len(p.Records) == 0 {
				return
			}
			w := r.workers[topicPartition{p.Topic, p.Partition}]
			if w == nil { // revoked between fetch and dispatch: the next owner reads them
				return
			}
			select {
			case w.in <- p.Records: // blocks when the worker is behind: back-pressure
			case <-r.fatal:
			}
		})
		r.mu.Unlock()
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

func (r *Runner) fail(err error) {
	r.fatalOnce.Do(func() {
		r.fatalErr = fmt.Errorf("%s: %w", r.stage.Name(), err)
		r.log.Error("stage failed", "err", err)
		close(r.fatal)
	})
}

func (r *Runner) assigned(_ context.Context, cl *kgo.Client, assigned map[string][]int32) {
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
	in    chan []*kgo.Record
	acks  chan *pendingBatch
	abort atomic.Bool
	done  chan struct{}
}

type pendingBatch struct {
	wg   sync.WaitGroup
	last *kgo.Record
}

func newPartitionWorker(r *Runner, tp topicPartition, proc Processor) *partitionWorker {
	return &partitionWorker{
		r:    r,
		tp:   tp,
		proc: proc,
		in:   make(chan []*kgo.Record, 1),
		acks: make(chan *pendingBatch, r.cfg.InFlight),
		done: make(chan struct{}),
	}
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
	go w.ack(ackerDone)
	defer func() {
		close(w.acks)
		<-ackerDone
		if c, ok := w.proc.(interface{ Close() }); ok {
			c.Close()
		}
		close(w.done)
	}()
	m := w.r.metrics
	for batch := range w.in {
		if w.abort.Load() {
			continue
		}
		pb := &pendingBatch{last: batch[len(batch)-1]}
		start := time.Now()
		emitted := 0
		for _, rec := range batch {
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
		m.RecordsIn.Add(float64(len(batch)))
		m.RecordsOut.Add(float64(emitted))
		m.BatchSeconds.Observe(time.Since(start).Seconds())
		if w.abort.Load() {
			break
		}
		w.acks <- pb
	}
	for range w.in { // drain so a blocked dispatcher can move on
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

func (w *partitionWorker) produce(out *kgo.Record, pb *pendingBatch) {
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
