package telemetry

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/testkit"
)

// produceTo writes n records to one partition of topic.
func produceTo(t *testing.T, cl *kgo.Client, topic string, partition int32, n int) {
	t.Helper()
	for range n {
		r := &kgo.Record{Topic: topic, Partition: partition, Value: []byte("x")}
		if err := cl.ProduceSync(context.Background(), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLagCollector(t *testing.T) {
	brokers := testkit.Brokers(t)
	prefix := testkit.Prefix(t)
	topic, busy, idle := prefix+"records", prefix+"busy", prefix+"idle"
	ctx := context.Background()
	cl := testkit.Client(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	adm := kadm.NewClient(cl)
	if _, err := adm.CreateTopic(ctx, 2, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	produceTo(t, cl, topic, 0, 10)
	produceTo(t, cl, topic, 1, 6)
	// busy has read 4 records of partition 0 and all of partition 1; idle has read nothing.
	offsets := kadm.Offsets{}
	offsets.Add(kadm.Offset{Topic: topic, Partition: 0, At: 4, LeaderEpoch: -1})
	offsets.Add(kadm.Offset{Topic: topic, Partition: 1, At: 6, LeaderEpoch: -1})
	if err := adm.CommitAllOffsets(ctx, busy, offsets); err != nil {
		t.Fatal(err)
	}

	lagCl := testkit.Client(t, brokers)
	c := NewLagCollector(lagCl, map[string][]string{busy: {topic}, idle: {topic}})
	clock := time.Now()
	c.now = func() time.Time { return clock }
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	// A second collector for other groups (a process's job workers beside its stages)
	// registers in the same registry.
	reg.MustRegister(NewLagCollector(lagCl, map[string][]string{prefix + "other": {topic}}))

	want := func(busy0, busy1, idle0, idle1 float64) string {
		return expo(`
# HELP gonomaly_consumer_lag_records Records a consumer group still has to read on a partition (transaction markers and aborted records excluded).
# TYPE gonomaly_consumer_lag_records gauge
gonomaly_consumer_lag_records{group="BUSY",partition="0",topic="TOPIC"} %v
gonomaly_consumer_lag_records{group="BUSY",partition="1",topic="TOPIC"} %v
gonomaly_consumer_lag_records{group="IDLE",partition="0",topic="TOPIC"} %v
gonomaly_consumer_lag_records{group="IDLE",partition="1",topic="TOPIC"} %v
# HELP gonomaly_consumer_lag_sum Records a consumer group still has to read, summed over its partitions (what KEDA scales on).
# TYPE gonomaly_consumer_lag_sum gauge
gonomaly_consumer_lag_sum{group="BUSY"} %v
gonomaly_consumer_lag_sum{group="IDLE"} %v
# HELP gonomaly_consumer_lag_errors_total Lag computations of a consumer group that failed (the group is left out of that scrape).
# TYPE gonomaly_consumer_lag_errors_total counter
gonomaly_consumer_lag_errors_total{group="BUSY"} 0
gonomaly_consumer_lag_errors_total{group="IDLE"} 0
`, strings.NewReplacer("BUSY", busy, "IDLE", idle, "TOPIC", topic), busy0, busy1, idle0, idle1, busy0+busy1, idle0+idle1)
	}
	if n, err := testutil.GatherAndCount(reg, "gonomaly_consumer_lag_sum"); err != nil || n != 3 {
		t.Fatalf("lag sums of both collectors: %d series, %v; want 3", n, err)
	}
	reg = prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(6, 0, 10, 6))); err != nil {
		t.Fatal(err)
	}

	// Within the TTL a scrape is served from the cache: new records are not seen yet.
	produceTo(t, cl, topic, 1, 3)
	clock = clock.Add(time.Second)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(6, 0, 10, 6))); err != nil {
		t.Fatalf("within the TTL: %v", err)
	}
	clock = clock.Add(5 * time.Second)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want(6, 3, 10, 9))); err != nil {
		t.Fatalf("after the TTL: %v", err)
	}
}

func TestLagCollectorErrorsAreCounted(t *testing.T) {
	down, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1"), kgo.RequestRetries(0), kgo.RetryTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	c := NewLagCollector(down, map[string][]string{"g": {"t"}}, LagTimeout(300*time.Millisecond), LagCacheTTL(0))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	for range 2 {
		start := time.Now()
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("a failing group must not fail the scrape: %v", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("scrape took %v despite the 300ms timeout", d)
		}
	}
	if n := testutil.CollectAndCount(c, "gonomaly_consumer_lag_records", "gonomaly_consumer_lag_sum"); n != 0 {
		t.Fatalf("%d lag series for a group whose lag is unknown", n)
	}
	if got := testutil.ToFloat64(c.errors.WithLabelValues("g")); got < 2 {
		t.Fatalf("errors_total = %v, want >= 2", got)
	}
}

// expo fills a text-exposition template: names first, then the values.
func expo(tmpl string, names *strings.Replacer, values ...any) string {
	return fmt.Sprintf(names.Replace(tmpl), values...)
}
