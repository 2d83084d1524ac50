package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/schemas"
)

// streamEnv is a broker with an anomalies topic of 4 partitions, a producer that picks
// partitions explicitly, and an API server over HTTP streaming from that topic.
type streamEnv struct {
	topic string
	prod  *kgo.Client
	s     *Server
	url   string
}

func newStreamEnv(t *testing.T, cfg Config) *streamEnv {
	t.Helper()
	brokers := testkit.Brokers(t)
	topic := testkit.Prefix(t) + "anomalies"
	prod := testkit.Client(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(prod).CreateTopic(ctx, 4, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	cfg.NewConsumer = NewConsumerFunc(brokers)
	cfg.Topics.Anomalies = topic
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	s := newTestServer(t, cfg)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return &streamEnv{topic: topic, prod: prod, s: s, url: ts.URL + Prefix + "/anomalies/stream"}
}

func testEvent(id, series string) *schemas.Result {
	return &schemas.Result{
		EventID: id, Series: series, TS: 1795762800000, Score: 0.97, Threshold: 0.9, Severity: "critical",
		Detectors: map[string]float64{"hst": 0.95, "zscore": 0.99}, Contributions: map[string]float64{"cpu": 0.81, "mem": 0.19},
		Values: map[string]float64{"cpu": 0.93, "mem": 0.41}, Source: schemas.Source{Topic: "gonomaly.records", Partition: 3, Offset: 12345},
		Pipeline: "default", ModelVersion: "v1", DetectedAt: 1795762801000,
	}
}

// produce publishes ev to partition, as Avro or JSON, and waits for the ack.
func (e *streamEnv) produce(t *testing.T, ev *schemas.Result, partition int32, avro bool) {
	t.Helper()
	v := schemas.AppendAnomalyEventJSON(nil, ev)
	if avro {
		v = schemas.AppendAnomalyEventAvro(nil, ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := &kgo.Record{Topic: e.topic, Partition: partition, Key: []byte(ev.Series), Value: v}
	if err := e.prod.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

type sseStream struct {
	resp *http.Response
	r    *bufio.Reader
}

// open opens the stream and checks it answered 200 with text/event-stream.
func (e *streamEnv) open(t *testing.T, ctx context.Context, query string) *sseStream {
	t.Helper()
	resp := e.get(t, ctx, query)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("status %d, type %q: %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseStream{resp: resp, r: bufio.NewReader(resp.Body)}
}

func (e *streamEnv) get(t *testing.T, ctx context.Context, query string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", e.url+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

type sseEvent struct {
	id, event, data string
	comments        []string
}

// next reads one block (up to a blank line).
func (st *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := st.r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v (partial %q)", err, line)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			return ev
		case strings.HasPrefix(line, ":"):
			ev.comments = append(ev.comments, line)
		case strings.HasPrefix(line, "id: "):
			ev.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			if ev.data != "" {
				t.Fatalf("two data lines in one event")
			}
			ev.data = line[6:]
		default:
			t.Fatalf("unexpected line %q", line)
		}
	}
}

// nextEvent skips heartbeats.
func (st *sseStream) nextEvent(t *testing.T) sseEvent {
	t.Helper()
	for {
		ev := st.next(t)
		if ev.id != "" || ev.data != "" {
			return ev
		}
	}
}

func checkEvent(t *testing.T, got sseEvent, want *schemas.Result) {
	t.Helper()
	wantData := string(schemas.AppendAnomalyEventJSON(nil, want))
	if got.id != want.EventID || got.event != "anomaly" || got.data != wantData {
		t.Fatalf("event id %q type %q data %s\nwant id %q data %s", got.id, got.event, got.data, want.EventID, wantData)
	}
}

// TestAnomalyStreamLive: a stream sees events published after it opened, from every
// partition, in JSON and Avro, as SSE with their JSON form on one data line; it sends
// heartbeats; a series filter passes only those series, in partition order.
func TestAnomalyStreamLive(t *testing.T) {
	e := newStreamEnv(t, Config{StreamHeartbeat: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	all := e.open(t, ctx, "")
	filtered := e.open(t, ctx, "?series=host-2,%20host-3&from=latest")
	if got := testutil.ToFloat64(e.s.streams.open); got != 2 {
		t.Fatalf("open streams gauge %v, want 2", got)
	}

	// A heartbeat comes before any event.
	if ev := all.next(t); len(ev.comments) != 1 || ev.comments[0] != ": ping" || ev.id != "" {
		t.Fatalf("first block %+v, want a ping", ev)
	}

	e1, e2 := testEvent("ev-json", "host-1"), testEvent("ev-avro", "host-2")
	e1.Values = map[string]float64{"cpu": 1.5}
	e.produce(t, e1, 1, false)
	e.produce(t, e2, 3, true)
	got := map[string]sseEvent{}
	for len(got) < 2 {
		ev := all.nextEvent(t)
		got[ev.id] = ev
	}
	checkEvent(t, got["ev-json"], e1)
	checkEvent(t, got["ev-avro"], e2)

	// The filtered stream: host-1 is dropped, host-2 and host-3 pass. Order holds within
	// a partition (ev-5 before ev-3 on partition 2), not across partitions, and an id
	// with a newline stays on its line.
	e3 := testEvent("ev-3\nsplit", "host-3")
	e.produce(t, testEvent("ev-4", "host-1"), 2, false)
	e.produce(t, testEvent("ev-5", "host-2"), 2, true)
	e.produce(t, e3, 2, false)
	pos := map[string]int{}
	for i := 0; i < 3; i++ {
		ev := filtered.nextEvent(t)
		if ev.id == "ev-4" {
			t.Fatalf("filtered stream passed host-1's event: %+v", ev)
		}
		if ev.id == "ev-avro" {
			checkEvent(t, ev, e2)
		}
		if ev.id == `"ev-3\nsplit"` && !strings.Contains(ev.data, `"event_id":"ev-3\nsplit"`) {
			t.Fatalf("filtered stream: id with a newline: %+v", ev)
		}
		pos[ev.id] = i
	}
	p5, ok5 := pos["ev-5"]
	p3, ok3 := pos[`"ev-3\nsplit"`]
	if _, okAvro := pos["ev-avro"]; !okAvro || !ok5 || !ok3 || p5 > p3 {
		t.Fatalf("filtered stream order %v: want ev-avro, and ev-5 before ev-3", pos)
	}
}

// TestAnomalyStreamFrom: from=latest (the default) starts at the end; from=earliest
// replays what was published before the stream opened.
func TestAnomalyStreamFrom(t *testing.T) {
	e := newStreamEnv(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old := testEvent("ev-old", "host-1")
	e.produce(t, old, 0, true)

	replay := e.open(t, ctx, "?from=earliest")
	checkEvent(t, replay.nextEvent(t), old)

	live := e.open(t, ctx, "")
	fresh := testEvent("ev-new", "host-1")
	e.produce(t, fresh, 0, false)
	checkEvent(t, live.nextEvent(t), fresh)
	checkEvent(t, replay.nextEvent(t), fresh)
}

// TestAnomalyStreamBadQuery: bad query values are 400 problems naming the parameter;
// no consumer configured is 503.
func TestAnomalyStreamBadQuery(t *testing.T) {
	s := newTestServer(t, Config{})
	for _, tc := range []struct{ query, field string }{
		{"?from=now", "from"},
		{"?from=earliest&from=latest", "from"},
		{"?series=,%20", "series"},
	} {
		rec := do(s.Handler(), "GET", "/api/v1/anomalies/stream"+tc.query, "", "")
		if rec.Code != 400 {
			t.Fatalf("%s: status %d: %s", tc.query, rec.Code, rec.Body)
		}
		if p := problemOf(t, rec); p.Field != tc.field || !strings.Contains(p.Detail, tc.field) {
			t.Fatalf("%s: problem %+v", tc.query, p)
		}
	}
	rec := do(s.Handler(), "GET", "/api/v1/anomalies/stream", "", "")
	if rec.Code != 503 {
		t.Fatalf("no consumer: status %d", rec.Code)
	}
	problemOf(t, rec)
}

func waitGauge(t *testing.T, s *Server, want float64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(s.streams.open) != want {
		if time.Now().After(deadline) {
			t.Fatalf("open streams gauge %v, want %v", testutil.ToFloat64(s.streams.open), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAnomalyStreamLimitAndCancel: streams over MaxStreams get 503; a client that
// cancels ends its stream (the gauge falls back, the slot frees, and goleak in TestMain
// checks its Kafka client closed).
func TestAnomalyStreamLimitAndCancel(t *testing.T) {
	e := newStreamEnv(t, Config{MaxStreams: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx1, cancel1 := context.WithCancel(ctx)
	e.open(t, ctx1, "")
	waitGauge(t, e.s, 1)

	resp := e.get(t, ctx, "")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Content-Type") != ProblemContentType || !strings.Contains(string(body), "limit is 1") {
		t.Fatalf("over the limit: status %d: %s", resp.StatusCode, body)
	}

	cancel1()
	waitGauge(t, e.s, 0)
	st := e.open(t, ctx, "") // the slot is free again
	ev := testEvent("ev-after", "host-1")
	e.produce(t, ev, 1, false)
	checkEvent(t, st.nextEvent(t), ev)
}

// TestAnomalyStreamEndsOnShutdown: Serve's graceful shutdown ends open streams at once
// instead of waiting ShutdownTimeout for them.
func TestAnomalyStreamEndsOnShutdown(t *testing.T) {
	brokers := testkit.Brokers(t)
	topic := testkit.Prefix(t) + "anomalies"
	cl := testkit.Client(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 2, -1, nil, topic); err != nil {
		t.Fatal(err)
	}
	s := newTestServer(t, Config{NewConsumer: NewConsumerFunc(brokers), Topics: Topics{Anomalies: topic}, ShutdownTimeout: 30 * time.Second})
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Serve(serveCtx, ln) }()

	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+ln.Addr().String()+Prefix+"/anomalies/stream", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	start := time.Now()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return: the stream held up the shutdown")
	}
	if _, err := io.ReadAll(resp.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("stream body: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("shutdown took %s", d)
	}
	if got := testutil.ToFloat64(s.streams.open); got != 0 {
		t.Fatalf("open streams gauge %v after shutdown", got)
	}
}
