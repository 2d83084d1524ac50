package detectors

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestAnomalyLikelihoodRisesOnAShiftAndStaysCalmOnNoise(t *testing.T) {
	l, err := NewAnomalyLikelihood(5, 1000)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range LikelihoodWarmup {
		if got := l.Update(rng.Float64() * 0.5); got != 0.5 {
			t.Fatalf("warm-up score %d = %v, want 0.5", i, got)
		}
	}
	high := 0
	for range 2000 {
		if l.Update(rng.Float64()*0.5) > 0.9999 {
			high++
		}
	}
	if high > 2 {
		t.Errorf("%d of 2000 noise scores have likelihood > 0.9999", high)
	}
	var last float64
	for range 5 {
		last = l.Update(1)
	}
	if last < 0.9999 {
		t.Errorf("likelihood after five maximal scores = %v, want > 0.9999", last)
	}
	if got := l.Update(math.NaN()); got == got {
		t.Errorf("NaN score gave %v, want NaN", got)
	}
}

func TestAnomalyLikelihoodRejectsBadConfig(t *testing.T) {
	for _, c := range [][2]int{{0, 10}, {MaxLikelihoodShort + 1, 10}, {1, 1}, {1, MaxLikelihoodLong + 1}} {
		if _, err := NewAnomalyLikelihood(c[0], c[1]); err == nil {
			t.Errorf("NewAnomalyLikelihood(%d, %d) succeeded", c[0], c[1])
		}
	}
}

func TestPeakFilter(t *testing.T) {
	f, err := NewPeakFilter(3)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct{ in, want float64 }{
		{0.5, 0.5},        // nothing to beat yet
		{0.9995, 0.9995},  // beats 0.5
		{0.9990, 0.5},     // beats one of two
		{0.9996, 0.9996},  // a new peak
		{0.9996, 2.0 / 3}, // a tie does not beat: 0.9995, 0.9990 below
		{0.2, 0},          // window is now 0.9990, 0.9996, 0.9996
		{0.3, 0.3},        // beats a third: min(0.3, 1/3)
		{0.4, 0.4},
		{0.1, 0}, // 0.9996 has left: window 0.2, 0.3, 0.4
		{0.35, 0.35},
	} {
		if got := f.Filter(c.in); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("step %d: Filter(%v) = %v, want %v", i, c.in, got, c.want)
		}
	}
	if got := f.Filter(math.NaN()); got == got {
		t.Errorf("NaN gave %v", got)
	}
	if _, err := NewPeakFilter(0); err == nil {
		t.Error("NewPeakFilter(0) succeeded")
	}
}

// TestPostProcessorsRoundTrip checks that a restored post-processor continues exactly as
// the original would.
func TestPostProcessorsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	l, _ := NewAnomalyLikelihood(7, 300)
	f, _ := NewPeakFilter(50)
	for range 1234 {
		x := rng.Float64()
		l.Update(x)
		f.Filter(x)
	}
	lb, _ := l.MarshalBinary()
	fb, _ := f.MarshalBinary()
	var l2 AnomalyLikelihood
	var f2 PeakFilter
	if err := l2.UnmarshalBinary(lb); err != nil {
		t.Fatal(err)
	}
	if err := f2.UnmarshalBinary(fb); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		x := rng.Float64()
		if a, b := l.Update(x), l2.Update(x); math.Abs(a-b) > 1e-9 {
			t.Fatalf("likelihood step %d: %v vs restored %v", i, a, b)
		}
		if a, b := f.Filter(x), f2.Filter(x); a != b {
			t.Fatalf("peak filter step %d: %v vs restored %v", i, a, b)
		}
	}
	for n := range lb {
		if err := new(AnomalyLikelihood).UnmarshalBinary(lb[:n]); err == nil {
			t.Errorf("likelihood state truncated to %d bytes accepted", n)
		}
	}
	for n := range fb {
		if err := new(PeakFilter).UnmarshalBinary(fb[:n]); err == nil {
			t.Errorf("peak filter state truncated to %d bytes accepted", n)
		}
	}
}

func FuzzPostProcessorsUnmarshal(f *testing.F) {
	l, _ := NewAnomalyLikelihood(3, 10)
	p, _ := NewPeakFilter(4)
	for _, x := range []float64{0.1, 0.9, 0.5, 0.7, 0.2} {
		l.Update(x)
		p.Filter(x)
	}
	lb, _ := l.MarshalBinary()
	pb, _ := p.MarshalBinary()
	f.Add(lb)
	f.Add(pb)
	f.Fuzz(func(t *testing.T, data []byte) {
		var l AnomalyLikelihood
		if l.UnmarshalBinary(data) == nil {
			if v := l.Update(0.5); !(v >= 0 && v <= 1) {
				t.Fatalf("restored likelihood gave %v", v)
			}
		}
		var p PeakFilter
		if p.UnmarshalBinary(data) == nil {
			p.Filter(0.5)
		}
	})
}
