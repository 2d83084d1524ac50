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
	rate    float64 // tokens per second
	burst   float64 // most tokens saved up while the caller was busy elsewhere
	catchUp float64 // most tokens saved up while the caller slept in take
	tokens  float64
	last    time.Time
	timer   *time.Timer
}

func newTokenBucket(rate float64) *tokenBucket {
	burst := max(1, rate/100)
	return &tokenBucket{rate: rate, burst: burst, catchUp: max(burst, rate), tokens: burst, last: time.Now()}
}

// take waits for one token, or returns ctx's error.
func (b *tokenBucket) take(ctx context.Context) error {
	if b.tokens >= 1 { // the fast path reads no clock
		b.tokens--
		return nil
	}
	// Time since the last call was spent by the caller (a slow source, a full produce
	// buffer): it earns at most a burst, so a stall is not followed by a flood.
	b.refill(b.burst)
	for b.tokens < 1 {
		// Sleep until half a burst has accrued, not one token, to stay above timer
		// resolution.
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
		// Time slept here was time the caller wanted to send in, so a late wake-up (a
		// busy machine) is made good, up to a second's worth; otherwise oversleeping
		// would quietly lower the rate.
		b.refill(b.catchUp)
	}
	b.tokens--
	return nil
}

func (b *tokenBucket) refill(limit float64) {
	now := time.Now()
	b.tokens = min(limit, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
}
