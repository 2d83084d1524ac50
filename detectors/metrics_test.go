package detectors

import (
	"math"
	"testing"
)

func TestROCAUC(t *testing.T) {
	for _, tc := range []struct {
		scores []float64
		labels []int
		want   float64
	}{
		{[]float64{0.1, 0.4, 0.35, 0.8}, []int{0, 0, 1, 1}, 0.75}, // sklearn's doc example
		{[]float64{1, 2, 3, 4}, []int{0, 0, 1, 1}, 1},
		{[]float64{4, 3, 2, 1}, []int{0, 0, 1, 1}, 0},
		{[]float64{1, 1, 1, 1}, []int{0, 1, 0, 1}, 0.5},
		{[]float64{1, 2, 2, 3}, []int{0, 1, 0, 1}, 0.875},
	} {
		if got := ROCAUC(tc.scores, tc.labels); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("ROCAUC(%v, %v) = %v, want %v", tc.scores, tc.labels, got, tc.want)
		}
	}
	if !math.IsNaN(ROCAUC([]float64{1, 2}, []int{1, 1})) {
		t.Error("one class only: want NaN")
	}
}
