// Package cluster is gonomaly's plumbing to a Kafka cluster: client setup with a clear
// connectivity check, the topic layout of DESIGN.md created idempotently, and consumer
// lag per partition.
package cluster

import (
	"context"
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
		specs = append(specs, TopicSpec{cfg.Topic("state." + g), p, compact})
	}
	return specs
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
	Lag       int64
}

// GroupLag returns the lag of a consumer group on every partition of the topics it
// consumes (or of the given topics when it has committed nothing yet).
func GroupLag(ctx context.Context, adm *kadm.Client, group string, topics ...string) ([]PartitionLag, error) {
	committed, err := adm.FetchOffsets(ctx, group)
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
	var out []PartitionLag
	ends.Each(func(e kadm.ListedOffset) {
		pl := PartitionLag{Topic: e.Topic, Partition: e.Partition, Committed: -1, End: e.Offset}
		if c, ok := committed.Lookup(e.Topic, e.Partition); ok && c.Err == nil && c.At >= 0 {
			pl.Committed = c.At
		}
		if pl.Committed >= 0 {
			pl.Lag = pl.End - pl.Committed
		} else if s, ok := starts.Lookup(e.Topic, e.Partition); ok {
			pl.Lag = pl.End - s.Offset // nothing committed: the whole retained log is backlog
		}
		out = append(out, pl)
	})
	sortLags(out)
	return out, nil
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
