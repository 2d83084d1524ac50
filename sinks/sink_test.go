package sinks_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/dlq"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/schemas"
	"github.com/gonomaly/gonomaly/sinks"
)

func event(i int) *schemas.Result {
	return &schemas.Result{
		EventID: fmt.Sprintf("e%04d", i), Series: "s", TS: 1_795_000_000_000 + int64(i), Score: 1, Threshold: 0.99,
		Severity: "critical", Detectors: map[string]float64{"zscore": 1}, Values: map[string]float64{"v": float64(i)},
		Source: schemas.Source{Topic: "r", Partition: 0, Offset: int64(i)}, Pipeline: "default", IsAnomaly: true,
	}
}

// runSink runs the JSONL sink until want records are written, then stops it.
func runSink(t *testing.T, brokers []string, path, topic, dlqTopic string, want int64) {
	t.Helper()
	sink, err := sinks.Open("jsonl:" + path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var written atomic.Int64
	done := make(chan error, 1)
	go func() {
		done <- sinks.Run(ctx, sink, sinks.RunnerConfig{
			Topic: topic, Group: topic + ".sink", Events: true, DLQTopic: dlqTopic,
			ClientOpts: []kgo.Opt{kgo.SeedBrokers(brokers...)},
			Written:    func(recs []*kgo.Record) { written.Add(int64(len(recs))) },
		})
	}()
	deadline := time.Now().Add(20 * time.Second)
	for written.Load() < want && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if got := written.Load(); got != want {
		t.Fatalf("sink wrote %d records, want %d", got, want)
	}
}

func TestJSONLSinkWritesEveryEventOnceAcrossRestarts(t *testing.T) {
	brokers := testkit.Brokers(t)
	prefix := testkit.Prefix(t)
	topic, dlqTopic := prefix+"anomalies", prefix+"dlq"
	cl := testkit.Client(t, brokers)
	if _, err := kadm.NewClient(cl).CreateTopics(context.Background(), 2, -1, nil, topic, dlqTopic); err != nil {
		t.Fatal(err)
	}
	produce := func(from, to int, avro bool) {
		for i := from; i < to; i++ {
			var v []byte
			if avro {
				v = schemas.AppendAnomalyEventAvro(nil, event(i))
			} else {
				v = schemas.AppendAnomalyEventJSON(nil, event(i))
			}
			if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte("s"), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	path := filepath.Join(t.TempDir(), "out", "anomalies.jsonl")
	produce(0, 50, false)
	runSink(t, brokers, path, topic, dlqTopic, 50)
	produce(50, 100, true) // Avro events are written in their JSON form
	if err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Key: []byte("s"), Value: []byte("\x01not an event")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	runSink(t, brokers, path, topic, dlqTopic, 51)

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if _, ok := ev["is_anomaly"]; ok {
			t.Fatalf("event line has is_anomaly: %s", sc.Text())
		}
		seen[ev["event_id"].(string)]++
	}
	if len(seen) != 100 {
		t.Fatalf("%d distinct events in the file, want 100", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s written %d times", id, n)
		}
	}
	dead := testkit.ReadN(t, brokers, dlqTopic, 1, 10*time.Second)
	if len(dead) != 1 || dlq.Header(dead[0], "stage") != "sink" || dlq.Header(dead[0], "reason") != "decode" {
		t.Fatalf("undecodable value not dead-lettered: %v", dead)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, uri := range []string{"jsonl:", "postgres://x", "nonsense", "jsonl:/proc/forbidden/x.jsonl"} {
		if _, err := sinks.Open(uri); err == nil || !strings.Contains(err.Error(), uri) {
			t.Errorf("Open(%q): %v; want an error naming it", uri, err)
		}
	}
}
