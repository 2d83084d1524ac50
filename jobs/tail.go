package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// NewConsumer builds a Kafka client from the options a caller adds (the topics to
// consume, where to start); api.NewConsumerFunc and cluster settings make one.
type NewConsumer func(opts ...kgo.Opt) (*kgo.Client, error)

// tail reads one topic from its start for as long as it runs and hands every record to
// apply, in offset order per partition. It is how every replica keeps an in-memory view
// of a compacted topic: a restarted process rebuilds its view from the topic alone.
type tail struct {
	topic string
	cl    *kgo.Client
	adm   *kadm.Client
	apply func(*kgo.Record)

	mu      sync.Mutex
	next    map[int32]int64 // the offset after the last record applied, per partition
	advance chan struct{}   // closed and replaced whenever next moves
	err     error           // set when the consumer stops for good

	stop context.CancelFunc
	done chan struct{}
}

// startTail starts consuming topic from its start. apply runs on the tail's goroutine,
// one record at a time.
func startTail(newConsumer NewConsumer, topic string, apply func(*kgo.Record)) (*tail, error) {
	// Control records (the markers that end transactions: exactly-once job workers write
	// terminal statuses in transactions) are kept only to count their offsets: a marker
	// may be a partition's last offset, and sync waits for the offset before the end.
	cl, err := newConsumer(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		return nil, fmt.Errorf("consumer of %s: %w", topic, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	t := &tail{
		topic: topic, cl: cl, adm: kadm.NewClient(cl), apply: apply,
		next: map[int32]int64{}, advance: make(chan struct{}),
		stop: stop, done: make(chan struct{}),
	}
	go t.run(ctx)
	return t, nil
}

func (t *tail) run(ctx context.Context) {
	defer close(t.done)
	for {
		fetches := t.cl.PollFetches(ctx)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			t.finish(errors.New("the view of " + t.topic + " is closed"))
			return
		}
		// Fetch errors are retried by the client; they are not the view's to handle, but
		// a pause keeps a persistent one (a deleted topic) from spinning this loop.
		if len(fetches.Errors()) > 0 && fetches.NumRecords() == 0 {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
		moved := map[int32]int64{}
		fetches.EachRecord(func(r *kgo.Record) {
			if !r.Attrs.IsControl() {
				t.apply(r)
			}
			moved[r.Partition] = r.Offset + 1
		})
		if len(moved) == 0 {
			continue
		}
		t.mu.Lock()
		for p, o := range moved {
			t.next[p] = o
		}
		close(t.advance)
		t.advance = make(chan struct{})
		t.mu.Unlock()
	}
}

func (t *tail) finish(err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.err = err
	close(t.advance)
	t.advance = make(chan struct{})
}

// sync waits until every record written to the topic before the call has been applied:
// after it returns, the view reflects at least what Kafka held when it was called. The
// API calls it once at start (a restarted replica serves only after it has recovered
// every status) and wherever it must read its own or another replica's writes.
func (t *tail) sync(ctx context.Context) error {
	var ends, starts kadm.ListedOffsets
	err := retryMetadata(ctx, func() error {
		var err error
		if ends, err = t.adm.ListEndOffsets(ctx, t.topic); err == nil {
			err = ends.Error()
		}
		if err != nil {
			return fmt.Errorf("end offsets of %s: %w", t.topic, err)
		}
		if starts, err = t.adm.ListStartOffsets(ctx, t.topic); err == nil {
			err = starts.Error()
		}
		if err != nil {
			return fmt.Errorf("start offsets of %s: %w", t.topic, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for {
		t.mu.Lock()
		behind, advance, stopped := false, t.advance, t.err
		ends.Each(func(o kadm.ListedOffset) {
			start := int64(0)
			if s, ok := starts.Lookup(o.Topic, o.Partition); ok {
				start = s.Offset
			}
			// An empty partition (or one emptied by retention) has nothing to wait for.
			if o.Offset > start && t.next[o.Partition] < o.Offset {
				behind = true
			}
		})
		t.mu.Unlock()
		if !behind {
			return nil
		}
		if stopped != nil {
			return stopped
		}
		select {
		case <-advance:
		case <-ctx.Done():
			return fmt.Errorf("catching up with %s: %w", t.topic, ctx.Err())
		}
	}
}

// close stops the consumer and waits for its goroutine.
func (t *tail) close() {
	t.stop()
	t.cl.Close()
	<-t.done
}

// retryMetadata retries fn while it fails because a broker does not know the topic yet:
// on Kafka (KRaft) a topic just created by another process reaches every broker's
// metadata a moment later. Other errors, and ctx's end, stop it.
func retryMetadata(ctx context.Context, fn func() error) error {
	for wait := 50 * time.Millisecond; ; wait = min(2*wait, time.Second) {
		err := fn()
		if err == nil || !errors.Is(err, kerr.UnknownTopicOrPartition) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
