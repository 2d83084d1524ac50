package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
)

func TestEnsureTopicsIsIdempotentAndReportsPartitionMismatch(t *testing.T) {
	brokers := testkit.Brokers(t)
	ctx := context.Background()
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 4}.WithDefaults()
	cl, err := cluster.Connect(ctx, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	layout := cluster.Layout(c, "detect")
	for range 2 {
		if err := cluster.EnsureTopics(ctx, adm, layout, c.Replication); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh client: kadm answers from a metadata cache that still remembers the topics
	// as missing (and a short metadata min age keeps this one from caching "missing" for
	// 5 s in turn). On Kafka (KRaft) CreateTopics answers once the controller has the
	// topic; the broker that serves Metadata and DescribeConfigs learns of it a moment
	// later and answers UNKNOWN_TOPIC_OR_PARTITION until then: wait for that, then check
	// what it reports.
	adm = kadm.NewClient(testkit.Client(t, brokers, kgo.MetadataMinAge(50*time.Millisecond)))
	var (
		details kadm.TopicDetails
		configs kadm.ResourceConfigs
	)
	visible := func() error {
		if details, err = adm.ListTopics(ctx, c.Topic("records"), c.Topic("jobs.status"), c.Topic("state.detect")); err != nil {
			return err
		}
		if err = details.Error(); err != nil {
			return err
		}
		if configs, err = adm.DescribeTopicConfigs(ctx, c.Topic("jobs.status"), c.Topic("state.detect"), c.Topic("records")); err != nil {
			return err
		}
		for _, rc := range configs {
			if rc.Err != nil {
				return fmt.Errorf("describe configs of %s: %w", rc.Name, rc.Err)
			}
		}
		return nil
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if err = visible(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("topics created by EnsureTopics not visible after 15s: %v", err)
		}
	}
	if got := len(details[c.Topic("records")].Partitions); got != 4 {
		t.Fatalf("records has %d partitions, want 4", got)
	}
	if len(configs) != 3 {
		t.Fatalf("described the configs of %d topics, want 3", len(configs))
	}
	for _, rc := range configs {
		want := "compact"
		if rc.Name == c.Topic("records") {
			want = "delete"
		}
		found := false
		for _, kv := range rc.Configs {
			if kv.Key == "cleanup.policy" {
				found = true
				if kv.MaybeValue() != want {
					t.Errorf("%s cleanup.policy = %s, want %s", rc.Name, kv.MaybeValue(), want)
				}
			}
		}
		if !found {
			t.Errorf("%s has no cleanup.policy", rc.Name)
		}
	}

	c8 := c
	c8.Partitions = 8
	err = cluster.EnsureTopics(ctx, adm, cluster.Layout(c8), c8.Replication)
	if err == nil || !strings.Contains(err.Error(), c.Topic("records")+" has 4 partitions but 8 are configured") {
		t.Fatalf("want a partition mismatch error naming the topic, got %v", err)
	}
}

func TestGroupLag(t *testing.T) {
	brokers := testkit.Brokers(t)
	ctx := context.Background()
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 2}.WithDefaults()
	cl, err := cluster.Connect(ctx, c, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	topic := c.Topic("records")
	// Group names carry the test's prefix too: on a shared cluster (KAFKA_BROKERS) a fixed
	// name would still hold the offsets an earlier run committed, on its own topic.
	nobody, memberOnly, g := c.Prefix+"nobody", c.Prefix+"member-only", c.Prefix+"g"
	if _, err := adm.CreateTopic(ctx, 2, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		r := &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint("key-", i))}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end0, _ := ends.Lookup(topic, 0)
	end1, _ := ends.Lookup(topic, 1)
	if end0.Offset < 2 {
		t.Fatalf("partition 0 got %d records; the test needs 2", end0.Offset)
	}
	lags, err := cluster.GroupLag(ctx, cl, nobody, topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range lags {
		total += l.Lag
		if l.Committed != -1 {
			t.Errorf("uncommitted group shows committed %d", l.Committed)
		}
	}
	if total != 10 {
		t.Fatalf("lag of a group that read nothing: %d, want 10", total)
	}
	// A group that has joined but committed nothing: its assignment names the topic.
	member := testkit.Client(t, brokers, kgo.ConsumerGroup(memberOnly), kgo.ConsumeTopics(topic), kgo.DisableAutoCommit())
	joinCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		member.PollFetches(joinCtx)
		described, _ := adm.DescribeGroups(ctx, memberOnly)
		n := 0
		described.AssignedPartitions().Each(func(string, int32) { n++ })
		if n == 2 || joinCtx.Err() != nil {
			break
		}
	}
	lags, err = cluster.GroupLag(ctx, cl, memberOnly)
	if err != nil {
		t.Fatal(err)
	}
	total = 0
	for _, l := range lags {
		total += l.Lag
	}
	if len(lags) != 2 || total != 10 {
		t.Fatalf("lag of a joined group that committed nothing: %+v, want 2 partitions and 10 in total", lags)
	}

	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: end0.Offset - 2})
	offsets.Add(kadm.Offset{Topic: topic, Partition: 1, At: end1.Offset})
	if _, err := adm.CommitOffsets(ctx, g, offsets); err != nil {
		t.Fatal(err)
	}
	lags, err = cluster.GroupLag(ctx, cl, g)
	if err != nil {
		t.Fatal(err)
	}
	if len(lags) != 2 || lags[0].Lag != 2 || lags[1].Lag != 0 {
		t.Fatalf("lags %+v, want partition 0 lag 2 and partition 1 lag 0", lags)
	}
}

// TestGroupLagCountsRecordsNotMarkers writes committed and aborted transactions: the
// markers and aborted records take offsets but are no backlog, so a group at the last
// record has lag 0 although the end offset is one past it, and a group at the start has
// as lag exactly the committed records.
func TestGroupLagCountsRecordsNotMarkers(t *testing.T) {
	brokers := testkit.Brokers(t)
	ctx := context.Background()
	prefix := testkit.Prefix(t)
	topic := prefix + "txn"
	cl := testkit.Client(t, brokers)
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 1, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	txn := testkit.Client(t, brokers, kgo.TransactionalID(prefix+"writer"), kgo.DefaultProduceTopic(topic))
	write := func(n int, commit kgo.TransactionEndTry) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if err := txn.ProduceSync(ctx, kgo.StringRecord(fmt.Sprint(i))).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
	}
	write(10, kgo.TryCommit) // offsets 0-9, marker 10
	write(5, kgo.TryAbort)   // 11-15 aborted, marker 16
	write(7, kgo.TryCommit)  // 17-23, marker 24
	// On Kafka the coordinator writes the markers after EndTxn has answered.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ends, err := adm.ListEndOffsets(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		end, _ := ends.Lookup(topic, 0)
		if end.Offset == 25 {
			break
		}
		if end.Offset > 25 || time.Now().After(deadline) {
			t.Fatalf("end offset %d, want 25 (22 records, 3 markers)", end.Offset)
		}
	}
	cases := []struct {
		at   int64
		want int64
	}{
		{-1, 17}, // nothing committed: every committed record
		{0, 17},
		{5, 12},
		{11, 7}, // before the aborted transaction
		{17, 7}, // after it
		{20, 4}, // inside the last transaction
		{24, 0}, // past the last record, before its marker: what a transactional reader commits
		{25, 0},
	}
	for i, c := range cases {
		group := fmt.Sprintf("%sg%d", prefix, i)
		if c.at >= 0 {
			offsets := kadm.Offsets{}
			offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: c.at})
			if _, err := adm.CommitOffsets(ctx, group, offsets); err != nil {
				t.Fatal(err)
			}
		}
		lags, err := cluster.GroupLag(ctx, cl, group, topic)
		if err != nil {
			t.Fatal(err)
		}
		if len(lags) != 1 || lags[0].Lag != c.want || lags[0].End != 25 {
			t.Errorf("committed %d: lags %+v, want lag %d (end 25)", c.at, lags, c.want)
		}
	}
}
