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
		// aom: buckets of two in order, the mean of their maxima.
		{"aom", []float64{0.2, 0.9, 0.4, 0.1}, nil, (0.9 + 0.4) / 2},
		{"aom", []float64{0.2, 0.9, 0.4}, nil, (0.9 + 0.4) / 2},
		{"aom", []float64{0.3, 0.6}, nil, 0.6},
		{"aom", []float64{nan, 0.9, nan, nan, 0.5}, nil, (0.9 + 0.5) / 2},
		{"aom", []float64{nan, nan}, nil, 0},
		{"aom", nil, nil, 0},
		// vote: the share of scores at or above 0.5.
		{"vote", []float64{0.9, 0.5, 0.2, 0.1}, nil, 0.5},
		{"vote", []float64{0.9, nan, 0.7}, nil, 1},
		{"vote", []float64{0.49, nan}, nil, 0},
		{"vote", []float64{nan}, nil, 0},
		{"vote", []float64{0.99, 0.1, 0.2}, []float64{5, 1, 1}, 1.0 / 3}, // weights do not count
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
	_, err := NewCombiner("majority")
	if err == nil || !strings.Contains(err.Error(), `"majority"`) || !strings.Contains(err.Error(), "weighted_mean") ||
		!strings.Contains(err.Error(), "aom") || !strings.Contains(err.Error(), "vote") {
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

func TestAOMAndVoteParameters(t *testing.T) {
	aom3, err := NewAOMCombiner(3)
	if err != nil {
		t.Fatal(err)
	}
	if got := aom3([]float64{0.1, 0.8, 0.3, 0.2, 0.6}, nil); math.Abs(got-0.7) > 1e-15 {
		t.Fatalf("aom with buckets of 3 = %v, want (0.8 + 0.6)/2", got)
	}
	aom1, _ := NewAOMCombiner(1)
	mean, _ := NewCombiner("mean")
	if s := []float64{0.1, 0.8, 0.3}; aom1(s, nil) != mean(s, nil) {
		t.Fatal("aom with buckets of 1 is not the mean")
	}
	vote9, _ := NewVoteCombiner(0.9)
	if got := vote9([]float64{0.95, 0.9, 0.89, 0.1}, nil); got != 0.5 {
		t.Fatalf("vote at 0.9 = %v, want 0.5", got)
	}
	if _, err := NewAOMCombiner(0); err == nil {
		t.Fatal("aom bucket 0 accepted")
	}
	for _, cut := range []float64{0, -1, 1.5, math.NaN()} {
		if _, err := NewVoteCombiner(cut); err == nil {
			t.Fatalf("vote cut %v accepted", cut)
		}
	}
}
