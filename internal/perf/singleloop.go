package perf

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/internal/app"
	"github.com/gonomaly/gonomaly/internal/cluster"
	"github.com/gonomaly/gonomaly/internal/spec"
	"github.com/gonomaly/gonomaly/processors"
)

// singleLoop runs one stage the simple way, as the alternative to processors.Runner's
// goroutine per partition: one goroutine polls up to 10,000 records of every assigned
// partition, runs each through its partition's processor in turn, produces the outputs,
// waits for their acks and commits, then polls again. It is in the same consumer group
// as the runner would be; bad input is dropped rather than sent to the DLQ (the
// synthetic stream has none).
func singleLoop(ctx context.Context, c cluster.Config, s *spec.Spec, stage string, topics processors.Topics) error {
	st, err := app.BuildStage(stage, s, topics, nil)
	if err != nil {
		return err
	}
	type tp struct {
		topic     string
		partition int32
	}
	var mu sync.Mutex // the group's callbacks run on the client's goroutines
	procs := map[tp]processors.Processor{}
	drop := func(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
		mu.Lock()
		defer mu.Unlock()
		for t, ps := range lost {
			for _, p := range ps {
				delete(procs, tp{t, p})
			}
		}
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.Brokers...), kgo.ClientID(c.ClientID+"-single-"+stage),
		kgo.ConsumerGroup(app.GroupName(c.Prefix, s.Name, stage)), kgo.ConsumeTopics(st.InputTopics()...),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(drop), kgo.OnPartitionsLost(drop))
	if err != nil {
		return err
	}
	defer cl.Close()
	// Close leaves the group, which waits for a blocked rebalance: allow it first.
	defer cl.AllowRebalance()
	var produceErr atomic.Pointer[error]
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			produceErr.CompareAndSwap(nil, &err)
		}
	}
	emit := func(out *kgo.Record) { cl.Produce(ctx, out, promise) }
	for {
		fetches := cl.PollRecords(ctx, 10_000)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return nil
		}
		if err := fetches.Err0(); err != nil {
			return fmt.Errorf("%s: fetch: %w", stage, err)
		}
		var procErr error
		mu.Lock()
		fetches.EachRecord(func(r *kgo.Record) {
			if procErr != nil {
				return
			}
			key := tp{r.Topic, r.Partition}
			p := procs[key]
			if p == nil {
				if p, procErr = st.NewProcessor(r.Topic, r.Partition); procErr != nil {
					return
				}
				procs[key] = p
			}
			var bad *processors.BadInputError
			if err := p.Process(r, emit); err != nil && !errors.As(err, &bad) {
				procErr = err
			}
		})
		mu.Unlock()
		if procErr != nil {
			return fmt.Errorf("%s: %w", stage, procErr)
		}
		if err := cl.Flush(ctx); err != nil {
			return nil // only ctx ends a flush early
		}
		if p := produceErr.Load(); p != nil {
			return fmt.Errorf("%s: produce: %w", stage, *p)
		}
		if err := cl.CommitUncommittedOffsets(ctx); err != nil && ctx.Err() == nil {
			return fmt.Errorf("%s: commit: %w", stage, err)
		}
		cl.AllowRebalance()
	}
}
