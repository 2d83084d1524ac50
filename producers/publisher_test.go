package producers

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/schemas"
)

const testTopic = "gonomaly.records"

// newCluster starts an in-process broker with the records topic and a producing client.
func newCluster(t *testing.T) (*kfake.Cluster, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, testTopic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return c, cl
}

// consume reads n records of the topic from the start.
func consume(t *testing.T, c *kfake.Cluster, n int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.ConsumeTopics(testTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		out = append(out, fs.Records()...)
	}
	// Nothing more should arrive.
	short, cancelShort := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancelShort()
	if extra := cl.PollFetches(short).Records(); len(extra) > 0 {
		t.Fatalf("%d records more than the %d expected", len(extra), n)
	}
	return out
}

func TestPublisherJSON(t *testing.T) {
	c, cl := newCluster(t)
	const series, count = 8, 2000
	var progress []Stats
	var mu sync.Mutex
	p, err := NewPublisher(cl, testTopic, PublisherOptions{
		Rate:          10000, // 0.2 s, so progress fires a few times
		ProgressEvery: 20 * time.Millisecond,
		Progress: func(s Stats) {
			mu.Lock()
			progress = append(progress, s)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	gen := NewSynthetic(SyntheticConfig{Series: series, Count: count, Seed: 1, AnomalyRate: 0.01})
	st, err := p.Run(context.Background(), gen)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sent != count || st.Acked != count || st.Errors != 0 || st.Skipped != 0 {
		t.Errorf("stats %+v, want %d sent and acked", st, count)
	}
	if st.Elapsed < 150*time.Millisecond || st.Rate > 12000 {
		t.Errorf("stats %+v: the rate cap of 10000/s was not applied", st)
	}
	mu.Lock()
	if len(progress) < 3 {
		t.Errorf("%d progress reports, want several", len(progress))
	}
	for i := 1; i < len(progress); i++ {
		if progress[i].Sent < progress[i-1].Sent || progress[i].Elapsed <= progress[i-1].Elapsed {
			t.Errorf("progress went backwards: %+v then %+v", progress[i-1], progress[i])
		}
	}
	mu.Unlock()

	// Read everything back: every value decodes, keys are series ids, each series sits
	// on one partition, and per series the event times arrive in order.
	want := drain(t, NewSynthetic(SyntheticConfig{Series: series, Count: count, Seed: 1, AnomalyRate: 0.01}), -1)
	wantBySeries := map[string][]schemas.Record{}
	for _, r := range want {
		wantBySeries[r.Series] = append(wantBySeries[r.Series], r)
	}
	dec := schemas.RecordDecoder{Format: schemas.FormatJSON}
	partition := map[string]int32{}
	seen := map[string]int{}
	for _, kr := range consume(t, c, count) {
		var r schemas.Record
		if err := dec.Decode(kr.Value, &r); err != nil {
			t.Fatalf("decode %s: %v", kr.Value, err)
		}
		if string(kr.Key) != r.Series {
			t.Fatalf("key %q for series %q", kr.Key, r.Series)
		}
		if p, ok := partition[r.Series]; ok && p != kr.Partition {
			t.Fatalf("series %s on partitions %d and %d", r.Series, p, kr.Partition)
		}
		partition[r.Series] = kr.Partition
		w := wantBySeries[r.Series][seen[r.Series]]
		seen[r.Series]++
		if r.TS != w.TS || len(r.Values) != 1 || r.Values["value"] != w.Values["value"] {
			t.Fatalf("got %+v, want %+v", r, w)
		}
	}
	if len(seen) != series {
		t.Errorf("%d series arrived, want %d", len(seen), series)
	}
}

func TestPublisherAvro(t *testing.T) {
	c, cl := newCluster(t)
	p, err := NewPublisher(cl, testTopic, PublisherOptions{Format: schemas.FormatAvro})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Run(context.Background(), NewSynthetic(SyntheticConfig{Series: 3, Features: 2, Count: 300}))
	if err != nil || st.Acked != 300 {
		t.Fatalf("stats %+v, error %v", st, err)
	}
	dec := schemas.RecordDecoder{Format: schemas.FormatAuto}
	for _, kr := range consume(t, c, 300) {
		var r schemas.Record
		if err := dec.Decode(kr.Value, &r); err != nil {
			t.Fatalf("decode: %v", err)
		}
		if string(kr.Key) != r.Series || len(r.Values) != 2 {
			t.Fatalf("key %q, record %+v", kr.Key, r)
		}
	}
}

func TestPublisherBadInput(t *testing.T) {
	csv := "timestamp,value\n1404172800,1\n1404172860,x\n1404172920,3\n"
	t.Run("stop", func(t *testing.T) {
		_, cl := newCluster(t)
		p, err := NewPublisher(cl, testTopic, PublisherOptions{})
		if err != nil {
			t.Fatal(err)
		}
		src, err := NewCSVSource(strings.NewReader(csv), CSVConfig{Series: "s"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := p.Run(context.Background(), src)
		var ie *InputError
		if !errors.As(err, &ie) || ie.Line != 3 || ie.Column != "value" {
			t.Fatalf("error %v, want the bad line 3", err)
		}
		if st.Sent != 1 || st.Acked != 1 {
			t.Errorf("stats %+v, want the one good record before the bad line delivered", st)
		}
	})
	t.Run("skip", func(t *testing.T) {
		c, cl := newCluster(t)
		var bad []error
		p, err := NewPublisher(cl, testTopic, PublisherOptions{SkipBad: true, OnBad: func(err error) { bad = append(bad, err) }})
		if err != nil {
			t.Fatal(err)
		}
		src, err := NewCSVSource(strings.NewReader(csv), CSVConfig{Series: "s"})
		if err != nil {
			t.Fatal(err)
		}
		st, err := p.Run(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		if st.Sent != 2 || st.Acked != 2 || st.Skipped != 1 {
			t.Errorf("stats %+v, want 2 sent and 1 skipped", st)
		}
		if len(bad) != 1 || !strings.HasPrefix(bad[0].Error(), "line 3, ") {
			t.Errorf("OnBad got %v", bad)
		}
		consume(t, c, 2)
	})
}

// Canceling stops reading at once, but what was produced is still delivered.
func TestPublisherCancel(t *testing.T) {
	_, cl := newCluster(t)
	p, err := NewPublisher(cl, testTopic, PublisherOptions{Rate: 5000})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	st, err := p.Run(ctx, NewSynthetic(SyntheticConfig{Series: 4})) // endless
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error %v, want the context's", err)
	}
	if st.Sent == 0 || st.Acked != st.Sent || st.Errors != 0 {
		t.Errorf("stats %+v, want every sent record acked", st)
	}
}

func TestPublisherProduceErrors(t *testing.T) {
	_, cl := newCluster(t)
	// The topic does not exist and kfake does not auto-create it: every produce fails.
	cl2, err := kgo.NewClient(kgo.SeedBrokers(cl.OptValue(kgo.SeedBrokers).([]string)...), kgo.RecordDeliveryTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	p, err := NewPublisher(cl2, "no.such.topic", PublisherOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.Run(context.Background(), NewSynthetic(SyntheticConfig{Count: 10}))
	if err == nil || st.Errors != 10 || st.Acked != 0 {
		t.Fatalf("stats %+v, error %v; want 10 failures", st, err)
	}
	if !strings.Contains(err.Error(), "10 of 10 records failed to produce to no.such.topic") {
		t.Errorf("error %q", err)
	}
}

func TestNewPublisherErrors(t *testing.T) {
	if _, err := NewPublisher(nil, testTopic, PublisherOptions{Format: schemas.FormatConfluent}); err == nil {
		t.Error("confluent format accepted without a schema id")
	}
	if _, err := NewPublisher(nil, "", PublisherOptions{}); err == nil {
		t.Error("empty topic accepted")
	}
}

// With no broker to deliver to, a canceled run waits FlushTimeout for buffered records,
// then gives up on them instead of hanging.
func TestPublisherFlushTimeout(t *testing.T) {
	cl, err := kgo.NewClient(kgo.SeedBrokers("127.0.0.1:1")) // nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	p, err := NewPublisher(cl, testTopic, PublisherOptions{FlushTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	st, err := p.Run(ctx, NewSynthetic(SyntheticConfig{Count: 10}))
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Run took %v after a 100 ms context and 200 ms flush timeout", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "gave up delivering buffered records 200ms after cancellation") {
		t.Errorf("error %v, want the context's and the flush's", err)
	}
	if st.Sent != 10 || st.Acked != 0 { // Errors may lag: failed records are counted as their promises run
		t.Errorf("stats %+v", st)
	}
}
