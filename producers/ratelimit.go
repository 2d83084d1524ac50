package producers

import (
	"context"
	"time"
)

// tokenBucket caps a loop at rate events per second while allowing bursts of about
// rate/100, so that at high rates it sleeps every few hundred events instead of every
// event: a sleep per event would be shorter than the timer's resolution and make the
// real rate far lower than asked.
//
// Not safe for concurrent use: one producer loop owns it.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
	timer  *time.Timer
}

func newTokenBucket(rate float64) *tokenBucket {
	burst := max(1, rate/100)
	return &tokenBucket{rate: rate, burst: burst, tokens: burst, last: time.Now()}
}

// take waits for one token, or returns ctx's error.
func (b *tokenBucket) take(ctx context.Context) error {
	if b.tokens >= 1 { // the fast path reads no clock
		b.tokens--
		return nil
	}
	for {
		now := time.Now()
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
		b.last = now
		if b.tokens >= 1 {
			b.tokens--
			return nil
		}
		// Sleep until half a burst has accrued rather than one token. The other half
		// of the bucket absorbs oversleeping, so tokens earned late are not lost to
		// the cap and the long-run rate stays on target.
		want := max(1, b.burst/2) - b.tokens
		d := time.Duration(want / b.rate * float64(time.Second))
		if b.timer == nil {
			b.timer = time.NewTimer(d)
		} else {
			b.timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			b.timer.Stop()
			return ctx.Err()
		case <-b.timer.C:
		}
	}
}
