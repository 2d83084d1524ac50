package producers

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// The bucket holds its rate over half a second at a rate where a sleep per token
// would be below timer resolution. Exceeding the rate is never allowed; falling short
// can be the machine's fault (a starved test process cannot take its tokens), so that
// side gets three attempts.
func TestTokenBucketRate(t *testing.T) {
	const rate = 20000
	const window = 500 * time.Millisecond
	want := rate * window.Seconds()
	var counts []int
	for range 3 {
		b := newTokenBucket(rate)
		start := time.Now()
		n := 0
		for time.Since(start) < window {
			if err := b.take(context.Background()); err != nil {
				t.Fatal(err)
			}
			n++
		}
		if float64(n) > 1.10*want {
			t.Fatalf("%d tokens in %v, want at most %.0f", n, window, 1.10*want)
		}
		if math.Abs(float64(n)-want)/want <= 0.10 {
			return
		}
		counts = append(counts, n)
	}
	t.Errorf("tokens in %v: %v, want %.0f ±10%%", window, counts, want)
}

func TestTokenBucketSlowRateAndCancel(t *testing.T) {
	b := newTokenBucket(2) // burst 1: the first take is free, the second waits 0.5 s
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.take(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := b.take(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second take: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 300*time.Millisecond {
		t.Errorf("cancel took %v", d)
	}
}

// Idle time outside take earns at most a burst (rate/100), so a stalled source is not
// followed by a flood.
func TestTokenBucketBurstCap(t *testing.T) {
	const rate = 20000 // burst 200
	b := newTokenBucket(rate)
	ctx := context.Background()
	time.Sleep(100 * time.Millisecond) // would be 2000 tokens without the cap
	start := time.Now()
	for range 1000 {
		if err := b.take(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// 800 tokens beyond the burst take 40 ms to accrue.
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("1000 tokens after idling took %v, want ≥ 40 ms", d)
	}
}
