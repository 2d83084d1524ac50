package detectors_test

import (
	"math"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

func ecodScores(t testing.TB, train, test detectors.Matrix) []float64 {
	t.Helper()
	return dpFitScore(t, detectors.NewECOD(), train, test)
}

// TestECODHandComputed: on {1, 1, 1, 4} (right-skewed), tails count the scored value with
// the four training values: 5 has P(X ≤ 5) = 5/5 and P(X ≥ 5) = 1/5, so it scores log 5;
// 1 has P(X ≤ 1) = 4/5 and P(X ≥ 1) = 5/5, so log(5/4); 2.5 has 4/5 and 2/5: log(5/2).
// A feature without skewness ({1, 2, 3}) adds both tails: 3 scores log(4/4) + log(4/2).
func TestECODHandComputed(t *testing.T) {
	for _, tc := range []struct {
		train []float64
		x     float64
		want  float64
	}{
		{[]float64{1, 1, 1, 4}, 5, math.Log(5)},
		{[]float64{1, 1, 1, 4}, 1, math.Log(5.0 / 4)},
		{[]float64{1, 1, 1, 4}, 2.5, math.Log(5.0 / 2)},
		{[]float64{1, 1, 1, 4}, -3, math.Log(5)},
		{[]float64{1, 2, 3}, 3, math.Log(2)},
		{[]float64{1, 2, 3}, 9, math.Log(4)},
	} {
		train := detectors.Matrix{Rows: len(tc.train), Cols: 1, Data: tc.train}
		got := ecodScores(t, train, dpRows([]float64{tc.x}))[0]
		if math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("train %v, x %v: score %v, want %v", tc.train, tc.x, got, tc.want)
		}
	}
}

// TestECODMonotoneInTails: further into a tail is never less anomalous, and a value beyond
// every training value scores the most, finitely.
func TestECODMonotoneInTails(t *testing.T) {
	train := dpGaussian(500, 1, 4)
	xs := []float64{0, 0.5, 1, 2, 3, 10, 1e300}
	test := detectors.Matrix{Rows: len(xs), Cols: 1, Data: xs}
	out := ecodScores(t, train, test)
	for i := 1; i < len(out); i++ {
		if out[i] < out[i-1] {
			t.Fatalf("scores %v are not monotone in the right tail", out)
		}
	}
	if out[5] != out[6] || math.IsInf(out[6], 0) {
		t.Fatalf("beyond the range: %v and %v, want equal and finite", out[5], out[6])
	}
}

func TestECODContributions(t *testing.T) {
	e := detectors.NewECOD()
	if err := e.Fit(dpGaussian(1000, 5, 5)); err != nil {
		t.Fatal(err)
	}
	contrib := make([]float64, 5)
	if err := e.Contributions([]float64{0, 0.1, -0.1, 0, -5}, contrib); err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, c := range contrib {
		sum += c
	}
	if math.Abs(sum-1) > 1e-12 || contrib[4] < 0.5 {
		t.Fatalf("contributions %v: want sum 1 and feature 4 dominant", contrib)
	}
	for j, c := range contrib[:4] {
		if c > contrib[4]/5 {
			t.Fatalf("feature %d near the median has contribution %v", j, c)
		}
	}
}

// BenchmarkECODShuttle: fit on 60% of shuttle (29,458 × 9), score the other 40% (19,639).
func BenchmarkECODShuttle(b *testing.B) { dpBenchShuttle(b, "ecod") }
