package processors

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
)

// Stateful is a Processor whose partition state can be checkpointed. In exactly-once
// mode the runner writes Snapshot to the stage's state topic in the transaction that
// commits the offsets it corresponds to, and a new owner of the partition (or the same
// one after an aborted transaction) restores it and re-processes, outputs suppressed,
// the records between the checkpoint and the group's committed offset: the state is then
// exactly that of an uninterrupted run.
type Stateful interface {
	// Snapshot encodes the partition's state; the processor keeps using it.
	Snapshot() ([]byte, error)
	// Restore replaces the state of a freshly built processor with a snapshot of the
	// same stage configuration.
	Restore(snapshot []byte) error
}

// A checkpoint is written as chunks of at most checkpointChunkBytes, each its own record
// keyed "<topic>/<partition>/<chunk>", so that snapshots of any size (a Half-Space Trees
// forest is tens of MiB) fit under every broker's default 1 MB message limit and every
// producer and fetch buffer; compaction keeps the latest value of every chunk key, so the
// latest checkpoint survives whole. Every chunk's value starts with a header: format
// version, the checkpoint's random id, the input offset the state corresponds to (the
// offset after the last record folded into it), chunk index and count.
const (
	checkpointVersion    = 1
	checkpointHeaderLen  = 1 + 8 + 8 + 4 + 4
	checkpointChunkBytes = 768 << 10
)

type checkpointHeader struct {
	id           uint64
	next         int64
	index, count uint32
}

func (h checkpointHeader) append(b []byte) []byte {
	b = append(b, checkpointVersion)
	b = binary.BigEndian.AppendUint64(b, h.id)
	b = binary.BigEndian.AppendUint64(b, uint64(h.next))
	b = binary.BigEndian.AppendUint32(b, h.index)
	return binary.BigEndian.AppendUint32(b, h.count)
}

func parseCheckpointHeader(v []byte) (checkpointHeader, []byte, error) {
	if len(v) < checkpointHeaderLen || v[0] != checkpointVersion {
		return checkpointHeader{}, nil, errors.New("not a checkpoint chunk of a known format")
	}
	h := checkpointHeader{
		id:    binary.BigEndian.Uint64(v[1:]),
		next:  int64(binary.BigEndian.Uint64(v[9:])),
		index: binary.BigEndian.Uint32(v[17:]),
		count: binary.BigEndian.Uint32(v[21:]),
	}
	if h.count == 0 || h.index >= h.count || h.next < 0 {
		return checkpointHeader{}, nil, errors.New("inconsistent checkpoint chunk header")
	}
	return h, v[checkpointHeaderLen:], nil
}

func checkpointKeyPrefix(topic string, partition int32) string {
	return topic + "/" + strconv.Itoa(int(partition)) + "/"
}

// checkpointRecords splits a snapshot into its chunk records, on the state partition
// that holds the input partition's checkpoints. Chunks a previous, larger checkpoint
// had beyond this one's count get tombstones so that compaction drops them.
func checkpointRecords(stateTopic string, statePartition int32, topic string, partition int32, next int64, snap []byte, prevChunks int) []*kgo.Record {
	count := max(1, (len(snap)+checkpointChunkBytes-1)/checkpointChunkBytes)
	h := checkpointHeader{id: rand.Uint64(), next: next, count: uint32(count)}
	prefix := checkpointKeyPrefix(topic, partition)
	recs := make([]*kgo.Record, 0, max(count, prevChunks))
	for i := range count {
		part := snap[min(i*checkpointChunkBytes, len(snap)):min((i+1)*checkpointChunkBytes, len(snap))]
		h.index = uint32(i)
		v := h.append(make([]byte, 0, checkpointHeaderLen+len(part)))
		recs = append(recs, &kgo.Record{Topic: stateTopic, Partition: statePartition,
			Key: []byte(prefix + strconv.Itoa(i)), Value: append(v, part...)})
	}
	for i := count; i < prevChunks; i++ {
		recs = append(recs, &kgo.Record{Topic: stateTopic, Partition: statePartition, Key: []byte(prefix + strconv.Itoa(i))})
	}
	return recs
}

// checkpoint is a restored checkpoint: the state and the input offset it corresponds to.
type checkpoint struct {
	next   int64
	data   []byte
	chunks int
}

// assembler collects chunks of one partition's checkpoints in log order and keeps the
// latest complete one. Chunks of one checkpoint are consecutive in its transaction, but
// compaction may have removed chunks of older ones, so chunks are grouped by id.
type assembler struct {
	prefix  string
	pending map[uint64][][]byte
	latest  *checkpoint
	bad     int
}

func (a *assembler) add(r *kgo.Record) {
	key := string(r.Key)
	if len(key) <= len(a.prefix) || key[:len(a.prefix)] != a.prefix || r.Value == nil {
		return
	}
	h, part, err := parseCheckpointHeader(r.Value)
	if err != nil {
		a.bad++
		return
	}
	if a.pending == nil {
		a.pending = map[uint64][][]byte{}
	}
	parts := a.pending[h.id]
	if parts == nil {
		parts = make([][]byte, h.count)
		a.pending[h.id] = parts
	}
	if int(h.count) != len(parts) {
		a.bad++
		return
	}
	parts[h.index] = part
	size := 0
	for _, p := range parts {
		if p == nil {
			return
		}
		size += len(p)
	}
	data := make([]byte, 0, size)
	for _, p := range parts {
		data = append(data, p...)
	}
	a.latest = &checkpoint{next: h.next, data: data, chunks: len(parts)}
	delete(a.pending, h.id)
}

// stateStore reads and writes one stage's checkpoints in its state topic.
type stateStore struct {
	topic      string
	partitions int32 // of the state topic
	clientOpts []kgo.Opt
	cl         *kgo.Client // for offset look-ups; closed when the runner stops
	adm        *kadm.Client
}

// statePartition is where an input partition's checkpoints go.
func (s *stateStore) statePartition(p int32) int32 { return p % s.partitions }

// ensureStateTopic creates the state topic when missing, with as many partitions as the
// input topic, and returns its partition count.
func ensureStateTopic(ctx context.Context, adm *kadm.Client, stateTopic, inputTopic string) (int32, error) {
	for {
		topics, err := adm.ListTopics(ctx, stateTopic, inputTopic)
		if err != nil {
			return 0, fmt.Errorf("list topics: %w", err)
		}
		if d, ok := topics[stateTopic]; ok && d.Err == nil && len(d.Partitions) > 0 {
			return int32(len(d.Partitions)), nil
		}
		in, ok := topics[inputTopic]
		if !ok || in.Err != nil || len(in.Partitions) == 0 {
			// The input topic does not exist yet: one partition per input partition
			// cannot be decided, so wait for it as the consumer does.
			select {
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(500 * time.Millisecond):
				continue
			}
		}
		spec := cluster.StateTopicSpec(stateTopic, int32(len(in.Partitions)))
		resp, err := adm.CreateTopic(ctx, spec.Partitions, -1, spec.Configs, stateTopic)
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("create state topic %s: %w", stateTopic, err)
		}
		if err == nil && resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
			return 0, fmt.Errorf("create state topic %s: %w", stateTopic, resp.Err)
		}
	}
}

// latest returns the partition's newest committed checkpoint, or nil. It reads the
// state partition backwards in growing windows from its last stable offset, so that it
// reads about one checkpoint however long the log is (and compaction bounds that).
func (s *stateStore) latest(ctx context.Context, topic string, p int32) (*checkpoint, error) {
	sp := s.statePartition(p)
	starts, err := s.adm.ListStartOffsets(ctx, s.topic)
	if err != nil {
		return nil, fmt.Errorf("list start offsets of %s: %w", s.topic, err)
	}
	ends, err := s.adm.ListCommittedOffsets(ctx, s.topic) // read_committed: the last stable offset
	if err != nil {
		return nil, fmt.Errorf("list stable offsets of %s: %w", s.topic, err)
	}
	so, _ := starts.Lookup(s.topic, sp)
	eo, _ := ends.Lookup(s.topic, sp)
	if so.Err != nil || eo.Err != nil {
		return nil, fmt.Errorf("offsets of %s/%d: %w", s.topic, sp, errors.Join(so.Err, eo.Err))
	}
	start, end := max(so.Offset, 0), eo.Offset
	if end <= start {
		return nil, nil
	}
	for window := int64(256); ; window *= 4 {
		from := max(start, end-window)
		a := &assembler{prefix: checkpointKeyPrefix(topic, p)}
		if err := readRange(ctx, s.clientOpts, s.topic, sp, from, end, a.add); err != nil {
			return nil, err
		}
		if a.latest != nil || from == start {
			return a.latest, nil
		}
	}
}

// readRange passes the committed data records of topic/partition in [from, to) to fn, in
// order. It reads with read_committed and keeps control records, so that it sees every
// offset up to to−1 (a record or a transaction marker) and knows when it is done.
func readRange(ctx context.Context, base []kgo.Opt, topic string, p int32, from, to int64, fn func(*kgo.Record)) error {
	if from >= to {
		return nil
	}
	opts := append([]kgo.Opt{}, base...)
	opts = append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
		kgo.FetchMaxWait(50*time.Millisecond),
		kgo.FetchMaxPartitionBytes(16<<20),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	last := from - 1
	idle := time.Now()
	for {
		// A stable range is there to read at once: a long silence means the range
		// ended in offsets that are gone (compacted away, or markers removed), not
		// that more is coming.
		pollCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fetches := cl.PollFetches(pollCtx)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var ferr error
		fetches.EachError(func(t string, part int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				ferr = fmt.Errorf("read %s/%d: %w", t, part, err)
			}
		})
		if ferr != nil {
			return ferr
		}
		done := false
		fetches.EachRecord(func(r *kgo.Record) {
			if done || r.Offset < from {
				return
			}
			if r.Offset >= to {
				done = true
				return
			}
			last = r.Offset
			if !r.Attrs.IsControl() {
				fn(r)
			}
			if r.Offset >= to-1 {
				done = true
			}
		})
		if done {
			return nil
		}
		if fetches.NumRecords() > 0 {
			idle = time.Now()
		} else if time.Since(idle) > 4*time.Second {
			return fmt.Errorf("read %s/%d [%d, %d): nothing after offset %d", topic, p, from, to, last)
		}
	}
}

// StateMetrics are a stage's metrics about its checkpointed partition state.
type StateMetrics struct {
	RestoreSeconds  prometheus.Observer
	CheckpointBytes prometheus.Observer
	Replayed        prometheus.Counter
	Checkpoints     prometheus.Counter
}

// NewStateMetrics registers a stage's state metrics with reg (nil: unregistered).
func NewStateMetrics(reg prometheus.Registerer, stage string) *StateMetrics {
	labels := prometheus.Labels{"stage": stage}
	restore := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "gonomaly_state_restore_seconds", ConstLabels: labels,
		Help:    "Time to restore one partition's state: read its latest checkpoint, decode it and re-process the records after it.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)})
	size := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "gonomaly_state_checkpoint_bytes", ConstLabels: labels,
		Help:    "Size of one partition's state checkpoint.",
		Buckets: prometheus.ExponentialBuckets(1024, 4, 12)})
	replayed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gonomaly_state_replayed_records_total", ConstLabels: labels,
		Help: "Records re-processed, outputs suppressed, to bring restored state up to the committed offset."})
	written := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gonomaly_state_checkpoints_total", ConstLabels: labels,
		Help: "Partition state checkpoints written (committed or not)."})
	if reg != nil {
		reg.MustRegister(restore, size, replayed, written)
	}
	return &StateMetrics{RestoreSeconds: restore, CheckpointBytes: size, Replayed: replayed, Checkpoints: written}
}

// stateTopicName is the state topic in use, or "" without checkpoints.
func (r *Runner) stateTopicName() string {
	if r.state == nil {
		return ""
	}
	return r.state.topic
}

// openState makes sure the state topic exists and prepares to read and write it.
func (r *Runner) openState(ctx context.Context) error {
	cl, err := kgo.NewClient(r.cfg.ClientOpts...)
	if err != nil {
		return err
	}
	adm := kadm.NewClient(cl)
	inputs := r.stage.InputTopics()
	parts, err := ensureStateTopic(ctx, adm, r.cfg.StateTopic, inputs[0])
	if err != nil {
		cl.Close()
		return err
	}
	r.state = &stateStore{topic: r.cfg.StateTopic, partitions: parts, clientOpts: r.cfg.ClientOpts, cl: cl, adm: adm}
	return nil
}

// statePartitioner sends checkpoint chunks to the partition they name (the one that
// holds their input partition's checkpoints) and everything else as base does.
type statePartitioner struct {
	topic string
	base  kgo.Partitioner
}

func (p statePartitioner) ForTopic(t string) kgo.TopicPartitioner {
	if t == p.topic {
		return kgo.ManualPartitioner().ForTopic(t)
	}
	return p.base.ForTopic(t)
}

// assignedStateful builds the workers of newly assigned partitions and restores their
// state to the group's committed offset before any of their records is polled: the
// callback runs between transactions and holds up polling (heartbeats go on), and the
// group fetches the offsets it starts from only after it returns.
func (r *Runner) assignedStateful(ctx context.Context, cl *kgo.Client, assigned map[string][]int32) {
	var added []*partitionWorker
	r.mu.Lock()
	for topic, parts := range assigned {
		for _, p := range parts {
			tp := topicPartition{topic, p}
			if r.workers[tp] != nil {
				continue
			}
			proc, err := r.stage.NewProcessor(topic, p)
			if err != nil {
				r.mu.Unlock()
				r.fail(fmt.Errorf("partition %s/%d: %w", topic, p, err))
				return
			}
			added = append(added, newPartitionWorker(r, tp, proc))
		}
	}
	r.mu.Unlock()
	var restore []*partitionWorker
	for _, w := range added {
		if st, ok := w.proc.(Stateful); ok {
			w.stateful = st
			restore = append(restore, w)
		}
	}
	if len(restore) > 0 {
		committed, err := r.committedOffsets(ctx, cl)
		if err == nil {
			err = r.restoreAll(ctx, restore, func(w *partitionWorker) int64 {
				if c, ok := committed[w.tp]; ok {
					return c
				}
				return -1
			})
		}
		if err != nil {
			if ctx.Err() == nil {
				r.fail(fmt.Errorf("restore partition state: %w", err))
			}
			for _, w := range added {
				close(w.in)
				go w.run() // closes the processors
			}
			return
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range added {
		r.workers[w.tp] = w
		go w.run()
	}
	r.metrics.Partitions.Set(float64(len(r.workers)))
	r.log.Debug("partitions assigned", "partitions", assigned, "restored", len(restore))
}

// committedOffsets fetches the group's committed offsets, waiting until no transaction
// that commits offsets for the group is open (a killed owner's, until it is fenced or
// times out): those offsets are where the group will resume, so the state must be there.
func (r *Runner) committedOffsets(ctx context.Context, cl *kgo.Client) (map[topicPartition]int64, error) {
	adm := kadm.NewClient(cl)
	deadline := time.Now().Add(r.cfg.TransactionTimeout + 30*time.Second)
	for {
		resps, err := adm.FetchOffsets(kadm.RequireStable(ctx), r.cfg.Group)
		if err == nil {
			err = resps.Error()
		}
		if err == nil {
			out := map[topicPartition]int64{}
			resps.Each(func(o kadm.OffsetResponse) {
				if o.At >= 0 {
					out[topicPartition{o.Topic, o.Partition}] = o.At
				}
			})
			return out, nil
		}
		if !errors.Is(err, kerr.UnstableOffsetCommit) && !kerr.IsRetriable(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("fetch committed offsets of %s: %w", r.cfg.Group, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// restoreAll restores workers concurrently, each to the offset target gives it.
func (r *Runner) restoreAll(ctx context.Context, ws []*partitionWorker, target func(*partitionWorker) int64) error {
	errs := make([]error, len(ws))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs[i] = r.restorePartition(ctx, w, target(w))
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// restorePartition rebuilds w's processor in the state of an uninterrupted run that has
// processed every record before committed (−1: nothing committed, consuming starts at the
// beginning with fresh state): the latest checkpoint at or before committed, then the
// records from it to committed re-processed with their outputs dropped (they were
// committed already). Without a usable checkpoint the records are re-processed from the
// partition's start.
func (r *Runner) restorePartition(ctx context.Context, w *partitionWorker, committed int64) error {
	start := time.Now()
	topic, p := w.tp.topic, w.tp.partition
	proc, err := r.stage.NewProcessor(topic, p)
	if err != nil {
		return fmt.Errorf("partition %s/%d: %w", topic, p, err)
	}
	st, _ := proc.(Stateful)
	if st == nil {
		return fmt.Errorf("partition %s/%d: processor %T is not Stateful", topic, p, proc)
	}
	w.replaceProcessor(proc, st)
	w.next, w.base, w.ckptAt = committed, committed, time.Now()
	if committed < 0 {
		return nil
	}
	ck, err := r.state.latest(ctx, topic, p)
	if err != nil {
		return fmt.Errorf("partition %s/%d: read checkpoint: %w", topic, p, err)
	}
	from := int64(-1) // the partition's start
	switch {
	case ck == nil:
	case ck.next > committed:
		// The group's offsets were reset behind the state (or expired): the state of
		// an uninterrupted run up to committed is only had by re-processing.
		r.log.Warn("partition state checkpoint is ahead of the committed offset; rebuilding from the partition's start",
			"topic", topic, "partition", p, "checkpoint", ck.next, "committed", committed)
		w.ckptChunk = ck.chunks
	default:
		if err := st.Restore(ck.data); err != nil {
			// Another spec, or damage: the state cannot be had, start it cold.
			r.log.Warn("partition state checkpoint cannot be restored; the state starts cold", "topic", topic, "partition", p, "err", err)
			if proc, err = r.stage.NewProcessor(topic, p); err != nil {
				return err
			}
			st, _ = proc.(Stateful)
			w.replaceProcessor(proc, st)
			w.ckptChunk = ck.chunks
			return nil
		}
		from, w.ckptNext, w.ckptChunk = ck.next, ck.next, ck.chunks
		r.cfg.StateMetrics.CheckpointBytes.Observe(float64(len(ck.data)))
	}
	if from < 0 {
		starts, err := r.state.adm.ListStartOffsets(ctx, topic)
		if err != nil {
			return fmt.Errorf("partition %s/%d: start offset: %w", topic, p, err)
		}
		so, _ := starts.Lookup(topic, p)
		if so.Err != nil {
			return fmt.Errorf("partition %s/%d: start offset: %w", topic, p, so.Err)
		}
		from = max(so.Offset, 0)
	}
	var replayed int
	var perr error
	discard := func(*kgo.Record) {}
	err = readRange(ctx, r.state.clientOpts, topic, p, from, committed, func(rec *kgo.Record) {
		if perr != nil {
			return
		}
		replayed++
		if err := replayOne(proc, rec, discard); err != nil {
			var bad *BadInputError
			if !errors.As(err, &bad) {
				perr = fmt.Errorf("re-process offset %d: %w", rec.Offset, err)
			}
		}
	})
	if err == nil {
		err = perr
	}
	if err != nil {
		return fmt.Errorf("partition %s/%d: %w", topic, p, err)
	}
	if replayed > 0 {
		// Checkpoint at the end of the first transaction rather than StateInterval from
		// now: a process that dies before then (a crash loop, a kill soon after a
		// restart) would leave its successor the same replay again, or a longer one.
		w.ckptAt = time.Time{}
	}
	r.cfg.StateMetrics.Replayed.Add(float64(replayed))
	r.cfg.StateMetrics.RestoreSeconds.Observe(time.Since(start).Seconds())
	r.log.Info("partition state restored", "topic", topic, "partition", p, "checkpoint", from, "committed", committed,
		"replayed", replayed, "seconds", time.Since(start).Seconds())
	return nil
}

// replayOne re-processes a record for its effect on the state; a panic is bad input, as
// it was when the record was first processed.
func replayOne(proc Processor, rec *kgo.Record, emit func(*kgo.Record)) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = BadInput("panic", fmt.Errorf("processor panicked: %v", p))
		}
	}()
	return proc.Process(rec, emit)
}

func (w *partitionWorker) replaceProcessor(proc Processor, st Stateful) {
	if c, ok := w.proc.(interface{ Close() }); ok && w.proc != proc {
		c.Close()
	}
	w.proc, w.stateful = proc, st
}

// checkpoint writes, into the open transaction, the state of every partition that is
// due (all that changed when stopping). Workers are idle: the transaction's batches are
// processed. It returns the workers whose checkpoint went out.
func (r *Runner) checkpoint(all bool) []*partitionWorker {
	r.mu.Lock()
	var due []*partitionWorker
	now := time.Now()
	for _, w := range r.workers {
		if w.stateful != nil && w.next >= 0 && w.next != w.ckptNext && (all || now.Sub(w.ckptAt) >= r.cfg.StateInterval) {
			due = append(due, w)
		}
	}
	r.mu.Unlock()
	if len(due) == 0 {
		return nil
	}
	snaps := make([][]byte, len(due))
	errs := make([]error, len(due))
	var wg sync.WaitGroup
	for i, w := range due {
		wg.Add(1)
		go func() {
			defer wg.Done()
			snaps[i], errs[i] = w.stateful.Snapshot()
		}()
	}
	wg.Wait()
	var sent []*partitionWorker
	for i, w := range due {
		w.ckptAt = now
		if errs[i] != nil {
			// Not fatal: a restore then starts from an older checkpoint and
			// re-processes more, with the same result.
			r.badLog.Warn("partition state checkpoint failed", "topic", w.tp.topic, "partition", w.tp.partition, "err", errs[i])
			continue
		}
		recs := checkpointRecords(r.state.topic, r.state.statePartition(w.tp.partition), w.tp.topic, w.tp.partition, w.next, snaps[i], w.ckptChunk)
		for _, rec := range recs {
			r.cl.Produce(context.Background(), rec, r.produceErr)
		}
		w.ckptSent, w.ckptSentChunks = w.next, max(1, (len(snaps[i])+checkpointChunkBytes-1)/checkpointChunkBytes)
		r.cfg.StateMetrics.CheckpointBytes.Observe(float64(len(snaps[i])))
		r.cfg.StateMetrics.Checkpoints.Inc()
		sent = append(sent, w)
	}
	return sent
}

// txnEnded moves the partitions' bookkeeping after a transaction: on commit the state
// and the checkpoints written are the committed ones; on abort every partition that
// processed records in it is restored to its committed offset, where the session has
// rewound consumption to.
func (r *Runner) txnEnded(ctx context.Context, committed bool, ckpts []*partitionWorker) {
	r.mu.Lock()
	var dirty []*partitionWorker
	for _, w := range r.workers {
		switch {
		case w.stateful == nil:
		case committed:
			w.base = w.next
		case w.next != w.base:
			dirty = append(dirty, w)
		}
	}
	r.mu.Unlock()
	if committed {
		for _, w := range ckpts {
			w.ckptNext, w.ckptChunk = w.ckptSent, w.ckptSentChunks
		}
		return
	}
	select {
	case <-r.fatal:
		return // failing: the state is dropped anyway
	default:
	}
	if len(dirty) == 0 {
		return
	}
	if err := r.restoreAll(ctx, dirty, func(w *partitionWorker) int64 { return w.base }); err != nil && ctx.Err() == nil {
		r.fail(fmt.Errorf("restore partition state after an aborted transaction: %w", err))
	}
}
