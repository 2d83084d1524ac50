// Package testkit holds helpers shared by gonomaly's integration tests: a broker for the
// test (the embedded one, or a real cluster named by KAFKA_BROKERS), and reading a topic
// to the end.
package testkit

import (
	"bytes"
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/broker"
	"github.com/gonomaly/gonomaly/internal/cluster"
)

// Brokers returns the brokers a test runs against: KAFKA_BROKERS when set (a real
// cluster), else a fresh embedded broker closed when the test ends.
func Brokers(t testing.TB) []string {
	t.Helper()
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return cluster.ParseBrokers(env)
	}
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return []string{b.Addr()}
}

// Prefix returns a topic prefix unique to the test, so tests can share a real cluster.
func Prefix(t testing.TB) string {
	name := strings.NewReplacer("/", "-", " ", "-").Replace(t.Name())
	return "t" + name + "-" + time.Now().Format("150405.000000") + "."
}

// Client returns a plain client closed when the test ends.
func Client(t testing.TB, brokers []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// ReadN consumes topic from the start (with opts, e.g. read_committed) until it has n
// records or the timeout passes, and
// returns what it read.
func ReadN(t testing.TB, brokers []string, topic string, n int, timeout time.Duration, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl := Client(t, brokers, append([]kgo.Opt{kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		out = append(out, fetches.Records()...)
	}
	return out
}

// EndOffsets sums the end offsets of a topic's partitions.
func EndOffsets(t testing.TB, brokers []string, topic string) int64 {
	t.Helper()
	adm := kadm.NewClient(Client(t, brokers))
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	ends.Each(func(o kadm.ListedOffset) { sum += o.Offset })
	return sum
}

// SyncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns a copy of what was written.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
