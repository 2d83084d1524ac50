package detectors

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestPOTTailKeepsDistance: where the ECDF calls every new maximum 1, the fitted tail
// still orders scores beyond the window's largest.
func TestPOTTailKeepsDistance(t *testing.T) {
	c := NewPOTCalibrator(2000)
	rng := rand.New(rand.NewPCG(1, 2))
	top := 0.0
	for range 2000 {
		v := math.Abs(rng.NormFloat64())
		top = max(top, v)
		c.Calibrate(v)
	}
	near := c.tail(top * 1.01)
	far := c.tail(top * 3)
	if !(near > 0.99 && near < far && far < 1) {
		t.Fatalf("tail at 1.01×max = %v, at 3×max = %v: want 0.99 < near < far < 1", near, far)
	}
	// A spike is judged against the window before it: it cannot widen its own tail.
	before := c.tail(50)
	if got := c.Calibrate(50); got != before || got < 1-1e-9 {
		t.Fatalf("spike calibrated to %v, tail before it said %v", got, before)
	}
}

// TestPOTFalseAlarmRate: on a stationary stream, the share of scores calibrated at or
// above 1 − α is close to α, for light and heavy tails alike: the threshold means the
// same whatever the detector's scale and shape.
func TestPOTFalseAlarmRate(t *testing.T) {
	const n = 300_000
	for _, tc := range []struct {
		name string
		draw func(*rand.Rand) float64
	}{
		{"half-normal", func(r *rand.Rand) float64 { return math.Abs(r.NormFloat64()) }},
		{"exponential", func(r *rand.Rand) float64 { return r.ExpFloat64() }},
		{"lognormal", func(r *rand.Rand) float64 { return math.Exp(r.NormFloat64()) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewPOTCalibrator(2000)
			rng := rand.New(rand.NewPCG(3, 4))
			const alpha = 1e-3
			over := 0
			for i := range n {
				p := c.Calibrate(tc.draw(rng))
				if i >= 2000 && p >= 1-alpha {
					over++
				}
			}
			rate := float64(over) / float64(n-2000)
			t.Logf("alpha %g: observed %.5f", alpha, rate)
			// The exponential tail is exact for the exponential, conservative for the
			// half-normal and optimistic for the lognormal's heavier tail.
			if rate < alpha/3 || rate > alpha*3 {
				t.Fatalf("alpha %g: observed rate %.5f", alpha, rate)
			}
		})
	}
}

// TestPOTCoarseScores: a detector whose top scores tie has no tail to fit; a score a
// little past its maximum must not alarm, one far beyond everything must.
func TestPOTCoarseScores(t *testing.T) {
	c := NewPOTCalibrator(500)
	for i := range 500 {
		c.Calibrate(float64(i % 3))
	}
	if got := c.tail(2.5); got > 0.999 {
		t.Fatalf("a score just past a coarse maximum calibrated to %v", got)
	}
	if got := c.tail(1e3); got < 0.9999 {
		t.Fatalf("a score 500 times the maximum calibrated to %v", got)
	}
	flat := NewPOTCalibrator(500)
	for range 500 {
		flat.Calibrate(1)
	}
	if got := flat.Calibrate(2); got > 500.0/501 {
		t.Fatalf("a constant detector's first other value calibrated to %v: no scale to judge by", got)
	}
}

// TestPOTShortWindow: with few scores the tail still recognises a gross outlier.
func TestPOTShortWindow(t *testing.T) {
	c := NewPOTCalibrator(2000)
	rng := rand.New(rand.NewPCG(5, 6))
	for range potMinScores {
		c.Calibrate(math.Abs(rng.NormFloat64()))
	}
	if got := c.Calibrate(100); got < 0.9999 {
		t.Fatalf("outlier after %d scores calibrated to %v", potMinScores, got)
	}
}
