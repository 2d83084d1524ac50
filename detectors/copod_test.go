package detectors_test

import (
	"math"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

// TestCOPODHandComputed: per feature, max(skew-side −log tail, mean of both −log tails),
// with tails counting the scored value among the training values. On {1, 1, 1, 4}
// (right-skewed) 1 has −log tails log(5/4) (left) and 0 (right): max(0, log(5/4)/2). On
// {1, 4, 4, 4} (left-skewed) 4 has tails 0 and log(5/4): max(0, log(5/4)/2) again, and 1
// has P(X ≤ 1) = 2/5 and P(X ≥ 1) = 5/5: max(log(5/2), log(5/2)/2).
func TestCOPODHandComputed(t *testing.T) {
	for _, tc := range []struct {
		train []float64
		x     float64
		want  float64
	}{
		{[]float64{1, 1, 1, 4}, 1, math.Log(5.0/4) / 2},
		{[]float64{1, 1, 1, 4}, 5, math.Log(5)},
		{[]float64{1, 4, 4, 4}, 4, math.Log(5.0/4) / 2},
		{[]float64{1, 4, 4, 4}, 1, math.Log(5.0 / 2)},
		{[]float64{1, 4, 4, 4}, 9, math.Log(5) / 2}, // the right tail of a left-skewed feature counts half
		{[]float64{1, 2, 3}, 9, math.Log(4)},        // no skewness: both tails
	} {
		train := detectors.Matrix{Rows: len(tc.train), Cols: 1, Data: tc.train}
		got := dpFitScore(t, detectors.NewCOPOD(), train, dpRows([]float64{tc.x}))[0]
		if math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("train %v, x %v: score %v, want %v", tc.train, tc.x, got, tc.want)
		}
	}
}

func TestCOPODContributions(t *testing.T) {
	c := detectors.NewCOPOD()
	if err := c.Fit(dpGaussian(1000, 3, 6)); err != nil {
		t.Fatal(err)
	}
	contrib := make([]float64, 3)
	if err := c.Contributions([]float64{5, 0, 0.2}, contrib); err != nil {
		t.Fatal(err)
	}
	if math.Abs(contrib[0]+contrib[1]+contrib[2]-1) > 1e-12 || contrib[0] < 0.5 {
		t.Fatalf("contributions %v: want sum 1 and feature 0 dominant", contrib)
	}
}

func BenchmarkCOPODShuttle(b *testing.B) { dpBenchShuttle(b, "copod") }
