package eval

import (
	"math"
	"path/filepath"
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
	if got := PrecisionAtN([]float64{0.9, 0.1, 0.8, 0.7}, []int{1, 0, 0, 1}); got != 0.5 {
		t.Errorf("precision@n = %v, want 0.5", got)
	}
}

func TestLoadODDSAndSplit(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "data", "odds", "thyroid.csv")
	ds, err := LoadODDS(path)
	if err != nil {
		t.Skipf("dataset not available: %v", err)
	}
	if ds.X.Rows != 3772 || ds.X.Cols != 6 || ds.Name != "thyroid" {
		t.Fatalf("thyroid: %d×%d %q", ds.X.Rows, ds.X.Cols, ds.Name)
	}
	train, test := Split(ds.X.Rows, 0.6, 1)
	if len(train) != 2263 || len(train)+len(test) != ds.X.Rows {
		t.Fatalf("split %d/%d", len(train), len(test))
	}
	a, _ := Split(100, 0.6, 7)
	b, _ := Split(100, 0.6, 7)
	c, _ := Split(100, 0.6, 8)
	if !equal(a, b) || equal(a, c) {
		t.Fatal("splits must depend on the seed only")
	}
	if _, err := LoadODDS(filepath.Join("..", "..", "..", "shared", "data", "odds", "cover.csv.gz")); err != nil {
		t.Fatalf("gzip: %v", err)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
