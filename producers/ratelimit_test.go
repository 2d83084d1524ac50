package producers

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"
)

// The bucket holds its rate over half a second at a rate where a sleep per token
// would be below timer resolution.
func TestTokenBucketRate(t *testing.T) {
	const rate = 20000
	const window = 500 * time.Millisecond
	b := newTokenBucket(rate)
	ctx := context.Background()
	start := time.Now()
	n := 0
	for time.Since(start) < window {
		if err := b.take(ctx); err != nil {
			t.Fatal(err)
		}
		n++
	}
	want := rate * window.Seconds()
	if math.Abs(float64(n)-want)/want > 0.10 {
		t.Errorf("%d tokens in %v, want %.0f ±10%%", n, window, want)
	}
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
