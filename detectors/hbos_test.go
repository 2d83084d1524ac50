package detectors_test

import (
	"math"
	"testing"

	"github.com/gonomaly/gonomaly/detectors"
)

func newHBOS(t testing.TB, bins int, alpha, tol float64) *detectors.HBOS {
	t.Helper()
	h, err := detectors.NewHBOS(detectors.HBOSConfig{Bins: bins, Alpha: alpha, Tol: tol})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestHBOSHandComputed: the column {0, 0, 0, 1} in two bins has edges 0, 0.5, 1 and
// densities 3/(4·0.5) = 1.5 and 1/(4·0.5) = 0.5, so with alpha 0.1 a value scores
// −log2(1.6) in the first bin and −log2(0.6) in the second. tol 0.5 lets values up to 0.25
// outside the range take the edge bin; further out they take the sparsest bin.
func TestHBOSHandComputed(t *testing.T) {
	h := newHBOS(t, 2, 0.1, 0.5)
	if err := h.Fit(dpRows([]float64{0}, []float64{0}, []float64{0}, []float64{1})); err != nil {
		t.Fatal(err)
	}
	dense, sparse := -math.Log2(1.6), -math.Log2(0.6)
	for _, tc := range []struct{ x, want float64 }{
		{0, dense},
		{0.49, dense},
		{0.5, sparse}, // bins are right-open: the middle edge belongs to the second
		{1, sparse},   // the maximum belongs to the last bin
		{-0.25, dense},
		{-0.3, sparse},
		{1.25, sparse},
		{7, sparse},
	} {
		out := make([]float64, 1)
		if err := h.Score(dpRows([]float64{tc.x}), out); err != nil {
			t.Fatal(err)
		}
		if math.Abs(out[0]-tc.want) > 1e-12 {
			t.Errorf("score(%v) = %v, want %v", tc.x, out[0], tc.want)
		}
	}
}

// TestHBOSSumsFeatures: a row's score is the sum of its features' terms, each feature
// with its own histogram.
func TestHBOSSumsFeatures(t *testing.T) {
	train := dpGaussian(400, 3, 1)
	test := dpGaussian(20, 3, 2)
	all := dpFitScore(t, newHBOS(t, 10, 0.1, 0.5), train, test)
	sum := make([]float64, test.Rows)
	for j := range 3 {
		col := func(m detectors.Matrix) detectors.Matrix {
			c := detectors.NewMatrix(m.Rows, 1)
			for i := range m.Rows {
				c.Data[i] = m.Row(i)[j]
			}
			return c
		}
		for i, s := range dpFitScore(t, newHBOS(t, 10, 0.1, 0.5), col(train), col(test)) {
			sum[i] += s
		}
	}
	for i := range sum {
		if math.Abs(sum[i]-all[i]) > 1e-12 {
			t.Fatalf("row %d: %v, per-feature sum %v", i, all[i], sum[i])
		}
	}
}

// TestHBOSContributions: the feature out in the tail gets almost all of the score; a row at
// every feature's mode gets all zeros.
func TestHBOSContributions(t *testing.T) {
	h := newHBOS(t, 10, 0.1, 0.5)
	if err := h.Fit(dpGaussian(1000, 4, 3)); err != nil {
		t.Fatal(err)
	}
	contrib := make([]float64, 4)
	if err := h.Contributions([]float64{0.1, -0.2, 6, 0}, contrib); err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, c := range contrib {
		sum += c
	}
	if math.Abs(sum-1) > 1e-12 || contrib[2] < 0.7 {
		t.Fatalf("contributions %v: want sum 1 and feature 2 dominant", contrib)
	}
	// A constant column's single bin is its mode.
	c := newHBOS(t, 10, 0.1, 0.5)
	if err := c.Fit(dpRows([]float64{3, 1}, []float64{3, 1})); err != nil {
		t.Fatal(err)
	}
	if err := c.Contributions([]float64{3, 1}, contrib[:2]); err != nil {
		t.Fatal(err)
	}
	if contrib[0] != 0 || contrib[1] != 0 {
		t.Fatalf("a row at the modes: contributions %v, want zeros", contrib[:2])
	}
}

func TestHBOSConfigErrors(t *testing.T) {
	for _, cfg := range []detectors.HBOSConfig{
		{Bins: 1, Alpha: 0.1, Tol: 0.5},
		{Bins: 10, Alpha: 0, Tol: 0.5},
		{Bins: 10, Alpha: math.NaN(), Tol: 0.5},
		{Bins: 10, Alpha: 0.1, Tol: -1},
		{Bins: 10, Alpha: 0.1, Tol: math.Inf(1)},
	} {
		if _, err := detectors.NewHBOS(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// BenchmarkHBOSShuttle: fit on 60% of shuttle (29,458 × 9), score the other 40% (19,639).
func BenchmarkHBOSShuttle(b *testing.B) { dpBenchShuttle(b, "hbos") }
