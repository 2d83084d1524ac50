package jobs

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/testkit"
)

// topicEnv is a broker, a topic of the given partitions, and a producer that picks
// partitions explicitly.
type topicEnv struct {
	brokers []string
	topic   string
	prod    *kgo.Client
}

func newTopicEnv(t *testing.T, partitions int32) *topicEnv {
	t.Helper()
	brokers := testkit.Brokers(t)
	e := &topicEnv{brokers: brokers, topic: testkit.Prefix(t) + "view"}
	e.prod = testkit.Client(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(e.prod).CreateTopic(ctx, partitions, -1, nil, e.topic); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *topicEnv) newConsumer(opts ...kgo.Opt) (*kgo.Client, error) {
	return kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(e.brokers...), kgo.FetchMaxWait(50 * time.Millisecond)}, opts...)...)
}

func (e *topicEnv) produce(t *testing.T, partition int32, key string, value []byte) {
	t.Helper()
	r := &kgo.Record{Topic: e.topic, Partition: partition, Key: []byte(key), Value: value}
	if err := e.prod.ProduceSync(context.Background(), r).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// seen is what a tail applied, per key, in order.
type seen struct {
	mu sync.Mutex
	m  map[string][]string
	n  int
}

func (s *seen) apply(r *kgo.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := "<nil>"
	if r.Value != nil {
		v = string(r.Value)
	}
	s.m[string(r.Key)] = append(s.m[string(r.Key)], v)
	s.n++
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

func TestTailSyncWaitsForEveryPartition(t *testing.T) {
	e := newTopicEnv(t, 3)
	// Partition 2 stays empty: it has nothing to wait for.
	for i := range 50 {
		e.produce(t, int32(i%2), "k"+strconv.Itoa(i%4), []byte(strconv.Itoa(i))) // a key stays on one partition
	}
	s := &seen{m: map[string][]string{}}
	tl, err := startTail(e.newConsumer, e.topic, s.apply)
	if err != nil {
		t.Fatal(err)
	}
	defer tl.close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tl.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.count(); n != 50 {
		t.Fatalf("after sync the tail applied %d of 50 records", n)
	}
	// Per key (one partition each), in offset order.
	s.mu.Lock()
	if got := s.m["k3"]; len(got) != 12 || got[0] != "3" || got[11] != "47" {
		t.Errorf("k3: %v", got)
	}
	s.mu.Unlock()

	// Later writes, a tombstone among them, are there after the next sync.
	e.produce(t, 2, "k9", []byte("late"))
	e.produce(t, 0, "k0", nil)
	if err := tl.sync(ctx); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n != 52 || s.m["k9"][0] != "late" || s.m["k0"][len(s.m["k0"])-1] != "<nil>" {
		t.Fatalf("after the second sync: %d records, k9 %v, k0 %v", s.n, s.m["k9"], s.m["k0"])
	}
}

func TestTailSyncOfAnEmptyTopicReturnsAtOnce(t *testing.T) {
	e := newTopicEnv(t, 2)
	tl, err := startTail(e.newConsumer, e.topic, func(*kgo.Record) {})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := tl.sync(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("sync of an empty topic took %s", d)
	}
}

// A closed tail never catches up again: sync says so instead of waiting for its
// context.
func TestTailSyncAfterCloseFails(t *testing.T) {
	e := newTopicEnv(t, 1)
	tl, err := startTail(e.newConsumer, e.topic, func(*kgo.Record) {})
	if err != nil {
		t.Fatal(err)
	}
	tl.close()
	e.produce(t, 0, "k", []byte("v"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	err = tl.sync(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("sync after close: %v (context: %v)", err, ctx.Err())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s", d)
	}
}

func TestTailSyncOfAMissingTopicFails(t *testing.T) {
	e := newTopicEnv(t, 1)
	tl, err := startTail(e.newConsumer, e.topic+".missing", func(*kgo.Record) {})
	if err != nil {
		t.Fatal(err)
	}
	defer tl.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tl.sync(ctx); err == nil {
		t.Fatal("sync of a missing topic: no error")
	}
}
