package detectors

import (
	"math"
	"runtime"
	"testing"
)

func newZScore(t testing.TB, window, minSamples int) *RobustZScore {
	t.Helper()
	z, err := NewRobustZScore(window, minSamples)
	if err != nil {
		t.Fatal(err)
	}
	return z
}

// TestZScoreHandComputed: window {1..5} has median 3 and MAD 1, so 10 scores 7/1.4826;
// then {1..5, 10} has median 3.5 and MAD 1.5, so 3 scores 0.5/(1.4826·1.5).
func TestZScoreHandComputed(t *testing.T) {
	z := newZScore(t, 8, 5)
	for _, x := range []float64{1, 2, 3, 4, 5} {
		if s := z.ScoreLearn("a", []float64{x}, nil); !math.IsNaN(s) {
			t.Fatalf("score %v before min_samples, want NaN (no judgement)", s)
		}
	}
	steps := []struct{ x, want float64 }{
		{10, 7 / 1.4826},
		{3, 0.5 / (1.4826 * 1.5)},
	}
	for _, st := range steps {
		if got := z.ScoreLearn("a", []float64{st.x}, nil); math.Abs(got-st.want) > 1e-12 {
			t.Fatalf("score(%v) = %v, want %v", st.x, got, st.want)
		}
	}
}

func TestZScoreSeriesAreIndependent(t *testing.T) {
	z := newZScore(t, 8, 2)
	for i := range 10 {
		z.ScoreLearn("quiet", []float64{float64(i % 2)}, nil)
		z.ScoreLearn("loud", []float64{1000 * float64(i%2)}, nil)
	}
	if s := z.ScoreLearn("quiet", []float64{1}, nil); s > 1 {
		t.Fatalf("quiet series scored %v for a usual value: state leaked between series", s)
	}
	if z.Len() != 2 {
		t.Fatalf("Len = %d, want 2", z.Len())
	}
	z.Forget("loud")
	if z.Len() != 1 {
		t.Fatalf("Len after Forget = %d, want 1", z.Len())
	}
}

func TestZScoreContributions(t *testing.T) {
	z := newZScore(t, 32, 8)
	rows := normalRows(100, 3, 7)
	contrib := make([]float64, 3)
	for _, r := range rows {
		z.ScoreLearn("s", r, contrib)
	}
	s := z.ScoreLearn("s", []float64{0, 12, 0.5}, contrib)
	if s < 5 {
		t.Fatalf("spike in feature 1 scored %v", s)
	}
	sum := 0.0
	for _, c := range contrib {
		sum += c
	}
	if math.Abs(sum-1) > 1e-12 || contrib[1] < 0.8 {
		t.Fatalf("contributions %v: want sum 1 and feature 1 dominant", contrib)
	}
}

// TestZScoreMemoryPerSeries measures the heap a series costs at the default window with one
// feature: two 64-value windows (1 KiB) plus the state, the key and the map entry.
func TestZScoreMemoryPerSeries(t *testing.T) {
	const series = 20000
	keys := make([]string, series)
	for i := range keys {
		keys[i] = "host-" + itoa(i)
	}
	z := newZScore(t, 64, 8)
	x := []float64{1}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, k := range keys {
		z.ScoreLearn(k, x, nil)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / series
	t.Logf("zscore: %.0f bytes per series (window 64, 1 feature)", per)
	if per > 2048 {
		t.Fatalf("zscore uses %.0f bytes per series, want ≤ 2048", per)
	}
	runtime.KeepAlive(z)
}

func TestZScoreNoAllocsSteadyState(t *testing.T) {
	z := newZScore(t, 64, 8)
	rows := normalRows(512, 4, 1)
	contrib := make([]float64, 4)
	for _, r := range rows {
		z.ScoreLearn("s", r, contrib)
	}
	i := 0
	if a := testing.AllocsPerRun(1000, func() { z.ScoreLearn("s", rows[i%512], contrib); i++ }); a != 0 {
		t.Fatalf("ScoreLearn allocates %v times per call for a known series, want 0", a)
	}
}

func TestZScoreConstructorErrors(t *testing.T) {
	if _, err := NewRobustZScore(8, 9); err == nil {
		t.Fatal("min_samples > window accepted")
	}
	if _, err := NewRobustZScore(0, 1); err == nil {
		t.Fatal("window 0 accepted")
	}
}

func BenchmarkZScore(b *testing.B) {
	z := newZScore(b, 64, 8)
	rows := normalRows(4096, 10, 1)
	contrib := make([]float64, 10)
	for _, r := range rows[:128] {
		z.ScoreLearn("s", r, contrib)
	}
	b.ReportAllocs()
	reportCPU(b)
	for i := 0; b.Loop(); i++ {
		z.ScoreLearn("s", rows[i&4095], contrib)
	}
}
