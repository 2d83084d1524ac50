package processors_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gonomaly/gonomaly/internal/broker"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/dlq"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/processors"
)

// echoStage copies each record to out with the value prefixed by the partition's running
// count, so tests can check order and completeness. "panic" panics, "bad" is bad input.
type echoStage struct{ in, out string }

func (s echoStage) Name() string          { return "echo" }
func (s echoStage) InputTopics() []string { return []string{s.in} }
func (s echoStage) NewProcessor(string, int32) (processors.Processor, error) {
	return &echoProcessor{out: s.out}, nil
}

type echoProcessor struct {
	out string
}

func (p *echoProcessor) Process(rec *kgo.Record, emit func(*kgo.Record)) error {
	switch string(rec.Value) {
	case "panic":
		panic("boom")
	case "bad":
		return processors.BadInput("invalid", fmt.Errorf("value: bad"))
	}
	emit(&kgo.Record{Topic: p.out, Key: rec.Key, Value: bytes.ToUpper(rec.Value)})
	return nil
}

type fixture struct {
	brokers []string
	b       *broker.Broker
	in, out string
	dlq     string
}

func newFixture(t *testing.T, partitions int32) *fixture {
	t.Helper()
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	f := &fixture{brokers: []string{b.Addr()}, b: b, in: "in", out: "out", dlq: "dlq"}
	adm := kadm.NewClient(testkit.Client(t, f.brokers))
	if _, err := adm.CreateTopics(context.Background(), partitions, 1, nil, f.in, f.out, f.dlq); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) runner(group string) *processors.Runner {
	return processors.NewRunner(echoStage{f.in, f.out}, processors.RunnerConfig{
		Group:      group,
		DLQTopic:   f.dlq,
		ClientOpts: []kgo.Opt{kgo.SeedBrokers(f.brokers...)},
	})
}

// produce writes n records over keys k0..k{keys-1}, values "key:i" numbered per key.
func (f *fixture) produce(t *testing.T, from, n, keys int) {
	t.Helper()
	cl := testkit.Client(t, f.brokers)
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		k := i % keys
		recs = append(recs, &kgo.Record{Topic: f.in, Key: []byte("k" + strconv.Itoa(k)), Value: []byte(fmt.Sprintf("k%d:%d", k, i/keys))})
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, r *processors.Runner) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(20 * time.Second):
			t.Fatal("runner did not stop within 20s")
			return nil
		}
	}
}

// checkPerKeyOrder asserts that out holds every "kK:i" for i < perKey, each key's in
// increasing order on first appearance (at-least-once may repeat, never reorder).
func checkPerKeyOrder(t *testing.T, out []*kgo.Record, keys, perKey int) {
	t.Helper()
	next := map[string]int{}
	seen := map[string]bool{}
	for _, r := range out {
		v := string(r.Value)
		if seen[v] {
			continue
		}
		seen[v] = true
		key, num, _ := strings.Cut(v, ":")
		i, _ := strconv.Atoi(num)
		if want := next[key]; i != want {
			t.Fatalf("key %s: got %s, want %s:%d next (order broken or record lost)", key, v, key, want)
		}
		next[key]++
	}
	for k := range keys {
		if got := next["K"+strconv.Itoa(k)]; got != perKey {
			t.Fatalf("key K%d: %d outputs, want %d", k, got, perKey)
		}
	}
}

func TestRunnerKeepsPerKeyOrderAndLosesNothing(t *testing.T) {
	f := newFixture(t, 4)
	f.produce(t, 0, 5000, 10)
	stop := start(t, f.runner("g"))
	out := testkit.ReadN(t, f.brokers, f.out, 5000, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(out) != 5000 {
		t.Fatalf("%d outputs, want 5000", len(out))
	}
	checkPerKeyOrder(t, out, 10, 500)

	// Everything was committed: the group has no lag left.
	lag := groupLag(t, f, "g")
	if lag != 0 {
		t.Fatalf("lag after a clean stop: %d, want 0", lag)
	}
}

func groupLag(t *testing.T, f *fixture, group string) int64 {
	t.Helper()
	lags, err := cluster.GroupLag(context.Background(), testkit.Client(t, f.brokers), group, f.in)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, l := range lags {
		total += l.Lag
	}
	return total
}

func TestRunnerSendsPanicsAndBadInputToDLQ(t *testing.T) {
	f := newFixture(t, 2)
	cl := testkit.Client(t, f.brokers)
	vals := []string{"a", "panic", "b", "bad", "c"}
	for _, v := range vals {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: f.in, Key: []byte("k"), Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	stop := start(t, f.runner("g"))
	defer stop()
	out := testkit.ReadN(t, f.brokers, f.out, 3, 20*time.Second)
	dead := testkit.ReadN(t, f.brokers, f.dlq, 2, 20*time.Second)
	if len(out) != 3 || len(dead) != 2 {
		t.Fatalf("%d outputs and %d dead letters, want 3 and 2", len(out), len(dead))
	}
	reasons := map[string]string{}
	for _, d := range dead {
		reasons[string(d.Value)] = dlq.Header(d, "reason")
		if dlq.Header(d, "stage") != "echo" || dlq.Header(d, "topic") != f.in || dlq.Header(d, "offset") == "" {
			t.Errorf("dead letter headers: %v", d.Headers)
		}
	}
	if reasons["panic"] != "panic" || reasons["bad"] != "invalid" {
		t.Fatalf("reasons %v", reasons)
	}
	if !strings.Contains(dlq.Header(dead[0], "error"), "boom") && !strings.Contains(dlq.Header(dead[1], "error"), "boom") {
		t.Errorf("the panic's message is not in the error header")
	}
}

// TestRunnerCommitsOnlyAcknowledgedOutputs makes the broker reject every produce to the
// output topic: the runner must stop with an error and commit nothing it could not
// deliver, so a second runner delivers every record.
func TestRunnerCommitsOnlyAcknowledgedOutputs(t *testing.T) {
	f := newFixture(t, 4)
	var failing atomic.Bool
	failing.Store(true)
	// Produce v13+ names topics by id.
	meta, err := kadm.NewClient(testkit.Client(t, f.brokers)).ListTopics(context.Background(), f.out)
	if err != nil {
		t.Fatal(err)
	}
	outID := meta[f.out].ID
	f.b.Cluster().ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		f.b.Cluster().KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		toOut := false
		for _, rt := range pr.Topics {
			toOut = toOut || rt.Topic == f.out || rt.TopicID == outID
		}
		if !failing.Load() || !toOut {
			return nil, nil, false
		}
		return rejectProduce(pr), nil, true
	})
	f.produce(t, 0, 2000, 8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = f.runner("g").Run(ctx)
	if err == nil || ctx.Err() != nil {
		t.Fatalf("runner should fail on a rejected produce, got %v (ctx %v)", err, ctx.Err())
	}
	t.Logf("runner stopped: %v", err)
	if lag := groupLag(t, f, "g"); lag != 2000 {
		t.Fatalf("lag after failed produces: %d, want 2000 (nothing may be committed)", lag)
	}

	failing.Store(false)
	stop := start(t, f.runner("g"))
	out := testkit.ReadN(t, f.brokers, f.out, 2000, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkPerKeyOrder(t, out, 8, 250)
}

// TestRunnerRebalanceLosesNothing adds a second runner to the group mid-stream and then
// stops the first: every record still gets its output, in per-key order.
func TestRunnerRebalanceLosesNothing(t *testing.T) {
	f := newFixture(t, 4)
	f.produce(t, 0, 3000, 12)
	stopA := start(t, f.runner("g"))
	testkit.ReadN(t, f.brokers, f.out, 1000, 20*time.Second)
	stopB := start(t, f.runner("g"))
	f.produce(t, 3000, 3000, 12)
	time.Sleep(500 * time.Millisecond)
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	f.produce(t, 6000, 3000, 12)
	out := testkit.ReadN(t, f.brokers, f.out, 9000, 30*time.Second)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	checkPerKeyOrder(t, out, 12, 750)
}

// rejectProduce answers a produce request with INVALID_RECORD for every partition: a
// produce error injected into kfake.
func rejectProduce(pr *kmsg.ProduceRequest) *kmsg.ProduceResponse {
	resp := pr.ResponseKind().(*kmsg.ProduceResponse)
	for _, rt := range pr.Topics {
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, rp := range rt.Partitions {
			sp := kmsg.NewProduceResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.ErrorCode = kerr.InvalidRecord.Code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}
