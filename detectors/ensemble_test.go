package detectors

import (
	"math"
	"strings"
	"testing"
)

func TestCombine(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		method          string
		scores, weights []float64
		want            float64
	}{
		{"mean", []float64{0.2, 0.4, 0.9}, nil, 0.5},
		{"mean", []float64{0.2, nan, 0.4}, nil, 0.3},
		{"mean", nil, nil, 0},
		{"max", []float64{0.2, 0.9, 0.4}, nil, 0.9},
		{"max", []float64{nan, 0.1}, nil, 0.1},
		{"max", nil, nil, 0},
		{"weighted_mean", []float64{1, 0}, []float64{3, 1}, 0.75},
		{"weighted_mean", []float64{1, 0}, nil, 0.5},
		{"weighted_mean", []float64{1, 0.5, 0}, []float64{1, 0, -2}, 1},
		{"weighted_mean", []float64{1, 0}, []float64{0, 0}, 0},
		{"median", []float64{0.9, 0.1, 0.5}, nil, 0.5},
		{"median", []float64{0.9, 0.1, 0.5, 0.3}, nil, 0.4},
		{"median", []float64{nan}, nil, 0},
	} {
		got, err := Combine(tc.method, tc.scores, tc.weights)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("%s(%v, %v) = %v, want %v", tc.method, tc.scores, tc.weights, got, tc.want)
		}
	}
}

func TestCombineMedianLong(t *testing.T) {
	s := make([]float64, 101)
	for i := range s {
		s[i] = float64((i * 37) % 101)
	}
	if got, _ := Combine("median", s, nil); got != 50 {
		t.Fatalf("median of 0..100 shuffled = %v, want 50", got)
	}
}

func TestNewCombinerUnknown(t *testing.T) {
	_, err := NewCombiner("vote")
	if err == nil || !strings.Contains(err.Error(), `"vote"`) || !strings.Contains(err.Error(), "weighted_mean") {
		t.Fatalf("error %v should name the method and the known ones", err)
	}
}

func TestCombinersNoAllocs(t *testing.T) {
	scores, weights := []float64{0.1, 0.7, 0.3, 0.9}, []float64{1, 2, 1, 1}
	for _, m := range CombineMethods() {
		c, _ := NewCombiner(m)
		if a := testing.AllocsPerRun(1000, func() { c(scores, weights) }); a != 0 {
			t.Fatalf("%s allocates %v times per call", m, a)
		}
	}
}
