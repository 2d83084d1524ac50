package processors_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/processors"
)

var runnerIDs atomic.Int64

func (f *fixture) eosRunner(group, in, out string, opts ...kgo.Opt) *processors.Runner {
	return processors.NewRunner(echoStage{in, out}, processors.RunnerConfig{
		Group:           group,
		DLQTopic:        f.dlq,
		ClientOpts:      append([]kgo.Opt{kgo.SeedBrokers(f.brokers...)}, opts...),
		ExactlyOnce:     true,
		TransactionalID: "test-" + strconv.FormatInt(runnerIDs.Add(1), 10) + "-", // one per process
		MaxAborts:       5,
		MaxPollRecords:  1000, // several transactions per test, not one
	})
}

// readCommitted reads topic from the start with read_committed until it has n records
// and then for settle more (to catch extras), or until timeout.
func readCommitted(t *testing.T, brokers []string, topic string, n int, settle, timeout time.Duration) []*kgo.Record {
	t.Helper()
	return readTopic(t, brokers, topic, n, settle, timeout, kgo.ReadCommitted())
}

func readTopic(t *testing.T, brokers []string, topic string, n int, settle, timeout time.Duration, iso kgo.IsolationLevel) []*kgo.Record {
	t.Helper()
	cl := testkit.Client(t, brokers, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(iso), kgo.FetchMaxWait(100*time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []*kgo.Record
	for ctx.Err() == nil {
		if len(out) >= n {
			var settleCancel context.CancelFunc
			ctx, settleCancel = context.WithTimeout(ctx, settle)
			defer settleCancel()
		}
		out = append(out, cl.PollFetches(ctx).Records()...)
	}
	return out
}

// checkExactlyOnce asserts out holds each "Kk:i" (keys×perKey of them) exactly once, in
// per-key order.
func checkExactlyOnce(t *testing.T, out []*kgo.Record, keys, perKey int) {
	t.Helper()
	seen := map[string]int{}
	for _, r := range out {
		seen[string(r.Value)]++
	}
	for v, n := range seen {
		if n > 1 {
			t.Fatalf("%s read %d times with read_committed (%d records, %d distinct)", v, n, len(out), len(seen))
		}
	}
	if len(out) != keys*perKey {
		t.Fatalf("%d outputs, want %d", len(out), keys*perKey)
	}
	checkPerKeyOrder(t, out, keys, perKey)
}

// TestExactlyOncePipelineOneOutputPerInput chains two exactly-once runners (in → out →
// out2) over 20,000 records: read_committed sees each output once, and the second
// group, which read a transactional topic to its end, reports lag 0 although every
// partition's end is one past its committed offset (the last transaction's marker).
func TestExactlyOncePipelineOneOutputPerInput(t *testing.T) {
	f := newFixture(t, 4)
	adm := kadm.NewClient(testkit.Client(t, f.brokers))
	if _, err := adm.CreateTopics(context.Background(), 4, 1, nil, "out2"); err != nil {
		t.Fatal(err)
	}
	f.produce(t, 0, 20_000, 40)
	first := f.eosRunner("g1", f.in, f.out)
	second := f.eosRunner("g2", f.out, "out2")
	stop1, stop2 := start(t, first), start(t, second)
	out := readCommitted(t, f.brokers, "out2", 20_000, time.Second, 30*time.Second)
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, out, 40, 500)
	if c, _ := first.Transactions(); c == 0 {
		t.Fatal("no transaction committed")
	}

	lags := groupLags(t, f, "g2", f.out)
	var behind int
	for _, l := range lags {
		if l.Lag != 0 {
			t.Errorf("g2 %s/%d: lag %d, want 0 (committed %d, end %d)", l.Topic, l.Partition, l.Lag, l.Committed, l.End)
		}
		if l.End > l.Committed {
			behind++
		}
	}
	if behind == 0 {
		t.Error("no partition ends past the committed offset: the marker case is not exercised")
	}
	if lag := groupLag(t, f, "g1"); lag != 0 {
		t.Fatalf("g1 lag %d, want 0", lag)
	}
}

// TestExactlyOnceAbortsOnProduceErrorAndReprocesses fails two produce requests to the
// output mid-stream: their transactions abort, whatever they wrote stays invisible to
// read_committed readers, and the records are processed again.
func TestExactlyOnceAbortsOnProduceErrorAndReprocesses(t *testing.T) {
	f := newFixture(t, 4)
	var armed atomic.Bool
	var failures atomic.Int64
	f.failProduces(t, func() bool {
		return armed.Load() && failures.Add(1) <= 2
	})
	f.produce(t, 0, 4000, 16)
	r := f.eosRunner("g", f.in, f.out)
	stop := start(t, r)
	readCommitted(t, f.brokers, f.out, 4000, 0, 20*time.Second)
	armed.Store(true)
	f.produce(t, 4000, 4000, 16)
	out := readCommitted(t, f.brokers, f.out, 8000, time.Second, 30*time.Second)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, out, 16, 500)
	committed, aborted := r.Transactions()
	if aborted < 1 || failures.Load() < 2 {
		t.Fatalf("%d transactions aborted after %d rejected produce requests, want at least 1 after 2", aborted, failures.Load())
	}
	raw := readTopic(t, f.brokers, f.out, 8001, 500*time.Millisecond, 5*time.Second, kgo.ReadUncommitted())
	t.Logf("%d transactions committed, %d aborted; %d records in the log for 8000 outputs", committed, aborted, len(raw))
}

// TestExactlyOnceFailsAfterRepeatedAborts rejects every produce: the runner gives up
// after MaxAborts transactions and nothing is visible or committed.
func TestExactlyOnceFailsAfterRepeatedAborts(t *testing.T) {
	f := newFixture(t, 2)
	f.failProduces(t, func() bool { return true })
	f.produce(t, 0, 1000, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := f.eosRunner("g", f.in, f.out).Run(ctx)
	if err == nil || ctx.Err() != nil || !strings.Contains(err.Error(), "aborted") {
		t.Fatalf("runner should fail after repeated aborts, got %v (ctx %v)", err, ctx.Err())
	}
	if lag := groupLag(t, f, "g"); lag != 1000 {
		t.Fatalf("lag %d, want 1000: nothing may be committed", lag)
	}
	if out := readCommitted(t, f.brokers, f.out, 1, 0, time.Second); len(out) != 0 {
		t.Fatalf("%d outputs visible after aborted transactions", len(out))
	}
}

// TestExactlyOnceRebalance adds a second runner mid-stream and then stops the first:
// partitions move twice and every record still has exactly one visible output.
func TestExactlyOnceRebalance(t *testing.T) {
	f := newFixture(t, 4)
	f.produce(t, 0, 6000, 12)
	stopA := start(t, f.eosRunner("g", f.in, f.out))
	readCommitted(t, f.brokers, f.out, 2000, 0, 20*time.Second)
	stopB := start(t, f.eosRunner("g", f.in, f.out))
	f.produce(t, 6000, 6000, 12)
	time.Sleep(500 * time.Millisecond)
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	f.produce(t, 12000, 6000, 12)
	out := readCommitted(t, f.brokers, f.out, 18000, time.Second, 30*time.Second)
	if err := stopB(); err != nil {
		t.Fatal(err)
	}
	checkExactlyOnce(t, out, 12, 1500)
}

// failProduces makes the broker reject (INVALID_RECORD) the produce requests to the
// output topic for which fail returns true.
func (f *fixture) failProduces(t *testing.T, fail func() bool) {
	t.Helper()
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
		if !toOut || !fail() {
			return nil, nil, false
		}
		return rejectProduce(pr), nil, true
	})
}

// TestExactlyOnceSurvivesKill runs the stage in a child process (this test binary) and
// kills it with SIGKILL twice mid-stream, restarting it each time: its open transaction
// is aborted when the successor with the same transactional id starts, and the outputs
// are still exactly one per input.
func TestExactlyOnceSurvivesKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	f := newFixture(t, 4)
	const keys, perKey = 20, 1000
	f.produce(t, 0, keys*perKey, keys)
	adm := kadm.NewClient(testkit.Client(t, f.brokers))
	progress := func() int64 {
		offs, err := adm.FetchOffsets(context.Background(), "g")
		if err != nil {
			return 0
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) { sum += max(o.At, 0) })
		return sum
	}
	startChild := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestExactlyOnceChildProcess$", "-test.v")
		cmd.Env = append(os.Environ(), "GONOMALY_EOS_CHILD_BROKERS="+strings.Join(f.brokers, ","))
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	child := startChild()
	defer func() { child.Process.Kill(); child.Wait() }()
	for _, at := range []int64{keys * perKey / 4, keys * perKey * 3 / 5} {
		deadline := time.Now().Add(15 * time.Second)
		for progress() < at {
			if time.Now().After(deadline) {
				t.Fatalf("child committed %d offsets, waited for %d", progress(), at)
			}
			time.Sleep(20 * time.Millisecond)
		}
		child.Process.Kill() // SIGKILL: no final commit, no leave, a transaction open
		child.Wait()
		t.Logf("killed the stage at %d committed offsets", progress())
		child = startChild()
	}
	out := readCommitted(t, f.brokers, f.out, keys*perKey, time.Second, 30*time.Second)
	checkExactlyOnce(t, out, keys, perKey)
	raw := readTopic(t, f.brokers, f.out, keys*perKey+1, 500*time.Millisecond, 5*time.Second, kgo.ReadUncommitted())
	t.Logf("%d records in the log for %d outputs (the rest are the killed transactions' aborted writes)", len(raw), keys*perKey)
}

// TestExactlyOnceChildProcess is the stage of TestExactlyOnceSurvivesKill; it runs only
// in the child. Static membership and a fixed transactional id let the restarted
// process take over at once (as a StatefulSet pod would); a per-record delay keeps the
// stream going long enough to be killed in the middle.
func TestExactlyOnceChildProcess(t *testing.T) {
	brokers := os.Getenv("GONOMALY_EOS_CHILD_BROKERS")
	if brokers == "" {
		t.Skip("child process of TestExactlyOnceSurvivesKill")
	}
	r := processors.NewRunner(slowStage{echoStage{"in", "out"}}, processors.RunnerConfig{
		Group:           "g",
		DLQTopic:        "dlq",
		ClientOpts:      []kgo.Opt{kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.InstanceID("eos-child")},
		ExactlyOnce:     true,
		TransactionalID: "eos-child-",
		MaxPollRecords:  400,
	})
	if err := r.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// slowStage sleeps 1 ms every 20 records (sleeps shorter than a millisecond overshoot),
// so that the stream lasts about a second per run and a kill lands in its middle.
type slowStage struct{ echoStage }

func (s slowStage) NewProcessor(topic string, p int32) (processors.Processor, error) {
	proc, err := s.echoStage.NewProcessor(topic, p)
	return &slowProcessor{Processor: proc}, err
}

type slowProcessor struct {
	processors.Processor
	n int
}

func (p *slowProcessor) Process(rec *kgo.Record, emit func(*kgo.Record)) error {
	if p.n++; p.n%20 == 0 {
		time.Sleep(time.Millisecond)
	}
	return p.Processor.Process(rec, emit)
}

func groupLags(t *testing.T, f *fixture, group, topic string) []cluster.PartitionLag {
	t.Helper()
	lags, err := cluster.GroupLag(context.Background(), testkit.Client(t, f.brokers), group, topic)
	if err != nil {
		t.Fatal(err)
	}
	return lags
}
