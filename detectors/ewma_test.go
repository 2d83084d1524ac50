package detectors

import (
	"math"
	"testing"
)

func newEWMA(t testing.TB, alpha float64, minSamples int) *EWMA {
	t.Helper()
	e, err := NewEWMA(alpha, minSamples)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestEWMAHandComputed: with alpha 0.5 the first two values are weighed equally (warm
// start): after 2 and 4, mean 3 and population variance 1, so 6 scores 3. Then alpha
// takes over: mean 3 + 0.5·3 = 4.5, variance 0.5·(1 + 0.5·9) = 2.75, and 4.5 scores 0;
// learning it halves the variance to 1.375, so 4.5 + √1.375 scores 1.
func TestEWMAHandComputed(t *testing.T) {
	e := newEWMA(t, 0.5, 2)
	for _, x := range []float64{2, 4} {
		if s := e.ScoreLearn("a", []float64{x}, nil); !math.IsNaN(s) {
			t.Fatalf("score %v before min_samples, want NaN (no judgement)", s)
		}
	}
	if got := e.ScoreLearn("a", []float64{6}, nil); math.Abs(got-3) > 1e-12 {
		t.Fatalf("score(6) = %v, want 3", got)
	}
	if got := e.ScoreLearn("a", []float64{4.5}, nil); got != 0 {
		t.Fatalf("score(4.5) = %v, want 0", got)
	}
	if got, want := e.ScoreLearn("a", []float64{4.5 + math.Sqrt(1.375)}, nil), 1.0; math.Abs(got-want) > 1e-12 {
		t.Fatalf("score = %v, want %v", got, want)
	}
}

// TestEWMAWarmStartIsExact: until 1/alpha values, the state is the plain mean and
// population variance of what was seen.
func TestEWMAWarmStartIsExact(t *testing.T) {
	e := newEWMA(t, 0.01, 1)
	xs := normals(50, 3)
	for _, x := range xs {
		e.ScoreLearn("a", []float64{x}, nil)
	}
	mean, v := 0.0, 0.0
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		v += (x - mean) * (x - mean)
	}
	v /= float64(len(xs))
	st := e.series["a"]
	if math.Abs(st[1]-mean) > 1e-12 || math.Abs(st[2]-v) > 1e-12 {
		t.Fatalf("state mean %v var %v, want %v %v", st[1], st[2], mean, v)
	}
}

func TestEWMAContributionsAreSquaredShares(t *testing.T) {
	e := newEWMA(t, 0.5, 2)
	e.ScoreLearn("a", []float64{2, 0}, nil)
	e.ScoreLearn("a", []float64{4, 2}, nil) // both: variance 1
	contrib := make([]float64, 2)
	s := e.ScoreLearn("a", []float64{6, 3}, contrib) // z = 3 and 2
	if math.Abs(s-3) > 1e-12 {
		t.Fatalf("score %v, want 3", s)
	}
	if math.Abs(contrib[0]-9.0/13) > 1e-12 || math.Abs(contrib[1]-4.0/13) > 1e-12 {
		t.Fatalf("contributions %v, want [9/13 4/13]", contrib)
	}
}

func TestEWMANoAllocsSteadyState(t *testing.T) {
	e := newEWMA(t, 0.05, 8)
	rows := normalRows(512, 4, 1)
	contrib := make([]float64, 4)
	for _, r := range rows {
		e.ScoreLearn("s", r, contrib)
	}
	i := 0
	if a := testing.AllocsPerRun(1000, func() { e.ScoreLearn("s", rows[i%512], contrib); i++ }); a != 0 {
		t.Fatalf("ScoreLearn allocates %v times per call for a known series, want 0", a)
	}
}

func BenchmarkEWMA(b *testing.B) {
	e := newEWMA(b, 0.05, 8)
	rows := normalRows(4096, 10, 1)
	contrib := make([]float64, 10)
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		e.ScoreLearn("s", rows[i&4095], contrib)
	}
}
