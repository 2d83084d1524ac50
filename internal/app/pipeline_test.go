package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/internal/testkit"
	"github.com/gonomaly/gonomaly/producers"
	"github.com/gonomaly/gonomaly/schemas"
)

// startPipeline runs app.Run against brokers until the test ends and returns the
// cluster config and what it printed.
func startPipeline(t *testing.T, brokers []string, s *spec.Spec, opts ...func(*app.RunConfig)) (cluster.Config, *testkit.SyncBuffer) {
	t.Helper()
	c := cluster.Config{Brokers: brokers, Prefix: testkit.Prefix(t), Partitions: 4}.WithDefaults()
	printed := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	cfg := app.RunConfig{Cluster: c, Spec: s, Print: printed, Started: func([]string) { close(started) }}
	for _, o := range opts {
		o(&cfg)
	}
	go func() { done <- app.Run(ctx, cfg) }()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("pipeline did not start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("pipeline did not start within 20s")
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pipeline stopped with error: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Error("pipeline did not stop within 20s of cancel")
		}
	})
	return c, printed
}

func publish(t *testing.T, brokers []string, topic string, src producers.Source) {
	t.Helper()
	cl := testkit.Client(t, brokers)
	pub, err := producers.NewPublisher(cl, topic, producers.PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := pub.Run(context.Background(), src)
	if err != nil {
		t.Fatalf("publish: %v (stats %+v)", err, stats)
	}
}

func TestPipelineFindsInjectedAnomaliesAndLosesNothing(t *testing.T) {
	brokers := testkit.Brokers(t)
	c, printed := startPipeline(t, brokers, spec.Default())

	const n = 30_000
	gen := producers.NewSynthetic(producers.SyntheticConfig{Series: 10, Count: n, Seed: 7, AnomalyRate: 0.004})
	publish(t, brokers, c.Topic("records"), gen)

	results := testkit.ReadN(t, brokers, c.Topic("results"), n, 90*time.Second)
	if len(results) != n {
		t.Fatalf("results: got %d records, want %d", len(results), n)
	}
	type pos struct {
		p int32
		o int64
	}
	seen := map[pos]bool{}
	type seriesTS struct {
		series string
		ts     int64
	}
	flagged := map[seriesTS]bool{}
	byKey := map[seriesTS]schemas.Result{}
	var anomalies int
	for _, r := range results {
		var res schemas.Result
		if err := schemas.DecodeResult(r.Value, &res); err != nil {
			t.Fatalf("decode result at offset %d: %v", r.Offset, err)
		}
		if string(r.Key) != res.Series {
			t.Fatalf("result keyed %q for series %q", r.Key, res.Series)
		}
		seen[pos{res.Source.Partition, res.Source.Offset}] = true
		if res.IsAnomaly {
			flagged[seriesTS{res.Series, res.TS}] = true
			anomalies++
		}
		byKey[seriesTS{res.Series, res.TS}] = res
	}
	if len(seen) != n {
		t.Fatalf("distinct source offsets in results: %d, want %d (a record was lost or doubled)", len(seen), n)
	}

	labels := gen.Labels()
	var spikes, found int
	inWindow := func(series string, ts int64) bool {
		for _, l := range labels {
			// A level shift or drift disturbs the series for a while after its window too.
			if l.Series == series && ts >= l.TS && ts <= l.End+int64(60*time.Minute/time.Millisecond) {
				return true
			}
		}
		return false
	}
	for _, l := range labels {
		if l.Kind != "spike" {
			continue
		}
		spikes++
		if flagged[seriesTS{l.Series, l.TS}] {
			found++
		} else if testing.Verbose() {
			r := byKey[seriesTS{l.Series, l.TS}]
			t.Logf("missed spike %s at %d: score %.4f detectors %v values %v", l.Series, l.TS, r.Score, r.Detectors, r.Values)
		}
	}
	if spikes < 10 {
		t.Fatalf("only %d spikes injected; the test needs more to judge recall", spikes)
	}
	recall := float64(found) / float64(spikes)
	var falseAlarms int
	for k := range flagged {
		if !inWindow(k.series, k.ts) {
			falseAlarms++
			if testing.Verbose() {
				r := byKey[k]
				t.Logf("false alarm %s at %d offset %d/%d: score %.6f detectors %v values %v", k.series, k.ts, r.Source.Partition, r.Source.Offset, r.Score, r.Detectors, r.Values)
			}
		}
	}
	falseRate := float64(falseAlarms) / float64(n)
	if testing.Verbose() {
		for _, thr := range []float64{0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999} {
			var fa, hit int
			for k, r := range byKey {
				if r.Score < thr {
					continue
				}
				if !inWindow(k.series, k.ts) {
					fa++
				}
			}
			for _, l := range labels {
				if l.Kind == "spike" && byKey[seriesTS{l.Series, l.TS}].Score >= thr {
					hit++
				}
			}
			t.Logf("threshold %g: spikes found %d/%d, false alarms %d", thr, hit, spikes, fa)
		}
	}
	t.Logf("spikes %d, found %d (recall %.3f); anomalies %d; false alarms %d (%.4f of records)", spikes, found, recall, anomalies, falseAlarms, falseRate)
	if recall < 0.8 {
		t.Errorf("spike recall %.3f < 0.8", recall)
	}
	if falseRate > 0.001 {
		t.Errorf("false alarm rate %.4f > 0.001", falseRate)
	}

	// The printer shows the anomaly events as JSON lines.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && strings.Count(printed.String(), "\n") < anomalies {
		time.Sleep(100 * time.Millisecond)
	}
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(printed.String()))
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("printed line is not JSON: %q: %v", sc.Text(), err)
		}
		if _, ok := ev["is_anomaly"]; ok {
			t.Fatalf("printed anomaly event has is_anomaly: %s", sc.Text())
		}
		for _, field := range []string{"event_id", "series", "ts", "score", "threshold", "severity", "detectors", "values", "source", "pipeline", "detected_at"} {
			if _, ok := ev[field]; !ok {
				t.Fatalf("printed event lacks %s: %s", field, sc.Text())
			}
		}
		lines++
	}
	if lines != anomalies {
		t.Errorf("printed %d anomaly events, results flag %d", lines, anomalies)
	}
}

// TestPipelineExactlyOnce: with --exactly-once every stage writes in transactions; read
// committed, results hold one per input record and anomalies no event twice.
func TestPipelineExactlyOnce(t *testing.T) {
	brokers := testkit.Brokers(t)
	c, _ := startPipeline(t, brokers, spec.Default(), func(cfg *app.RunConfig) { cfg.ExactlyOnce = true })
	const n = 8_000
	publish(t, brokers, c.Topic("records"), producers.NewSynthetic(producers.SyntheticConfig{Series: 10, Count: n, Seed: 3, AnomalyRate: 0.004}))
	results := testkit.ReadN(t, brokers, c.Topic("results"), n, 90*time.Second, kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	seen := map[[2]int64]bool{}
	for _, r := range results {
		var res schemas.Result
		if err := schemas.DecodeResult(r.Value, &res); err != nil {
			t.Fatal(err)
		}
		seen[[2]int64{int64(res.Source.Partition), res.Source.Offset}] = true
	}
	if len(results) != n || len(seen) != n {
		t.Fatalf("%d results, %d distinct sources, want %d of each", len(results), len(seen), n)
	}
	if extra := testkit.ReadN(t, brokers, c.Topic("results"), n+1, 2*time.Second, kgo.FetchIsolationLevel(kgo.ReadCommitted())); len(extra) != n {
		t.Fatalf("%d committed results, want exactly %d", len(extra), n)
	}
	// Commit markers take offsets: without them the stages did not write transactionally.
	if end := testkit.EndOffsets(t, brokers, c.Topic("results")); end <= n {
		t.Fatalf("results end at offset sum %d for %d records: no transaction markers", end, n)
	}
}

func TestPipelineSendsBadInputToDLQAndKeepsGoing(t *testing.T) {
	brokers := testkit.Brokers(t)
	s := spec.Default()
	s.Input.MaxBytes = 2048
	c, _ := startPipeline(t, brokers, s)

	good := func(i int) []byte {
		r := schemas.Record{Series: "host-1", TS: int64(1_764_000_000_000 + i*60_000), Values: map[string]float64{"cpu": float64(i%7) / 10}}
		return schemas.AppendRecordJSON(nil, &r)
	}
	nan := schemas.Record{Series: "host-1", TS: 1_764_000_000_000, Values: map[string]float64{"cpu": nanValue()}}
	bad := []struct {
		reason string
		key    string
		value  []byte
	}{
		{"decode", "host-1", []byte(`{"series": "host-1", "values": {"cpu": 0.5`)},
		{"decode", "host-1", []byte(`{"series": "host-1", "values": {"cpu": "high"}}`)},
		{"decode", "host-1", []byte(`{"series": "host-1", "ts": "yesterday", "values": {"cpu": 1}}`)},
		{"decode", "host-1", schemas.AppendRecordAvro(nil, &nan)},
		{"decode", "host-1", schemas.AppendRecordConfluent(nil, 99, &nan)},
		{"decode", "host-1", []byte("\x07garbage")},
		{"oversize", "host-1", []byte(`{"series": "host-1", "values": {"cpu": 1}, "tags": {"pad": "` + strings.Repeat("x", 4096) + `"}}`)},
		{"invalid", "", []byte(`{"values": {"cpu": 1}}`)},
	}
	cl := testkit.Client(t, brokers)
	var recs []*kgo.Record
	valid := 0
	for i := 0; i < 200; i++ {
		recs = append(recs, &kgo.Record{Topic: c.Topic("records"), Key: []byte("host-1"), Value: good(i)})
		valid++
		if i%25 == 10 {
			b := bad[(i/25)%len(bad)]
			var key []byte
			if b.key != "" {
				key = []byte(b.key)
			}
			recs = append(recs, &kgo.Record{Topic: c.Topic("records"), Key: key, Value: b.value})
		}
	}
	if err := cl.ProduceSync(context.Background(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	nBad := len(recs) - valid

	dead := testkit.ReadN(t, brokers, c.Topic("dlq"), nBad, 30*time.Second)
	if len(dead) != nBad {
		t.Fatalf("dlq holds %d records, want %d", len(dead), nBad)
	}
	reasonOf := map[string]string{}
	for _, b := range bad {
		reasonOf[string(b.value)] = b.reason
	}
	for i, d := range dead {
		h := map[string]string{}
		for _, kv := range d.Headers {
			h[kv.Key] = string(kv.Value)
		}
		wantReason, ok := reasonOf[string(d.Value)]
		if !ok {
			t.Errorf("dlq record %d does not carry the original bytes: %q", i, d.Value)
		}
		if h["stage"] != "preprocess" || h["topic"] != c.Topic("records") || h["partition"] == "" || h["offset"] == "" || h["error"] == "" {
			t.Errorf("dlq record %d headers incomplete: %v", i, h)
		}
		if h["reason"] != wantReason {
			t.Errorf("dlq record %d: reason %q, want %q (error %q)", i, h["reason"], wantReason, h["error"])
		}
		t.Logf("dlq: %s", h["error"])
	}
	results := testkit.ReadN(t, brokers, c.Topic("results"), valid, 30*time.Second)
	if len(results) != valid {
		t.Fatalf("results: %d, want one per valid record (%d)", len(results), valid)
	}
}

func nanValue() float64 {
	zero := 0.0
	return zero / zero
}

func TestConnectToUnreachableBrokerFailsFastNamingIt(t *testing.T) {
	start := time.Now()
	err := app.Run(context.Background(), app.RunConfig{
		Cluster: cluster.Config{Brokers: []string{"127.0.0.1:1"}},
		Spec:    spec.Default(),
	})
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("want an error naming 127.0.0.1:1, got %v", err)
	}
	if d := time.Since(start); d > 12*time.Second {
		t.Fatalf("took %s to report an unreachable broker", d)
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal("unexpected cancel")
	}
}
