package sinks_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/dlq"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/schemas"
	"github.com/gonomaly/gonomaly/sinks"
)

func TestWebhookRejectionsGoToTheDLQWithTheReason(t *testing.T) {
	brokers := testkit.Brokers(t)
	prefix := testkit.Prefix(t)
	topic, dlqTopic := prefix+"anomalies", prefix+"dlq"
	cl := testkit.Client(t, brokers)
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 1, -1, nil, topic, dlqTopic); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		ev := event(i)
		if i == 4 {
			ev.Series = "refused"
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte(ev.Series), Value: schemas.AppendAnomalyEventJSON(nil, ev)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	var ok, first atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(body), `"refused"`):
			http.Error(w, "unknown service", http.StatusBadRequest)
		case first.Add(1) == 1:
			w.WriteHeader(http.StatusInternalServerError) // one transient failure, retried
		default:
			ok.Add(1)
		}
	}))
	defer srv.Close()
	sink, err := sinks.Open(srv.URL + "?backoff=1ms")
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	var committed atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- sinks.Run(ctx, sink, sinks.RunnerConfig{Topic: topic, Group: prefix + "sink", Events: true, DLQTopic: dlqTopic,
			ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)}, Registry: reg,
			Written: func(recs []*kgo.Record) { committed.Add(int64(len(recs))) }})
	}()
	for deadline := time.Now().Add(20 * time.Second); committed.Load() < 10 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if ok.Load() != 9 {
		t.Fatalf("endpoint accepted %d events, want 9", ok.Load())
	}
	dead := testkit.ReadN(t, brokers, dlqTopic, 1, 10*time.Second)
	if len(dead) != 1 || dlq.Header(dead[0], "reason") != "rejected" || !strings.Contains(dlq.Header(dead[0], "error"), "HTTP 400: unknown service") ||
		string(dead[0].Key) != "refused" {
		t.Fatalf("dead letters %v", dead)
	}
	n, err := testutil.GatherAndCount(reg, "gonomaly_sink_written_total", "gonomaly_sink_failed_total", "gonomaly_sink_retried_total", "gonomaly_sink_write_seconds")
	if err != nil || n != 4 {
		t.Fatalf("%d sink metrics, %v", n, err)
	}
	want := `
# HELP gonomaly_sink_failed_total Records the sink could not write for good (undecodable or rejected by the target), sent to the dead-letter topic.
# TYPE gonomaly_sink_failed_total counter
gonomaly_sink_failed_total{group="` + prefix + `sink",sink="webhook",topic="` + topic + `"} 1
# HELP gonomaly_sink_retried_total Requests the sink retried after a transient failure of its target.
# TYPE gonomaly_sink_retried_total counter
gonomaly_sink_retried_total{group="` + prefix + `sink",sink="webhook",topic="` + topic + `"} 1
# HELP gonomaly_sink_written_total Records written and made durable by the sink.
# TYPE gonomaly_sink_written_total counter
gonomaly_sink_written_total{group="` + prefix + `sink",sink="webhook",topic="` + topic + `"} 9
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gonomaly_sink_written_total", "gonomaly_sink_failed_total", "gonomaly_sink_retried_total"); err != nil {
		t.Fatal(err)
	}
}
