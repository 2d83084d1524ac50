package producers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gonomaly/gonomaly/schemas"
)

// PublisherOptions tune a Publisher. Zero values take the defaults.
type PublisherOptions struct {
	// Format of record values: schemas.FormatJSON (the default, also for the zero
	// FormatAuto) or schemas.FormatAvro (single-object encoding). Confluent framing
	// needs a registry id and is not offered here.
	Format schemas.Format
	// Rate caps records per second when > 0.
	Rate float64
	// Progress, when set, is called every ProgressEvery (default 2 s) from a separate
	// goroutine, never concurrently with itself and never after Run returns.
	Progress      func(Stats)
	ProgressEvery time.Duration
	// SkipBad keeps going past bad input lines (*InputError from the source), counting
	// them in Stats.Skipped and passing each to OnBad (called on Run's goroutine).
	// Without it the first one stops the run. I/O errors always stop it.
	SkipBad bool
	OnBad   func(error)
	// FlushTimeout is how long Run keeps delivering already-produced records after ctx
	// is canceled before failing them; default 10 s.
	FlushTimeout time.Duration
}

// Stats counts a run's records. After a clean run Sent = Acked + Errors.
type Stats struct {
	Sent    int64 // handed to the client
	Acked   int64 // acknowledged by the broker
	Errors  int64 // failed to produce
	Skipped int64 // bad input skipped with SkipBad
	Elapsed time.Duration
	Rate    float64 // acknowledged records per second since the start
}

// Publisher drains a Source into a topic. Values are encoded records, keys are series
// ids so every record of a series lands on the same partition (the client's default
// partitioner hashes keys), which is what per-series state downstream relies on.
type Publisher struct {
	cl     *kgo.Client
	topic  string
	opts   PublisherOptions
	encode func(dst []byte, r *schemas.Record) []byte
}

// NewPublisher returns a publisher to topic through cl. The caller owns cl.
func NewPublisher(cl *kgo.Client, topic string, opts PublisherOptions) (*Publisher, error) {
	p := &Publisher{cl: cl, topic: topic, opts: opts}
	switch opts.Format {
	case schemas.FormatAuto, schemas.FormatJSON:
		p.encode = schemas.AppendRecordJSON
	case schemas.FormatAvro:
		p.encode = schemas.AppendRecordAvro
	default:
		return nil, fmt.Errorf("publisher: format %v is not supported (want json or avro)", opts.Format)
	}
	if topic == "" {
		return nil, errors.New("publisher: empty topic")
	}
	if p.opts.ProgressEvery <= 0 {
		p.opts.ProgressEvery = 2 * time.Second
	}
	if p.opts.FlushTimeout <= 0 {
		p.opts.FlushTimeout = 10 * time.Second
	}
	return p, nil
}

// maxCachedKeys bounds the series → key cache; past it keys are allocated per record.
const maxCachedKeys = 1 << 16

// Run reads src until io.EOF, an error or ctx's end, producing every record
// asynchronously, then flushes. It returns the counts and, joined: the source error
// that stopped it or ctx's error, the number of failed produces with the first produce
// error, and whether FlushTimeout ran out.
//
// Run checks ctx between records: a Source blocked in Next (stdin waiting for input)
// holds Run until it returns, so close its reader to stop it.
//
// Records are not given their event time as the Kafka timestamp: replaying old data
// (NAB is from 2014) would put it outside retention and the broker would delete it at
// once. The event time travels in the value.
func (p *Publisher) Run(ctx context.Context, src Source) (Stats, error) {
	start := time.Now()
	var (
		sent, acked, failed, skipped atomic.Int64
		firstErr                     atomic.Pointer[error]
	)
	snapshot := func() Stats {
		el := time.Since(start)
		st := Stats{Sent: sent.Load(), Acked: acked.Load(), Errors: failed.Load(), Skipped: skipped.Load(), Elapsed: el}
		if s := el.Seconds(); s > 0 {
			st.Rate = float64(st.Acked) / s
		}
		return st
	}
	promise := func(_ *kgo.Record, err error) {
		if err != nil {
			firstErr.CompareAndSwap(nil, &err) // before counting, so a count implies an error
			failed.Add(1)
			return
		}
		acked.Add(1)
	}

	// Produced records get a context that outlives ctx by FlushTimeout, so a Ctrl-C
	// stops reading at once but still delivers what was already handed to the client.
	produceCtx, cancelProduce := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelProduce()
	done := make(chan struct{})
	var gaveUp atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		t := time.NewTimer(p.opts.FlushTimeout)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			gaveUp.Store(true)
			cancelProduce()
		}
	})
	if p.opts.Progress != nil {
		wg.Go(func() {
			tick := time.NewTicker(p.opts.ProgressEvery)
			defer tick.Stop()
			for {
				select {
				case <-done:
					return
				case <-tick.C:
					p.opts.Progress(snapshot())
				}
			}
		})
	}

	var limiter *tokenBucket
	if p.opts.Rate > 0 {
		limiter = newTokenBucket(p.opts.Rate)
	}
	keys := make(map[string][]byte)
	sizeHint := 128
	var rec schemas.Record
	var runErr error
	for {
		if err := ctx.Err(); err != nil {
			runErr = err
			break
		}
		if err := src.Next(&rec); err != nil {
			if err == io.EOF {
				break
			}
			var bad *InputError
			if p.opts.SkipBad && errors.As(err, &bad) {
				skipped.Add(1)
				if p.opts.OnBad != nil {
					p.opts.OnBad(err)
				}
				continue
			}
			runErr = fmt.Errorf("reading records: %w", err)
			break
		}
		if limiter != nil {
			if err := limiter.take(ctx); err != nil {
				runErr = err
				break
			}
		}
		// A fresh buffer per record: the client holds the value until it is acked.
		value := p.encode(make([]byte, 0, sizeHint), &rec)
		sizeHint = max(sizeHint, len(value))
		key, ok := keys[rec.Series]
		if !ok {
			key = []byte(rec.Series)
			if len(keys) < maxCachedKeys {
				keys[rec.Series] = key // the client never writes to keys, so records can share them
			}
		}
		sent.Add(1)
		p.cl.Produce(produceCtx, &kgo.Record{Topic: p.topic, Key: key, Value: value}, promise)
	}

	// Flush fails only when produceCtx is canceled, which gaveUp reports below.
	_ = p.cl.Flush(produceCtx)
	close(done)
	wg.Wait()
	st := snapshot()

	if runErr == nil {
		runErr = ctx.Err() // ctx ended while flushing
	}
	var prodErr, graceErr error
	if n := st.Errors; n > 0 {
		prodErr = fmt.Errorf("%d of %d records failed to produce to %s, first: %w", n, st.Sent, p.topic, *firstErr.Load())
	}
	if gaveUp.Load() {
		graceErr = fmt.Errorf("gave up delivering buffered records %v after cancellation", p.opts.FlushTimeout)
	}
	return st, errors.Join(runErr, prodErr, graceErr)
}
