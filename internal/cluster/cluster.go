// Package cluster is gonomaly's plumbing to a Kafka cluster: client setup with a clear
// connectivity check, the topic layout of DESIGN.md created idempotently, and consumer
// lag per partition.
package cluster

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Config names a cluster and how gonomaly lays out its topics there.
type Config struct {
	Brokers     []string
	Prefix      string        // topic prefix, default "gonomaly."
	Partitions  int32         // for every topic on a record's path; default 8
	Replication int16         // -1: the broker's default
	Retention   time.Duration // records, features, scores, results, anomalies, dlq; 0: broker default
	ClientID    string
	Logger      *slog.Logger
}

// WithDefaults fills unset fields.
func (c Config) WithDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "gonomaly."
	}
	if c.Partitions <= 0 {
		c.Partitions = 8
	}
	if c.Replication == 0 {
		c.Replication = -1
	}
	if c.ClientID == "" {
		c.ClientID = "gonomaly"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Topic returns the full name of a topic given relative to the prefix; names with a dot
// in them other than a relative "jobs.x" or "state.x" are taken as given.
func (c Config) Topic(name string) string { return c.Prefix + name }

// ParseBrokers splits a comma-separated broker list, dropping blanks.
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// dialErrors remembers the latest connection failure so that a timeout can say why.
type dialErrors struct {
	mu   sync.Mutex
	last error
}

func (d *dialErrors) OnBrokerConnect(meta kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	d.mu.Lock()
	d.last = fmt.Errorf("%s:%d: %w", meta.Host, meta.Port, err)
	d.mu.Unlock()
}

func (d *dialErrors) get() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.last
}

// Connect builds a client and checks within timeout that the cluster answers, so that a
// wrong address fails fast with the address in the message instead of retrying forever.
func Connect(ctx context.Context, cfg Config, timeout time.Duration, opts ...kgo.Opt) (*kgo.Client, error) {
	cfg = cfg.WithDefaults()
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("no Kafka brokers given (--brokers host:port,...)")
	}
	dials := &dialErrors{}
	base := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.WithHooks(dials),
	}
	cl, err := kgo.NewClient(append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client for %s: %w", strings.Join(cfg.Brokers, ","), err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := cl.Ping(pingCtx); err != nil {
		cl.Close()
		if last := dials.get(); last != nil {
			err = last
		}
		return nil, fmt.Errorf("cannot reach Kafka at %s within %s: %w", strings.Join(cfg.Brokers, ","), timeout, err)
	}
	return cl, nil
}

// MaxModelBytes is the largest message the models topic takes: one trained model. A
// client that publishes models must allow batches this large (kgo.ProducerBatchMaxBytes).
const MaxModelBytes = 16 << 20

// MaxJobBytes is the largest message a job queue topic takes: one job with its inline
// rows (10,000 rows of 30 columns fit).
const MaxJobBytes = 8 << 20

// TopicSpec is one topic of the layout.
type TopicSpec struct {
	Name       string
	Partitions int32
	Configs    map[string]*string
}

// Layout returns every topic DESIGN.md names, for the given stage groups' changelogs.
func Layout(cfg Config, stateGroups ...string) []TopicSpec {
	cfg = cfg.WithDefaults()
	del := map[string]*string{"cleanup.policy": kadm.StringPtr("delete")}
	if cfg.Retention > 0 {
		del["retention.ms"] = kadm.StringPtr(fmt.Sprint(cfg.Retention.Milliseconds()))
	}
	compact := map[string]*string{"cleanup.policy": kadm.StringPtr("compact")}
	longDelete := map[string]*string{"cleanup.policy": kadm.StringPtr("delete"), "retention.ms": kadm.StringPtr("-1")}
	// A trained model is one message: allow MaxModelBytes instead of the broker's 1 MB default.
	models := map[string]*string{"cleanup.policy": kadm.StringPtr("compact"), "max.message.bytes": kadm.StringPtr(fmt.Sprint(MaxModelBytes))}
	// A job is one message, with up to 10,000 inline rows.
	queue := map[string]*string{"cleanup.policy": kadm.StringPtr("delete"), "max.message.bytes": kadm.StringPtr(fmt.Sprint(MaxJobBytes))}
	if cfg.Retention > 0 {
		queue["retention.ms"] = del["retention.ms"]
	}
	p := cfg.Partitions
	specs := []TopicSpec{
		{cfg.Topic("records"), p, del},
		{cfg.Topic("features"), p, del},
		{cfg.Topic("scores"), p, del},
		{cfg.Topic("results"), p, del},
		{cfg.Topic("anomalies"), p, del},
		{cfg.Topic("dlq"), p, del},
		{cfg.Topic("jobs.detect"), p, queue},
		{cfg.Topic("jobs.ensemble"), p, queue},
		{cfg.Topic("jobs.preprocess"), p, queue},
		{cfg.Topic("jobs.train"), p, queue},
		{cfg.Topic("jobs.status"), p, compact},
		{cfg.Topic("jobs.results"), p, longDelete},
		// One partition: its consumer group's single member is the one scheduler.
		{cfg.Topic("jobs.schedule"), 1, del},
		{cfg.Topic("datasets"), p, longDelete},
		{cfg.Topic("datasets.index"), p, compact},
		{cfg.Topic("models"), 1, models},
	}
	for _, g := range stateGroups {
		specs = append(specs, StateTopicSpec(cfg.Topic("state."+g), p))
	}
	return specs
}

// StateTopicSpec is a stage group's state changelog: compacted, so that it keeps the
// latest checkpoint of every partition (checkpoints are chunked below the default
// message size, so no size override is needed). Segments roll at least hourly so that
// compaction, which never touches the active segment, bounds a quiet changelog too.
func StateTopicSpec(name string, partitions int32) TopicSpec {
	return TopicSpec{name, partitions, map[string]*string{
		"cleanup.policy":            kadm.StringPtr("compact"),
		"segment.ms":                kadm.StringPtr("3600000"),
		"min.cleanable.dirty.ratio": kadm.StringPtr("0.2"),
	}}
}

// EnsureLayout creates the layout's topics through cl, as EnsureTopics does: what every
// process that may be first on a cluster runs at start.
func (c Config) EnsureLayout(ctx context.Context, cl *kgo.Client, stateGroups ...string) error {
	c = c.WithDefaults()
	return EnsureTopics(ctx, kadm.NewClient(cl), Layout(c, stateGroups...), c.Replication)
}

// EnsureTopics creates missing topics and checks that existing ones have the configured
// partition count: a mismatch would silently break per-series partition locality, so it
// is an error that names the topic and both counts.
func EnsureTopics(ctx context.Context, adm *kadm.Client, specs []TopicSpec, replication int16) error {
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	existing, err := adm.ListTopics(ctx, names...)
	if err != nil {
		return fmt.Errorf("list topics: %w", err)
	}
	var errs []error
	for _, s := range specs {
		if d, ok := existing[s.Name]; ok && d.Err == nil {
			if got := int32(len(d.Partitions)); got != s.Partitions {
				errs = append(errs, fmt.Errorf("topic %s has %d partitions but %d are configured (use --partitions %d, or delete and recreate the topic)", s.Name, got, s.Partitions, got))
			}
			continue
		}
		resp, err := adm.CreateTopic(ctx, s.Partitions, replication, s.Configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !strings.Contains(err.Error(), "TOPIC_ALREADY_EXISTS") {
			errs = append(errs, fmt.Errorf("create topic %s: %w", s.Name, err))
		}
	}
	return errors.Join(errs...)
}

// PartitionLag is one partition's consumer lag.
type PartitionLag struct {
	Topic     string
	Partition int32
	Committed int64 // -1 when the group has committed nothing
	End       int64
	// Lag is the records a read_committed consumer still has to read: transaction
	// markers and aborted records between Committed and End are not counted (see
	// committedRecords), so a transactional topic read to its end has lag 0 although
	// End is one past the group's offset.
	Lag int64
}

// GroupLag returns the lag of a consumer group on every partition of the topics it
// consumes (or of the given topics when it has committed nothing yet). cl is a plain
// client (no consumer options); the backlog of partitions behind their end is counted
// by reading batch headers from the partition leaders.
func GroupLag(ctx context.Context, cl *kgo.Client, group string, topics ...string) ([]PartitionLag, error) {
	adm := kadm.NewClient(cl)
	committed, err := adm.FetchOffsets(ctx, group)
	// A broker that has just started answers COORDINATOR_NOT_AVAILABLE (or LOAD_IN_PROGRESS)
	// until its offsets topic is ready: retriable, so wait a little, within ctx.
	for wait := 100 * time.Millisecond; kerr.IsRetriable(err) && wait <= 3*time.Second; wait *= 2 {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("fetch offsets of group %s: %w (then %w)", group, err, ctx.Err())
		case <-time.After(wait):
		}
		committed, err = adm.FetchOffsets(ctx, group)
	}
	if errors.Is(err, kerr.GroupIDNotFound) {
		committed, err = kadm.OffsetResponses{}, nil // a group that never committed
	}
	if err != nil {
		return nil, fmt.Errorf("fetch offsets of group %s: %w", group, err)
	}
	set := map[string]bool{}
	for _, t := range topics {
		set[t] = true
	}
	committed.Each(func(o kadm.OffsetResponse) { set[o.Topic] = true })
	if len(set) == 0 {
		// Nothing committed yet: the members' assignments say what the group reads.
		if described, err := adm.DescribeGroups(ctx, group); err == nil {
			described.AssignedPartitions().Each(func(t string, _ int32) { set[t] = true })
		}
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("group %s has no committed offsets and no members; name the topics it reads with --topic", group)
	}
	all := make([]string, 0, len(set))
	for t := range set {
		all = append(all, t)
	}
	ends, err := adm.ListEndOffsets(ctx, all...)
	if err != nil {
		return nil, fmt.Errorf("list end offsets: %w", err)
	}
	starts, err := adm.ListStartOffsets(ctx, all...)
	if err != nil {
		return nil, fmt.Errorf("list start offsets: %w", err)
	}
	var details kadm.TopicDetails // leaders and topic ids, loaded when a partition lags
	var out []PartitionLag
	var errs []error
	ends.Each(func(e kadm.ListedOffset) {
		if e.Err != nil {
			errs = append(errs, fmt.Errorf("end offset of %s/%d: %w", e.Topic, e.Partition, e.Err))
			return
		}
		pl := PartitionLag{Topic: e.Topic, Partition: e.Partition, Committed: -1, End: e.Offset}
		from := int64(0)
		if s, ok := starts.Lookup(e.Topic, e.Partition); ok {
			from = s.Offset // nothing committed: the whole retained log is backlog
		}
		if c, ok := committed.Lookup(e.Topic, e.Partition); ok && c.Err == nil && c.At >= 0 {
			pl.Committed = c.At
			from = max(from, c.At)
		}
		if from < pl.End {
			if details == nil {
				if details, err = adm.ListTopics(ctx, all...); err != nil {
					errs = append(errs, fmt.Errorf("list topics: %w", err))
					details = kadm.TopicDetails{}
				}
			}
			pd, ok := details[e.Topic].Partitions[e.Partition]
			if !ok {
				pl.Lag = pl.End - from // leader unknown: offsets are the best we know
			} else if pl.Lag, err = committedRecords(ctx, cl, pd.Leader, e.Topic, details[e.Topic].ID, e.Partition, from, pl.End); err != nil {
				errs = append(errs, fmt.Errorf("read %s/%d: %w", e.Topic, e.Partition, err))
			}
		}
		out = append(out, pl)
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	sortLags(out)
	return out, nil
}

// maxLagScanBytes bounds how much of one partition GroupLag reads to count its backlog;
// past it the remaining offsets are counted as records (an overcount of one marker per
// transaction, negligible in a backlog that large).
const maxLagScanBytes = 16 << 20

// committedRecords counts the records a read_committed consumer gets from [from, end)
// of a partition. Transaction markers (control batches) and aborted transactions take
// offsets but are never delivered, so after a transactional writer the log end stays
// one past the last record. It reads record batch headers only (records are not
// decompressed); offsets above the last stable offset (open transactions) or past the
// scan budget count as records.
func committedRecords(ctx context.Context, cl *kgo.Client, leader int32, topic string, id [16]byte, partition int32, from, end int64) (int64, error) {
	var (
		n, at   = int64(0), from
		scanned int
		aborted = map[int64]bool{} // producers inside an aborted transaction
		seen    = map[[2]int64]bool{}
		pending []kmsg.FetchResponseTopicPartitionAbortedTransaction
	)
	for at < end && scanned < maxLagScanBytes {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxBytes = 4 << 20
		req.IsolationLevel = 1 // read_committed: the broker reports the last stable offset and aborted transactions
		req.SessionEpoch = -1
		rt := kmsg.NewFetchRequestTopic()
		rt.Topic, rt.TopicID = topic, id
		rp := kmsg.NewFetchRequestTopicPartition()
		rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes = partition, at, 1<<20
		rp.CurrentLeaderEpoch, rp.LastFetchedEpoch, rp.LogStartOffset = -1, -1, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl.Broker(int(leader)))
		if err != nil {
			return 0, err
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			return 0, fmt.Errorf("fetch answered %d topics", len(resp.Topics))
		}
		p := resp.Topics[0].Partitions[0]
		if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
			return 0, err
		}
		stable := end
		if p.LastStableOffset >= 0 {
			stable = min(stable, p.LastStableOffset)
		}
		for _, a := range p.AbortedTransactions {
			if k := [2]int64{a.ProducerID, a.FirstOffset}; !seen[k] {
				seen[k] = true
				pending = append(pending, a)
			}
		}
		slices.SortFunc(pending, func(a, b kmsg.FetchResponseTopicPartitionAbortedTransaction) int {
			return cmp.Compare(a.FirstOffset, b.FirstOffset)
		})
		before := at
		for b := p.RecordBatches; len(b) >= 12 && at < stable; {
			size := 12 + int(binary.BigEndian.Uint32(b[8:12]))
			if size > len(b) {
				break // the response cut the last batch short
			}
			var rb kmsg.RecordBatch
			if err := rb.ReadFrom(b[:size]); err != nil {
				return 0, fmt.Errorf("record batch at %d: %w", at, err)
			}
			b = b[size:]
			last := rb.FirstOffset + int64(rb.LastOffsetDelta)
			if last < at {
				continue
			}
			for len(pending) > 0 && pending[0].FirstOffset <= last {
				aborted[pending[0].ProducerID] = true
				pending = pending[1:]
			}
			control, transactional := rb.Attributes&0x20 != 0, rb.Attributes&0x10 != 0
			switch {
			case control:
				delete(aborted, rb.ProducerID) // the abort marker ends that transaction
			case transactional && aborted[rb.ProducerID]:
			case int64(rb.NumRecords) == last-rb.FirstOffset+1:
				// Contiguous offsets: count the part of the batch inside [at, stable).
				n += min(last, stable-1) - max(rb.FirstOffset, at) + 1
			default:
				n += int64(rb.NumRecords) // compacted: offsets have holes
			}
			at = last + 1
		}
		scanned += len(p.RecordBatches)
		if at == before || at >= stable {
			break // nothing more is readable below the stable offset
		}
	}
	if at < end {
		n += end - at
	}
	return n, nil
}

func sortLags(l []PartitionLag) {
	slices.SortFunc(l, func(a, b PartitionLag) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
}

var _ kgo.HookBrokerConnect = (*dialErrors)(nil)

// WaitAssigned waits until every group is stable with all partitions of the topics it
// reads assigned — so a benchmark measures steady state, not the first join.
func WaitAssigned(ctx context.Context, adm *kadm.Client, partitions int, groups ...string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		described, err := adm.DescribeGroups(ctx, groups...)
		if err == nil {
			ready := 0
			for _, g := range described {
				n := 0
				g.AssignedPartitions().Each(func(string, int32) { n++ })
				if g.Err == nil && g.State == "Stable" && n == partitions {
					ready++
				}
			}
			if ready == len(groups) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("consumer groups %s not assigned: %w", strings.Join(groups, ", "), ctx.Err())
		case <-tick.C:
		}
	}
}
