package sinks_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/schemas"
	"github.com/gonomaly/gonomaly/sinks"
)

// target is one sink under the conformance suite: open gives a fresh sink on the same
// target (a restart), delivered lists event ids in the order the target received them.
type target struct {
	open      func(t *testing.T) sinks.Sink
	delivered func(t *testing.T) []string
	// idempotent targets never show an event twice, even across a crash.
	idempotent bool
	// stall, if set, makes the target itself hang until release is called.
	stall func() (release func())
}

func conformanceTargets(t *testing.T) map[string]func(t *testing.T) target {
	return map[string]func(t *testing.T) target{
		"stdout": func(t *testing.T) target {
			buf := &testkit.SyncBuffer{}
			return target{
				open:      func(*testing.T) sinks.Sink { return sinks.NewWriter(buf) },
				delivered: func(t *testing.T) []string { return jsonIDs(t, []byte(buf.String())) },
			}
		},
		"jsonl": func(t *testing.T) target {
			path := filepath.Join(t.TempDir(), "anomalies.jsonl")
			return target{
				open: func(t *testing.T) sinks.Sink { return mustOpen(t, "jsonl:"+path+"?max_bytes=8KiB") },
				delivered: func(t *testing.T) []string {
					var ids []string
					for _, data := range rotatedFiles(t, path) {
						ids = append(ids, jsonIDs(t, data)...)
					}
					return ids
				},
			}
		},
		"csv": func(t *testing.T) target {
			path := filepath.Join(t.TempDir(), "anomalies.csv")
			return target{
				open: func(t *testing.T) sinks.Sink { return mustOpen(t, "csv:"+path+"?max_bytes=8KiB") },
				delivered: func(t *testing.T) []string {
					var ids []string
					for _, data := range rotatedFiles(t, path) {
						rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
						if err != nil {
							t.Fatal(err)
						}
						if len(rows) == 0 || rows[0][0] != "event_id" {
							t.Fatalf("csv file without header: %q", data)
						}
						for _, r := range rows[1:] {
							ids = append(ids, r[0])
						}
					}
					return ids
				},
			}
		},
		"webhook-batch": func(t *testing.T) target { return webhookTarget(t, "raw") },
		"webhook-pagerduty": func(t *testing.T) target {
			t.Setenv("TEST_PD_KEY", "rk-123")
			return webhookTarget(t, "pagerduty")
		},
		"postgres": postgresTarget,
	}
}

// postgresTarget writes a table of its own on the test server (skipped without one).
// The order of delivery is the order rows were stored; a stall is a SHARE lock on the
// table held by another session, which blocks the sink's INSERT as a busy database
// would.
func postgresTarget(t *testing.T) target {
	table, uri := pgTable(t, "")
	return target{
		open: func(t *testing.T) sinks.Sink {
			s := mustOpen(t, uri)
			if err := s.(*sinks.Postgres).CreateTables(context.Background()); err != nil {
				t.Fatal(err)
			}
			return s
		},
		delivered:  func(t *testing.T) []string { return pgIDs(t, table) },
		idempotent: true,
		stall: func() func() {
			conn := pgConn(t)
			tx, err := conn.Begin(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(context.Background(), "LOCK TABLE "+table+" IN SHARE MODE"); err != nil {
				t.Fatal(err)
			}
			return sync.OnceFunc(func() {
				if err := tx.Commit(context.Background()); err != nil {
					t.Error(err)
				}
			})
		},
	}
}

// webhookTarget runs a real HTTP server that checks the signature and, like PagerDuty
// with dedup_key, keeps one copy of each event id.
func webhookTarget(t *testing.T, template string) target {
	const secret = "s3cret"
	t.Setenv("TEST_WEBHOOK_SECRET", secret)
	var (
		mu   sync.Mutex
		ids  []string
		seen = map[string]bool{}
		gate atomic.Pointer[chan struct{}]
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if g := gate.Load(); g != nil {
			<-*g
		}
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		if r.Header.Get(sinks.SignatureHeader) != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var got []string
		switch template {
		case "pagerduty":
			var ev struct {
				RoutingKey string `json:"routing_key"`
				DedupKey   string `json:"dedup_key"`
			}
			if json.Unmarshal(body, &ev) != nil || ev.RoutingKey != "rk-123" || ev.DedupKey == "" {
				http.Error(w, "bad event", http.StatusBadRequest)
				return
			}
			got = []string{ev.DedupKey}
		default:
			var evs []struct {
				EventID string `json:"event_id"`
			}
			if err := json.Unmarshal(body, &evs); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			for _, e := range evs {
				got = append(got, e.EventID)
			}
		}
		mu.Lock()
		for _, id := range got {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	uri := srv.URL + "/hook?secret_env=TEST_WEBHOOK_SECRET&timeout=30s&backoff=10ms&template=" + template
	if template == "pagerduty" {
		uri += "&routing_key_env=TEST_PD_KEY"
	} else {
		uri += "&batch=10"
	}
	return target{
		open: func(t *testing.T) sinks.Sink { return mustOpen(t, uri) },
		delivered: func(*testing.T) []string {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(ids)
		},
		idempotent: true,
		stall: func() func() {
			g := make(chan struct{})
			gate.Store(&g)
			return func() { gate.Store(nil); close(g) }
		},
	}
}

func mustOpen(t *testing.T, uri string) sinks.Sink {
	t.Helper()
	s, err := sinks.Open(uri)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func jsonIDs(t *testing.T, data []byte) []string {
	t.Helper()
	var ids []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var ev struct {
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		ids = append(ids, ev.EventID)
	}
	return ids
}

// rotatedFiles returns the contents of path's rotated files (oldest first, gunzipped)
// and then of path itself.
func rotatedFiles(t *testing.T, path string) [][]byte {
	t.Helper()
	ext := filepath.Ext(path)
	matches, err := filepath.Glob(strings.TrimSuffix(path, ext) + ".*" + ext + "*")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(matches)
	var out [][]byte
	for _, m := range append(matches, path) {
		data, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(m, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			if data, err = io.ReadAll(zr); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
		}
		out = append(out, data)
	}
	return out
}

// probe wraps a sink to watch and steer the runner: it counts writes and can act
// before and after each delivery.
type probe struct {
	sinks.Sink
	writes     atomic.Int64
	onWrite    func(n int64)
	before     func(ctx context.Context, n int) error
	after      func(n int) error
	deliveries int
}

func (p *probe) Write(line []byte) error {
	n := p.writes.Add(1)
	if p.onWrite != nil {
		p.onWrite(n)
	}
	return p.Sink.Write(line)
}

func (p *probe) Deliver(ctx context.Context) ([]sinks.Rejection, error) {
	p.deliveries++
	if p.before != nil {
		if err := p.before(ctx, p.deliveries); err != nil {
			return nil, err
		}
	}
	var rej []sinks.Rejection
	var err error
	if d, ok := p.Sink.(sinks.Deliverer); ok {
		rej, err = d.Deliver(ctx)
	} else {
		err = p.Sink.Sync()
	}
	if err == nil && p.after != nil {
		err = p.after(p.deliveries)
	}
	return rej, err
}

// stream is a topic of conformance events: series ss0..ssN, sequence numbers in values.
type stream struct {
	brokers      []string
	topic, group string
	n            int
}

const confSeries = 5

func newStream(t *testing.T, n int) stream {
	brokers := testkit.Brokers(t)
	prefix := testkit.Prefix(t)
	s := stream{brokers: brokers, topic: prefix + "anomalies", group: prefix + "sink", n: n}
	cl := testkit.Client(t, brokers)
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 2, -1, nil, s.topic, prefix+"dlq"); err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, n)
	for i := range n {
		series := fmt.Sprintf("ss%d", i%confSeries)
		ev := event(i)
		ev.Series, ev.EventID = series, fmt.Sprintf("%s-%05d", series, i)
		recs[i] = &kgo.Record{Topic: s.topic, Key: []byte(series), Value: schemas.AppendAnomalyEventJSON(nil, ev)}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	return s
}

// run starts the runner on sink; wait blocks until want records are committed in this
// run, then cancel stops it.
type running struct {
	committed atomic.Int64
	done      chan error
	cancel    context.CancelFunc
}

func (s stream) run(sink sinks.Sink, maxPoll int) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan error, 1), cancel: cancel}
	go func() {
		r.done <- sinks.Run(ctx, sink, sinks.RunnerConfig{
			Topic: s.topic, Group: s.group, Events: true, DLQTopic: strings.TrimSuffix(s.topic, "anomalies") + "dlq",
			ClientOpts:     []kgo.Opt{kgo.SeedBrokers(s.brokers...)},
			MaxPollRecords: maxPoll,
			Written:        func(recs []*kgo.Record) { r.committed.Add(int64(len(recs))) },
		})
	}()
	return r
}

func (r *running) waitCommitted(t *testing.T, want int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for r.committed.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("committed %d records, want %d", r.committed.Load(), want)
		}
		select {
		case err := <-r.done:
			t.Fatalf("runner stopped early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("runner did not stop")
	}
}

func (s stream) committedOffsets(t *testing.T) int64 {
	t.Helper()
	offs, err := kadm.NewClient(testkit.Client(t, s.brokers)).FetchOffsets(context.Background(), s.group)
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
	return sum
}

// checkDelivery asserts every event arrived, in order per series, with at most
// maxDups duplicates.
func checkDelivery(t *testing.T, ids []string, n, maxDups int) {
	t.Helper()
	count := map[string]int{}
	last := map[string]int{}
	dups := 0
	for _, id := range ids {
		count[id]++
		if count[id] > 1 {
			dups++
			continue
		}
		series, seqText, _ := strings.Cut(id, "-")
		seq, _ := strconv.Atoi(seqText)
		if prev, ok := last[series]; ok && seq <= prev {
			t.Fatalf("series %s: event %d delivered after %d", series, seq, prev)
		}
		last[series] = seq
	}
	if len(count) != n {
		t.Fatalf("%d distinct events delivered, want %d", len(count), n)
	}
	if dups > maxDups {
		t.Fatalf("%d duplicates delivered, want at most %d", dups, maxDups)
	}
}

func TestConformance(t *testing.T) {
	for name, mk := range conformanceTargets(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("OrderPerSeries", func(t *testing.T) {
				tg, s := mk(t), newStream(t, 300)
				sink := tg.open(t)
				r := s.run(sink, 40)
				r.waitCommitted(t, 300)
				r.stop(t)
				if err := sink.Close(); err != nil {
					t.Fatal(err)
				}
				checkDelivery(t, tg.delivered(t), 300, 0)
			})

			t.Run("NoLossAcrossCrash", func(t *testing.T) {
				tg, s := mk(t), newStream(t, 300)
				const maxPoll = 40
				crashed := &probe{Sink: tg.open(t), after: func(n int) error {
					if n == 3 { // the batch reached the target, then the process died before committing
						return errors.New("crash")
					}
					return nil
				}}
				r := s.run(crashed, maxPoll)
				var err error
				select {
				case err = <-r.done:
				case <-time.After(30 * time.Second):
					t.Fatal("crash not reached")
				}
				if err == nil || !strings.Contains(err.Error(), "crash") {
					t.Fatalf("runner returned %v, want the crash", err)
				}
				r.cancel()
				if err := crashed.Close(); err != nil {
					t.Fatal(err)
				}
				before := r.committed.Load()
				sink := tg.open(t)
				r = s.run(sink, maxPoll)
				r.waitCommitted(t, 300-before)
				r.stop(t)
				if err := sink.Close(); err != nil {
					t.Fatal(err)
				}
				maxDups := maxPoll // only the uncommitted batch comes again
				if tg.idempotent {
					maxDups = 0
				}
				checkDelivery(t, tg.delivered(t), 300, maxDups)
			})

			t.Run("BackPressure", func(t *testing.T) {
				tg, s := mk(t), newStream(t, 300)
				const maxPoll = 20
				p := &probe{Sink: tg.open(t)}
				var release func()
				if tg.stall != nil {
					release = tg.stall()
				} else {
					gate := make(chan struct{})
					p.before = func(ctx context.Context, _ int) error {
						select {
						case <-gate:
							return nil
						case <-ctx.Done():
							return ctx.Err()
						}
					}
					release = sync.OnceFunc(func() { close(gate) })
				}
				r := s.run(p, maxPoll)
				time.Sleep(1500 * time.Millisecond)
				if w := p.writes.Load(); w == 0 || w > maxPoll {
					release()
					t.Fatalf("sink took %d events while its target stalled, want 1..%d (one batch)", w, maxPoll)
				}
				if c := s.committedOffsets(t); c != 0 {
					release()
					t.Fatalf("committed %d records while the target stalled", c)
				}
				release()
				r.waitCommitted(t, 300)
				r.stop(t)
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				checkDelivery(t, tg.delivered(t), 300, 0)
			})

			t.Run("CleanShutdown", func(t *testing.T) {
				tg, s := mk(t), newStream(t, 300)
				const maxPoll = 40
				ctxCancel := make(chan struct{})
				p := &probe{Sink: tg.open(t)}
				p.onWrite = func(n int64) {
					if n == maxPoll+1 { // the second batch is being written
						close(ctxCancel)
					}
				}
				p.before = func(context.Context, int) error {
					time.Sleep(200 * time.Millisecond) // a slow target: the stop arrives mid-batch
					return nil
				}
				r := s.run(p, maxPoll)
				select {
				case <-ctxCancel:
				case <-time.After(30 * time.Second):
					t.Fatal("second batch never came")
				}
				start := time.Now()
				r.stop(t)
				if d := time.Since(start); d > 5*time.Second {
					t.Fatalf("stop took %s", d)
				}
				if err := p.Close(); err != nil {
					t.Fatal(err)
				}
				got, committed := len(tg.delivered(t)), s.committedOffsets(t)
				if int64(got) != committed || committed <= maxPoll {
					t.Fatalf("after a clean stop %d events delivered and %d committed; want equal and past the first batch (the pending batch is flushed and committed)", got, committed)
				}
				sink := tg.open(t)
				r = s.run(sink, maxPoll)
				r.waitCommitted(t, 300-committed)
				r.stop(t)
				if err := sink.Close(); err != nil {
					t.Fatal(err)
				}
				checkDelivery(t, tg.delivered(t), 300, 0)
			})
		})
	}
}

// Two sinks of one kind on one topic in one process (gonomaly run --sink jsonl:a
// --sink jsonl:b) register their metrics apart, by consumer group.
func TestTwoSinksOfOneKindHaveTheirOwnMetrics(t *testing.T) {
	s := newStream(t, 50)
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	for i, group := range []string{s.group + "-a", s.group + "-b"} {
		sink := mustOpen(t, "jsonl:"+filepath.Join(dir, fmt.Sprintf("%d.jsonl", i)))
		var committed atomic.Int64
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- sinks.Run(ctx, sink, sinks.RunnerConfig{Topic: s.topic, Group: group, Events: true, Registry: reg,
				ClientOpts: []kgo.Opt{kgo.SeedBrokers(s.brokers...)},
				Written:    func(recs []*kgo.Record) { committed.Add(int64(len(recs))) }})
		}()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
			sink.Close()
		})
		for deadline := time.Now().Add(20 * time.Second); committed.Load() < 50; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("group %s committed %d of 50", group, committed.Load())
			}
		}
	}
	want := fmt.Sprintf(`
# HELP gonomaly_sink_written_total Records written and made durable by the sink.
# TYPE gonomaly_sink_written_total counter
gonomaly_sink_written_total{group="%[1]s-a",sink="jsonl",topic="%[2]s"} 50
gonomaly_sink_written_total{group="%[1]s-b",sink="jsonl",topic="%[2]s"} 50
`, s.group, s.topic)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gonomaly_sink_written_total"); err != nil {
		t.Fatal(err)
	}
}
